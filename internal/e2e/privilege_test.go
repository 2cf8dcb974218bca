package e2e

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/migrations"
)

// leastPrivilegeSQL returns the SQL block of docs/security.md marked
// <!-- least-privilege: which -->, split into statements.
func leastPrivilegeSQL(t *testing.T, which string) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(moduleRoot(), "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- least-privilege: " + which + " -->\n```sql\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/security.md: no SQL block marked least-privilege: %s", which)
	}
	var out []string
	for _, s := range strings.Split(string(m[1]), ";\n") {
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		if s := strings.TrimSpace(strings.Join(lines, "\n")); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// runAsAdmin runs the statements of a least-privilege block on pool, for
// the database of pool instead of app; a role that exists already (source
// and destination share the test's cluster) is not an error.
func runAsAdmin(t *testing.T, pool *pgxpool.Pool, stmts []string) {
	t.Helper()
	ctx := context.Background()
	var dbname string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&dbname); err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		s = strings.ReplaceAll(s, "DATABASE app", `DATABASE "`+dbname+`"`)
		if _, err := pool.Exec(ctx, s); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42710" && strings.HasPrefix(s, "CREATE ROLE") {
				continue
			}
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// as returns dsn with role and password as its user.
func as(t *testing.T, dsn, role, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, password)
	return u.String()
}

// TestLeastPrivilege: the roles of docs/security.md, created by its very
// SQL, are enough: the owner runs the migrations, then capture (from the
// log, with the publication the administrator created), worker (copying
// the snapshot too) and starter run with the restricted roles, and the
// destination ends equal to the source after inserts, updates and deletes.
func TestLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t)
	p.withSource()
	// Rows before capture starts: copied by the snapshot.
	if _, err := p.source.Exec(ctx, `INSERT INTO employees VALUES (1, 'Ada', 'Lovelace', '1815-12-10', 'London', 5000),
		(2, 'Charles', 'Babbage', '1791-12-26', 'London', 4000)`); err != nil {
		t.Fatal(err)
	}
	runAsAdmin(t, p.source, leastPrivilegeSQL(t, "source"))
	runAsAdmin(t, p.dest, leastPrivilegeSQL(t, "destination"))
	sourceDSN, destDSN := p.env["CDCFLOW_SOURCE_DSN"], p.env["CDCFLOW_DEST_DSN"]
	if err := db.Migrate(ctx, as(t, sourceDSN, "cdcflow_owner", "owner-secret"), migrations.SourceFS()); err != nil {
		t.Fatalf("migrate the source as cdcflow_owner: %v", err)
	}
	if err := db.Migrate(ctx, as(t, destDSN, "cdcflow_owner", "owner-secret"), migrations.DestFS()); err != nil {
		t.Fatalf("migrate the destination as cdcflow_owner: %v", err)
	}
	p.env["CDCFLOW_SOURCE_DSN"] = as(t, sourceDSN, "cdcflow_capture", "capture-secret")
	p.env["CDCFLOW_DEST_DSN"] = as(t, destDSN, "cdcflow_apply", "apply-secret")
	p.env["CDCFLOW_MIGRATE"] = "false"
	p.env["CDCFLOW_PUBLICATION"] = "cdcflow"
	p.env["CDCFLOW_SNAPSHOT_POLL"] = "200ms"

	p.start("worker")
	p.start("starter", "CDCFLOW_BATCH_MAX_WAIT=100ms")
	p.startCapture("logical", demo.Table)
	for _, s := range []string{
		`INSERT INTO employees VALUES (3, 'Grace', 'Hopper', '1906-12-09', 'New York', 7000)`,
		`INSERT INTO employees VALUES (4, 'Alan', 'Turing', '1912-06-23', 'London', 6000)`,
		`UPDATE employees SET salary = salary + 100 WHERE emp_id IN (1, 3)`,
		`DELETE FROM employees WHERE emp_id = 2`,
		`UPDATE employees SET city = 'Manchester' WHERE emp_id = 4`,
	} {
		if _, err := p.source.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	want, err := demo.Snapshot(ctx, p.source)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the destination equal to the source", func() (bool, string) {
		got := p.snapshot()
		return got == want, got
	})
}
