// Package poller is the starter's engine: a thin Kafka consumer that cuts
// per-partition batches and starts one ApplyBatch workflow per batch. It
// commits a batch's offsets only after Temporal accepted the workflow start,
// and does no database work.
package poller

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/tracing"
)

// Config is what the poller needs; internal/config fills it from the
// environment.
type Config struct {
	kafkax.Conn
	GroupID   string
	TaskQueue string
	Namespace string // where the poller looks up the batch search attributes

	MaxEvents   int           // cut a batch at this many messages
	MaxBytes    int           // or before it exceeds this many bytes of message values
	MaxWait     time.Duration // or this long after its first message arrived
	MaxInFlight int           // running workflows per partition before fetching pauses
	// IdleWait, when positive, cuts a batch sooner: this long after its
	// first message arrived if no workflow of the partition is running,
	// else as soon as none is. A quiet pipeline applies a change about as
	// soon as it comes, and a busy one gathers the changes that arrive while
	// a batch is applied into the next, so batches grow with the load.
	IdleWait time.Duration

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
	OrphanChunks   atomic.Int64 // chunk messages of runs capture abandoned, skipped
}

// Poller consumes one topic in a consumer group.
type Poller struct {
	cfg      Config
	search   atomic.Pointer[searchable] // set by Run before any partition is read
	temporal client.Client
	log      *slog.Logger
	Stats    Stats
	// Metrics records what Stats counts, and the start latency; nil
	// records nothing. Set it before Run.
	Metrics *metrics.Starter
	// Health is told how joining the consumer group and starting
	// workflows went (metrics.DepKafka, metrics.DepTemporal); nil: not.
	Health *metrics.Health

	kafka *kafkax.Cluster // set by Run: the brokers, with TLS and SASL as configured

	mu         sync.Mutex
	partitions map[int]*partitionPoller // the partitions read now
}

// New returns a poller; Run starts it.
func New(cfg Config, tc client.Client, log *slog.Logger) *Poller {
	if cfg.StartGrace == 0 {
		cfg.StartGrace = 10 * time.Second
	}
	return &Poller{cfg: cfg, temporal: tc, log: log, partitions: map[int]*partitionPoller{}}
}

// lagTimeout bounds the reading of the partitions' high watermarks when
// the consumer lag is collected.
const lagTimeout = 2 * time.Second

// Partitions reports, for each partition this poller reads, its consumer
// lag and its batch workflows running (see metrics.Partitions). The lag is
// read from the brokers (one request a partition); where that fails, it is
// the lag when the last message was read.
func (p *Poller) Partitions(ctx context.Context, report func(partition int, lag, inFlight int64)) {
	p.mu.Lock()
	parts := make([]*partitionPoller, 0, len(p.partitions))
	for _, pp := range p.partitions {
		parts = append(parts, pp)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, lagTimeout)
	defer cancel()
	for _, pp := range parts {
		lag, err := pp.reader.ReadLag(ctx)
		if err != nil {
			lag = max(0, pp.reader.Lag())
		}
		report(pp.partition, lag, int64(len(pp.inFlight)))
	}
}

// reading adds pp to the partitions read now, or with done false removes it.
func (p *Poller) reading(pp *partitionPoller, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !done:
		p.partitions[pp.partition] = pp
	case p.partitions[pp.partition] == pp:
		delete(p.partitions, pp.partition)
	}
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
// The brokers are reached with the TLS and SASL settings of Config.Conn.
func (p *Poller) Run(ctx context.Context) error {
	kc, err := p.cfg.Conn.Cluster()
	if err != nil {
		return err
	}
	p.kafka = kc
	search := p.batchSearchAttributes(ctx)
	p.search.Store(&search)
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:               p.cfg.GroupID,
		Brokers:          p.cfg.Brokers,
		Dialer:           kc.Dialer,
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
			p.Health.Set(metrics.DepKafka, fmt.Errorf("join consumer group %s: %w", p.cfg.GroupID, err))
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
		p.Health.Set(metrics.DepKafka, nil)
		assigned := gen.Assignments[p.cfg.Topic]
		parts := make([]int, len(assigned))
		for i, a := range assigned {
			parts[i] = a.ID
		}
		p.log.Info("partitions assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", parts)
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
	reader    *kafka.Reader

	pending  []entry     // read and not yet in a started batch, in offset order
	events   int         // events and poison in pending: chunks are not events
	bytes    int         // their bytes
	whole    int64       // the full size of the large changes among them
	deadline time.Time   // when the pending batch is cut
	first    time.Time   // when its first message arrived
	runs     kafkax.Runs // the chunk runs read, and which are open
}

