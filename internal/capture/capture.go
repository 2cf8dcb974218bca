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
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// Config is what capture needs.
type Config struct {
	Tables       []string      // tables to install the capture trigger on
	BatchSize    int           // outbox rows read and published at once
	PollInterval time.Duration // pause when the outbox is drained
	ReportEvery  time.Duration // how often progress and backlog are logged
	PublishGrace time.Duration // how long a publish under way may finish after stop
	// Newest reads the newest change in Kafka, to tell a source restored to
	// an earlier state (see establishEpoch); nil skips that check.
	Newest Newest
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
	published int64
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
	c := &Capture{cfg: cfg, pool: pool, pub: pub, log: log}
	c.readSQL = `SELECT action_id, table_name, op, key::text, before::text, after::text, ` + commitTime + `
		FROM cdcflow.outbox ORDER BY action_id LIMIT $1`
	return c, nil
}

// Run publishes until ctx is cancelled. A failed step (database or Kafka
// unavailable) is retried with capped backoff; nothing is deleted from the
// outbox unless Kafka acknowledged it.
func (c *Capture) Run(ctx context.Context) error {
	report := time.NewTicker(c.cfg.ReportEvery)
	defer report.Stop()
	backoff := 100 * time.Millisecond
	for {
		n, err := c.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := time.Duration(0)
		switch {
		case err != nil:
			c.log.Warn("capture step failed, retrying", "error", err, "backoff", backoff)
			wait, backoff = backoff, min(2*backoff, 10*time.Second)
		case n < c.cfg.BatchSize:
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

// Step publishes one batch of outbox rows and returns how many it published.
// The first Step establishes the epoch the events carry.
func (c *Capture) Step(ctx context.Context) (int, error) {
	if c.epoch.Epoch == 0 {
		if err := c.establishEpoch(ctx); err != nil {
			return 0, err
		}
	}
	rows, err := c.pool.Query(ctx, c.readSQL, c.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	var (
		msgs []kafka.Message
		ids  []int64
		ev   event.Event
		op   string
		key  string
		bef  *string
		aft  *string
	)
	_, err = pgx.ForEachRow(rows, []any{&ev.ActionID, &ev.Table, &op, &key, &bef, &aft, &ev.CommitTime}, func() error {
		ev.Op, ev.Key, ev.Before, ev.After = event.Op(op), json.RawMessage(key), raw(bef), raw(aft)
		ev.Source, ev.Epoch, ev.SchemaVersion = c.epoch.Source, c.epoch.Epoch, event.CurrentSchemaVersion
		value, err := event.Encode(ev)
		if err != nil {
			return fmt.Errorf("encode action_id %d: %w", ev.ActionID, err)
		}
		msgs = append(msgs, kafkax.Message(ev, value))
		ids = append(ids, ev.ActionID)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	// A publish under way finishes even when capture is being stopped, so
	// that what Kafka has is also deleted from the outbox.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.PublishGrace)
	defer cancel()
	if err := c.pub.WriteMessages(pctx, msgs...); err != nil {
		return 0, fmt.Errorf("publish %d events from action_id %d: %w", len(msgs), ids[0], err)
	}
	// The delete records how far the epoch is published, so that a source
	// restored to an earlier state can be told from one stopped between
	// Kafka's ack and this delete (see establishEpoch).
	if _, err := c.pool.Exec(pctx, `WITH published AS (DELETE FROM cdcflow.outbox WHERE action_id = ANY($1))
		UPDATE cdcflow.capture_epoch SET published_through = greatest(published_through, $2)`, ids, slices.Max(ids)); err != nil {
		// Published but not deleted: they will be published again.
		return 0, fmt.Errorf("delete %d published outbox rows: %w", len(ids), err)
	}
	c.published += int64(len(ids))
	return len(ids), nil
}

func (c *Capture) establishEpoch(ctx context.Context) error {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("establish the capture epoch: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	epoch, reason, err := establishEpoch(ctx, tx, c.cfg.Newest, time.Now())
	if err != nil {
		return err
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

func raw(s *string) json.RawMessage {
	if s == nil {
		return nil
	}
	return json.RawMessage(*s)
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
	c.log.Info("capture progress", "published", c.published, "backlog", n, "oldest", age.Round(time.Millisecond))
}

// Published returns how many events this Capture published.
func (c *Capture) Published() int64 { return c.published }
