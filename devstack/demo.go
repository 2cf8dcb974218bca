package main

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// demo keeps writing changes to the source's employees table at about rate
// changes per second: inserts, updates and deletes over 1,000 keys.
func (st *stack) demo(ctx context.Context, dsn string, rate int) {
	// capture creates the table on its first start; wait for it.
	var conn *pgx.Conn
	for conn == nil {
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			if _, err = c.Exec(ctx, `SELECT 1 FROM employees LIMIT 1`); err == nil {
				conn = c
				break
			}
			c.Close(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st.log.Info("demo workload started", "changes_per_second", rate)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	cities := []string{"Oslo", "Lima", "Pune", "Kyiv", "Rome", "Quito"}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		id := rand.IntN(1000) + 1
		var err error
		switch rand.IntN(10) {
		case 0, 1:
			_, err = conn.Exec(ctx, `DELETE FROM employees WHERE emp_id = $1`, id)
		default:
			_, err = conn.Exec(ctx, `INSERT INTO employees VALUES ($1, 'Demo', 'User', '1990-01-01', $2, $3)
				ON CONFLICT (emp_id) DO UPDATE SET city = EXCLUDED.city, salary = EXCLUDED.salary`,
				id, cities[rand.IntN(len(cities))], 1000+rand.IntN(9000))
		}
		if err != nil && ctx.Err() == nil {
			st.log.Warn("demo write failed", "error", err)
		}
	}
}
