// Package capture publishes the source's outbox to Kafka: it reads committed
// outbox rows in action_id order, publishes them as change events with acks
// from all replicas, and deletes them only after Kafka acknowledged them.
//
// Deleting what was published, instead of remembering the highest action_id
// seen, is what makes out-of-order commits safe: a transaction that took
// action_id 10 and commits after 11 was published leaves its row in the
// outbox, and the next read finds it. A crash between Kafka's ack and the
// delete publishes the rows again; the idempotent apply absorbs that.
package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/tracing"
)

// Config is what capture needs.
type Config struct {
	Tables       []string      // tables to install the capture trigger on
	BatchSize    int           // outbox rows read and published at once, at most
	PollInterval time.Duration // pause when the outbox is drained
	ReportEvery  time.Duration // how often progress and backlog are logged
	PublishGrace time.Duration // how long one Kafka write may take (and may finish after stop)
	// MaxChangeBytes bounds a row image: its JSON, with bytea values
	// counted by their bytes (they travel as hex, twice as long). A change
	// whose after image is larger is not published: capture publishes a
	// mark that it is too large and moves its outbox row to
	// cdcflow.oversized_changes. A before image alone above it is left out
	// of the event (the apply needs only the key and the after image).
	MaxChangeBytes int
	// ReadBytes bounds the row images one step holds in memory (0:
	// DefaultReadBytes): a step stops reading at the row that passes it (it
	// reads one row at least), and the next reads fewer rows, until steps
	// fit again.
	ReadBytes int
	// Newest reads the newest change in Kafka, to tell a source restored to
	// an earlier state (see establishEpoch); nil skips that check.
	Newest Newest
	// NoSnapshot, for log-based capture, asks for no snapshot of the rows
	// tables hold when their capture begins (see Logical): for a
	// destination loaded otherwise.
	NoSnapshot bool
	// Metrics counts what is published and records the backlog at each
	// report; nil records nothing.
	Metrics *metrics.Capture
	// Health is told how reading the source (metrics.DepSource) and
	// publishing to Kafka (metrics.DepKafka) went; nil: not.
	Health *metrics.Health
}

// Publisher is the part of a Kafka writer capture uses.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Capture moves outbox rows to Kafka.
type Capture struct {
	cfg       Config
	pool      *pgxpool.Pool
	pub       Publisher
	log       *slog.Logger
	readSQL   string
	limit     int  // outbox rows the next step reads, at most
	more      bool // the last step left rows it could have read
	published int64
	parked    int64
	epoch     Epoch // zero until established by the first Step
}

// New installs the capture trigger on every configured table and returns a
// Capture ready to Run. The source must have the source migrations applied.
func New(ctx context.Context, pool *pgxpool.Pool, pub Publisher, cfg Config, log *slog.Logger) (*Capture, error) {
	for _, t := range cfg.Tables {
		norm, err := event.NormalizeTable(t)
		if err != nil {
			return nil, fmt.Errorf("table allowlist: %w", err)
		}
		schema, rel, _ := strings.Cut(norm, ".")
		if _, err := pool.Exec(ctx, `SELECT cdcflow.capture_table($1::regclass)`, pgx.Identifier{schema, rel}.Sanitize()); err != nil {
			return nil, fmt.Errorf("install capture trigger on %s: %w", norm, err)
		}
	}
	return newOutbox(ctx, pool, pub, cfg, log)
}

