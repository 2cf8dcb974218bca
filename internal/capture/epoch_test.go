package capture

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
	"github.com/segmentio/kafka-go"
)

// TestEpoch walks a source through what changes its epoch, and what does not.
func TestEpoch(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Migrated(t, "epoch", migrations.SourceFS(), nil)
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY); SELECT cdcflow.capture_table('t');
		INSERT INTO t SELECT generate_series(1, 10)`); err != nil {
		t.Fatal(err)
	}
	var kafka event.Event // the newest change Kafka holds
	var source string
	newest := func(_ context.Context, s string) (event.Event, bool, error) {
		if s != source {
			t.Errorf("asked Kafka about source %q, want %q", s, source)
		}
		return kafka, kafka.ActionID != 0, nil
	}
	published := func(epoch, actionID int64) event.Event {
		return event.Event{Source: source, Epoch: epoch, ActionID: actionID, Table: "public.t", Op: event.OpInsert,
			Key: []byte(fmt.Sprintf(`{"id": %d}`, actionID)), After: []byte(fmt.Sprintf(`{"id": %d}`, actionID))}
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	establish := func(wantNew string) int64 {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		e, reason, err := establishEpoch(ctx, tx, newest, now, epochCheck{held: outboxHolds})
		if err != nil {
			t.Fatal(err)
		}
		if source != "" && e.Source != source {
			t.Fatalf("source %s, want the source to keep its id %s", e.Source, source)
		}
		source = e.Source
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if (wantNew == "") != (reason == "") || !strings.Contains(reason, wantNew) {
			t.Fatalf("reason %q, want one with %q", reason, wantNew)
		}
		return e.Epoch
	}

	first := establish("no epoch recorded")
	if first != now.UnixMicro() {
		t.Fatalf("first epoch %d, want the time it began, %d", first, now.UnixMicro())
	}
	// A restart after capture stopped between Kafka's ack of changes 1..10
	// and their delete from the outbox: they are still there.
	kafka = published(first, 10)
	if e := establish(""); e != first {
		t.Fatalf("a restart moved the epoch to %d", e)
	}
	// Likewise when that change was large and Kafka's newest message is its
	// manifest, which carries no row image.
	manifest := published(first, 10)
	manifest.After, manifest.Chunks = nil, &event.Chunks{Count: 2, Bytes: 1 << 20, SHA256: strings.Repeat("0", 64)}
	kafka = manifest
	if e := establish(""); e != first {
		t.Fatalf("a restart with a manifest newest in Kafka moved the epoch to %d", e)
	}
	kafka = published(first, 10)
	// A restart after they were deleted, and published_through recorded.
	if _, err := pool.Exec(ctx, `WITH d AS (DELETE FROM cdcflow.outbox) UPDATE cdcflow.capture_epoch SET published_through = 10`); err != nil {
		t.Fatal(err)
	}
	if e := establish(""); e != first {
		t.Fatalf("a restart moved the epoch to %d", e)
	}
	// The source restored to before its last 4 changes were published, and
	// written to since: action_ids 7..10 are other changes now.
	if _, err := pool.Exec(ctx, `UPDATE cdcflow.capture_epoch SET published_through = 6;
		SELECT setval(pg_get_serial_sequence('cdcflow.outbox', 'action_id'), 6); INSERT INTO t SELECT generate_series(101, 110)`); err != nil {
		t.Fatal(err)
	}
	second := establish("Kafka holds action_id 10 of this epoch, which the source neither published (through 6) nor holds")
	if second <= first {
		t.Fatalf("new epoch %d, want after %d", second, first)
	}
	// The clock went back meanwhile: a new epoch still orders after.
	now = now.Add(-time.Hour)
	kafka = published(second, 3)
	if _, err := pool.Exec(ctx, `UPDATE cdcflow.capture_epoch SET timeline = timeline + 1`); err != nil {
		t.Fatal(err)
	}
	third := establish("restored to a point in time or promoted")
	if third != second+1 {
		t.Fatalf("epoch %d after %d with the clock behind, want %d", third, second, second+1)
	}
	// Kafka holds a newer epoch than the source remembers.
	kafka = published(third+100, 1)
	if fourth := establish("newer than the source's"); fourth != third+101 {
		t.Fatalf("epoch %d, want %d", fourth, third+101)
	}
	// The cdcflow schema created again (or the row deleted by hand): a
	// new source id too.
	if _, err := pool.Exec(ctx, `DELETE FROM cdcflow.capture_epoch`); err != nil {
		t.Fatal(err)
	}
	old := source
	source, kafka = "", event.Event{}
	establish("no epoch recorded")
	if source == old {
		t.Fatalf("source id %s kept after the epoch row was deleted", source)
	}
}

// TestStepStampsTheEpoch: every published event carries the epoch.
func TestStepStampsTheEpoch(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Migrated(t, "stamp", migrations.SourceFS(), nil)
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	pub := &kept{}
	c, err := New(ctx, pool, pub, Config{Tables: []string{"t"}, BatchSize: 100, PublishGrace: time.Minute, MaxChangeBytes: DefaultMaxChangeBytes}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Step(ctx); err != nil || n != 2 {
		t.Fatalf("step: %d, %v", n, err)
	}
	var epoch int64
	var source string
	if err := pool.QueryRow(ctx, `SELECT epoch, source_id::text FROM cdcflow.capture_epoch`).Scan(&epoch, &source); err != nil {
		t.Fatal(err)
	}
	for _, m := range slices.Concat(pub.writes...) {
		v := m.Value
		ev, err := event.Decode(v)
		if err != nil || ev.Epoch != epoch || epoch == 0 || ev.Source != source {
			t.Fatalf("event %s (%v), want source %s, epoch %d", v, err, source, epoch)
		}
	}
}

// kept keeps what capture publishes.
type kept struct{ writes [][]kafka.Message }

func (k *kept) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	k.writes = append(k.writes, msgs)
	return nil
}
