// Package poller is the starter's engine: a thin Kafka consumer that cuts
// per-partition batches and starts one ApplyBatch workflow per batch. It
// commits a batch's offsets only after Temporal accepted the workflow start,
// and does no database work.
package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// Config is what the poller needs; internal/config fills it from the
// environment.
type Config struct {
	kafkax.Conn
	GroupID   string
	TaskQueue string

	MaxEvents   int           // cut a batch at this many messages
	MaxBytes    int           // or before it exceeds this many bytes of message values
	MaxWait     time.Duration // or this long after its first message arrived
	MaxInFlight int           // running workflows per partition before fetching pauses

	SessionTimeout time.Duration // consumer group session and rebalance timeout
	MaxAttempts    int           // tries of a permanently failing change before it is dead-lettered
	OrderingWindow time.Duration // retries of a change failing for an ordering-dependent reason

	// StartGrace is how long a workflow start that is under way when the
	// poller is stopped may take to finish and commit.
	StartGrace time.Duration
}

// Stats counts what the poller did. Fields are updated atomically.
type Stats struct {
	BatchesStarted atomic.Int64 // new workflows started
	BatchesExisted atomic.Int64 // starts refused because the workflow ID was already used
	Messages       atomic.Int64 // messages in started or existing batches
	Redelivered    atomic.Int64 // messages in batches whose workflow existed already
	Poison         atomic.Int64 // undecodable messages passed on as poison
}

// Poller consumes one topic in a consumer group.
type Poller struct {
	cfg      Config
	temporal client.Client
	log      *slog.Logger
	Stats    Stats
}

// New returns a poller; Run starts it.
func New(cfg Config, tc client.Client, log *slog.Logger) *Poller {
	if cfg.StartGrace == 0 {
		cfg.StartGrace = 10 * time.Second
	}
	return &Poller{cfg: cfg, temporal: tc, log: log}
}

// Run consumes until ctx is cancelled. Each partition the group assigns to
// this poller gets a worker of its own, which reads, cuts and starts that
// partition's batches and waits for its own in-flight slots: one partition
// stalled (its batches retrying against a locked row) does not hold the
// others back. A worker stops when its partition is revoked or lost in a
// rebalance, and a new one starts for the next assignment, from the
// committed offset. On cancellation, starts already under way finish and
// commit (within StartGrace); batches not yet started are abandoned: their
// offsets were never committed, so they are read again.
func (p *Poller) Run(ctx context.Context) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:               p.cfg.GroupID,
		Brokers:          p.cfg.Brokers,
		Topics:           []string{p.cfg.Topic},
		SessionTimeout:   p.cfg.SessionTimeout,
		RebalanceTimeout: p.cfg.SessionTimeout,
		StartOffset:      kafka.FirstOffset,
		ErrorLogger:      p.kafkaLogger(),
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", p.cfg.GroupID, err)
	}
	defer group.Close() // waits for the partition workers
	backoff := 100 * time.Millisecond
	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			p.log.Warn("join consumer group failed, retrying", "group", p.cfg.GroupID, "error", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		assigned := gen.Assignments[p.cfg.Topic]
		parts := make([]int, len(assigned))
		for i, a := range assigned {
			parts[i] = a.ID
		}
		p.log.Info("partitions assigned", "generation", gen.ID, "partitions", parts)
		for _, a := range assigned {
			gen.Start(func(gctx context.Context) {
				pp := &partitionPoller{p: p, gen: gen, partition: a.ID}
				pp.run(ctx, gctx, a.Offset)
			})
		}
	}
}

func (p *Poller) kafkaLogger() kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) { p.log.Warn(fmt.Sprintf(msg, args...)) })
}

// partitionPoller batches the messages of one assigned partition.
type partitionPoller struct {
	p         *Poller
	gen       *kafka.Generation
	partition int
	inFlight  chan struct{} // one token per running workflow

	msgs     []kafka.Message
	bytes    int
	deadline time.Time // when the pending batch is cut
}