// newOutbox returns a Capture of the outbox, installing no trigger.
func newOutbox(ctx context.Context, pool *pgxpool.Pool, pub Publisher, cfg Config, log *slog.Logger) (*Capture, error) {
	if cfg.MaxChangeBytes <= 0 {
		cfg.MaxChangeBytes = DefaultMaxChangeBytes
	}
	if cfg.ReadBytes <= 0 {
		cfg.ReadBytes = DefaultReadBytes
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	// With track_commit_timestamp on, events carry the true commit time;
	// otherwise the time the change was made.
	var track string
	if err := pool.QueryRow(ctx, `SELECT current_setting('track_commit_timestamp')`).Scan(&track); err != nil {
		return nil, fmt.Errorf("read track_commit_timestamp: %w", err)
	}
	commitTime := "changed_at"
	if track == "on" {
		commitTime = "coalesce(pg_xact_commit_timestamp(xmin), changed_at)"
	}
	c := &Capture{cfg: cfg, pool: pool, pub: pub, log: log, limit: cfg.BatchSize}
	c.readSQL = `SELECT action_id, table_name, op, key::text, before::text, after::text, ` + commitTime + `
		FROM cdcflow.outbox ORDER BY action_id LIMIT $1`
	return c, nil
}

// Defaults of Config.MaxChangeBytes and Config.ReadBytes.
const (
	DefaultMaxChangeBytes = 8 << 20
	DefaultReadBytes      = 64 << 20
)

// Run publishes until ctx is cancelled. A failed step (database or Kafka
// unavailable) is retried with capped backoff; nothing is deleted from the
// outbox unless Kafka acknowledged it.
func (c *Capture) Run(ctx context.Context) error {
	report := time.NewTicker(c.cfg.ReportEvery)
	defer report.Stop()
	backoff := 100 * time.Millisecond
	for {
		_, err := c.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := time.Duration(0)
		switch {
		case err != nil:
			c.log.Warn("capture step failed, retrying", "error", err, "backoff", backoff)
			// The source may have been restored while it was away: the next
			// step establishes the epoch again.
			c.epoch = Epoch{}
			wait, backoff = backoff, min(2*backoff, 10*time.Second)
		case !c.more:
			wait, backoff = c.cfg.PollInterval, 100*time.Millisecond
		default:
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-report.C:
			c.report(ctx)
		case <-time.After(wait):
		}
	}
}

// Step publishes one batch of outbox rows and returns how many it published
// (a change parked as too large counts: its mark was published).
//
// An event larger than event.ChunkBytes goes as chunk messages and a
// manifest (kafkax.Messages). The chunks are written, and acknowledged,
// before the manifest is sent, so that a manifest in the topic always
// follows a complete run of its chunks; a failed write leaves at most an
// incomplete run, which the next attempt writes again from chunk 0.
//
// The first Step establishes the epoch the events carry.
func (c *Capture) Step(ctx context.Context) (int, error) {
	if c.epoch.Epoch == 0 {
		if err := c.establishEpoch(ctx); err != nil {
			return 0, err
		}
	}
	events, err := c.read(ctx)
	if err != nil {
		return 0, err
	}
	if len(events) == 0 {
		return 0, nil
	}
	writes, ids, parked, err := c.prepare(ctx, events)
	if err != nil {
		return 0, err
	}
	for _, w := range writes {
		if err := c.publish(ctx, w); err != nil {
			return 0, fmt.Errorf("publish %d messages of %d events from action_id %d: %w", len(w), len(ids), ids[0], err)
		}
	}
	// What Kafka has is deleted from the outbox even when capture is being
	// stopped, and the changes too large move to oversized_changes with it.
	// The delete records how far the epoch is published, so that a source
	// restored to an earlier state can be told from one stopped between
	// Kafka's ack and this delete (see establishEpoch).
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PublishGrace)
	defer cancel()
	if len(parked.ids) == 0 {
		_, err = c.pool.Exec(dctx, `WITH gone AS (DELETE FROM cdcflow.outbox WHERE action_id = ANY($1))
			UPDATE cdcflow.capture_epoch SET published_through = greatest(published_through, $2)`, ids, slices.Max(ids))
	} else {
		_, err = c.pool.Exec(dctx, moveSQL, ids, parked.ids, parked.committed, parked.sizes, c.cfg.MaxChangeBytes, slices.Max(ids))
	}
	if err != nil {
		// Published but not deleted: they will be published again.
		return 0, fmt.Errorf("delete %d published outbox rows: %w", len(ids), err)
	}
	for _, ev := range parked.events {
		c.log.Warn("change too large: published its mark, kept the change in cdcflow.oversized_changes", "action_id", ev.ActionID,
			"table", ev.Table, "op", ev.Op, "key", string(ev.Key), "bytes", ev.TooLarge.Bytes, "limit", ev.TooLarge.Limit)
	}
	c.published += int64(len(ids))
	c.parked += int64(len(parked.ids))
	c.count(ctx, events)
	return len(ids), nil
}

// prepare turns events into the writes that publish them, in order, each
// to be acknowledged before the next is sent (a large change's chunks go in
// an earlier write than its manifest), with their action_ids and the
// changes too large to publish, whose marks the writes carry.
func (c *Capture) prepare(ctx context.Context, events []event.Event) ([][]kafka.Message, []int64, oversized, error) {
	var (
		writes [][]kafka.Message
		msgs   []kafka.Message
		ids    []int64
		parked oversized
	)
	for _, orig := range events {
		ev, size, err := c.fit(ctx, orig)
		if err != nil {
			return nil, nil, parked, err
		}
		if ev.TooLarge != nil {
			parked.add(ev, orig, size)
		}
		value, err := event.Encode(ev)
		if err != nil {
			return nil, nil, parked, fmt.Errorf("encode action_id %d: %w", ev.ActionID, err)
		}
		chunks, last, err := kafkax.Messages(ev, value)
		if err != nil {
			return nil, nil, parked, err
		}
		if len(chunks) > 0 {
			writes = append(writes, append(msgs, chunks...))
			msgs = nil
		}
		if tracing.Enabled() {
			traceChange(ctx, ev, &last)
		}
		msgs = append(msgs, last)
		ids = append(ids, ev.ActionID)
	}
	return append(writes, msgs), ids, parked, nil
}

