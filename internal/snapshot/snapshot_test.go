package snapshot_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/snapshot"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// kinds has a column of each kind of value whose text a copy must carry
// unchanged, a key with a timestamptz, a generated column and an identity
// column the destination generates ALWAYS.
const kinds = `CREATE TABLE public.kinds (
	id      int,
	at      timestamptz,
	seq     int GENERATED ALWAYS AS IDENTITY,
	label   text,
	amount  numeric,
	ratio   float8,
	day     date,
	span    interval,
	raw     bytea,
	tags    text[],
	doc     jsonb,
	twice   int GENERATED ALWAYS AS (id * 2) STORED,
	PRIMARY KEY (id, at)
)`

const fill = `INSERT INTO public.kinds (id, at, label, amount, ratio, day, span, raw, tags, doc)
	SELECT i, timestamptz '2024-03-01 12:00:00+02' + i * interval '1 minute',
		CASE WHEN i % 7 = 0 THEN NULL ELSE E'tab\there, new\nline, back\\slash, ' || repeat('é', i % 5) || i END,
		i * 1.5 + 0.000001, 1.0 / (i + 3), date '2000-01-01' + i, i * interval '1 hour 3 seconds',
		decode(md5(i::text), 'hex'), ARRAY['a' || i, NULL, 'q"uote'], jsonb_build_object('n', i, 'nested', jsonb_build_array(i, 'x'))
	FROM generate_series(1, $1) i`

