package applier_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestInsertUpdateDeleteReinsert(t *testing.T) {
	events := []event.Event{
		emp(1, event.OpInsert, 1, "Ada", "Oslo", 100),
		emp(2, event.OpUpdate, 1, "Ada", "Rome", 110),
		emp(3, event.OpInsert, 2, "Bob", "Lima", 200),
		emp(4, event.OpDelete, 2, "", "", 0),
		emp(5, event.OpInsert, 2, "Bob", "Kyiv", 210), // re-insert after delete
		emp(6, event.OpInsert, 3, "Cy", "Pune", 300),
		emp(7, event.OpDelete, 3, "", "", 0),
	}
	want := "1:Ada:Rome:110:1990-01-02 2:Bob:Kyiv:210:1990-01-02"

	t.Run("one batch", func(t *testing.T) {
		d := newDest(t)
		res := d.apply(t, events...)
		if got := d.rows(t); got != want {
			t.Fatalf("rows %q, want %q", got, want)
		}
		// One winning change per key; the rest were overtaken within the batch.
		if res != (cdc.Counts{Applied: 3, Superseded: 4}) {
			t.Fatalf("result %+v", res)
		}
		if n := d.count(t, `SELECT count(*) FROM cdcflow.row_versions WHERE deleted`); n != 1 {
			t.Fatalf("%d tombstones, want 1 (emp 3)", n)
		}
	})
	t.Run("one batch per event", func(t *testing.T) {
		d := newDest(t)
		for _, ev := range events {
			if res := d.apply(t, ev); res != (cdc.Counts{Applied: 1}) {
				t.Fatalf("event %d: result %+v", ev.ActionID, res)
			}
		}
		if got := d.rows(t); got != want {
			t.Fatalf("rows %q, want %q", got, want)
		}
	})
}

func TestDuplicateActionIDsAreSkipped(t *testing.T) {
	d := newDest(t)
	batch := []event.Event{emp(1, event.OpInsert, 1, "Ada", "Oslo", 100), emp(2, event.OpUpdate, 1, "Ada", "Rome", 110)}
	d.apply(t, batch...)
	before := d.rows(t)

	res := d.apply(t, batch...)
	if res != (cdc.Counts{Duplicates: 2}) {
		t.Fatalf("redelivered batch: %+v, want 2 duplicates", res)
	}
	// A duplicate with a different payload is still skipped: action_id decides.
	res = d.apply(t, emp(2, event.OpUpdate, 1, "Eve", "Nice", 999), emp(2, event.OpUpdate, 1, "Eve", "Nice", 999),
		emp(3, event.OpUpdate, 1, "Ada", "Bern", 120), emp(3, event.OpUpdate, 1, "Ada", "Bern", 120))
	if res != (cdc.Counts{Applied: 1, Duplicates: 3}) {
		t.Fatalf("mixed batch: %+v, want 1 applied, 3 duplicates", res)
	}
	if before != "1:Ada:Rome:110:1990-01-02" {
		t.Fatalf("after first batch %q", before)
	}
	if got := d.rows(t); got != "1:Ada:Bern:120:1990-01-02" {
		t.Fatalf("rows %q", got)
	}
	if n := d.count(t, `SELECT count(*) FROM cdcflow.processed_events`); n != 3 {
		t.Fatalf("%d processed events, want 3", n)
	}
}