// traceChange starts the change's trace: a span from its source commit to
// its publishing, whose context the message carries on.
func traceChange(ctx context.Context, ev event.Event, m *kafka.Message) {
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		tracing.AttrTable.String(ev.Table), tracing.AttrOp.String(string(ev.Op)),
		tracing.AttrEpoch.Int64(ev.Epoch), tracing.AttrActionID.Int64(ev.ActionID))}
	if !ev.CommitTime.IsZero() {
		opts = append(opts, trace.WithTimestamp(ev.CommitTime))
	}
	sctx, span := tracing.Tracer().Start(ctx, "capture "+ev.Table, opts...)
	tracing.Inject(sctx, m)
	span.End()
}

// moveSQL deletes published outbox rows and keeps those of changes too
// large in oversized_changes, in one statement.
const moveSQL = `WITH gone AS (
	DELETE FROM cdcflow.outbox WHERE action_id = ANY($1) RETURNING *
), published AS (
	UPDATE cdcflow.capture_epoch SET published_through = greatest(published_through, $6)
)
INSERT INTO cdcflow.oversized_changes (action_id, table_name, op, key, before, after, changed_at, committed_at, size_bytes, limit_bytes)
SELECT g.action_id, g.table_name, g.op, g.key, g.before, g.after, g.changed_at, p.committed_at, p.size_bytes, $5
FROM gone g JOIN unnest($2::bigint[], $3::timestamptz[], $4::bigint[]) AS p(action_id, committed_at, size_bytes) USING (action_id)
ON CONFLICT (action_id) DO NOTHING`

// oversized collects the changes of a step that are too large: their
// marks, and the changes as read.
type oversized struct {
	events    []event.Event
	originals []event.Event
	ids       []int64
	committed []time.Time
	sizes     []int64
}

func (o *oversized) add(ev, orig event.Event, size int) {
	o.events = append(o.events, ev)
	o.originals = append(o.originals, orig)
	o.ids = append(o.ids, ev.ActionID)
	o.committed = append(o.committed, ev.CommitTime)
	o.sizes = append(o.sizes, int64(size))
}

// publish writes msgs and waits for Kafka's acknowledgement. A write under
// way finishes even when capture is being stopped, so that what Kafka has is
// also deleted from the outbox.
func (c *Capture) publish(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PublishGrace)
	defer cancel()
	err := c.pub.WriteMessages(pctx, msgs...)
	c.cfg.Health.Set(metrics.DepKafka, err)
	if err != nil {
		c.cfg.Metrics.PublishError(ctx)
		return &publishError{err}
	}
	return nil
}

// publishError is a Kafka write that failed: Kafka's failure, not the
// source's.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// count counts the published events by table, one Add per run of a table.
func (c *Capture) count(ctx context.Context, events []event.Event) {
	if c.cfg.Metrics == nil {
		return
	}
	for i := 0; i < len(events); {
		j := i + 1
		for j < len(events) && events[j].Table == events[i].Table {
			j++
		}
		c.cfg.Metrics.Published(ctx, events[i].Table, j-i)
		i = j
	}
}

// read reads the next outbox rows, at most c.limit and about ReadBytes of
// row images, and adapts the limit of the next read.
func (c *Capture) read(ctx context.Context) ([]event.Event, error) {
	events, err := c.readOutbox(ctx)
	if ctx.Err() == nil {
		c.cfg.Health.Set(metrics.DepSource, err)
	}
	return events, err
}