func setup(t *testing.T, rows int) (src *pgxpool.Pool, dst *pgxpool.Pool, apl *applier.Applier) {
	t.Helper()
	ctx := context.Background()
	src = testenv.Migrated(t, "source", migrations.SourceFS(), nil)
	dst = testenv.Migrated(t, "dest", migrations.DestFS(), applier.DefaultTimeouts.ConfigurePool)
	for _, pool := range []*pgxpool.Pool{src, dst} {
		if _, err := pool.Exec(ctx, kinds); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Exec(ctx, fill, rows); err != nil {
		t.Fatal(err)
	}
	apl, err := applier.New(ctx, dst, []string{"public.kinds"})
	if err != nil {
		t.Fatal(err)
	}
	return src, dst, apl
}

// copyAll copies every chunk of table with the version (epoch, action).
func copyAll(t *testing.T, src *pgxpool.Pool, apl *applier.Applier, table string, pages, epoch, action int64) (int, cdc.SnapshotCopied) {
	t.Helper()
	ctx := context.Background()
	chunks, err := snapshot.Plan(ctx, src, table, pages)
	if err != nil {
		t.Fatal(err)
	}
	var total cdc.SnapshotCopied
	for _, c := range chunks {
		got, err := copyChunk(ctx, src, apl, table, c, epoch, action)
		if err != nil {
			t.Fatalf("copy %s: %v", c, err)
		}
		total.Read += got.Read
		total.Written += got.Written
	}
	return len(chunks), total
}

func copyChunk(ctx context.Context, src *pgxpool.Pool, apl *applier.Applier, table string, c cdc.SnapshotChunk, epoch, action int64) (cdc.SnapshotCopied, error) {
	shape, err := snapshot.Describe(ctx, src, table, c)
	if err != nil {
		return cdc.SnapshotCopied{}, err
	}
	return apl.CopySnapshot(ctx, table, shape.Key, shape.Columns, epoch, action, func(cols []string, w io.Writer) error {
		return snapshot.Read(ctx, src, c, shape.Key, cols, w)
	})
}

// digest is an ordered hash of a table's rows, every column as text.
func digest(t *testing.T, pool *pgxpool.Pool, table string) (string, int) {
	t.Helper()
	var sum string
	var n int
	err := pool.QueryRow(context.Background(), `SELECT coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), ''), count(*) FROM `+table+` r`).Scan(&sum, &n)
	if err != nil {
		t.Fatal(err)
	}
	return sum, n
}

func TestSnapshotCopiesEveryRowExactly(t *testing.T) {
	ctx := context.Background()
	src, dst, apl := setup(t, 3000)
	chunks, got := copyAll(t, src, apl, "public.kinds", 4, 100, 7)
	if chunks < 5 {
		t.Fatalf("%d chunks of 4 pages, want several", chunks)
	}
	if got.Read != 3000 || got.Written != 3000 {
		t.Fatalf("read %d, wrote %d rows, want 3000 each", got.Read, got.Written)
	}
	want, n := digest(t, src, "public.kinds")
	if have, m := digest(t, dst, "public.kinds"); have != want || m != n {
		t.Fatalf("destination (%d rows, %s) differs from the source (%d rows, %s)", m, have, n, want)
	}
	// Copying again writes nothing: every row has the copy's version.
	if _, again := copyAll(t, src, apl, "public.kinds", 4, 100, 7); again.Read != 3000 || again.Written != 0 {
		t.Fatalf("copied again: read %d, wrote %d, want 3000 and 0", again.Read, again.Written)
	}
	// A change read from the log names its row by the key capture renders:
	// it must find the copy's version, not add another.
	key := `{"at": "2024-03-01T10:01:00+00:00", "id": 1}`
	after := `{"at": "2024-03-01T10:01:00+00:00", "id": 1, "label": "changed"}`
	if _, err := apl.Apply(ctx, []event.Event{{Epoch: 100, ActionID: 8, Table: "public.kinds", Op: event.OpUpdate,
		Key: []byte(key), After: []byte(after), SchemaVersion: 1}}); err != nil {
		t.Fatal(err)
	}
	var versions, label string
	if err := dst.QueryRow(ctx, `SELECT (SELECT count(*) FROM cdcflow.row_versions)::text, label FROM public.kinds WHERE id = 1`).Scan(&versions, &label); err != nil {
		t.Fatal(err)
	}
	if versions != "3000" || label != "changed" {
		t.Fatalf("after a change to row 1: %s row versions, label %q; want 3000 and \"changed\"", versions, label)
	}
}

func TestSnapshotNeverUndoesANewerChange(t *testing.T) {
	ctx := context.Background()
	src, dst, apl := setup(t, 50)
	at := func(i int) string {
		return `"at": "2024-03-01T` + []string{"", "10:01", "10:02", "10:03"}[i] + `:00+00:00"`
	}
	change := func(epoch, action int64, op event.Op, id int, label string) event.Event {
		ev := event.Event{Epoch: epoch, ActionID: action, Table: "public.kinds", Op: op, SchemaVersion: 1,
			Key: []byte(`{` + at(id) + `, "id": ` + string(rune('0'+id)) + `}`)}
		if op != event.OpDelete {
			ev.After = []byte(`{` + at(id) + `, "id": ` + string(rune('0'+id)) + `, "label": "` + label + `"}`)
		}
		return ev
	}
	// Row 1 changed after the copy's version, row 2 deleted after it, row 3
	// written in an earlier epoch.
	if _, err := apl.Apply(ctx, []event.Event{change(100, 9, event.OpUpdate, 1, "newer"), change(100, 10, event.OpDelete, 2, ""),
		change(99, 5000, event.OpInsert, 3, "older")}); err != nil {
		t.Fatal(err)
	}
	if _, got := copyAll(t, src, apl, "public.kinds", 1, 100, 7); got.Read != 50 || got.Written != 48 {
		t.Fatalf("read %d, wrote %d rows, want 50 and 48", got.Read, got.Written)
	}
	rows, err := dst.Query(ctx, `SELECT id, coalesce(label, 'NULL') FROM public.kinds WHERE id <= 3 ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for rows.Next() {
		var id int
		var label string
		if err := rows.Scan(&id, &label); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, string(rune('0'+id))+":"+strings.SplitN(label, ",", 2)[0])
	}
	if got, want := strings.Join(seen, " "), "1:newer 3:tab\there"; got != want {
		t.Fatalf("rows 1-3 are %q, want %q", got, want)
	}
}

func TestSnapshotOfAPartitionedTable(t *testing.T) {
	ctx := context.Background()
	src := testenv.Migrated(t, "source", migrations.SourceFS(), nil)
	dst := testenv.Migrated(t, "dest", migrations.DestFS(), applier.DefaultTimeouts.ConfigurePool)
	if _, err := src.Exec(ctx, `CREATE TABLE public.events (id int PRIMARY KEY, body text) PARTITION BY RANGE (id);
		CREATE TABLE public.events_low PARTITION OF public.events FOR VALUES FROM (0) TO (1000);
		CREATE TABLE public.events_high PARTITION OF public.events FOR VALUES FROM (1000) TO (MAXVALUE);
		CREATE TABLE public.events_empty PARTITION OF public.events FOR VALUES FROM (MINVALUE) TO (0);
		INSERT INTO public.events SELECT i, repeat('x', 200) || i FROM generate_series(1, 4000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Exec(ctx, `CREATE TABLE public.events (id int PRIMARY KEY, body text)`); err != nil {
		t.Fatal(err)
	}
	apl, err := applier.New(ctx, dst, []string{"public.events"})
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := snapshot.Plan(ctx, src, "public.events", 8)
	if err != nil {
		t.Fatal(err)
	}
	leaves := map[string]int{}
	for _, c := range chunks {
		leaves[c.Name]++
	}
	if len(leaves) != 3 || leaves["events_empty"] != 1 || leaves["events_high"] < 2 {
		t.Fatalf("chunks by partition %v, want the three partitions, the empty one in one chunk", leaves)
	}
	if _, got := copyAll(t, src, apl, "public.events", 8, 1, 1); got.Read != 4000 || got.Written != 4000 {
		t.Fatalf("read %d, wrote %d rows, want 4000 each", got.Read, got.Written)
	}
	want, _ := digest(t, src, "public.events")
	if have, _ := digest(t, dst, "public.events"); have != want {
		t.Fatal("destination differs from the source")
	}
}

// TestSnapshotOfATableRewrittenOrRenamed: a table renamed after its chunks
// were cut is still read; one rewritten (VACUUM FULL moves rows between
// pages, which chunks read already may have held) is refused, to be cut
// again.
func TestSnapshotOfATableRewrittenOrRenamed(t *testing.T) {
	ctx := context.Background()
	src, _, apl := setup(t, 3000)
	chunks, err := snapshot.Plan(ctx, src, "public.kinds", 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `ALTER TABLE public.kinds RENAME TO kinds_renamed`); err != nil {
		t.Fatal(err)
	}
	got, err := copyChunk(ctx, src, apl, "public.kinds", chunks[0], 1, 1)
	if err != nil || got.Read == 0 {
		t.Fatalf("copy of a renamed table: %+v, %v; want its rows", got, err)
	}
	for _, sql := range []string{`DELETE FROM public.kinds_renamed WHERE id <= 300`, `VACUUM FULL public.kinds_renamed`} {
		if _, err := src.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := copyChunk(ctx, src, apl, "public.kinds", chunks[1], 1, 1); !errors.Is(err, snapshot.ErrRewritten) {
		t.Fatalf("copy of a rewritten table: %v, want ErrRewritten", err)
	}
}

func TestSnapshotOfWhatCannotBeCopied(t *testing.T) {
	ctx := context.Background()
	src, dst, apl := setup(t, 10)
	// A table dropped since it was captured has nothing to copy.
	if chunks, err := snapshot.Plan(ctx, src, "public.gone", 8); err != nil || len(chunks) != 0 {
		t.Fatalf("plan of a missing table: %v, %v; want no chunks", chunks, err)
	}
	chunks, err := snapshot.Plan(ctx, src, "public.kinds", 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `DROP TABLE public.kinds`); err != nil {
		t.Fatal(err)
	}
	if _, err := copyChunk(ctx, src, apl, "public.kinds", chunks[0], 1, 1); !errors.Is(err, snapshot.ErrGone) {
		t.Fatalf("copy of a dropped table: %v, want ErrGone", err)
	}
	// A column the destination lacks is named.
	if _, err := src.Exec(ctx, kinds+`; ALTER TABLE public.kinds ADD COLUMN extra text`); err != nil {
		t.Fatal(err)
	}
	if chunks, err = snapshot.Plan(ctx, src, "public.kinds", 8); err != nil {
		t.Fatal(err)
	}
	_, err = copyChunk(ctx, src, apl, "public.kinds", chunks[0], 1, 1)
	if err == nil || !strings.Contains(err.Error(), `table public.kinds has no column "extra"`) {
		t.Fatalf("copy to a destination without the column: %v", err)
	}
	// A value the destination refuses fails the copy, and writes nothing.
	if _, err := src.Exec(ctx, `ALTER TABLE public.kinds DROP COLUMN extra; INSERT INTO public.kinds (id, at, label) VALUES (1, now(), 'x')`); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Exec(ctx, `ALTER TABLE public.kinds ADD CONSTRAINT short CHECK (length(label) > 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := copyChunk(ctx, src, apl, "public.kinds", chunks[0], 1, 1); err == nil || !strings.Contains(err.Error(), "short") {
		t.Fatalf("copy of a row the destination refuses: %v", err)
	}
	if _, n := digest(t, dst, "public.kinds"); n != 0 {
		t.Fatalf("%d rows written by a failed copy", n)
	}
}