// entry is a message read from the partition: an event, poison, or a chunk
// of a large event (whose bytes the poller does not keep).
type entry struct {
	offset  int64
	value   []byte // an event as received
	change  change // what the Web UI is told of the event
	poison  *cdc.Poison
	chunk   bool
	claimed bool    // a chunk named by a manifest's claim
	claim   []int64 // a manifest's chunks
	whole   int64   // a manifest's full size, once reassembled
}

// MaxWholeBytes bounds the large changes of one batch by their full size:
// the apply reassembles each in memory, so a batch is cut before its large
// changes would pass this, even though their manifests are small. One
// larger change still makes a batch of its own. Tests lower it; it must not
// change while a poller runs.
var MaxWholeBytes int64 = 64 << 20

func (e entry) size() int {
	if e.poison != nil {
		return e.poison.Size
	}
	return len(e.value)
}

// abandonedRunAge is how much later than its latest chunk a message must
// have been written for an open run to count as abandoned. Capture writes a
// manifest within its publish timeout (10 s) after the run, or writes the
// change again; a run that outlives this has lost its capture (and its
// outbox row), and no longer holds the batches after it.
const abandonedRunAge = time.Minute

// fetchWait is the readers' MaxWait: room for a 16 MB fetch response.
const fetchWait = 5 * time.Second

// run reads the partition from offset until stop (the poller is stopped) or
// gen (the partition was revoked) ends.
func (pp *partitionPoller) run(stop, gen context.Context, offset int64) {
	ctx, cancel := context.WithCancel(gen)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()
	cfg := pp.p.cfg
	pp.inFlight = make(chan struct{}, cfg.MaxInFlight)
	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   cfg.Brokers,
		Dialer:    pp.p.kafka.Dialer,
		Topic:     cfg.Topic,
		Partition: pp.partition,
		MinBytes:  1,
		MaxBytes:  16 << 20,
		// The whole fetch response must arrive within MaxWait (kafka-go
		// sets it as the read deadline; the broker answers as soon as a
		// message is there, MinBytes). With 250 ms, a response of several
		// MB of a large change's chunks came too late under load, and was
		// fetched again, and again: the partition stood still.
		MaxWait:       fetchWait,
		QueueCapacity: cfg.MaxEvents,
		ErrorLogger:   pp.p.kafkaLogger(),
	})
	defer reader.Close()
	if err := reader.SetOffset(offset); err != nil {
		pp.p.log.Error("seek partition", "partition", pp.partition, "offset", offset, "error", err)
		return
	}
	pp.reader = reader
	pp.p.reading(pp, false)
	defer pp.p.reading(pp, true)
	for {
		fctx, fcancel := ctx, context.CancelFunc(func() {})
		if pp.events > 0 {
			wait := pp.deadline
			if cfg.IdleWait > 0 {
				// Cut when the idle wait ends, or look again soon whether
				// the partition's workflows ended.
				soon := pp.first.Add(cfg.IdleWait)
				if len(pp.inFlight) > 0 {
					soon = time.Now().Add(idlePoll)
				}
				if soon.Before(wait) {
					wait = soon
				}
			}
			fctx, fcancel = context.WithDeadline(ctx, wait)
		}
		m, err := reader.FetchMessage(fctx)
		fcancel()
		switch {
		case ctx.Err() != nil:
			return // the batch being filled was never started: abandon it
		case errors.Is(err, context.DeadlineExceeded):
			if pp.due() {
				pp.flush(ctx)
			}
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
		pp.add(ctx, m)
		if pp.events > 0 && pp.due() {
			pp.flush(ctx)
		}
	}
}

// idlePoll is how often a partition with a pending batch and running
// workflows looks whether they ended (with IdleWait).
const idlePoll = 5 * time.Millisecond