func (c *Capture) readOutbox(ctx context.Context) ([]event.Event, error) {
	rows, err := c.pool.Query(ctx, c.readSQL, c.limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var (
		events []event.Event
		bytes  int
		ev     event.Event
		op     string
		key    []byte
		bef    []byte
		aft    []byte
	)
	budget := false
	for rows.Next() {
		if bytes >= c.cfg.ReadBytes {
			budget = true
			break
		}
		if err := rows.Scan(&ev.ActionID, &ev.Table, &op, &key, &bef, &aft, &ev.CommitTime); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		ev.Op, ev.Key, ev.Before, ev.After = event.Op(op), key, bef, aft // NULL stays nil
		ev.Source, ev.Epoch, ev.SchemaVersion = c.epoch.Source, c.epoch.Epoch, event.CurrentSchemaVersion
		events = append(events, ev)
		bytes += len(bef) + len(aft)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	switch {
	case budget:
		// Large rows: read as many as fitted next time, then more again.
		c.limit, c.more = max(len(events), 1), true
	default:
		c.more = len(events) == c.limit
		c.limit = min(2*c.limit, c.cfg.BatchSize)
	}
	return events, nil
}

// fit applies MaxChangeBytes to the row images of ev. It returns ev, with
// its before image left out when that alone is too large, or the mark that
// replaces a change whose after image is too large, with that image's size.
func (c *Capture) fit(ctx context.Context, ev event.Event) (event.Event, int, error) {
	limit := c.cfg.MaxChangeBytes
	// An image's JSON is never smaller than its size as counted, so most
	// images pass without being looked at.
	if len(ev.After) > limit {
		size, err := c.imageSize(ctx, ev.Table, ev.After)
		if err != nil {
			return ev, 0, err
		}
		if size > limit {
			mark := ev
			mark.Before, mark.After = nil, nil
			mark.TooLarge = &event.TooLarge{Bytes: int64(size), Limit: int64(limit)}
			return mark, size, nil
		}
	}
	if len(ev.Before) > limit {
		size, err := c.imageSize(ctx, ev.Table, ev.Before)
		if err != nil {
			return ev, 0, err
		}
		if size > limit {
			ev.Before = nil
		}
	}
	return ev, 0, nil
}

// imageSize is the size of a row image as MaxChangeBytes counts it: its
// JSON, less half of the hex of its bytea values (to_jsonb writes a bytea of
// n bytes as the string "\\x" followed by 2n hex digits).
func (c *Capture) imageSize(ctx context.Context, table string, image json.RawMessage) (int, error) {
	schema, rel, _ := strings.Cut(table, ".")
	rows, err := c.pool.Query(ctx, `SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
		  AND 'bytea'::regtype IN (t.oid, t.typbasetype)`, pgx.Identifier{schema, rel}.Sanitize())
	if err != nil {
		return 0, fmt.Errorf("read the bytea columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("read the bytea columns of %s: %w", table, err)
	}
	size := len(image)
	if len(cols) == 0 {
		return size, nil
	}
	var values map[string]json.RawMessage
	if err := json.Unmarshal(image, &values); err != nil {
		return 0, fmt.Errorf("row image of %s: %w", table, err)
	}
	for _, col := range cols {
		var s string
		if json.Unmarshal(values[col], &s) == nil && strings.HasPrefix(s, `\x`) {
			size -= len(values[col]) - (len(s)-2)/2
		}
	}
	return size, nil
}

// Backlog returns the number of unpublished changes and the age of the oldest.
func (c *Capture) Backlog(ctx context.Context) (int64, time.Duration, error) {
	var n int64
	var age *time.Duration
	err := c.pool.QueryRow(ctx, `SELECT count(*), clock_timestamp() - min(changed_at) FROM cdcflow.outbox`).Scan(&n, &age)
	if err != nil || age == nil {
		return n, 0, err
	}
	return n, *age, nil
}

func (c *Capture) report(ctx context.Context) {
	n, age, err := c.Backlog(ctx)
	if err != nil {
		c.log.Warn("read outbox backlog", "error", err)
		return
	}
	c.cfg.Metrics.Outbox(ctx, n, age)
	c.log.Info("capture progress", "published", c.published, "parked", c.parked, "backlog", n, "oldest", age.Round(time.Millisecond))
}

// Published returns how many events this Capture published.
func (c *Capture) Published() int64 { return c.published }

func (c *Capture) establishEpoch(ctx context.Context) error {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("establish the capture epoch: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	check := epochCheck{held: outboxHolds}
	var slot string
	err = tx.QueryRow(ctx, `SELECT wal_slot FROM cdcflow.capture_epoch`).Scan(&slot)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read the capture mode: %w", err)
	}
	if slot != "" {
		// The outbox's action_ids know nothing of those log capture gave.
		check.fresh = fmt.Sprintf("capture switched from the log (slot %s) to the trigger", slot)
	}
	epoch, reason, err := establishEpoch(ctx, tx, c.cfg.Newest, time.Now(), check)
	if err != nil {
		return err
	}
	if slot != "" {
		if _, err := tx.Exec(ctx, `UPDATE cdcflow.capture_epoch SET wal_slot = ''`); err != nil {
			return fmt.Errorf("record the capture mode: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("establish the capture epoch: %w", err)
	}
	if reason != "" {
		c.log.Warn("capture starts a new epoch", "source", epoch.Source, "epoch", epoch.Epoch, "reason", reason)
	} else {
		c.log.Info("capture goes on in its epoch", "source", epoch.Source, "epoch", epoch.Epoch)
	}
	c.epoch = epoch
	return nil
}

// Epoch returns the source and epoch of the events capture publishes (zero
// before the first Step).
func (c *Capture) Epoch() Epoch { return c.epoch }
