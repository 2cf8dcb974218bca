package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

// BenchmarkEndToEnd writes CDCFLOW_BENCH_EVENTS changes (default 100,000) to
// the source's employees table with capture, starter and worker running, and
// reports throughput from the first source commit to the last destination
// commit, latency percentiles from source commit to destination commit (at
// full speed, then at a steady CDCFLOW_BENCH_RATE changes/s, default 2,000,
// for 30 s), the same changes applied straight to a destination by the same
// applier, and the writers' own time with capture and without any; for the
// trigger mode also the source's insert rate with and without the capture
// trigger. It runs once per capture mode. Run it with `make bench`.
func BenchmarkEndToEnd(b *testing.B) {
	for _, mode := range []string{"logical", "trigger"} {
		b.Run("capture="+mode, func(b *testing.B) { benchEndToEnd(b, mode) })
	}
}

func benchEndToEnd(b *testing.B, mode string) {
	n := envInt("CDCFLOW_BENCH_EVENTS", 100000)
	rate := envInt("CDCFLOW_BENCH_RATE", 2000)
	const writers = 4
	events, final := demo.Generate(n, n/20, 11)
	for range b.N {
		p := newPipeline(b)
		p.withSource()
		ctx := context.Background()
		var slot string
		if err := p.source.QueryRow(ctx, `SELECT current_database()`).Scan(&slot); err != nil {
			b.Fatal(err)
		}
		testenv.DropSlotAtCleanup(b, p.source, slot)
		p.start("capture", "CDCFLOW_LOG_LEVEL=warn", "CDCFLOW_CAPTURE_MODE="+mode, "CDCFLOW_SLOT="+slot)
		p.start("worker", "CDCFLOW_LOG_LEVEL=warn")
		p.start("starter", "CDCFLOW_LOG_LEVEL=warn")
		if mode == "logical" {
			p.waitSlot(slot)
		} else {
			waitTable(b, p.source, "employees")
		}
		bare := bareWriters(b, events, writers)

		// Full speed.
		wstart := time.Now()
		writeEvents(b, p.source, events, writers, 0)
		written := time.Since(wstart)
		p.waitSame("public.employees", "emp_id", 10*time.Minute)
		if got := p.snapshot(); got != final {
			b.Fatal("destination differs from the expected final state")
		}
		var last int64
		if err := p.dest.QueryRow(ctx, `SELECT max(action_id) FROM cdcflow.processed_events`).Scan(&last); err != nil {
			b.Fatal(err)
		}
		full := latency(b, p.dest, 0)
		throughput := float64(full.count) / full.span.Seconds()

		// Steady load, on other keys, after the first run drained.
		gen := demo.NewGenerator(11, 1_000_000, n/20)
		steady := make([]event.Event, min(len(events), rate*30))
		for i := range steady {
			steady[i] = gen.Next()
		}
		writeEvents(b, p.source, steady, writers, rate)
		p.waitSame("public.employees", "emp_id", 5*time.Minute)
		paced := latency(b, p.dest, last)

		direct := applyDirect(b, events, 2000, final)
		overhead := ""
		if mode == "trigger" {
			with, without := triggerOverhead(b)
			overhead = fmt.Sprintf("  source      %.0f rows/s inserted with the capture trigger, %.0f rows/s without (%.1fx slower)\n", with, without, without/with)
		}

		b.ReportMetric(throughput, "changes/s")
		b.ReportMetric(direct, "direct_changes/s")
		b.ReportMetric(full.p99.Seconds()*1000, "p99_ms_full")
		b.ReportMetric(paced.p99.Seconds()*1000, "p99_ms_steady")
		b.ReportMetric(written.Seconds()/bare.Seconds(), "writer_ratio")
		fmt.Fprintf(os.Stderr, `end to end, capture %s, %d changes over %d keys from %d writers:
  throughput  %.0f changes/s (first source commit to last destination commit, %.1f s)
  writers     %.2f s with capture, %.2f s without any (%.2fx)
  latency     full speed:   p50 %v  p95 %v  p99 %v
              %d changes/s: p50 %v  p95 %v  p99 %v (%d changes)
  reference   %.0f changes/s applied straight to the destination (batches of 2000); ratio %.2f
%s`, mode, n, n/20, writers, throughput, full.span.Seconds(), written.Seconds(), bare.Seconds(), written.Seconds()/bare.Seconds(),
			full.p50, full.p95, full.p99, rate, paced.p50, paced.p95, paced.p99, paced.count,
			direct, throughput/direct, overhead)
	}
}

