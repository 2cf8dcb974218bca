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
	"sync"
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

// Run consumes until ctx is cancelled or a fatal error. On cancellation it
// stops fetching, lets starts already under way finish and commit (within
// StartGrace), and abandons batches not yet started: they are redelivered to
// the next poller, since their offsets were never committed.
func (p *Poller) Run(ctx context.Context) error {
	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:          p.cfg.Brokers,
		GroupID:          p.cfg.GroupID,
		Topic:            p.cfg.Topic,
		MinBytes:         1,
		MaxBytes:         16 << 20,
		MaxWait:          250 * time.Millisecond,
		CommitInterval:   0, // synchronous commits: CommitMessages returns once Kafka has them
		StartOffset:      kafka.FirstOffset,
		QueueCapacity:    1000,
		SessionTimeout:   p.cfg.SessionTimeout,
		RebalanceTimeout: p.cfg.SessionTimeout,
		ErrorLogger:      kafka.LoggerFunc(func(msg string, args ...any) { p.log.Warn(fmt.Sprintf(msg, args...)) }),
	})
	defer reader.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	parts := map[int]chan kafka.Message{}
	var fetchErr error
	for {
		m, err := reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() == nil {
				fetchErr = fmt.Errorf("fetch from %s: %w", p.cfg.Topic, err)
				cancel(fetchErr)
			}
			break
		}
		ch, ok := parts[m.Partition]
		if !ok {
			ch = make(chan kafka.Message, p.cfg.MaxEvents)
			parts[m.Partition] = ch
			wg.Add(1)
			go func(partition int) {
				defer wg.Done()
				pp := &partitionPoller{p: p, reader: reader, partition: partition}
				if err := pp.run(ctx, ch); err != nil {
					cancel(err)
				}
			}(m.Partition)
		}
		select {
		case ch <- m:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return fetchErr
}

// partitionPoller batches the messages of one partition.
type partitionPoller struct {
	p         *Poller
	reader    *kafka.Reader
	partition int
	inFlight  chan struct{} // one token per running workflow

	msgs  []kafka.Message
	bytes int
}

func (pp *partitionPoller) run(ctx context.Context, in <-chan kafka.Message) error {
	cfg := pp.p.cfg
	pp.inFlight = make(chan struct{}, cfg.MaxInFlight)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // the batch being filled was never started: abandon it
		case <-timer.C:
			if err := pp.flush(ctx); err != nil {
				return err
			}
		case m := <-in:
			if n := len(pp.msgs); n > 0 && m.Offset <= pp.msgs[n-1].Offset {
				// The group rebalanced and the partition is being read again
				// from its committed offset: start the batch over.
				pp.msgs, pp.bytes = pp.msgs[:0], 0
			}
			if len(pp.msgs) > 0 && pp.bytes+len(m.Value) > cfg.MaxBytes {
				if err := pp.flush(ctx); err != nil {
					return err
				}
			}
			if len(pp.msgs) == 0 {
				timer.Reset(cfg.MaxWait)
			}
			pp.msgs = append(pp.msgs, m)
			pp.bytes += len(m.Value)
			if len(pp.msgs) >= cfg.MaxEvents {
				if err := pp.flush(ctx); err != nil {
					return err
				}
			}
		}
		if len(pp.msgs) == 0 {
			timer.Stop()
		}
	}
}

// flush starts the workflow for the pending batch and commits its offsets.
func (pp *partitionPoller) flush(ctx context.Context) error {
	if len(pp.msgs) == 0 {
		return nil
	}
	msgs := pp.msgs
	pp.msgs, pp.bytes = nil, 0

	// Backpressure: wait for a running workflow of this partition to finish.
	select {
	case pp.inFlight <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	in, events := pp.p.batchInput(pp.partition, msgs)
	id := cdc.BatchWorkflowID(in.Topic, in.Partition, in.FirstOffset, in.LastOffset)

	// A start under way finishes even if the poller is being stopped, so that
	// what was started gets committed: its context ends StartGrace after ctx.
	sctx, cancel := graceContext(ctx, pp.p.cfg.StartGrace)
	defer cancel()
	run, err := pp.p.start(sctx, id, in, events)
	if err != nil {
		<-pp.inFlight
		if ctx.Err() != nil {
			return nil // stopped before the start was accepted: nothing to commit
		}
		return err
	}
	pp.p.Stats.Messages.Add(int64(len(msgs)))
	if run == nil {
		pp.p.Stats.Redelivered.Add(int64(len(msgs)))
	}
	pp.p.Stats.Poison.Add(int64(len(in.Poison)))
	if err := pp.reader.CommitMessages(sctx, msgs[len(msgs)-1]); err != nil {
		// The workflow runs regardless; the batch will be read again by
		// whoever owns the partition next and its start deduplicated by ID.
		pp.p.log.Warn("commit offsets failed", "partition", pp.partition, "offset", in.LastOffset, "error", err)
	}
	if run == nil {
		<-pp.inFlight
		return nil
	}
	go func() {
		defer func() { <-pp.inFlight }()
		pp.p.await(ctx, run)
	}()
	return nil
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
