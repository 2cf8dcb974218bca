package capture_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/capture"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/internal/wal"
	"github.com/cdcflow/cdcflow/migrations"
)

// topic keeps every event written to it, safe for a capture running in
// another goroutine; fail, when set, acknowledges a write and then reports
// it failed (as a write that timed out after Kafka took it).
type topic struct {
	mu     sync.Mutex
	events []event.Event
	fail   int // writes left to report failed
}

func (p *topic) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		ev, err := event.Decode(m.Value)
		if err != nil {
			return err
		}
		p.events = append(p.events, ev)
	}
	if p.fail > 0 {
		p.fail--
		return errors.New("write timed out")
	}
	return nil
}

func (p *topic) snapshot() []event.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// logicalSource is a migrated source with a table, whose slot is dropped
// with the test.
func logicalSource(t *testing.T, schema string, tables ...string) (*pgxpool.Pool, string, wal.Config) {
	t.Helper()
	pool := testenv.Migrated(t, "logical", migrations.SourceFS(), nil)
	if _, err := pool.Exec(context.Background(), schema); err != nil {
		t.Fatal(err)
	}
	var slot string
	if err := pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&slot); err != nil {
		t.Fatal(err)
	}
	testenv.DropSlotAtCleanup(t, pool, slot)
	wc := wal.Config{Publication: "cdcflow", Slot: slot, Tables: tables, StatusInterval: time.Second}
	// The slot, as capture would create it: only what follows is read.
	if _, _, err := wal.Setup(context.Background(), pool, wc); err != nil {
		t.Fatal(err)
	}
	return pool, pool.Config().ConnString(), wc
}

// newLogical returns a log capture of the tables of wc into pub.
func newLogical(pool *pgxpool.Pool, dsn string, wc wal.Config, pub *topic) *capture.Logical {
	return capture.NewLogical(pool, dsn, pub, capture.Config{Tables: wc.Tables, BatchSize: 100, ReportEvery: time.Hour,
		PublishGrace: 10 * time.Second}, wc, slog.New(slog.DiscardHandler))
}

// runWhile runs l until done reports true (polled: the capture has no hook
// to wait on) or 30 s have passed, which fails the test with done's account.
func runWhile(t *testing.T, l *capture.Logical, done func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = l.Run(ctx)
	}()
	defer func() { cancel(); <-stopped }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, account := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", account)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runUntil runs a log capture until the topic holds at least n events.
func runUntil(t *testing.T, pool *pgxpool.Pool, dsn string, wc wal.Config, pub *topic, n int) {
	t.Helper()
	runWhile(t, newLogical(pool, dsn, wc, pub), func() (bool, string) {
		got := len(pub.snapshot())
		return got >= n, fmt.Sprintf("%d of %d events published", got, n)
	})
}