// bareWriters makes the changes in a database of their own that nothing
// captures, as writeEvents does, and returns the writers' time.
func bareWriters(b *testing.B, events []event.Event, writers int) time.Duration {
	b.Helper()
	ctx := context.Background()
	pool := testenv.Migrated(b, "bare", migrations.SourceFS(), nil)
	if err := demo.CreateTable(ctx, pool); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	writeEvents(b, pool, events, writers, 0)
	return time.Since(start)
}

// writeEvents makes the changes on the source with several writers; each
// writer owns the keys with emp_id % writers == its number, so changes to a
// row stay in order. rate, when positive, paces all writers together to about
// rate changes/s.
func writeEvents(b *testing.B, pool *pgxpool.Pool, events []event.Event, writers, rate int) {
	b.Helper()
	shares := make([][]event.Event, writers)
	for _, ev := range events {
		var key struct {
			EmpID int `json:"emp_id"`
		}
		_ = json.Unmarshal(ev.Key, &key)
		shares[key.EmpID%writers] = append(shares[key.EmpID%writers], ev)
	}
	const perTx = 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for _, share := range shares {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			start := time.Now()
			for i := 0; i < len(share); i += perTx {
				if rate > 0 { // this writer's share of the rate
					due := start.Add(time.Duration(float64(i) / float64(rate) * float64(writers) * float64(time.Second)))
					time.Sleep(time.Until(due))
				}
				batch := &pgx.Batch{}
				for _, ev := range share[i:min(i+perTx, len(share))] {
					sql, args, err := demo.Statement(ev)
					if err != nil {
						errs <- err
						return
					}
					batch.Queue(sql, args...)
				}
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() }); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

type lat struct {
	count         int
	span          time.Duration
	p50, p95, p99 time.Duration
}

// latency reads, for the changes applied after action_id from, the time from
// source commit to destination commit (both recorded by PostgreSQL with
// track_commit_timestamp), and the span from the first source commit to the
// last destination commit.
func latency(b *testing.B, dest *pgxpool.Pool, from int64) lat {
	b.Helper()
	var l lat
	var p50, p95, p99, span float64
	err := dest.QueryRow(context.Background(), `
		WITH d AS (
			SELECT source_committed_at AS src, pg_xact_commit_timestamp(xmin) AS dst
			FROM cdcflow.processed_events WHERE action_id > $1)
		SELECT count(*)::int,
			extract(epoch FROM max(dst) - min(src)),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM dst - src)),
			percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM dst - src)),
			percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM dst - src))
		FROM d`, from).Scan(&l.count, &span, &p50, &p95, &p99)
	if err != nil {
		b.Fatal(err)
	}
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)).Round(time.Millisecond) }
	l.span, l.p50, l.p95, l.p99 = sec(span), sec(p50), sec(p95), sec(p99)
	return l
}

// triggerOverhead inserts 100,000 rows into a copy of employees with and
// without the capture trigger, in a source database of its own that no
// capture reads, and returns both rates in rows/s.
func triggerOverhead(b *testing.B) (with, without float64) {
	b.Helper()
	ctx := context.Background()
	source := testenv.Migrated(b, "trigger", migrations.SourceFS(), nil)
	if err := demo.CreateTable(ctx, source); err != nil {
		b.Fatal(err)
	}
	const rows = 100000
	measure := func(table string, trigger bool) float64 {
		if _, err := source.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (LIKE employees INCLUDING ALL)`, table)); err != nil {
			b.Fatal(err)
		}
		if trigger {
			if _, err := source.Exec(ctx, `SELECT cdcflow.capture_table($1::regclass)`, table); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		_, err := source.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT g, 'First', 'Last', '1990-01-01', 'City', g FROM generate_series(1, %d) g`, table, rows))
		if err != nil {
			b.Fatal(err)
		}
		return rows / time.Since(start).Seconds()
	}
	without = measure("bench_plain", false)
	with = measure("bench_captured", true)
	return with, without
}
