package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestRestoredSource: the source is restored from a backup taken before its
// last changes, and capture is pointed at it. The restored source's outbox
// hands out action_ids that the lost changes had; capture sees Kafka ahead
// of it, starts a new epoch, and the restored source's new changes are all
// applied — none skipped as a duplicate or refused as older — and every row
// they touch ends as on the restored source.
func TestRestoredSource(t *testing.T) {
	p, capture, backup := backedUpThenChanged(t)
	capture.stop(t)
	restoredDSN := testenv.NewDatabase(t, "restored")
	run(t, filepath.Join(localsvc.PostgresBinDir, "psql"), "--quiet", "--set", "ON_ERROR_STOP=1", "--dbname", restoredDSN, "--file", backup)
	capture = p.start("capture", "CDCFLOW_SOURCE_DSN="+restoredDSN)
	p.followsRestored(restoredDSN, capture)
	if n := p.count(`SELECT count(*) FROM employees WHERE emp_id BETWEEN 101 AND 120`); n != 20 {
		t.Fatalf("%d of the rows only the lost changes wrote, want the 20 left for a resync", n)
	}
	if n := p.count(`SELECT count(*) FROM cdcflow.dead_letters`); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
}

// TestSourceRestoredInPlace: the same, but the source database is restored
// in place, under the same DSN, while capture keeps running: capture loses
// its connections, finds the restored source when it comes back, and starts
// a new epoch without being restarted.
func TestSourceRestoredInPlace(t *testing.T) {
	p, capture, backup := backedUpThenChanged(t)
	ctx := context.Background()
	// The restore: the database dropped (its connections, capture's among
	// them, cut) and created again from the backup, in one transaction.
	dsn := p.env["CDCFLOW_SOURCE_DSN"]
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	p.source.Close()
	for _, sql := range []string{`DROP DATABASE ` + pgx.Identifier{name}.Sanitize() + ` WITH (FORCE)`, `CREATE DATABASE ` + pgx.Identifier{name}.Sanitize()} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	run(t, filepath.Join(localsvc.PostgresBinDir, "psql"), "--quiet", "--single-transaction", "--set", "ON_ERROR_STOP=1", "--dbname", dsn, "--file", backup)
	p.followsRestored(dsn, capture)
}

// backedUpThenChanged runs a pipeline whose source gets 100 rows, is backed
// up with pg_dump, then gets changes the backup lacks (rows 1..50 updated,
// rows 101..120 inserted), all replicated; it returns the pipeline, its
// capture and the backup's path.
func backedUpThenChanged(t *testing.T) (*pipeline, *proc, string) {
	p := newPipeline(t)
	p.withSource()
	capture := p.start("capture")
	p.start("worker")
	p.start("starter")
	waitTable(t, p.source, "employees")
	p.exec(p.source, `INSERT INTO employees SELECT i, 'E', 'L', '1990-01-01', 'Oslo', i FROM generate_series(1, 100) i`)
	p.waitSame("public.employees", "emp_id", time.Minute)
	backup := filepath.Join(t.TempDir(), "source.sql")
	run(t, filepath.Join(localsvc.PostgresBinDir, "pg_dump"), "--dbname", p.env["CDCFLOW_SOURCE_DSN"], "--file", backup)
	p.exec(p.source, `UPDATE employees SET salary = salary + 1000 WHERE emp_id <= 50`)
	p.exec(p.source, `INSERT INTO employees SELECT i, 'Lost', 'L', '1990-01-01', 'Oslo', i FROM generate_series(101, 120) i`)
	p.waitSame("public.employees", "emp_id", time.Minute)
	return p, capture, backup
}

// followsRestored writes to the restored source at dsn and waits until
// every row it has, or deleted, is the same on the destination (the rows
// only the lost changes wrote, 101..120, stay: see the README on a restored
// source), then checks that capture said why it started a new epoch.
func (p *pipeline) followsRestored(dsn string, capture *proc) {
	t, ctx := p.t, context.Background()
	restored, err := db.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	p.exec(restored, `UPDATE employees SET salary = salary + 1, city = 'Bergen'`)
	p.exec(restored, `INSERT INTO employees SELECT i, 'New', 'L', '1990-01-01', 'Oslo', i FROM generate_series(121, 140) i`)
	p.exec(restored, `DELETE FROM employees WHERE emp_id % 10 = 0`)
	const restoredRows = `SELECT md5(string_agg(e::text, '|' ORDER BY emp_id)), count(*) FROM employees e WHERE emp_id NOT BETWEEN 101 AND 120`
	var want string
	var wantN int
	if err := restored.QueryRow(ctx, restoredRows).Scan(&want, &wantN); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the destination to follow the restored source", func() (bool, string) {
		var got string
		var n int
		if err := p.dest.QueryRow(ctx, restoredRows).Scan(&got, &n); err != nil {
			return false, err.Error()
		}
		return got == want && n == wantN, fmt.Sprintf("%d rows %s, want %d rows %s", n, got, wantN, want)
	})
	if out := capture.out.String(); !containsAll(out, "capture starts a new epoch", "the source was restored to an earlier state") {
		t.Fatalf("capture did not say why it started a new epoch:\n%s", out)
	}
}

// exec runs sql on pool, failing the test on an error.
func (p *pipeline) exec(pool *pgxpool.Pool, sql string) {
	p.t.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(name), err, out)
	}
}