// TestLogicalCapture: changes read from the log are published with
// action_ids that follow the commit order without a gap, carry their
// commit LSN and transaction id; after a restart numbering goes on where
// it stopped, and a write Kafka took but that failed to report is
// published again under the same action_ids.
func TestLogicalCapture(t *testing.T) {
	ctx := context.Background()
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`, "public.t")
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pub := &topic{}
	exec(`INSERT INTO t SELECT g, g FROM generate_series(1, 3) g`)
	late, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, `UPDATE t SET v = 20 WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE t SET v = 10 WHERE id = 1`) // commits before the transaction that began first
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	runUntil(t, pool, dsn, wc, pub, 5)

	exec(`DELETE FROM t WHERE id = 3`)
	pub.fail = 1 // Kafka takes the delete, the write reports a failure: published again
	runUntil(t, pool, dsn, wc, pub, 7)
	exec(`INSERT INTO t VALUES (4, 4)`)
	runUntil(t, pool, dsn, wc, pub, 8)

	type row struct {
		ActionID int64
		Op       event.Op
		Key      string
	}
	var got []row
	byID := map[int64]event.Event{}
	var lastLSN pglogrepl.LSN
	for _, ev := range pub.snapshot() {
		if prev, ok := byID[ev.ActionID]; ok {
			if prev.LSN != ev.LSN || string(prev.Key) != string(ev.Key) || prev.Op != ev.Op {
				t.Errorf("action_id %d published as two changes: %s %s and %s %s", ev.ActionID, prev.Op, prev.Key, ev.Op, ev.Key)
			}
			continue
		}
		byID[ev.ActionID] = ev
		lsn, err := pglogrepl.ParseLSN(ev.LSN)
		if err != nil || ev.Xid == 0 || ev.Epoch == 0 || ev.Source == "" {
			t.Errorf("action_id %d: lsn %q (%v), xid %d, epoch %d, source %q", ev.ActionID, ev.LSN, err, ev.Xid, ev.Epoch, ev.Source)
		}
		if lsn < lastLSN {
			t.Errorf("action_id %d commits at %s, before the change numbered before it (%s)", ev.ActionID, lsn, lastLSN)
		}
		lastLSN = lsn
		got = append(got, row{ev.ActionID, ev.Op, string(ev.Key)})
	}
	slices.SortFunc(got, func(a, b row) int { return int(a.ActionID - b.ActionID) })
	// action_id 1 is kept for the snapshot's rows.
	want := []row{
		{2, event.OpInsert, `{"id":1}`}, {3, event.OpInsert, `{"id":2}`}, {4, event.OpInsert, `{"id":3}`},
		{5, event.OpUpdate, `{"id":1}`}, {6, event.OpUpdate, `{"id":2}`},
		{7, event.OpDelete, `{"id":3}`}, {8, event.OpInsert, `{"id":4}`},
	}
	if !slices.Equal(got, want) {
		t.Errorf("published\n%v\nwant\n%v", got, want)
	}
	if n := len(pub.snapshot()); n != 8 {
		t.Errorf("%d events published, want 8 (the delete twice)", n)
	}
}

// TestLogicalCaptureFillsUnchangedToast: an update that leaves a large
// out-of-line value unchanged is published with that value, read from the
// source, so the event says its whole row; when the row is gone by then,
// the column stays named as unchanged.
func TestLogicalCaptureFillsUnchangedToast(t *testing.T) {
	pool, dsn, wc := logicalSource(t, `CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
		ALTER TABLE docs ALTER body SET STORAGE EXTERNAL`, "public.docs")
	ctx := context.Background()
	body := strings.Repeat("0123456789", 1000)
	for _, sql := range []string{
		`INSERT INTO docs VALUES (1, $1, 1), (2, $1, 1)`,
		`UPDATE docs SET n = 2 WHERE id = 1`,
		`UPDATE docs SET n = 2 WHERE id = 2`,
		`DELETE FROM docs WHERE id = 2`,
	} {
		var args []any
		if strings.Contains(sql, "$1") {
			args = append(args, body)
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pub := &topic{}
	runUntil(t, pool, dsn, wc, pub, 5)
	var updates []string
	for _, ev := range pub.snapshot() {
		if ev.Op == event.OpUpdate {
			updates = append(updates, fmt.Sprintf("%s %s %v", ev.Key, strings.Replace(string(ev.After), body, "<body>", 1), ev.Unchanged))
		}
	}
	want := []string{`{"id":1} {"body":"<body>","id":1,"n":2} []`, `{"id":2} {"n":2,"id":2} [body]`}
	if !slices.Equal(updates, want) {
		t.Errorf("updates\n%q\nwant\n%q", updates, want)
	}
}

// TestLogicalCaptureTakesOverFromTriggers: switching a source from trigger
// capture drops the capture triggers, publishes what the outbox still
// holds, and starts a new epoch for the changes read from the log.
func TestLogicalCaptureTakesOverFromTriggers(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Migrated(t, "takeover", migrations.SourceFS(), nil)
	if _, err := pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, v int)`); err != nil {
		t.Fatal(err)
	}
	pub := &topic{}
	trig, err := capture.New(ctx, pool, pub, capture.Config{Tables: []string{"public.t"}, BatchSize: 100, ReportEvery: time.Hour,
		PublishGrace: 10 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	if n, err := trig.Step(ctx); err != nil || n != 1 {
		t.Fatalf("trigger capture published %d: %v", n, err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (2, 2)`); err != nil { // left in the outbox
		t.Fatal(err)
	}
	var slot string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&slot); err != nil {
		t.Fatal(err)
	}
	testenv.DropSlotAtCleanup(t, pool, slot)
	wc := wal.Config{Publication: "cdcflow", Slot: slot, Tables: []string{"public.t"}, StatusInterval: time.Second}
	l := newLogical(pool, pool.Config().ConnString(), wc, pub)
	runWhile(t, l, func() (bool, string) {
		n := len(pub.snapshot())
		return n >= 2, fmt.Sprintf("%d events", n)
	})
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (3, 3)`); err != nil {
		t.Fatal(err)
	}
	runWhile(t, l, func() (bool, string) {
		n := len(pub.snapshot())
		return n >= 3, fmt.Sprintf("%d events", n)
	})
	var got []string
	for _, ev := range pub.snapshot() {
		got = append(got, fmt.Sprintf("%s %d", ev.Key, ev.Epoch))
	}
	evs := pub.snapshot()
	if evs[0].Epoch != evs[1].Epoch || evs[2].Epoch <= evs[1].Epoch || string(evs[1].Key) != `{"id":2}` || string(evs[2].Key) != `{"id":3}` {
		t.Errorf("published (key, epoch) %v: want id 1 and 2 from the outbox in one epoch, then id 3 from the log in a later one", got)
	}
	var triggers int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'cdcflow_capture'`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 {
		t.Errorf("%d capture triggers left", triggers)
	}
}

// TestLogicalCaptureReportsSlotHealth: the slot's lag grows with the log
// written while nothing reads it, and shrinks to nothing once capture has
// read and confirmed it.
func TestLogicalCaptureReportsSlotHealth(t *testing.T) {
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY, v int)`, "public.t")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	l := newLogical(pool, dsn, wc, &topic{})
	h, err := l.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.LagBytes < 1000*20 || h.Active || h.WALStatus != "reserved" {
		t.Fatalf("before capture ran: %+v, want a lag of the 1,000 rows' log, inactive, reserved", h)
	}
	runWhile(t, l, func() (bool, string) {
		h, err := l.Health(ctx)
		// Read, published and confirmed.
		return err == nil && h.Active && h.LagBytes < 1000*20/10, fmt.Sprintf("%+v (%v), want the lag gone", h, err)
	})
}

// TestLogicalCaptureKeepsToItsTables: a publication that also has a table
// off the allowlist (one named by the user) gives capture none of its
// changes to publish.
func TestLogicalCaptureKeepsToItsTables(t *testing.T) {
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)`, "public.t")
	ctx := context.Background()
	for _, sql := range []string{`ALTER PUBLICATION cdcflow ADD TABLE other`, `INSERT INTO other VALUES (1)`, `INSERT INTO t VALUES (2)`} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	pub := &topic{}
	runUntil(t, pool, dsn, wc, pub, 1)
	for _, ev := range pub.snapshot() {
		if ev.Table != "public.t" {
			t.Errorf("published a change of %s, which is not on the allowlist", ev.Table)
		}
	}
}

// TestLogicalCaptureEpochs: log capture starts a new epoch, with numbering
// above every action_id given before, when its checkpoint does not hold:
// the slot was made by a run that died before recording it (after trigger
// capture), the checkpoint is ahead of the source's log (the cdcflow schema
// came from another server), or the captured tables changed. A change is
// never skipped for a checkpoint that does not hold.
func TestLogicalCaptureEpochs(t *testing.T) {
	ctx := context.Background()
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE u (id int PRIMARY KEY)`, "public.t")
	pub := &topic{}
	trig, err := capture.New(ctx, pool, pub, capture.Config{Tables: []string{"public.t"}, BatchSize: 100, ReportEvery: time.Hour,
		PublishGrace: 10 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO t VALUES (1), (2)`)
	if n, err := trig.Step(ctx); err != nil || n != 2 {
		t.Fatalf("trigger capture published %d: %v", n, err)
	}
	// The slot exists (logicalSource made it, as a run that died would
	// have), but no checkpoint of it was recorded.
	// step makes a change and runs capture until it published more events,
	// and returns the last.
	step := func(sql string, more int, tables ...string) event.Event {
		t.Helper()
		n := len(pub.snapshot())
		exec(sql)
		c := wc
		c.Tables = tables
		runUntil(t, pool, dsn, c, pub, n+more)
		return pub.snapshot()[n+more-1]
	}
	trigEpoch := pub.snapshot()[1].Epoch
	// The insert is in the outbox (the trigger is still there) and in the
	// log, which also has the two inserts before it (the slot is older):
	// published from both, the log's copies in a new epoch.
	exec(`INSERT INTO t VALUES (3)`)
	var first event.Event
	runWhile(t, newLogical(pool, dsn, wc, pub), func() (bool, string) {
		for _, ev := range pub.snapshot() {
			if string(ev.Key) == `{"id":3}` && ev.Epoch > trigEpoch {
				first = ev
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none the log's copy of id 3 in a new epoch", len(pub.snapshot()))
	})
	if first.ActionID <= 3 {
		t.Errorf("after trigger capture: action_id %d, want one above the outbox's 3", first.ActionID)
	}
	// Each new epoch asks for a snapshot whose version is below its changes.
	snapshotOf := func(table string, epoch, below int64) {
		t.Helper()
		var e, a int64
		err := pool.QueryRow(ctx, `SELECT epoch, action_id FROM cdcflow.snapshots WHERE table_name = $1 AND done_at IS NULL`, table).Scan(&e, &a)
		if err != nil || e != epoch || a >= below || a <= 0 {
			t.Errorf("snapshot of %s asked for in epoch %d with action_id %d (%v), want epoch %d below action_id %d", table, e, a, err, epoch, below)
		}
	}
	snapshotOf("public.t", first.Epoch, first.ActionID)
	same := step(`INSERT INTO t VALUES (4)`, 1, "public.t")
	if same.Epoch != first.Epoch || same.ActionID != first.ActionID+1 {
		t.Errorf("restarted as it was: epoch %d action_id %d, want %d and %d", same.Epoch, same.ActionID, first.Epoch, first.ActionID+1)
	}
	exec(`UPDATE cdcflow.capture_epoch SET wal_through = 'FF/0'`)
	ahead := step(`INSERT INTO t VALUES (5)`, 1, "public.t")
	if ahead.Epoch <= same.Epoch || ahead.ActionID <= same.ActionID {
		t.Errorf("checkpoint ahead of the log: epoch %d action_id %d, want a new epoch and an action_id above %d", ahead.Epoch, ahead.ActionID, same.ActionID)
	}
	snapshotOf("public.t", ahead.Epoch, ahead.ActionID)
	// A table joins the publication when capture starts with it: only its
	// changes after that are in the log.
	c := wc
	c.Tables = []string{"public.t", "public.u"}
	runWhile(t, newLogical(pool, dsn, c, pub), func() (bool, string) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'cdcflow' AND tablename = 'u'`).Scan(&n)
		return err == nil && n == 1, fmt.Sprint("u is not published yet ", err)
	})
	// A new epoch may publish again what its slot holds beyond its
	// position: the insert into u is among what comes, in the new epoch.
	exec(`INSERT INTO u VALUES (6)`)
	var wider event.Event
	runWhile(t, newLogical(pool, dsn, c, pub), func() (bool, string) {
		for _, ev := range pub.snapshot() {
			if ev.Table == "public.u" {
				wider = ev
				return true, ""
			}
		}
		return false, "the insert into u is not published"
	})
	if wider.Epoch <= ahead.Epoch {
		t.Errorf("with another table: epoch %d, want one after %d", wider.Epoch, ahead.Epoch)
	}
	// Only the table added is copied again.
	snapshotOf("public.u", wider.Epoch, wider.ActionID)
	snapshotOf("public.t", ahead.Epoch, ahead.ActionID)

	// A table no longer captured loses its snapshot (a later capture of it
	// copies it again); with snapshots off, none is asked for.
	c.Tables = []string{"public.t"}
	back := step(`INSERT INTO t VALUES (7)`, 1, "public.t")
	var tables []string
	if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(table_name ORDER BY table_name), '{}') FROM cdcflow.snapshots`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if back.Epoch <= wider.Epoch || len(tables) != 1 || tables[0] != "public.t" {
		t.Errorf("after u left the allowlist: epoch %d (was %d), snapshots of %v, want a new epoch and public.t alone", back.Epoch, wider.Epoch, tables)
	}
}

// TestLogicalCaptureResyncThatFailsOnce: the slot is dropped to resync, and
// the run that creates the new one fails before it records a new epoch
// (Kafka unreachable). The next run still starts a new epoch and asks for a
// snapshot of the table: what was written while no slot existed comes by
// the snapshot, not by the log.
func TestLogicalCaptureResyncThatFailsOnce(t *testing.T) {
	ctx := context.Background()
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY)`, "public.t")
	pub := &topic{}
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`INSERT INTO t VALUES (1)`)
	runUntil(t, pool, dsn, wc, pub, 1)
	first := pub.snapshot()[0]
	exec(`UPDATE cdcflow.snapshots SET done_at = now()`) // a worker copied it
	exec(fmt.Sprintf(`SELECT pg_drop_replication_slot('%s')`, wc.Slot))
	exec(`INSERT INTO t VALUES (2)`) // in no slot's log

	failed := false
	cfg := capture.Config{Tables: wc.Tables, BatchSize: 100, ReportEvery: time.Hour, PublishGrace: 10 * time.Second,
		Newest: func(context.Context, string) (event.Event, bool, error) {
			if !failed {
				failed = true
				return event.Event{}, false, errors.New("kafka: connection refused")
			}
			return event.Event{}, false, nil
		}}
	l := capture.NewLogical(pool, dsn, pub, cfg, wc, slog.New(slog.DiscardHandler))
	inserted := false
	runWhile(t, l, func() (bool, string) {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, wc.Slot).Scan(&n); err != nil || n == 0 {
			return false, fmt.Sprint("no slot yet ", err)
		}
		if !inserted {
			exec(`INSERT INTO t VALUES (3)`) // in the new slot's log
			inserted = true
		}
		for _, ev := range pub.snapshot() {
			if string(ev.Key) == `{"id":3}` {
				return true, ""
			}
		}
		return false, "id 3 not published"
	})
	var epoch, action int64
	if err := pool.QueryRow(ctx, `SELECT epoch, action_id FROM cdcflow.snapshots WHERE done_at IS NULL`).Scan(&epoch, &action); err != nil {
		t.Fatalf("no snapshot asked for after the resync: %v", err)
	}
	last := pub.snapshot()[len(pub.snapshot())-1]
	if !failed || epoch <= first.Epoch || last.Epoch != epoch || action >= last.ActionID {
		t.Fatalf("after the resync: snapshot in epoch %d with action_id %d, last change in epoch %d with action_id %d; first epoch %d",
			epoch, action, last.Epoch, last.ActionID, first.Epoch)
	}
}

