package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/localsvc"
)

// usersTables are shapes of tables users have that a toy table does not
// show: an identity key the database generates ALWAYS and a generated
// column; a partitioned table (plain on the destination); a timestamptz key
// written from sessions in other time zones; a composite uuid + unicode text
// key.
var usersTables = map[string]struct{ source, dest, order string }{
	"public.accounts": {
		source: `CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner text, balance numeric,
			doubled numeric GENERATED ALWAYS AS (balance * 2) STORED)`,
		order: "id",
	},
	"public.readings": {
		source: `CREATE TABLE readings (day date, sensor int, value int, PRIMARY KEY (day, sensor)) PARTITION BY RANGE (day);
			CREATE TABLE readings_2026 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
			CREATE TABLE readings_2027 PARTITION OF readings FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')`,
		dest:  `CREATE TABLE readings (day date, sensor int, value int, PRIMARY KEY (day, sensor))`,
		order: "day, sensor",
	},
	"public.sessions": {
		source: `CREATE TABLE sessions (started timestamptz PRIMARY KEY, note text)`,
		order:  "started",
	},
	"public.tags": {
		source: `CREATE TABLE tags (id uuid, label text, n int, PRIMARY KEY (id, label))`,
		order:  "id, label",
	},
}

// TestTablesUsersHave replicates changes to those tables, and checks that a
// row written from sessions in different time zones has one version, not one
// per rendering of its key.
func TestTablesUsersHave(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	var names []string
	for name, tbl := range usersTables {
		names = append(names, name)
		dest := tbl.dest
		if dest == "" {
			dest = tbl.source
		}
		for pool, sql := range map[*pgxpool.Pool]string{p.source: tbl.source, p.dest: dest} {
			if _, err := pool.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := "CDCFLOW_TABLES=" + strings.Join(names, ",")
	p.start("capture", env)
	p.start("worker", env)
	p.start("starter")
	waitTable(t, p.source, "accounts") // capture has installed its triggers

	// Each statement runs in a session of its own time zone.
	for _, s := range []struct{ zone, sql string }{
		{"UTC", `INSERT INTO accounts (owner, balance) SELECT 'owner' || i, i FROM generate_series(1, 50) i`},
		{"UTC", `UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0`},
		{"UTC", `DELETE FROM accounts WHERE id % 7 = 0`},
		{"UTC", `INSERT INTO readings SELECT DATE '2026-12-01' + i, 1, i FROM generate_series(0, 60) i`},
		{"UTC", `UPDATE readings SET value = value * 10 WHERE day >= '2027-01-01'`},
		{"UTC", `DELETE FROM readings WHERE day = '2026-12-31'`},
		{"Asia/Tokyo", `INSERT INTO sessions VALUES ('2026-11-25 10:00:00+00', 'first'), ('2026-11-25 11:00:00+00', 'second')`},
		{"America/New_York", `UPDATE sessions SET note = 'first, edited in New York' WHERE started = '2026-11-25 10:00:00+00'`},
		{"Asia/Tokyo", `UPDATE sessions SET note = 'first, edited in Tokyo' WHERE started = '2026-11-25 10:00:00+00'`},
		{"America/New_York", `DELETE FROM sessions WHERE started = '2026-11-25 11:00:00+00'`},
		{"UTC", `INSERT INTO tags VALUES ('6f1c1a5e-4a1b-4c1d-9e1f-000000000001', 'naïve ☃', 1), ('6f1c1a5e-4a1b-4c1d-9e1f-000000000001', 'Straße', 2)`},
		{"UTC", `UPDATE tags SET n = 3 WHERE label = 'naïve ☃'`},
	} {
		tx, err := p.source.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET LOCAL TimeZone = '"+s.zone+"'"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, s.sql); err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		p.waitSame(name, usersTables[name].order, 2*time.Minute)
	}
	if n := p.count(`SELECT count(*) FROM cdcflow.dead_letters`); n != 0 {
		t.Fatalf("%d changes parked, want none", n)
	}
	// One version per row of sessions, whatever zone wrote it.
	if n := p.count(`SELECT count(*) FROM cdcflow.row_versions WHERE table_name = 'public.sessions'`); n != 2 {
		t.Fatalf("%d row versions of the 2 rows of sessions, want 2", n)
	}
	var note string
	if err := p.dest.QueryRow(ctx, `SELECT note FROM sessions`).Scan(&note); err != nil || note != "first, edited in Tokyo" {
		t.Fatalf("sessions holds %q (%v), want the last edit", note, err)
	}
}

// TestTableAddedWhileRunning: a table is added to the allowlist while
// changes flow, capture first, the worker some time later (a rolling
// configuration change). The new table's changes that reach the old worker
// wait, retried for the ordering window, instead of being parked; once the
// worker knows the table they are applied, and no person is needed.
func TestTableAddedWhileRunning(t *testing.T) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	for _, pool := range []*pgxpool.Pool{p.source, p.dest} {
		if _, err := pool.Exec(ctx, `CREATE TABLE notes (id int PRIMARY KEY, body text)`); err != nil {
			t.Fatal(err)
		}
	}
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("CDCFLOW_METRICS_ADDR=127.0.0.1:%d", port)
	capture := p.start("capture")
	worker := p.start("worker", metrics)
	p.start("starter", "CDCFLOW_BATCH_MAX_WAIT=200ms")
	waitTable(t, p.source, "employees")
	write := func(sql string) {
		if _, err := p.source.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	write(`INSERT INTO employees (emp_id, first_name, last_name, dob, city, salary)
		SELECT i, 'E', 'L', '1990-01-01', 'Oslo', i FROM generate_series(1, 100) i`)

	// Capture learns of notes first.
	capture.stop(t)
	both := "CDCFLOW_TABLES=public.employees,public.notes"
	p.start("capture", both)
	waitTable(t, p.source, "notes")
	write(`INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 100) i`)
	write(`UPDATE employees SET salary = salary + 1`)
	// The old worker has tried each note three times (CDCFLOW_MAX_ATTEMPTS,
	// after which a permanent failure would be parked).
	eventually(t, time.Minute, "the old worker to refuse each note three times", func() (bool, string) {
		n := metricValue(t, port, `cdcflow_apply_errors_total{error_class="TableNotAllowed"`)
		return n >= 3*100, fmt.Sprintf("%d refusals", n)
	})
	worker.stop(t)
	p.start("worker", both, metrics)
	write(`DELETE FROM notes WHERE id % 10 = 0`)
	p.waitSame("public.notes", "id", 2*time.Minute)
	p.waitSame("public.employees", "emp_id", time.Minute)
	if n := p.count(`SELECT count(*) FROM cdcflow.dead_letters`); n != 0 {
		t.Fatalf("%d changes parked, want none", n)
	}
}

// metricValue reads one counter (the sum of its series matching prefix)
// from the program serving metrics on port; 0 when it is not there yet.
func metricValue(t *testing.T, port int, prefix string) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	total := 0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			total += int(v)
		}
	}
	return total
}