// run reads the partition from offset until stop (the poller is stopped) or
// gen (the partition was revoked) ends.
func (pp *partitionPoller) run(stop, gen context.Context, offset int64) {
	ctx, cancel := context.WithCancel(gen)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()
	cfg := pp.p.cfg
	pp.inFlight = make(chan struct{}, cfg.MaxInFlight)
	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       cfg.Brokers,
		Topic:         cfg.Topic,
		Partition:     pp.partition,
		MinBytes:      1,
		MaxBytes:      16 << 20,
		MaxWait:       250 * time.Millisecond,
		QueueCapacity: cfg.MaxEvents,
		ErrorLogger:   pp.p.kafkaLogger(),
	})
	defer reader.Close()
	if err := reader.SetOffset(offset); err != nil {
		pp.p.log.Error("seek partition", "partition", pp.partition, "offset", offset, "error", err)
		return
	}
	for {
		fctx, fcancel := ctx, context.CancelFunc(func() {})
		if len(pp.msgs) > 0 {
			fctx, fcancel = context.WithDeadline(ctx, pp.deadline)
		}
		m, err := reader.FetchMessage(fctx)
		fcancel()
		switch {
		case ctx.Err() != nil:
			return // the batch being filled was never started: abandon it
		case errors.Is(err, context.DeadlineExceeded):
			pp.flush(ctx)
			continue
		case err != nil:
			pp.p.log.Warn("fetch failed, retrying", "partition", pp.partition, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if len(pp.msgs) > 0 && pp.bytes+len(m.Value) > cfg.MaxBytes {
			pp.flush(ctx)
		}
		if len(pp.msgs) == 0 {
			pp.deadline = time.Now().Add(cfg.MaxWait)
		}
		pp.msgs = append(pp.msgs, m)
		pp.bytes += len(m.Value)
		if len(pp.msgs) >= cfg.MaxEvents {
			pp.flush(ctx)
		}
	}
}

// flush starts the workflow for the pending batch and commits its offsets.
func (pp *partitionPoller) flush(ctx context.Context) {
	if len(pp.msgs) == 0 {
		return
	}
	msgs := pp.msgs
	pp.msgs, pp.bytes = nil, 0

	// Backpressure: wait for a running workflow of this partition to finish.
	select {
	case pp.inFlight <- struct{}{}:
	case <-ctx.Done():
		return
	}
	in, events := pp.p.batchInput(pp.partition, msgs)
	values := make([][]byte, len(msgs))
	for i, m := range msgs {
		values[i] = m.Value
	}
	id := cdc.BatchWorkflowID(in.Topic, in.Partition, in.FirstOffset, in.LastOffset, cdc.BatchDigest(values))

	// A start under way finishes even if the poller is being stopped, so that
	// what was started gets committed: its context ends StartGrace after ctx.
	sctx, cancel := graceContext(ctx, pp.p.cfg.StartGrace)
	defer cancel()
	run, err := pp.p.start(sctx, id, in, events)
	if err != nil {
		<-pp.inFlight // stopped before the start was accepted: nothing to commit
		return
	}
	pp.p.Stats.Messages.Add(int64(len(msgs)))
	if run == nil {
		pp.p.Stats.Redelivered.Add(int64(len(msgs)))
	}
	pp.p.Stats.Poison.Add(int64(len(in.Poison)))
	next := map[string]map[int]int64{pp.p.cfg.Topic: {pp.partition: in.LastOffset + 1}}
	if err := pp.gen.CommitOffsets(next); err != nil {
		// The workflow runs regardless; the batch will be read again by
		// whoever owns the partition next and its start deduplicated by ID.
		pp.p.log.Warn("commit offsets failed", "partition", pp.partition, "offset", in.LastOffset, "error", err)
	}
	if run == nil {
		<-pp.inFlight
		return
	}
	go func() {
		defer func() { <-pp.inFlight }()
		pp.p.await(ctx, run)
	}()
}

// await waits for a batch workflow to close, holding its in-flight slot. An
// error of the call itself (Temporal unreachable for a while) is not the
// workflow's end: the wait goes on until ctx ends.
func (p *Poller) await(ctx context.Context, run client.WorkflowRun) {
	backoff := 100 * time.Millisecond
	for {
		var sum cdc.BatchSummary
		err := run.Get(ctx, &sum)
		if err == nil {
			p.log.Debug("batch applied", "workflow_id", run.GetID(), "applied", sum.Applied,
				"duplicates", sum.Duplicates, "superseded", sum.Superseded, "failed", sum.Failed)
			return
		}
		var closed *temporal.WorkflowExecutionError
		if errors.As(err, &closed) {
			p.log.Error("batch workflow failed", "workflow_id", run.GetID(), "error", err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		p.log.Warn("waiting for batch workflow, retrying", "workflow_id", run.GetID(), "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// graceContext returns a context that ends grace after parent ends, so that
// work under way can finish during a shutdown but not hang it.
func graceContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() { time.AfterFunc(grace, cancel) })
	return ctx, func() {
		stop()
		cancel()
	}
}

// startAttemptTimeout bounds one start request: a server that stopped
// answering is asked again rather than waited for.
const startAttemptTimeout = 10 * time.Second

// start starts the workflow, retrying failures (Temporal unreachable or
// overloaded, for any length of time) with capped backoff until ctx ends. It
// returns a nil run when the ID was used before.
func (p *Poller) start(ctx context.Context, id string, in cdc.BatchInput, events event.Batch) (client.WorkflowRun, error) {
	opts := client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                p.cfg.TaskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy:                 enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, startAttemptTimeout)
		run, err := p.temporal.ExecuteWorkflow(actx, opts, cdc.WorkflowApplyBatch, in, events)
		cancel()
		if err == nil {
			p.Stats.BatchesStarted.Add(1)
			return run, nil
		}
		var exists *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &exists) {
			p.Stats.BatchesExisted.Add(1)
			p.log.Info("batch already started before", "workflow_id", id)
			return nil, nil
		}
		p.log.Warn("start workflow failed, retrying", "workflow_id", id, "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// batchInput checks that every message of a batch decodes; the good ones
// form the batch's events as they were received, the others become poison.
func (p *Poller) batchInput(partition int, msgs []kafka.Message) (cdc.BatchInput, event.Batch) {
	in := cdc.BatchInput{
		Topic:                 p.cfg.Topic,
		Partition:             partition,
		FirstOffset:           msgs[0].Offset,
		LastOffset:            msgs[len(msgs)-1].Offset,
		MaxAttempts:           p.cfg.MaxAttempts,
		OrderingWindowSeconds: int(p.cfg.OrderingWindow / time.Second),
		Offsets:               make([]int64, 0, len(msgs)),
	}
	good := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		_, err := event.Decode(m.Value)
		if err == nil {
			good = append(good, m.Value)
			in.Offsets = append(in.Offsets, m.Offset)
			continue
		}
		value := m.Value
		if value == nil {
			value = []byte{} // a null record value: kept as empty, never as a missing message
		}
		if len(value) > cdc.PoisonValueLimit {
			value = value[:cdc.PoisonValueLimit]
		}
		in.Poison = append(in.Poison, cdc.Poison{Offset: m.Offset, Value: value, Size: len(m.Value),
			Truncated: len(value) < len(m.Value), Error: err.Error()})
		p.log.Warn("undecodable message", "topic", p.cfg.Topic, "partition", partition, "offset", m.Offset, "error", err)
	}
	in.EventCount = len(good)
	return in, event.NewBatch(good)
}
