package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

// BenchmarkWorkload runs the workload cdcflow is compared on, with every
// program running, capture from the log (CDCFLOW_BENCH_MODES=logical,trigger
// adds the trigger mode):
//
//  1. bulk: 100,000 inserts, 50,000 updates and 20,000 deletes in
//     transactions of 10,000 rows from one writer; the writer's time with
//     capture on and in a database nothing captures, and changes/s from the
//     first source commit to the last destination commit;
//  2. 1,000 single-row inserts a second for 30 s, then 2,000 a second:
//     source commit to destination commit, p50 and p99;
//  3. a table of 1,000,000 rows added to capture: its snapshot's rows/s.
//
// After each phase the destination must equal the source (an ordered hash
// of every row), or the benchmark fails. Run it with `make bench-workload`.
func BenchmarkWorkload(b *testing.B) {
	modes := strings.Split(os.Getenv("CDCFLOW_BENCH_MODES"), ",")
	if modes[0] == "" {
		modes = []string{"logical"}
	}
	for _, mode := range modes {
		b.Run("capture="+mode, func(b *testing.B) {
			for range b.N {
				benchWorkload(b, mode)
			}
		})
	}
}

// bulkWorkload is phase 1: the statements of one writer, one transaction
// each.
func bulkWorkload() []string {
	var txs []string
	for i := 0; i < 100000; i += 10000 {
		txs = append(txs, fmt.Sprintf(`INSERT INTO employees SELECT g, 'First' || g, 'Last' || g, date '1980-01-01' + g %% 9000, 'City' || g %% 50, g %% 100000
			FROM generate_series(%d, %d) g`, i+1, i+10000))
	}
	for i := 0; i < 50000; i += 10000 {
		txs = append(txs, fmt.Sprintf(`UPDATE employees SET salary = salary + 1, city = 'Moved' WHERE emp_id BETWEEN %d AND %d`, i+1, i+10000))
	}
	for i := 50000; i < 70000; i += 10000 {
		txs = append(txs, fmt.Sprintf(`DELETE FROM employees WHERE emp_id BETWEEN %d AND %d`, i+1, i+10000))
	}
	return txs
}

