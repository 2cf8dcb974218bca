package capture

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Newest reports the newest change of source Kafka holds: the one with the
// greatest epoch and action_id among the last messages of every partition
// (false when there is none).
type Newest func(ctx context.Context, source string) (event.Event, bool, error)

// Epoch is the source and the epoch capture publishes in.
type Epoch struct {
	Source string // the source's source_id
	Epoch  int64
}

// epochRow is the source's cdcflow.capture_epoch row.
type epochRow struct {
	source    string
	epoch     int64
	system    string
	timeline  int64
	published int64 // published_through
}

// establishEpoch returns the epoch to publish in, starting a new one when
// the source is not where the recorded epoch left it: the row is missing
// (a first start, or the cdcflow schema created again), the source is
// another cluster or on another timeline (restored or cloned), or Kafka
// holds changes of this epoch that the outbox's action_id has not reached
// (restored to an earlier state). A new epoch is greater than every epoch
// before it, so the destination orders its changes after theirs.
func establishEpoch(ctx context.Context, tx pgx.Tx, newest Newest, now time.Time, check epochCheck) (Epoch, string, error) {
	var cur epochRow
	err := tx.QueryRow(ctx, `SELECT source_id::text, epoch, system_identifier, timeline, published_through
		FROM cdcflow.capture_epoch FOR UPDATE`).Scan(&cur.source, &cur.epoch, &cur.system, &cur.timeline, &cur.published)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return Epoch{}, "", fmt.Errorf("read capture epoch: %w", err)
	}
	system, timeline, err := identity(ctx, tx)
	if err != nil {
		return Epoch{}, "", err
	}
	var k event.Event
	var inKafka, held bool
	if newest != nil && found {
		if k, inKafka, err = newest(ctx, cur.source); err != nil {
			return Epoch{}, "", fmt.Errorf("read the newest published change: %w", err)
		}
	}
	if inKafka && k.Epoch == cur.epoch && k.ActionID > cur.published {
		// Published, and the source may still hold it to publish again
		// (capture stopped between Kafka's ack and recording it), or
		// another change had that action_id (the source restored to before
		// it).
		if held, err = check.held(ctx, tx, k); err != nil {
			return Epoch{}, "", err
		}
	}

	var reason string
	switch {
	case check.fresh != "":
		reason = check.fresh
	case !found:
		reason = "no epoch recorded: capture starts on this source for the first time, or its cdcflow schema was created again"
	case cur.system != "" && system != "" && cur.system != system:
		reason = fmt.Sprintf("the source is another cluster (system identifier %s, was %s): restored or cloned", system, cur.system)
	case cur.timeline != 0 && timeline != 0 && cur.timeline != timeline:
		reason = fmt.Sprintf("the source is on timeline %d, was %d: restored to a point in time or promoted", timeline, cur.timeline)
	case inKafka && k.Epoch > cur.epoch:
		reason = fmt.Sprintf("Kafka holds changes of epoch %d, newer than the source's %d: the source was restored to an earlier state", k.Epoch, cur.epoch)
	case inKafka && k.Epoch == cur.epoch && k.ActionID > cur.published && !held:
		reason = fmt.Sprintf("Kafka holds action_id %d of this epoch, which the source neither published (through %d) nor holds: the source was restored to an earlier state",
			k.ActionID, cur.published)
	default:
		if system != cur.system || timeline != cur.timeline {
			if _, err := tx.Exec(ctx, `UPDATE cdcflow.capture_epoch SET system_identifier = $1, timeline = $2`, system, timeline); err != nil {
				return Epoch{}, "", fmt.Errorf("record the source's identity: %w", err)
			}
		}
		return Epoch{Source: cur.source, Epoch: cur.epoch}, "", nil
	}
	e := Epoch{Epoch: max(now.UnixMicro(), cur.epoch+1, k.Epoch+1)}
	err = tx.QueryRow(ctx, `INSERT INTO cdcflow.capture_epoch (epoch, system_identifier, timeline, reason) VALUES ($1, $2, $3, $4)
		ON CONFLICT (only_row) DO UPDATE SET epoch = EXCLUDED.epoch, system_identifier = EXCLUDED.system_identifier,
			timeline = EXCLUDED.timeline, began_at = now(), reason = EXCLUDED.reason, published_through = 0
		RETURNING source_id::text`, e.Epoch, system, timeline, reason).Scan(&e.Source)
	if err != nil {
		return Epoch{}, "", fmt.Errorf("record a new capture epoch: %w", err)
	}
	return e, reason, nil
}

// epochCheck is what a mode of capture adds to establishEpoch.
type epochCheck struct {
	// held reports whether the source holds k, a change Kafka has beyond
	// what the source recorded as published, to publish it again.
	held func(ctx context.Context, tx pgx.Tx, k event.Event) (bool, error)
	// fresh, when set, is why the epoch must start over whatever else
	// holds (a replication slot created anew).
	fresh string
}

// outboxHolds reports whether the outbox still holds k: a manifest or a
// too-large mark carries no row image, and is matched by its key.
func outboxHolds(ctx context.Context, tx pgx.Tx, k event.Event) (bool, error) {
	whole := k.Chunks == nil && k.TooLarge == nil
	var held bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM cdcflow.outbox WHERE action_id = $1 AND table_name = $2
		AND op = $3 AND key = $4::jsonb AND (NOT $6 OR after IS NOT DISTINCT FROM $5::jsonb))`,
		k.ActionID, k.Table, string(k.Op), string(k.Key), nullable(k.After), whole).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("look for the newest published change in the outbox: %w", err)
	}
	return held, nil
}

// identity reads the source cluster's system identifier and timeline; both
// are left empty when the role may not call pg_control_system and
// pg_control_checkpoint, and the epoch then rests on the Kafka check alone.
func identity(ctx context.Context, tx pgx.Tx) (string, int64, error) {
	var system string
	var timeline int64
	_, err := tx.Exec(ctx, `SAVEPOINT identity`)
	if err == nil {
		err = tx.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()),
			(SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&system, &timeline)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT identity`); err != nil {
			return "", 0, fmt.Errorf("read the source's identity: %w", err)
		}
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("read the source's identity: %w", err)
	}
	return system, timeline, nil
}

// NewestOf returns the encoded event of source with the greatest epoch and
// action_id; values that are not events (chunks of large ones, other
// producers' messages) and events of other sources are skipped.
func NewestOf(values [][]byte, source string) (event.Event, bool) {
	var newest event.Event
	found := false
	for _, v := range values {
		ev, err := event.Decode(v)
		if err != nil || ev.Source != source {
			continue
		}
		if !found || ev.Epoch > newest.Epoch || (ev.Epoch == newest.Epoch && ev.ActionID > newest.ActionID) {
			newest, found = ev, true
		}
	}
	return newest, found
}

func nullable(raw []byte) any {
	if raw == nil {
		return nil
	}
	return string(raw)
}