func TestOutOfOrderBatchesNeverMoveRowsBackwards(t *testing.T) {
	d := newDest(t)
	older := []event.Event{
		emp(10, event.OpInsert, 1, "Ada", "Oslo", 100),
		emp(11, event.OpInsert, 2, "Bob", "Lima", 200),
		emp(12, event.OpInsert, 3, "Cy", "Pune", 300),
	}
	newer := []event.Event{
		emp(20, event.OpUpdate, 1, "Ada", "Rome", 150),
		emp(21, event.OpDelete, 2, "", "", 0),
	}
	if res := d.apply(t, newer...); res != (cdc.Counts{Applied: 2}) {
		t.Fatalf("newer batch: %+v", res)
	}
	res := d.apply(t, older...)
	if res != (cdc.Counts{Applied: 1, Superseded: 2}) {
		t.Fatalf("older batch: %+v, want emp 3 applied and 2 superseded", res)
	}
	// emp 2 stays deleted (tombstone), emp 1 keeps the newer image.
	if got, want := d.rows(t), "1:Ada:Rome:150:1990-01-02 3:Cy:Pune:300:1990-01-02"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
	// A re-insert newer than the tombstone brings the row back.
	d.apply(t, emp(30, event.OpInsert, 2, "Bob", "Kyiv", 250))
	if got, want := d.rows(t), "1:Ada:Rome:150:1990-01-02 2:Bob:Kyiv:250:1990-01-02 3:Cy:Pune:300:1990-01-02"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

func TestConcurrentBatchesOnSameKeys(t *testing.T) {
	d := newDest(t)
	// 8 batches touch the same 50 keys; the newest action_id per key must win
	// whatever order the transactions commit in.
	const keys, batches = 50, 8
	var wg sync.WaitGroup
	errs := make(chan error, batches)
	for b := 0; b < batches; b++ {
		var evs []event.Event
		for k := 1; k <= keys; k++ {
			id := int64(k*100 + b)
			if b%3 == 2 {
				evs = append(evs, emp(id, event.OpDelete, k, "", "", 0))
			} else {
				evs = append(evs, emp(id, event.OpUpdate, k, fmt.Sprintf("v%d", b), "X", b))
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := d.apl.Apply(context.Background(), evs)
				if err != nil && applier.IsTransient(err) {
					continue // deadlock or serialization failure: retry as Temporal would
				}
				errs <- err
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Batch 7 holds the highest action_id of every key: an update to "v7".
	if n := d.count(t, `SELECT count(*) FROM employees WHERE first_name = 'v7' AND salary = 7`); n != keys {
		t.Fatalf("%d rows hold the newest change, want %d: %s", n, keys, d.rows(t))
	}
	if n := d.count(t, `SELECT count(*) FROM employees`); n != keys {
		t.Fatalf("%d rows, want %d", n, keys)
	}
}

func TestColumnSetsAndNulls(t *testing.T) {
	d := newDest(t)
	a := emp(1, event.OpInsert, 1, "Ada", "Oslo", 100)
	b := event.Event{ActionID: 2, Table: "employees", Op: event.OpInsert, CommitTime: commit, SchemaVersion: 1,
		Key: json.RawMessage(`{"emp_id":2}`), After: json.RawMessage(`{"emp_id":2,"first_name":"Bob","salary":null}`)}
	b.Table, _ = event.NormalizeTable(b.Table)
	d.apply(t, a, b)
	if got, want := d.rows(t), "1:Ada:Oslo:100:1990-01-02 2:Bob:NULL:NULL:NULL"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

// TestUnchangedColumnsAreKept: an update from log-based capture that
// leaves out unchanged out-of-line columns (a row deleted on the source
// since, whose delete follows) writes the columns it has and leaves the
// others as they are, also when it supersedes a change in its batch.
func TestUnchangedColumnsAreKept(t *testing.T) {
	d := newDest(t)
	d.apply(t, emp(1, event.OpInsert, 1, "Ada", "Oslo", 100))
	upd := withAfter(emp(3, event.OpUpdate, 1, "", "", 0), `{"emp_id":1,"salary":5}`)
	upd.Unchanged = []string{"first_name", "last_name"}
	d.apply(t, emp(2, event.OpUpdate, 1, "Bob", "Bergen", 1), upd)
	if got, want := d.rows(t), "1:Ada:Oslo:5:1990-01-02"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

// permanent asserts err is a PermanentError of class whose text holds msg.
func permanent(t *testing.T, err error, class cdc.ErrorClass, msg string) {
	t.Helper()
	var perm *applier.PermanentError
	if !errors.As(err, &perm) {
		t.Fatalf("error %v (%T), want a permanent %s error", err, err, class)
	}
	if perm.ErrorClass != class || !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %s %q, want %s containing %q", perm.ErrorClass, err, class, msg)
	}
	if applier.IsTransient(err) {
		t.Fatal("permanent error reported as transient")
	}
}

func TestRejectsTableNotOnAllowlist(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE public.secrets (id int PRIMARY KEY, v text)`)
	ev := event.Event{ActionID: 1, Table: "public.secrets", Op: event.OpInsert, CommitTime: commit, SchemaVersion: 1,
		Key: json.RawMessage(`{"id":1}`), After: json.RawMessage(`{"id":1,"v":"x"}`)}
	_, err := d.apl.Apply(context.Background(), []event.Event{emp(2, event.OpInsert, 1, "Ada", "Oslo", 1), ev})
	permanent(t, err, cdc.ClassTableNotAllowed, `action_id 1: table "public.secrets" is not on the allowlist`)
	// The batch is all or nothing.
	if n := d.count(t, `SELECT count(*) FROM secrets`) + d.count(t, `SELECT count(*) FROM employees`) +
		d.count(t, `SELECT count(*) FROM cdcflow.processed_events`); n != 0 {
		t.Fatalf("%d rows written by a rejected batch", n)
	}
}

func TestHostileIdentifiers(t *testing.T) {
	const hostile = `employees"; drop table x; --`
	d := newDest(t)
	d.exec(t, `CREATE TABLE x (id int)`)

	// As a table name from data: not on the allowlist.
	ev := emp(1, event.OpInsert, 1, "Ada", "Oslo", 1)
	ev.Table, _ = event.NormalizeTable(hostile)
	_, err := d.apl.Apply(context.Background(), []event.Event{ev})
	permanent(t, err, cdc.ClassTableNotAllowed, `table "public.employees\"; drop table x; --" is not on the allowlist`)

	// As a column name from data: the destination has no such column.
	ev = emp(2, event.OpInsert, 1, "Ada", "Oslo", 1)
	ev.After = json.RawMessage(`{"emp_id":1,"salary\"; drop table x; --":5}`)
	_, err = d.apl.Apply(context.Background(), []event.Event{ev})
	permanent(t, err, cdc.ClassUnknownColumn, `table public.employees has no column "salary\"; drop table x; --"`)

	// Allowlisted on purpose: a table whose name needs quoting is written correctly.
	d.exec(t, `CREATE TABLE public."employees""; drop table x; --" ("we""ird" int PRIMARY KEY, "v; --" text)`)
	apl, err := applier.New(context.Background(), d.pool, []string{hostile})
	if err != nil {
		t.Fatal(err)
	}
	ev = event.Event{ActionID: 3, Table: "public." + hostile, Op: event.OpInsert, CommitTime: commit, SchemaVersion: 1,
		Key: json.RawMessage(`{"we\"ird":1}`), After: json.RawMessage(`{"we\"ird":1,"v; --":"ok"}`)}
	del := event.Event{ActionID: 4, Table: "public." + hostile, Op: event.OpDelete, CommitTime: commit, SchemaVersion: 1,
		Key: json.RawMessage(`{"we\"ird":2}`)}
	if _, err := apl.Apply(context.Background(), []event.Event{ev, del}); err != nil {
		t.Fatal(err)
	}
	if n := d.count(t, `SELECT count(*) FROM public."employees""; drop table x; --" WHERE "v; --" = 'ok'`); n != 1 {
		t.Fatalf("%d rows in the oddly named table, want 1", n)
	}
	if n := d.count(t, `SELECT count(*) FROM x`); n != 0 {
		t.Fatalf("table x changed: %d rows", n)
	}
}

func TestPermanentErrors(t *testing.T) {
	d := newDest(t)
	cases := []struct {
		name string
		ev   event.Event
		typ  cdc.ErrorClass
		msg  string
	}{
		{"unknown column", withAfter(emp(1, event.OpInsert, 1, "", "", 0), `{"emp_id":1,"nickname":"A"}`),
			cdc.ClassUnknownColumn, `table public.employees has no column "nickname"`},
		{"key is not the primary key", withKey(emp(1, event.OpInsert, 1, "", "", 0), `{"first_name":"A"}`),
			cdc.ClassKeyMismatch, "key columns (first_name) are not the primary key (emp_id)"},
		{"row image of another row", withKey(emp(1, event.OpInsert, 701, "", "", 0), `{"emp_id":700}`),
			cdc.ClassKeyMismatch, "table public.employees: key and row image name different rows: after has emp_id = 701, the key has 700"},
		{"row image without the key", withAfter(emp(1, event.OpUpdate, 1, "", "", 0), `{"salary":5}`),
			cdc.ClassKeyMismatch, `after lacks key column "emp_id"`},
		{"value of the wrong type", withAfter(emp(1, event.OpInsert, 1, "", "", 0), `{"emp_id":1,"salary":"lots"}`),
			cdc.ClassInvalidValue, `invalid input syntax for type integer: "lots" [SQLSTATE 22P02]`},
		{"bad date", withAfter(emp(1, event.OpInsert, 1, "", "", 0), `{"emp_id":1,"dob":"1990-02-31"}`),
			cdc.ClassInvalidValue, `date/time field value out of range: "1990-02-31"`},
		{"null primary key", withKey(withAfter(emp(1, event.OpInsert, 1, "", "", 0), `{"emp_id":null}`), `{"emp_id":null}`),
			cdc.ClassConstraint, `null value in column "emp_id"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.apl.Apply(context.Background(), []event.Event{c.ev})
			permanent(t, err, c.typ, c.msg)
		})
	}
	if n := d.count(t, `SELECT count(*) FROM cdcflow.processed_events`); n != 0 {
		t.Fatalf("failed batches recorded %d action_ids", n)
	}
}

func TestNewChecksTables(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE nokey (a int)`)
	for table, want := range map[string]string{
		"public.missing": "destination table public.missing does not exist",
		"nokey":          "destination table public.nokey has no primary key",
		"a.b.c":          `table allowlist: want schema.table, got "a.b.c"`,
	} {
		_, err := applier.New(context.Background(), d.pool, []string{table})
		if err == nil || err.Error() != want {
			t.Errorf("New(%s): %v, want %q", table, err, want)
		}
	}
}

func TestApplyIsolatingSetsAsideBadEvents(t *testing.T) {
	d := newDest(t)
	d.exec(t, `ALTER TABLE employees ADD CONSTRAINT salary_positive CHECK (salary >= 0)`)
	var evs []event.Event
	for i := 1; i <= 100; i++ {
		evs = append(evs, emp(int64(i), event.OpInsert, i, "Ada", "Oslo", i))
	}
	evs[10] = emp(11, event.OpInsert, 11, "Bad", "Oslo", -5) // violates the CHECK constraint
	evs[40].Table = "public.payroll"                         // not on the allowlist
	evs[70] = withAfter(evs[70], `{"emp_id":71,"nickname":"x"}`)
	res, failed, err := d.apl.ApplyIsolating(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != 97 {
		t.Fatalf("result %+v, want 97 applied", res)
	}
	want := []cdc.FailedEvent{
		{Index: 10, ActionID: 11, Table: "public.employees", ErrorClass: cdc.ClassConstraint,
			Error: `table employees: new row for relation "employees" violates check constraint "salary_positive" (Failing row contains (11, Bad, L, 1990-01-02, Oslo, -5).) [SQLSTATE 23514]`},
		{Index: 40, ActionID: 41, Table: "public.payroll", ErrorClass: cdc.ClassTableNotAllowed,
			Error: `table "public.payroll" is not on the allowlist (CDCFLOW_TABLES)`},
		{Index: 70, ActionID: 71, Table: "public.employees", ErrorClass: cdc.ClassUnknownColumn,
			Error: `table public.employees has no column "nickname"`},
	}
	slices.SortFunc(failed, func(a, b cdc.FailedEvent) int { return a.Index - b.Index })
	if diff := cmp.Diff(want, failed); diff != "" {
		t.Fatalf("failed events (-want +got):\n%s", diff)
	}
	if n := d.count(t, `SELECT count(*) FROM employees`); n != 97 {
		t.Fatalf("%d rows, want 97", n)
	}
	if n := d.count(t, `SELECT count(*) FROM cdcflow.processed_events WHERE action_id IN (11, 41, 71)`); n != 0 {
		t.Fatalf("failed events were recorded as processed")
	}
}

// TestIsolatingABatchThatAllFailsIsBounded: when every event of a batch
// fails inside PostgreSQL, finding them costs the failed batch and one
// transaction of savepoints per 50 events, not a transaction per half of a
// bisection; the good events interleaved with them are applied.
func TestIsolatingABatchThatAllFailsIsBounded(t *testing.T) {
	d := newDest(t)
	d.exec(t, `ALTER TABLE employees ADD CONSTRAINT salary_positive CHECK (salary >= 0)`)
	var evs []event.Event
	for i := 1; i <= 1000; i++ {
		salary := -i
		if i%100 == 0 {
			salary = i // one event in a hundred passes
		}
		evs = append(evs, emp(int64(i), event.OpInsert, i, "Ada", "Oslo", salary))
	}
	before := d.pool.Stat().AcquireCount()
	res, failed, err := d.apl.ApplyIsolating(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.pool.Stat().AcquireCount() - before; got > 21 {
		t.Errorf("isolation took %d transactions, want 21: the failed batch and one per 50 events", got)
	}
	if diff := cmp.Diff(cdc.Counts{Applied: 10}, res); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(failed) != 990 {
		t.Fatalf("%d failed, want 990", len(failed))
	}
	for _, f := range failed {
		if f.ErrorClass != cdc.ClassConstraint || f.ActionID != int64(f.Index+1) || f.ActionID%100 == 0 {
			t.Fatalf("failure %+v: want a constraint violation of a negative salary", f)
		}
	}
	if n := d.count(t, `SELECT count(*) FROM employees`); n != 10 {
		t.Fatalf("%d rows, want 10", n)
	}
	if n := d.count(t, `SELECT count(*) FROM cdcflow.processed_events`); n != 10 {
		t.Fatalf("%d action_ids recorded, want the 10 applied", n)
	}
}

// TestIsolationKeepsOrderAndIdempotency: events applied one by one while a
// failing one is set aside behave as the batch would: updates and deletes in
// order, a repeated change a duplicate, an older one superseded.
func TestIsolationKeepsOrderAndIdempotency(t *testing.T) {
	d := newDest(t)
	d.exec(t, `ALTER TABLE employees ADD CONSTRAINT salary_positive CHECK (salary >= 0)`)
	d.apply(t, emp(1, event.OpInsert, 9, "Old", "Oslo", 1))
	res, failed, err := d.apl.ApplyIsolating(context.Background(), []event.Event{
		emp(10, event.OpInsert, 1, "Ada", "Oslo", 10),
		emp(11, event.OpInsert, 2, "Bad", "Oslo", -1),
		emp(12, event.OpUpdate, 1, "Ada", "Bergen", 12),
		emp(13, event.OpInsert, 3, "Cy", "Oslo", 13),
		emp(14, event.OpDelete, 3, "Cy", "Oslo", 13),
		emp(1, event.OpInsert, 9, "Old", "Oslo", 1), // applied before
		emp(15, event.OpUpdate, 9, "New", "Oslo", 2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.Counts{Applied: 5, Duplicates: 1}, res); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(failed) != 1 || failed[0].ActionID != 11 || failed[0].ErrorClass != cdc.ClassConstraint {
		t.Fatalf("failed %+v, want action_id 11 as a constraint violation", failed)
	}
	if got := d.rows(t); got != "1:Ada:Bergen:12:1990-01-02 9:New:Oslo:2:1990-01-02" {
		t.Fatalf("rows %q", got)
	}
	// An older change to row 1, isolated again: superseded.
	_, _, err = d.apl.ApplyIsolating(context.Background(), []event.Event{
		emp(16, event.OpInsert, 4, "Bad", "Oslo", -1), emp(11, event.OpUpdate, 1, "Stale", "Oslo", 11)})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.rows(t); got != "1:Ada:Bergen:12:1990-01-02 9:New:Oslo:2:1990-01-02" {
		t.Fatalf("rows after a stale change %q", got)
	}
}

// TestIsolationAfterAColumnIsDropped: a column dropped on the destination
// after the applier read the catalog makes PostgreSQL refuse the statements
// of the changes that carry it. Isolation reports those alone, as
// UnknownColumn, and applies the others, instead of failing the whole call
// (which would retry it without end); the catalog is read again.
func TestIsolationAfterAColumnIsDropped(t *testing.T) {
	d := newDest(t)
	d.apply(t, emp(1, event.OpInsert, 1, "Ada", "Oslo", 10)) // the catalog is read and cached
	d.exec(t, `ALTER TABLE employees DROP COLUMN city`)
	withoutCity := func(id int64, empID int) event.Event {
		return withAfter(emp(id, event.OpInsert, empID, "", "", 0), fmt.Sprintf(`{"emp_id":%d,"first_name":"No city"}`, empID))
	}
	evs := []event.Event{
		emp(2, event.OpInsert, 2, "Bo", "Oslo", 20), withoutCity(3, 3),
		emp(4, event.OpInsert, 4, "Cy", "Oslo", 40), withoutCity(5, 5),
	}
	res, failed, err := d.apl.ApplyIsolating(context.Background(), evs)
	if err != nil {
		t.Fatalf("isolation failed as a whole: %v", err)
	}
	if res.Applied != 2 || len(failed) != 2 {
		t.Fatalf("%+v applied, %+v failed; want 2 and 2", res, failed)
	}
	for _, f := range failed {
		if f.ErrorClass != cdc.ClassUnknownColumn || (f.ActionID != 2 && f.ActionID != 4) {
			t.Fatalf("failure %+v, want action_ids 2 and 4 as UnknownColumn", f)
		}
	}
	// Read again, the catalog now refuses them before any SQL runs.
	if _, err := d.apl.Apply(context.Background(), evs[2:3]); err == nil || !strings.Contains(err.Error(), `has no column "city"`) {
		t.Fatalf("after the catalog was read again: %v", err)
	}
}

// TestIsolationOfDeferredConstraints: a deferred foreign key fails only at
// commit; isolation still finds the change at fault and applies the others.
func TestIsolationOfDeferredConstraints(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE cities (name text PRIMARY KEY); INSERT INTO cities VALUES ('Oslo');
		ALTER TABLE employees ADD CONSTRAINT employees_city FOREIGN KEY (city) REFERENCES cities DEFERRABLE INITIALLY DEFERRED`)
	res, failed, err := d.apl.ApplyIsolating(context.Background(), []event.Event{
		emp(1, event.OpInsert, 1, "Ada", "Oslo", 10), emp(2, event.OpInsert, 2, "Bo", "Atlantis", 20), emp(3, event.OpInsert, 3, "Cy", "Oslo", 30)})
	if err != nil {
		t.Fatalf("isolation failed as a whole: %v", err)
	}
	if res.Applied != 2 || len(failed) != 1 || failed[0].ActionID != 2 || failed[0].ErrorClass != cdc.ClassForeignKey {
		t.Fatalf("%+v applied, %+v failed; want 2, and action_id 2 as a foreign key violation", res, failed)
	}
}

// TestEpochsOrderChanges: after the source was restored (a new epoch), its
// changes reuse action_ids of the epoch before; they are neither skipped as
// duplicates nor refused as older, while a change of the old epoch arriving
// late does not overwrite a row the new epoch wrote.
func TestEpochsOrderChanges(t *testing.T) {
	d := newDest(t)
	inEpoch := func(epoch int64, ev event.Event) event.Event { ev.Epoch = epoch; return ev }
	d.apply(t, inEpoch(1, emp(5, event.OpInsert, 1, "Ada", "Oslo", 10)), inEpoch(1, emp(6, event.OpInsert, 2, "Bo", "Oslo", 20)))
	res := d.apply(t, inEpoch(2, emp(5, event.OpUpdate, 1, "Ada", "Bergen", 11)), inEpoch(2, emp(3, event.OpDelete, 2, "Bo", "Oslo", 20)))
	if diff := cmp.Diff(cdc.Counts{Applied: 2}, res); diff != "" {
		t.Fatalf("the new epoch's changes (-want +got):\n%s", diff)
	}
	res = d.apply(t, inEpoch(1, emp(7, event.OpUpdate, 1, "Ada", "Oslo", 99)), inEpoch(1, emp(6, event.OpInsert, 2, "Bo", "Oslo", 20)))
	if diff := cmp.Diff(cdc.Counts{Superseded: 1, Duplicates: 1}, res); diff != "" {
		t.Fatalf("the old epoch's late changes (-want +got):\n%s", diff)
	}
	if got := d.rows(t); got != "1:Ada:Bergen:11:1990-01-02" {
		t.Fatalf("rows %q", got)
	}
}

// TestIdentityAndGeneratedColumns: a GENERATED ALWAYS identity key keeps the
// source's value, and a generated column is computed by the destination,
// whatever the row image says of it.
func TestIdentityAndGeneratedColumns(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE items (
		id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		name  text,
		price numeric,
		gross numeric GENERATED ALWAYS AS (price * 2) STORED)`)
	apl, err := applier.New(context.Background(), d.pool, []string{"public.items"})
	if err != nil {
		t.Fatal(err)
	}
	item := func(id int64, op event.Op, key int, after string) event.Event {
		ev := event.Event{ActionID: id, Table: "public.items", Op: op, CommitTime: commit, SchemaVersion: 1,
			Key: json.RawMessage(fmt.Sprintf(`{"id":%d}`, key))}
		if after != "" {
			ev.After = json.RawMessage(after)
		}
		return ev
	}
	counts, err := apl.Apply(context.Background(), []event.Event{
		item(1, event.OpInsert, 41, `{"id":41,"name":"bolt","price":1.5,"gross":3.0}`),
		item(2, event.OpInsert, 42, `{"id":42,"name":"nut","price":2,"gross":4}`),
		item(3, event.OpUpdate, 41, `{"id":41,"name":"bolt","price":2.5,"gross":5.0}`),
		item(4, event.OpInsert, 43, `{"id":43,"name":"washer","price":1,"gross":2}`),
		item(5, event.OpDelete, 43, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.Counts{Applied: 3, Superseded: 2}, counts); diff != "" {
		t.Fatalf("counts (-want +got):\n%s", diff)
	}
	rows, err := d.pool.Query(context.Background(), `SELECT id || ':' || name || ':' || price || ':' || gross FROM items ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"41:bolt:2.5:5.0", "42:nut:2:4"}, got); diff != "" {
		t.Fatalf("items (-want +got):\n%s", diff)
	}
}

// TestIdentityOutsideTheKey: a GENERATED ALWAYS identity column that is not
// the key is inserted with the source's value, and an update of the row,
// which cannot update that column, keeps it.
func TestIdentityOutsideTheKey(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE tickets (code text PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, state text)`)
	apl, err := applier.New(context.Background(), d.pool, []string{"public.tickets"})
	if err != nil {
		t.Fatal(err)
	}
	ticket := func(id int64, op event.Op, after string) event.Event {
		return event.Event{ActionID: id, Table: "public.tickets", Op: op, CommitTime: commit, SchemaVersion: 1,
			Key: json.RawMessage(`{"code":"A-1"}`), After: json.RawMessage(after)}
	}
	for i, ev := range []event.Event{ticket(1, event.OpInsert, `{"code":"A-1","seq":7,"state":"open"}`),
		ticket(2, event.OpUpdate, `{"code":"A-1","seq":7,"state":"closed"}`)} {
		if _, err := apl.Apply(context.Background(), []event.Event{ev}); err != nil {
			t.Fatalf("change %d: %v", i+1, err)
		}
	}
	var got string
	if err := d.pool.QueryRow(context.Background(), `SELECT code || ':' || seq || ':' || state FROM tickets`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "A-1:7:closed" {
		t.Fatalf("ticket %q, want A-1:7:closed", got)
	}
}

// TestPartitionedTable: changes addressed to a partitioned table land in its
// partitions.
func TestPartitionedTable(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE TABLE measurements (day date, sensor int, value int, PRIMARY KEY (day, sensor)) PARTITION BY RANGE (day)`)
	d.exec(t, `CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`)
	d.exec(t, `CREATE TABLE measurements_2027 PARTITION OF measurements FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')`)
	apl, err := applier.New(context.Background(), d.pool, []string{"public.measurements"})
	if err != nil {
		t.Fatal(err)
	}
	m := func(id int64, op event.Op, day string, value int) event.Event {
		ev := event.Event{ActionID: id, Table: "public.measurements", Op: op, CommitTime: commit, SchemaVersion: 1,
			Key: json.RawMessage(fmt.Sprintf(`{"day":%q,"sensor":1}`, day))}
		if op != event.OpDelete {
			ev.After = json.RawMessage(fmt.Sprintf(`{"day":%q,"sensor":1,"value":%d}`, day, value))
		}
		return ev
	}
	if _, err := apl.Apply(context.Background(), []event.Event{m(1, event.OpInsert, "2026-12-31", 1), m(2, event.OpInsert, "2027-01-01", 2),
		m(3, event.OpUpdate, "2026-12-31", 3), m(4, event.OpInsert, "2027-06-01", 4), m(5, event.OpDelete, "2027-06-01", 0)}); err != nil {
		t.Fatal(err)
	}
	rows, err := d.pool.Query(context.Background(), `SELECT tableoid::regclass || ':' || day || ':' || value FROM measurements ORDER BY day`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"measurements_2026:2026-12-31:3", "measurements_2027:2027-01-01:2"}, got); diff != "" {
		t.Fatalf("measurements (-want +got):\n%s", diff)
	}
}

// TestRowLockTimesOut: a batch that waits on a row another transaction holds
// fails, within the lock timeout, with a transient error; once the lock is
// gone it applies.
func TestRowLockTimesOut(t *testing.T) {
	ctx := context.Background()
	pool, apl := testenv.NewDestination(t, applier.Timeouts{Lock: 200 * time.Millisecond, Statement: 10 * time.Second})
	if _, err := apl.Apply(ctx, []event.Event{emp(1, event.OpInsert, 1, "Ada", "Oslo", 1)}); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT * FROM employees WHERE emp_id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	_, err = apl.Apply(ctx, []event.Event{emp(2, event.OpUpdate, 1, "Ada", "Rome", 2)})
	if !applier.IsTransient(err) || !strings.Contains(err.Error(), "SQLSTATE 55P03") {
		t.Fatalf("apply behind a row lock: %v, want a transient lock timeout (55P03)", err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	counts, err := apl.Apply(ctx, []event.Event{emp(2, event.OpUpdate, 1, "Ada", "Rome", 2)})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.Counts{Applied: 1}, counts); diff != "" {
		t.Fatalf("after the lock (-want +got):\n%s", diff)
	}
}

// TestTriggerRejection: a destination trigger that raises (P0001) rejects
// its change alone; the rest of the batch is applied. It used to count as
// transient and hold the whole batch forever.
func TestTriggerRejection(t *testing.T) {
	d := newDest(t)
	d.exec(t, `CREATE FUNCTION no_moscow() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.city = 'Moscow' THEN RAISE EXCEPTION 'no rows from Moscow'; END IF; RETURN NEW; END $$`)
	d.exec(t, `CREATE TRIGGER no_moscow BEFORE INSERT OR UPDATE ON employees FOR EACH ROW EXECUTE FUNCTION no_moscow()`)
	evs := []event.Event{emp(1, event.OpInsert, 1, "Ada", "Oslo", 1), emp(2, event.OpInsert, 2, "Ivan", "Moscow", 2),
		emp(3, event.OpInsert, 3, "Lin", "Pune", 3)}
	counts, failed, err := d.apl.ApplyIsolating(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.Counts{Applied: 2}, counts); diff != "" {
		t.Fatalf("counts (-want +got):\n%s", diff)
	}
	want := []cdc.FailedEvent{{Index: 1, ActionID: 2, Table: demo.Table, ErrorClass: cdc.ClassRejected,
		Error: "no rows from Moscow [SQLSTATE P0001]"}}
	if diff := cmp.Diff(want, failed); diff != "" {
		t.Fatalf("failed (-want +got):\n%s", diff)
	}
}