// stalled is a topic whose writes wait until it is opened: Kafka slow to
// acknowledge.
type stalled struct {
	topic
	open chan struct{}
}

func (p *stalled) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	select {
	case <-p.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.topic.WriteMessages(ctx, msgs...)
}

// TestLogicalCaptureReportsLagInSeconds: while Kafka does not acknowledge
// a change read from the log, the slot's lag in seconds grows from the
// change's commit; once it is published and confirmed, it is 0.
func TestLogicalCaptureReportsLagInSeconds(t *testing.T) {
	ctx := context.Background()
	pool, dsn, wc := logicalSource(t, `CREATE TABLE t (id int PRIMARY KEY)`, "public.t")
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	pub := &stalled{open: make(chan struct{})}
	l := capture.NewLogical(pool, dsn, pub, capture.Config{Tables: wc.Tables, BatchSize: 100, ReportEvery: time.Hour,
		PublishGrace: time.Minute}, wc, slog.New(slog.DiscardHandler))
	opened := false
	var stalledLag float64
	runWhile(t, l, func() (bool, string) {
		h, err := l.Health(ctx)
		if err != nil {
			return false, err.Error()
		}
		if !opened {
			if h.LagSeconds < 0.5 {
				return false, fmt.Sprintf("lag %.2f s while Kafka does not acknowledge, want it to grow", h.LagSeconds)
			}
			stalledLag, opened = h.LagSeconds, true
			close(pub.open)
		}
		return len(pub.snapshot()) == 1 && h.LagSeconds == 0, fmt.Sprintf("%d published, lag %.2f s", len(pub.snapshot()), h.LagSeconds)
	})
	t.Logf("lag while stalled %.2f s, then 0", stalledLag)
}