// due reports whether the pending batch is to be cut now: at its deadline,
// or with IdleWait once it waited that long and no workflow of the
// partition is running.
func (pp *partitionPoller) due() bool {
	now := time.Now()
	if !now.Before(pp.deadline) {
		return true
	}
	wait := pp.p.cfg.IdleWait
	return wait > 0 && len(pp.inFlight) == 0 && !now.Before(pp.first.Add(wait))
}

// add takes one message into the pending batch, cutting batches when it
// reaches its limits. A chunk message adds only its offset. A manifest
// gets the offsets of its chunks (the last complete run of them read
// before it), or becomes poison when there is none.
func (pp *partitionPoller) add(ctx context.Context, m kafka.Message) {
	cfg := pp.p.cfg
	e, ev, chunk := pp.p.sort(pp.partition, m)
	large := !e.chunk && e.poison == nil && pp.runs.Claimable(ev)
	if !e.chunk && pp.events > 0 && (pp.bytes+e.size() > cfg.MaxBytes || (large && pp.whole+ev.Chunks.Bytes > MaxWholeBytes)) {
		pp.flush(ctx)
	}
	pp.runs.Abandon(m.Time, abandonedRunAge)
	switch {
	case e.chunk:
		pp.runs.Add(chunk, m.Offset, m.Time)
	case e.poison != nil:
	case ev.Chunks != nil:
		claim, ok := pp.runs.Claim(ev)
		if !ok {
			e = pp.p.poison(pp.partition, m, fmt.Errorf("manifest of action_id %d: its %d chunks (sha256 %s) are not in the batch: "+
				"no complete run of them was read before offset %d", ev.ActionID, ev.Chunks.Count, ev.Chunks.SHA256, m.Offset))
			break
		}
		e.claim, e.whole = claim, ev.Chunks.Bytes
		pp.markClaimed(claim)
	default:
		pp.runs.Close(ev.ActionID) // published again whole: its chunks read so far are orphans
	}
	pp.pending = append(pp.pending, e)
	if e.chunk {
		return
	}
	if pp.events == 0 {
		pp.first = time.Now()
		pp.deadline = pp.first.Add(cfg.MaxWait)
	}
	pp.events++
	pp.bytes += e.size()
	pp.whole += e.whole
	if pp.events >= cfg.MaxEvents {
		pp.flush(ctx)
	}
}

// markClaimed marks the pending chunks at offsets (ascending) as claimed.
func (pp *partitionPoller) markClaimed(offsets []int64) {
	i := 0
	for j := range pp.pending {
		if i == len(offsets) {
			return
		}
		if pp.pending[j].offset == offsets[i] {
			pp.pending[j].claimed = true
			i++
		}
	}
}

// flush starts workflows for the pending messages that may be cut, and
// commits their offsets. Nothing at or after the first chunk of an open run
// is cut: the run carries over with what follows it to the next batch, so
// that it travels with its manifest, and the committed offset stays before
// it, so that a starter reading from there reads the run again.
func (pp *partitionPoller) flush(ctx context.Context) {
	for {
		n := pp.cut()
		if n == 0 {
			break
		}
		batch := pp.pending[:n]
		commit := pp.commitOffset(n)
		pp.pending = append([]entry(nil), pp.pending[n:]...)
		for _, e := range batch {
			if !e.chunk {
				pp.events--
				pp.bytes -= e.size()
				pp.whole -= e.whole
			}
		}
		if !pp.start(ctx, batch, commit) {
			return // stopped
		}
	}
	if pp.events > 0 {
		pp.first = time.Now()
		pp.deadline = pp.first.Add(pp.p.cfg.MaxWait)
	}
}

// cut returns how many pending messages the next batch takes: as many as
// fit its limits, none at or after the first chunk of an open run.
func (pp *partitionPoller) cut() int {
	cfg := pp.p.cfg
	hold, held := pp.runs.Hold()
	n, events, bytes := 0, 0, 0
	for i, e := range pp.pending {
		if held && e.offset >= hold {
			break
		}
		if !e.chunk {
			if events > 0 && (events >= cfg.MaxEvents || bytes+e.size() > cfg.MaxBytes) {
				break
			}
			events++
			bytes += e.size()
		}
		n = i + 1
	}
	return n
}

