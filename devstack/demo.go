package main

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcflow/cdcflow/internal/demo"
)

// demoKeys is where the demo writer's keys start: the banner's example insert
// (emp_id 1) and rows a person types stay clear of them.
const demoKeys = 1000

// writeDemo keeps writing demo changes to the source at about rate changes
// per second: inserts, updates and deletes over 1,000 keys.
func (st *stack) writeDemo(ctx context.Context, dsn string, rate int) {
	var conn *pgx.Conn
	for conn == nil {
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st.log.Info("demo workload started", "changes_per_second", rate)
	gen := demo.NewGenerator(uint64(time.Now().UnixNano()), demoKeys, 1000)
	demo.Write(ctx, conn, gen, rate, func(err error) { st.log.Warn("demo write failed", "error", err) })
}
