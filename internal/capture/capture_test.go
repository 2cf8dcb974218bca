package capture_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/capture"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// recorder keeps every write it is given, in order.
type recorder struct{ writes [][]kafka.Message }

func (r *recorder) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	r.writes = append(r.writes, msgs)
	return nil
}

// TestLargeChanges: against real PostgreSQL, with a limit of 2 MiB per row
// image, capture publishes a change above event.ChunkBytes as chunks
// written before its manifest, counts bytea by its bytes, leaves out a
// before image above the limit, and parks a change whose new row is above
// the limit: its mark is published and its outbox row moves to
// oversized_changes. A step reads about ReadBytes of row images.
func TestLargeChanges(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Migrated(t, "capture", migrations.SourceFS(), nil)
	if _, err := pool.Exec(ctx, `CREATE TABLE docs (id int PRIMARY KEY, body text, data bytea)`); err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	c, err := capture.New(ctx, pool, pub, capture.Config{Tables: []string{"docs"}, BatchSize: 100, PollInterval: time.Millisecond,
		ReportEvery: time.Hour, PublishGrace: 10 * time.Second, MaxChangeBytes: 2 << 20, ReadBytes: 1 << 20}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO docs VALUES (1, 'small', NULL)`,
		`INSERT INTO docs VALUES (2, repeat('a', 1 << 20), NULL)`,                  // chunked
		`INSERT INTO docs VALUES (3, NULL, decode(repeat('ab', 1900000), 'hex'))`,  // 1.8 MiB of bytea, 3.6 MiB of hex: published
		`INSERT INTO docs VALUES (4, repeat('b', 2200000), NULL)`,                  // above the limit: parked
		`UPDATE docs SET body = 'short now' WHERE id = 4`,                          // its before image is left out
		`UPDATE docs SET data = decode(repeat('cd', 2200000), 'hex') WHERE id = 3`, // after above the limit: parked
		`DELETE FROM docs WHERE id = 2`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var steps []int
	for {
		n, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		steps = append(steps, n)
	}
	// A step stops reading at the row that passes 1 MiB of images: the
	// first after two rows, the others after one (each of rows 3 to 7
	// passes it alone).
	if diff := cmp.Diff([]int{2, 1, 1, 1, 1, 1}, steps); diff != "" {
		t.Errorf("rows published per step (-want +got):\n%s", diff)
	}

	// What reached Kafka, write by write: a manifest always comes in a
	// later write than its chunks.
	type published struct {
		ActionID int64
		Op       event.Op
		Kind     string // event, manifest, chunks or too large
		Before   bool
	}
	var got []published
	chunksWritten := map[int64]int{}
	for w, msgs := range pub.writes {
		for _, m := range msgs {
			if ch, ok, err := kafkax.ChunkOf(m.Headers); ok || err != nil {
				if err != nil || len(m.Value) > event.ChunkBytes {
					t.Fatalf("chunk of %d bytes: %v", len(m.Value), err)
				}
				if ch.Index == ch.Count-1 {
					chunksWritten[ch.ActionID] = w
					got = append(got, published{ActionID: ch.ActionID, Kind: "chunks"})
				}
				continue
			}
			ev, err := event.Decode(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			p := published{ActionID: ev.ActionID, Op: ev.Op, Kind: "event", Before: ev.Before != nil}
			switch {
			case ev.Chunks != nil:
				p.Kind = "manifest"
				if cw, ok := chunksWritten[ev.ActionID]; !ok || cw >= w {
					t.Errorf("the manifest of action_id %d is in write %d, its chunks in %d (%v)", ev.ActionID, w, cw, ok)
				}
			case ev.TooLarge != nil:
				p.Kind = "too large"
			}
			got = append(got, p)
		}
	}
	want := []published{
		{ActionID: 1, Op: event.OpInsert, Kind: "event"},
		{ActionID: 2, Kind: "chunks"},
		{ActionID: 2, Op: event.OpInsert, Kind: "manifest"},
		{ActionID: 3, Kind: "chunks"},
		{ActionID: 3, Op: event.OpInsert, Kind: "manifest"},
		{ActionID: 4, Op: event.OpInsert, Kind: "too large"},
		{ActionID: 5, Op: event.OpUpdate, Kind: "event"}, // no before: it was above the limit
		{ActionID: 6, Op: event.OpUpdate, Kind: "too large"},
		{ActionID: 7, Kind: "chunks"}, // its 1 MiB before image is within the limit, and kept
		{ActionID: 7, Op: event.OpDelete, Kind: "manifest"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("published (-want +got):\n%s", diff)
	}

	var outbox int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.outbox`).Scan(&outbox); err != nil || outbox != 0 {
		t.Fatalf("outbox holds %d rows (%v)", outbox, err)
	}
	type kept struct {
		ActionID    int64
		Op          string
		Key         string
		Size, Limit int64
		After       int
	}
	rows, err := pool.Query(ctx, `SELECT action_id, op, key::text, size_bytes, limit_bytes, octet_length(after::text)
		FROM cdcflow.oversized_changes ORDER BY action_id`)
	if err != nil {
		t.Fatal(err)
	}
	var parked []kept
	for rows.Next() {
		var k kept
		if err := rows.Scan(&k.ActionID, &k.Op, &k.Key, &k.Size, &k.Limit, &k.After); err != nil {
			t.Fatal(err)
		}
		parked = append(parked, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Row 4's image is its JSON; row 3's counts its 2,200,000 bytes of bytea, not their 4,400,000 hex digits.
	wantParked := []kept{
		{ActionID: 4, Op: "insert", Key: `{"id": 4}`, Size: 2200000 + int64(len(`{"id": 4, "data": null, "body": ""}`)), Limit: 2 << 20, After: 2200035},
		{ActionID: 6, Op: "update", Key: `{"id": 3}`, Size: 2200000 + int64(len(`{"id": 3, "data": "\\x", "body": null}`)) - 5, Limit: 2 << 20, After: 4400038},
	}
	if diff := cmp.Diff(wantParked, parked); diff != "" {
		t.Fatalf("oversized_changes (-want +got):\n%s", diff)
	}
	var mark event.Event
	for _, msgs := range pub.writes {
		for _, m := range msgs {
			if ev, err := event.Decode(m.Value); err == nil && ev.ActionID == 4 {
				mark = ev
			}
		}
	}
	b, _ := json.Marshal(mark.TooLarge)
	if string(b) != `{"bytes":2200035,"limit":2097152}` || mark.After != nil || !strings.Contains(string(mark.Key), `"id"`) {
		t.Fatalf("mark of action_id 4: %+v, too_large %s", mark, b)
	}
}