// commitOffset is the offset to commit once the first n pending messages
// are in a started batch: the next one, or the first chunk of a manifest
// left for a later batch if that comes before (only when events lie between
// a run and its manifest), so that a starter reading from the committed
// offset finds every manifest's chunks.
func (pp *partitionPoller) commitOffset(n int) int64 {
	next := pp.pending[n-1].offset + 1
	for _, e := range pp.pending[n:] {
		if len(e.claim) > 0 && e.claim[0] < next {
			next = e.claim[0]
		}
	}
	return next
}

// start starts the workflow for one batch and commits commit. It reports
// false when the poller was stopped before the start was accepted.
func (pp *partitionPoller) start(ctx context.Context, batch []entry, commit int64) bool {
	orphans := 0
	for _, e := range batch {
		if e.chunk && !e.claimed {
			orphans++
		}
	}
	if orphans > 0 {
		pp.p.log.Info("skipped chunks of abandoned runs", "partition", pp.partition,
			"first_offset", batch[0].offset, "last_offset", batch[len(batch)-1].offset, "chunks", orphans)
	}
	in, events := pp.p.batchInput(pp.partition, batch)
	if in.EventCount == 0 && len(in.Poison) == 0 {
		// Chunks only (of abandoned runs, or of a manifest in a later
		// batch): no workflow to start, only offsets to commit.
		pp.p.Stats.Messages.Add(int64(len(batch)))
		pp.p.Stats.OrphanChunks.Add(int64(orphans))
		pp.p.Metrics.Skipped(ctx, len(batch))
		pp.commit(in, commit)
		return true
	}

	// Backpressure: wait for a running workflow of this partition to finish.
	select {
	case pp.inFlight <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	id := cdc.BatchWorkflowID(in.Topic, in.Partition, in.FirstOffset, in.LastOffset, digest(batch))

	// A start under way finishes even if the poller is being stopped, so that
	// what was started gets committed: its context ends StartGrace after ctx.
	sctx, cancel := graceContext(ctx, pp.p.cfg.StartGrace)
	defer cancel()
	began := time.Now()
	tctx, traced := traceBatch(sctx, id, in, batch)
	run, err := pp.p.start(tctx, id, in, events, pp.p.describeBatch(pp.partition, batch))
	traced()
	if err != nil {
		<-pp.inFlight // stopped before the start was accepted: nothing to commit
		return false
	}
	pp.p.Metrics.Started(sctx, run == nil, len(batch), len(in.Poison), time.Since(began))
	pp.p.Stats.Messages.Add(int64(len(batch)))
	if run == nil {
		pp.p.Stats.Redelivered.Add(int64(len(batch)))
	}
	pp.p.Stats.Poison.Add(int64(len(in.Poison)))
	pp.p.Stats.OrphanChunks.Add(int64(orphans))
	pp.commit(in, commit)
	if run == nil {
		<-pp.inFlight
		return true
	}
	go func() {
		defer func() { <-pp.inFlight }()
		pp.p.await(ctx, run)
	}()
	return true
}

// commit commits offset next of the partition.
func (pp *partitionPoller) commit(in cdc.BatchInput, next int64) {
	if err := pp.gen.CommitOffsets(map[string]map[int]int64{pp.p.cfg.Topic: {pp.partition: next}}); err != nil {
		// The workflow runs regardless; the batch will be read again by
		// whoever owns the partition next and its start deduplicated by ID.
		pp.p.log.Warn("commit offsets failed", "partition", pp.partition, "offset", next-1, "batch_last_offset", in.LastOffset, "error", err)
	}
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
func (p *Poller) start(ctx context.Context, id string, in cdc.BatchInput, events event.Batch, d description) (client.WorkflowRun, error) {
	opts := client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                p.cfg.TaskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
		WorkflowIDConflictPolicy:                 enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}
	p.search.Load().startOptions(&opts, &in, d)
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, startAttemptTimeout)
		run, err := p.temporal.ExecuteWorkflow(actx, opts, cdc.WorkflowApplyBatch, in, events)
		cancel()
		var invalid *serviceerror.InvalidArgument
		if errors.As(err, &invalid) && opts.TypedSearchAttributes.Size() > 0 && strings.Contains(invalid.Message, "search attribute") {
			// Start without them rather than not at all. An attribute the
			// server no longer has is left off every batch from now on;
			// a value it refuses (too large), off this batch.
			p.log.Warn("the server refused a batch's search attributes: starting it without them", "workflow_id", id, "error", err)
			if !strings.Contains(invalid.Message, "size") {
				p.search.Store(&searchable{})
			}
			opts.TypedSearchAttributes, in.SetOutcome = temporal.SearchAttributes{}, false
			continue
		}
		var exists *serviceerror.WorkflowExecutionAlreadyStarted
		answered := err == nil || errors.As(err, &exists)
		if answered {
			p.Health.Set(metrics.DepTemporal, nil)
		} else if ctx.Err() == nil {
			p.Health.Set(metrics.DepTemporal, fmt.Errorf("start workflow: %w", err))
		}
		if err == nil {
			p.Stats.BatchesStarted.Add(1)
			return run, nil
		}
		if answered {
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

// sort tells what a message is: a chunk of a large event, an event (which it
// decodes, and returns), or poison.
func (p *Poller) sort(partition int, m kafka.Message) (entry, event.Event, kafkax.Chunk) {
	c, isChunk, err := kafkax.ChunkOf(m.Headers)
	if isChunk && err == nil {
		return entry{offset: m.Offset, chunk: true}, event.Event{}, c
	}
	if err == nil {
		var ev event.Event
		if ev, err = event.Decode(m.Value); err == nil {
			e := entry{offset: m.Offset, value: m.Value,
				change: change{table: ev.Table, op: ev.Op, committed: ev.CommitTime, large: ev.Chunks != nil}}
			if tracing.Enabled() {
				e.change.trace = tracing.Extract(m.Headers)
			}
			return e, ev, c
		}
	}
	return p.poison(partition, m, err), event.Event{}, c
}

// poison makes an entry of a message that is not a valid event, keeping a
// copy of up to PoisonValueLimit bytes of it.
func (p *Poller) poison(partition int, m kafka.Message, err error) entry {
	value := m.Value
	if value == nil {
		value = []byte{} // a null record value: kept as empty, never as a missing message
	}
	if len(value) > cdc.PoisonValueLimit {
		value = value[:cdc.PoisonValueLimit]
	}
	p.log.Warn("undecodable message", "topic", p.cfg.Topic, "partition", partition, "offset", m.Offset, "error", err)
	return entry{offset: m.Offset, poison: &cdc.Poison{Offset: m.Offset, Value: value, Size: len(m.Value),
		Truncated: len(value) < len(m.Value), Error: err.Error()}}
}

// batchInput makes the input of a batch's workflow: the events as they were
// received, their offsets and the claims of the manifests among them, and
// the poison. Chunk messages only widen the offset range.
func (p *Poller) batchInput(partition int, batch []entry) (cdc.BatchInput, event.Batch) {
	in := cdc.BatchInput{
		Topic:                 p.cfg.Topic,
		Partition:             partition,
		FirstOffset:           batch[0].offset,
		LastOffset:            batch[len(batch)-1].offset,
		MaxAttempts:           p.cfg.MaxAttempts,
		OrderingWindowSeconds: int(p.cfg.OrderingWindow / time.Second),
		Offsets:               make([]int64, 0, len(batch)),
	}
	good := make([][]byte, 0, len(batch))
	for _, e := range batch {
		switch {
		case e.chunk:
		case e.poison != nil:
			in.Poison = append(in.Poison, *e.poison)
		default:
			if e.claim != nil {
				in.Claims = append(in.Claims, cdc.Claim{Index: len(good), Offsets: e.claim})
			}
			good = append(good, e.value)
			in.Offsets = append(in.Offsets, e.offset)
		}
	}
	in.EventCount = len(good)
	return in, event.NewBatch(good)
}

// digest is the batch's cdc.BatchDigest: over each message's offset and the
// value kept of it (a chunk's is its offset alone).
func digest(batch []entry) string {
	values := make([][]byte, len(batch))
	for i, e := range batch {
		v := binary.BigEndian.AppendUint64(nil, uint64(e.offset))
		switch {
		case e.poison != nil:
			v = append(v, e.poison.Value...)
		default:
			v = append(v, e.value...)
		}
		values[i] = v
	}
	return cdc.BatchDigest(values)
}
