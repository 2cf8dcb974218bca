package e2e

// Helpers for the source database: writing random changes, and waiting until
// capture is installed and the destination has caught up.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// tableHash is an ordered hash over every column of every row.
func tableHash(t testing.TB, pool *pgxpool.Pool, table, order string) (string, int) {
	t.Helper()
	var h *string
	var n int
	err := pool.QueryRow(context.Background(),
		fmt.Sprintf(`SELECT md5(string_agg(r::text, '|' ORDER BY %s)), count(*) FROM %s r`, order, table)).Scan(&h, &n)
	if err != nil {
		return "error: " + err.Error(), -1
	}
	if h == nil {
		return "empty", 0
	}
	return *h, n
}

// waitSame waits until the table has the same contents on both sides and the
// outbox is drained.
func (p *pipeline) waitSame(table, order string, timeout time.Duration) {
	p.t.Helper()
	eventually(p.t, timeout, table+" equal on source and destination", func() (bool, string) {
		var backlog int
		if err := p.source.QueryRow(context.Background(), `SELECT count(*) FROM cdcflow.outbox`).Scan(&backlog); err != nil {
			return false, err.Error()
		}
		sh, sn := tableHash(p.t, p.source, table, order)
		dh, dn := tableHash(p.t, p.dest, table, order)
		return backlog == 0 && sh == dh && sn == dn,
			fmt.Sprintf("outbox %d; source %d rows %s; destination %d rows %s", backlog, sn, sh, dn, dh)
	})
}

// writeTx runs one transaction of one to four changes and returns how many
// rows it changed. Conflicts between writers (a key taken meanwhile) roll the
// transaction back and count nothing.
func writeTx(ctx context.Context, pool *pgxpool.Pool, rng *rand.Rand, keys int) (int, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	n := 0
	for range 1 + rng.IntN(4) {
		id := 1 + rng.IntN(keys)
		var sql string
		var args []any
		switch r := rng.IntN(20); {
		case r < 12:
			sql = `INSERT INTO employees VALUES ($1, $2, 'L', '1990-01-01', $3, $4)
				ON CONFLICT (emp_id) DO UPDATE SET first_name = EXCLUDED.first_name, city = EXCLUDED.city, salary = EXCLUDED.salary`
			args = []any{id, fmt.Sprintf("n%d", rng.IntN(100)), fmt.Sprintf("c%d", rng.IntN(50)), rng.IntN(10000)}
		case r < 17:
			sql, args = `DELETE FROM employees WHERE emp_id = $1`, []any{id}
		default:
			sql, args = `UPDATE employees SET emp_id = $2 WHERE emp_id = $1`, []any{id, 1 + rng.IntN(keys)}
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return 0, nil // a key taken by another writer: give this transaction up
		}
		n += int(tag.RowsAffected())
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, nil
	}
	return n, nil
}

func waitTable(t testing.TB, pool *pgxpool.Pool, table string) {
	t.Helper()
	eventually(t, time.Minute, "capture to install its trigger on "+table, func() (bool, string) {
		var n int
		err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_trigger WHERE tgname = 'cdcflow_capture' AND tgrelid = $1::regclass`, table).Scan(&n)
		if err != nil {
			return false, err.Error()
		}
		return n == 1, fmt.Sprint(n, " triggers")
	})
}
