package wal

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// source is a database of its own with a publication and a slot (named
// after the database: slots belong to the whole server), dropped with the
// test.
type source struct {
	t    *testing.T
	dsn  string
	pool *pgxpool.Pool
	cfg  Config
}

func newSource(t *testing.T, schema string, tables ...string) *source {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.NewDatabase(t, "wal")
	pool, err := db.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	s := &source{t: t, dsn: dsn, pool: pool, cfg: Config{Publication: "cdcflow", Slot: name, Tables: tables, StatusInterval: time.Second}}
	testenv.DropSlotAtCleanup(t, pool, name)
	return s
}

// jsonb returns the text of a jsonb value the way the trigger capture's
// session prints it (in UTC).
func (s *source) jsonb(query string) string {
	s.t.Helper()
	var out string
	err := pgx.BeginFunc(context.Background(), s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SET LOCAL timezone = 'UTC'`); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), `SELECT (`+query+`)::text`).Scan(&out)
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *source) exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.pool.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// recorder keeps what the stream hands over, and publishes (confirms) each
// transaction as it commits unless held.
type recorder struct {
	mu        sync.Mutex
	txs       []Tx
	changes   []Change
	confirmed pglogrepl.LSN
	committed int  // changes handed over whose transaction has committed
	hold      bool // confirm nothing
	notify    chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) Begin(context.Context, Tx) error { return nil }

func (r *recorder) Change(_ context.Context, tx Tx, c Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	return nil
}

func (r *recorder) Commit(_ context.Context, tx Tx) error {
	r.mu.Lock()
	r.txs = append(r.txs, tx)
	r.committed = len(r.changes)
	if !r.hold {
		r.confirmed = tx.EndLSN
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) snapshot() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

func (r *recorder) Confirmed() pglogrepl.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.confirmed
}

// run streams into r until n changes have arrived with their transactions'
// commits, then stops the stream.
func (s *source) run(r *recorder, n int) []Change {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewStream(s.dsn, s.cfg, NewDecoder(s.pool, nil)).Run(ctx, r, r.Confirmed) }()
	deadline := time.After(30 * time.Second)
	for {
		r.mu.Lock()
		got := r.committed
		r.mu.Unlock()
		if got >= n {
			break
		}
		select {
		case <-r.notify:
		case err := <-done:
			cancel()
			s.t.Fatalf("the stream stopped after %d of %d changes: %v", got, n, err)
		case <-deadline:
			cancel()
			s.t.Fatalf("%d of %d changes arrived in 30 s", got, n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		s.t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changes
}

type change struct {
	Table, Op, Key, Before, After string
	Unchanged                     []string
}

func simplify(cs []Change) []change {
	out := make([]change, len(cs))
	for i, c := range cs {
		out[i] = change{c.Table, string(c.Op), string(c.Key), string(c.Before), string(c.After), c.Unchanged}
	}
	return out
}

// TestStreamReadsCommittedChanges: inserts, updates (one of the key),
// deletes, a composite key and a partitioned table arrive in commit order,
// with keys and rows written exactly as to_jsonb writes them for the
// trigger capture.
func TestStreamReadsCommittedChanges(t *testing.T) {
	s := newSource(t, `
		CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric, at timestamptz, day date, took interval,
			tags text[], grid int[], doc jsonb, ok bool, data bytea, ref uuid, ratio float8);
		CREATE TABLE lines (order_id int, line int, qty int, PRIMARY KEY (order_id, line));
		CREATE TABLE events (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');`,
		"public.items", "public.lines", "public.events")
	ctx := context.Background()
	if _, _, err := Setup(ctx, s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	s.exec(`BEGIN;
		INSERT INTO items VALUES (1, 'żółw "q" \ back' || chr(10) || 'line', 12.50, '2026-11-26 10:00:00.123+02', '2026-11-26', '1 day 02:00',
			ARRAY['a', 'b c', NULL, '"x"'], '{{1,2},{3,4}}', '{"k": [1, 2], "b": null}', true, '\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0.5);
		INSERT INTO lines VALUES (7, 1, 3), (7, 2, 4);
		INSERT INTO events VALUES (1, 'eu', 10);
		COMMIT`)
	first := s.jsonb(`SELECT to_jsonb(i) FROM items i WHERE id = 1`) // as the trigger capture writes it
	// Two transactions interleaved: the one that commits first comes first.
	late, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, `INSERT INTO items (id, name) VALUES (3, 'late')`); err != nil {
		t.Fatal(err)
	}
	s.exec(`INSERT INTO items (id, name, price) VALUES (2, 'early', 'NaN')`)
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.exec(`BEGIN;
		UPDATE items SET name = 'renamed', ok = NULL WHERE id = 1;
		UPDATE lines SET line = 3 WHERE order_id = 7 AND line = 2;
		DELETE FROM lines WHERE order_id = 7 AND line = 1;
		UPDATE events SET v = 11 WHERE id = 1;
		COMMIT`)

	r := newRecorder()
	got := simplify(s.run(r, 11))
	item1 := s.jsonb(`SELECT to_jsonb(i) FROM items i WHERE id = 1`)
	want := []change{
		{Table: "public.items", Op: "insert", Key: `{"id": 1}`, After: first},
		{Table: "public.lines", Op: "insert", Key: `{"line": 1, "order_id": 7}`, After: `{"qty": 3, "line": 1, "order_id": 7}`},
		{Table: "public.lines", Op: "insert", Key: `{"line": 2, "order_id": 7}`, After: `{"qty": 4, "line": 2, "order_id": 7}`},
		{Table: "public.events", Op: "insert", Key: `{"id": 1, "region": "eu"}`, After: `{"v": 10, "id": 1, "region": "eu"}`},
		{Table: "public.items", Op: "insert", Key: `{"id": 2}`, After: s.jsonb(`SELECT to_jsonb(i) FROM items i WHERE id = 2`)},
		{Table: "public.items", Op: "insert", Key: `{"id": 3}`, After: s.jsonb(`SELECT to_jsonb(i) FROM items i WHERE id = 3`)},
		{Table: "public.items", Op: "update", Key: `{"id": 1}`, After: item1},
		{Table: "public.lines", Op: "delete", Key: `{"line": 2, "order_id": 7}`, Before: `{"line": 2, "order_id": 7}`},
		{Table: "public.lines", Op: "insert", Key: `{"line": 3, "order_id": 7}`, After: `{"qty": 4, "line": 3, "order_id": 7}`},
		{Table: "public.lines", Op: "delete", Key: `{"line": 1, "order_id": 7}`, Before: `{"line": 1, "order_id": 7}`},
		{Table: "public.events", Op: "update", Key: `{"id": 1, "region": "eu"}`, After: `{"v": 11, "id": 1, "region": "eu"}`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	for _, c := range r.changes {
		for _, img := range []json.RawMessage{c.Key, c.Before, c.After} {
			if img != nil && !json.Valid(img) {
				t.Errorf("not JSON: %s", img)
			}
		}
	}
	if r.txs[1].CommitLSN <= r.txs[0].CommitLSN || r.txs[2].CommitLSN <= r.txs[1].CommitLSN {
		t.Errorf("transactions out of commit order: %+v", r.txs)
	}
}

// TestStreamResumesAfterItsConfirmedPosition: a stream stopped with a
// transaction handed over but not confirmed gets it again; one confirmed
// is not sent again.
func TestStreamResumesAfterItsConfirmedPosition(t *testing.T) {
	s := newSource(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`, "public.t")
	if _, _, err := Setup(context.Background(), s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	s.exec(`INSERT INTO t VALUES (1, 1)`)
	s.run(newRecorder(), 1) // published and confirmed
	s.exec(`INSERT INTO t VALUES (2, 2)`)
	held := newRecorder()
	held.hold = true
	s.run(held, 1) // handed over, never confirmed
	s.exec(`INSERT INTO t VALUES (3, 3)`)
	got := s.run(newRecorder(), 2)
	var keys []string
	for _, c := range got {
		keys = append(keys, string(c.Key))
	}
	if want := []string{`{"id": 2}`, `{"id": 3}`}; !cmp.Equal(keys, want) {
		t.Errorf("after a restart the stream sent %v, want %v", keys, want)
	}
}

// TestStreamLeavesOutUnchangedToast: an update that does not touch a large
// (TOASTed) value leaves it out of the row and names it, so that the apply
// keeps it; with replica identity FULL the old row supplies it.
func TestStreamLeavesOutUnchangedToast(t *testing.T) {
	s := newSource(t, `CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
		CREATE TABLE fulldocs (id int PRIMARY KEY, body text, n int);
		ALTER TABLE fulldocs REPLICA IDENTITY FULL;
		ALTER TABLE docs ALTER body SET STORAGE EXTERNAL; ALTER TABLE fulldocs ALTER body SET STORAGE EXTERNAL;`,
		"public.docs", "public.fulldocs")
	if _, _, err := Setup(context.Background(), s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("0123456789", 1000) // out of line: stored externally
	s.exec(`INSERT INTO docs VALUES (1, $1, 1)`, body)
	s.exec(`INSERT INTO fulldocs VALUES (1, $1, 1)`, body)
	s.exec(`UPDATE docs SET n = 2; UPDATE fulldocs SET n = 2`)
	got := simplify(s.run(newRecorder(), 4))
	quoted := fmt.Sprintf("%q", body)
	want := []change{
		{Table: "public.docs", Op: "insert", Key: `{"id": 1}`, After: `{"n": 1, "id": 1, "body": ` + quoted + `}`},
		{Table: "public.fulldocs", Op: "insert", Key: `{"id": 1}`, After: `{"n": 1, "id": 1, "body": ` + quoted + `}`},
		{Table: "public.docs", Op: "update", Key: `{"id": 1}`, After: `{"n": 2, "id": 1}`, Unchanged: []string{"body"}},
		{Table: "public.fulldocs", Op: "update", Key: `{"id": 1}`, After: `{"n": 2, "id": 1, "body": ` + quoted + `}`,
			Before: `{"n": 1, "id": 1, "body": ` + quoted + `}`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// TestSetupAddsTables: tables added to the allowlist join the publication.
func TestSetupAddsTables(t *testing.T) {
	s := newSource(t, `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)`, "public.a")
	ctx := context.Background()
	if _, _, err := Setup(ctx, s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	s.cfg.Tables = []string{"public.a", "public.b"}
	if _, _, err := Setup(ctx, s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, `SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'cdcflow' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(tables, []string{"a", "b"}) {
		t.Errorf("published tables %v, want [a b]", tables)
	}
}

// TestSetupRefusesWhatItCannotRead: a table without a primary key, a
// replica identity that does not give the key, and a publication that
// leaves out operations, partitions' roots, rows or columns are refused
// before anything is created, each with what to change.
func TestSetupRefusesWhatItCannotRead(t *testing.T) {
	s := newSource(t, `CREATE TABLE loose (id int, v int);
		CREATE TABLE nothing (id int PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;
		CREATE TABLE byindex (id int PRIMARY KEY, u int NOT NULL UNIQUE); ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_u_key;
		CREATE TABLE t (id int PRIMARY KEY, v int);
		CREATE PUBLICATION inserts FOR TABLE t WITH (publish = 'insert');
		CREATE PUBLICATION leaves FOR TABLE t;
		CREATE PUBLICATION filtered FOR TABLE t WHERE (v > 0) WITH (publish_via_partition_root = true)`)
	ctx := context.Background()
	for _, c := range []struct {
		table, publication, want string
	}{
		{"public.loose", "cdcflow", "table public.loose has no primary key"},
		{"public.nothing", "cdcflow", `table public.nothing has replica identity NOTHING: cdcflow needs DEFAULT (its primary key) or FULL (ALTER TABLE "public"."nothing" REPLICA IDENTITY DEFAULT)`},
		{"public.byindex", "cdcflow", "table public.byindex has replica identity USING INDEX"},
		{"public.nope", "cdcflow", "table public.nope does not exist on the source"},
		{"public.t", "inserts", `publication inserts must publish inserts, updates and deletes, with publish_via_partition_root = true`},
		{"public.t", "leaves", `publication leaves must publish inserts, updates and deletes, with publish_via_partition_root = true`},
		{"public.t", "filtered", "publication filtered filters rows or columns of public.t: cdcflow needs every row and column"},
	} {
		cfg := s.cfg
		cfg.Tables, cfg.Publication = []string{c.table}, c.publication
		if _, _, err := Setup(ctx, s.pool, cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s in %s: %v, want %q", c.table, c.publication, err, c.want)
		}
	}
	var slots int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if slots != 0 {
		t.Errorf("a slot was created")
	}
}

// TestSetupNeedsLogicalWAL: a source without wal_level=logical gets an
// error that says what to change.
func TestSetupNeedsLogicalWAL(t *testing.T) {
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresOptions{Settings: []string{"wal_level=replica"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	pool, err := db.Open(ctx, pg.DSN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, _, err = Setup(ctx, pool, Config{Publication: "cdcflow", Slot: "cdcflow", Tables: []string{"public.t"}})
	if err == nil || !strings.Contains(err.Error(), "the source has wal_level=replica: capture from the log needs wal_level=logical") {
		t.Errorf("setup on a source with wal_level=replica: %v", err)
	}
}

// TestStreamReadsTruncate: a TRUNCATE arrives in its place among the
// changes, once per table it emptied, and the stream goes on.
func TestStreamReadsTruncate(t *testing.T) {
	s := newSource(t, `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)`, "public.a", "public.b")
	if _, _, err := Setup(context.Background(), s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	s.exec(`INSERT INTO a VALUES (1)`)
	s.exec(`TRUNCATE a, b`)
	s.exec(`INSERT INTO b VALUES (2)`)
	got := simplify(s.run(newRecorder(), 4))
	want := []change{
		{Table: "public.a", Op: "insert", Key: `{"id": 1}`, After: `{"id": 1}`},
		{Table: "public.a", Op: "truncate"},
		{Table: "public.b", Op: "truncate"},
		{Table: "public.b", Op: "insert", Key: `{"id": 2}`, After: `{"id": 2}`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// TestStreamAfterSchemaChanges: the log is read with the schema it was
// written under: a change of a table dropped since, one whose key column
// was renamed since, and one of a dropped type neither stop the stream nor
// change its keys; a table off the allowlist without a primary key is
// passed over.
func TestStreamAfterSchemaChanges(t *testing.T) {
	s := newSource(t, `CREATE TYPE mood AS ENUM ('ok', 'meh');
		CREATE TABLE gone (id int PRIMARY KEY, m mood);
		CREATE TABLE renamed (rk int PRIMARY KEY);
		CREATE TABLE loose (v int);
		CREATE TABLE t (id int PRIMARY KEY)`, "public.gone", "public.renamed", "public.t")
	ctx := context.Background()
	if _, _, err := Setup(ctx, s.pool, s.cfg); err != nil {
		t.Fatal(err)
	}
	s.exec(`ALTER PUBLICATION cdcflow ADD TABLE loose`)
	s.exec(`INSERT INTO gone VALUES (1, 'meh')`)
	s.exec(`INSERT INTO renamed VALUES (2)`)
	s.exec(`INSERT INTO loose VALUES (3)`)
	s.exec(`DROP TABLE gone`)
	s.exec(`DROP TYPE mood`)
	s.exec(`ALTER TABLE renamed RENAME rk TO key_id`)
	s.exec(`INSERT INTO t VALUES (4)`)
	r := newRecorder()
	run, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	allowed := func(table string) bool { return table != "public.loose" }
	go func() { done <- NewStream(s.dsn, s.cfg, NewDecoder(s.pool, allowed)).Run(run, r, r.Confirmed) }()
	deadline := time.After(30 * time.Second)
	for len(r.snapshot()) < 3 {
		select {
		case <-r.notify:
		case err := <-done:
			cancel()
			t.Fatalf("the stream stopped after %d changes: %v", len(r.snapshot()), err)
		case <-deadline:
			cancel()
			t.Fatalf("%d of 3 changes in 30 s", len(r.snapshot()))
		}
	}
	cancel()
	<-done
	want := []change{
		{Table: "public.gone", Op: "insert", Key: `{"id": 1}`, After: `{"m": "meh", "id": 1}`},
		{Table: "public.renamed", Op: "insert", Key: `{"rk": 2}`, After: `{"rk": 2}`},
		{Table: "public.t", Op: "insert", Key: `{"id": 4}`, After: `{"id": 4}`},
	}
	if diff := cmp.Diff(want, simplify(r.snapshot())); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}