func runTxs(b *testing.B, pool *pgxpool.Pool, txs []string) time.Duration {
	b.Helper()
	start := time.Now()
	for _, sql := range txs {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// paced inserts single rows, one a transaction, at rate a second for d,
// with keys from first; it returns the rate it kept.
func paced(b *testing.B, pool *pgxpool.Pool, first, rate int, d time.Duration) float64 {
	b.Helper()
	ctx := context.Background()
	n := int(d.Seconds() * float64(rate))
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		if _, err := pool.Exec(ctx, `INSERT INTO employees VALUES ($1, 'Paced', 'Insert', '1990-01-01', 'Steady', $1)`, first+i); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

func benchWorkload(b *testing.B, mode string) {
	ctx := context.Background()
	txs := bulkWorkload()

	// The writer alone, in a database nothing captures.
	bare := testenv.Migrated(b, "bare", migrations.SourceFS(), nil)
	if err := demo.CreateTable(ctx, bare); err != nil {
		b.Fatal(err)
	}
	bareTime := runTxs(b, bare, txs)

	p := newPipeline(b)
	p.withSource()
	var slot string
	if err := p.source.QueryRow(ctx, `SELECT current_database()`).Scan(&slot); err != nil {
		b.Fatal(err)
	}
	quiet := "CDCFLOW_LOG_LEVEL=warn"
	p.env["CDCFLOW_SNAPSHOT_POLL"] = "200ms"
	// CDCFLOW_BENCH_SET=K=V,K=V tries other settings on every program.
	for _, kv := range strings.Split(os.Getenv("CDCFLOW_BENCH_SET"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			p.env[k] = v
		}
	}
	prof := newProfiler(b)
	worker := p.start("worker", quiet, prof.setting(b, "worker"))
	starter := p.start("starter", quiet, prof.setting(b, "starter"))
	capture := p.startCapture(mode, "employees", quiet, prof.setting(b, "capture"))
	cpu := cpuParts{programs: map[string]*proc{"capture": capture, "starter": starter, "worker": worker},
		temporal: testenv.TemporalServer(b).Process().Pid()}
	applied := 0
	same := func(phase string, changes int) {
		b.Helper()
		// Counted first: hashing both tables while the changes flow would
		// slow them down.
		applied += changes
		p.waitApplied(applied)
		p.waitSame("public.employees", "emp_id", 10*time.Minute)
		fmt.Fprintf(os.Stderr, "  %-10s destination equals source (ordered hash of every row)\n", phase)
	}
	var last int64
	through := func() int64 {
		var n int64
		if err := p.dest.QueryRow(ctx, `SELECT coalesce(max(action_id), 0) FROM cdcflow.processed_events`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}

	fmt.Fprintf(os.Stderr, "workload, capture %s:\n", mode)
	cpuBefore, began := cpu.cpuNow(), time.Now()
	profiled := prof.profile("bulk", 10*time.Second)
	written := runTxs(b, p.source, txs)
	same("bulk", 170000)
	cpuReport(cpuBefore, cpu.cpuNow(), time.Since(began))
	profiled()
	bulk := latency(b, p.dest, last)
	last = through()
	ratio := written.Seconds() / bareTime.Seconds()
	rate := float64(bulk.count) / bulk.span.Seconds()
	fmt.Fprintf(os.Stderr, "  writer     %.2f s with capture, %.2f s without (%.2fx; target 1.2x)\n", written.Seconds(), bareTime.Seconds(), ratio)
	fmt.Fprintf(os.Stderr, "  bulk       %d changes, %.0f changes/s first source commit to last destination commit (%.1f s; target 27000)\n",
		bulk.count, rate, bulk.span.Seconds())

	var steady [2]lat
	for i, r := range []int{1000, 2000} {
		cpuBefore, began := cpu.cpuNow(), time.Now()
		profiled := prof.profile(fmt.Sprintf("rate%d", r), 20*time.Second)
		kept := paced(b, p.source, 1_000_000+i*100_000, r, 30*time.Second)
		same(fmt.Sprintf("%d/s", r), 30*r)
		cpuReport(cpuBefore, cpu.cpuNow(), time.Since(began))
		profiled()
		steady[i] = latency(b, p.dest, last)
		last = through()
		fmt.Fprintf(os.Stderr, "  %d/s    %d inserts at %.0f/s: source commit to destination commit p50 %v, p99 %v (target p99 150ms)\n",
			r, steady[i].count, kept, steady[i].p50, steady[i].p99)
		p.breakdown(b, began)
	}

	if mode == "logical" {
		// A table of 1,000,000 rows joins the allowlist: capture asks for
		// its snapshot, the worker copies it.
		const snapRows = 1_000_000
		table := `CREATE TABLE public.snap_rows (id bigint PRIMARY KEY, name text, amount numeric, at timestamptz)`
		for _, pool := range []*pgxpool.Pool{p.source, p.dest} {
			p.exec(pool, table)
		}
		p.exec(p.source, fmt.Sprintf(`INSERT INTO snap_rows SELECT g, 'row ' || g, g * 1.25, timestamptz '2026-01-01' + g * interval '1 second'
			FROM generate_series(1, %d) g`, snapRows))
		both := "CDCFLOW_TABLES=public.employees,public.snap_rows"
		worker.stop(b)
		p.start("worker", quiet, both)
		capture.stop(b)
		p.start("capture", quiet, both, "CDCFLOW_CAPTURE_MODE=logical", "CDCFLOW_SLOT="+slot)
		var took float64
		eventually(b, 10*time.Minute, "the snapshot of snap_rows", func() (bool, string) {
			err := p.source.QueryRow(ctx, `SELECT extract(epoch FROM done_at - requested_at) FROM cdcflow.snapshots
				WHERE table_name = 'public.snap_rows' AND done_at IS NOT NULL`).Scan(&took)
			return err == nil, fmt.Sprint(err)
		})
		p.waitSame("public.snap_rows", "id", 5*time.Minute)
		fmt.Fprintf(os.Stderr, "  snapshot   %d rows in %.1f s: %.0f rows/s; destination equals source\n", snapRows, took, snapRows/took)
		b.ReportMetric(snapRows/took, "snapshot_rows/s")
	}
	b.ReportMetric(ratio, "writer_ratio")
	b.ReportMetric(rate, "changes/s")
	b.ReportMetric(steady[0].p99.Seconds()*1000, "p99_ms_1000/s")
	b.ReportMetric(steady[1].p99.Seconds()*1000, "p99_ms_2000/s")
}
