package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// BenchmarkApply measures events/s through Kafka -> Temporal -> destination
// for CDCFLOW_BENCH_EVENTS changes (default 100,000), beside the same events
// applied straight to PostgreSQL by the same applier in batches of the same
// size, and reports the ratio. Run it with `make bench-apply`.
func BenchmarkApply(b *testing.B) {
	n := envInt("CDCFLOW_BENCH_EVENTS", 100000)
	batch := envInt("CDCFLOW_BENCH_BATCH", 2000)
	events, final := demo.Generate(n, n/20, 7)
	want := final
	for range b.N {
		direct := applyDirect(b, events, batch, want)
		piped := applyThroughPipeline(b, events, batch, want)
		b.ReportMetric(direct, "direct_events/s")
		b.ReportMetric(piped, "pipeline_events/s")
		b.ReportMetric(piped/direct, "ratio")
		fmt.Fprintf(os.Stderr, "apply %d events, batch %d: direct %.0f events/s, pipeline %.0f events/s, ratio %.2f\n",
			n, batch, direct, piped, piped/direct)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// applyDirect applies events in batches, one after another, to a fresh
// destination and returns events/s.
func applyDirect(b *testing.B, events []event.Event, batch int, want string) float64 {
	ctx := context.Background()
	pool, apl := testenv.NewDestination(b, applier.DefaultTimeouts)
	start := time.Now()
	for i := 0; i < len(events); i += batch {
		if _, err := apl.Apply(ctx, events[i:min(i+batch, len(events))]); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	if got, err := demo.Snapshot(ctx, pool); err != nil || got != want {
		b.Fatalf("direct apply left a different table (err %v)", err)
	}
	return float64(len(events)) / elapsed.Seconds()
}

// applyThroughPipeline runs worker and starter, warms them up, then produces
// the events to Kafka and times from the first produce to the last commit in
// the destination.
func applyThroughPipeline(b *testing.B, events []event.Event, batch int, want string) float64 {
	p := newPipeline(b)
	p.start("worker", "CDCFLOW_LOG_LEVEL=warn", "CDCFLOW_PPROF_ADDR="+os.Getenv("CDCFLOW_BENCH_WORKER_PPROF"))
	p.start("starter", "CDCFLOW_LOG_LEVEL=warn", "CDCFLOW_PPROF_ADDR="+os.Getenv("CDCFLOW_BENCH_STARTER_PPROF"), fmt.Sprintf("CDCFLOW_BATCH_MAX_EVENTS=%d", batch))

	// Warm-up: a few changes on keys the measured workload does not touch.
	warm := make([]event.Event, 100)
	for i := range warm {
		warm[i] = events[0]
		warm[i].ActionID = int64(len(events) + 1 + i)
		warm[i].Op = event.OpDelete
		warm[i].After = nil
		warm[i].Key = []byte(fmt.Sprintf(`{"emp_id":%d}`, 10_000_000+i))
	}
	if err := demo.Produce(context.Background(), p.brokers, p.topic, warm); err != nil {
		b.Fatal(err)
	}
	p.waitApplied(len(warm))

	start := time.Now()
	if err := demo.Produce(context.Background(), p.brokers, p.topic, events); err != nil {
		b.Fatal(err)
	}
	p.waitApplied(len(warm) + len(events))
	elapsed := time.Since(start)
	p.assertDestination(want)
	return float64(len(events)) / elapsed.Seconds()
}

// BenchmarkBookkeeping applies CDCFLOW_BENCH_BOOKKEEPING changes (default
// 1,000,000; inserts, updates and deletes over 50,000 rows) to a destination
// while the bookkeeping is pruned every second with a horizon of two seconds,
// as the worker's Prune schedule does with its settings, and fails unless
// processed_events and the tombstones stay within what the horizon allows:
// the changes of the last horizon and pruning interval, twice over.
func BenchmarkBookkeeping(b *testing.B) {
	n := envInt("CDCFLOW_BENCH_BOOKKEEPING", 1000000)
	const batch, every, horizon = 2000, time.Second, 2 * time.Second
	events, want := demo.Generate(n, 50000, 11)
	for range b.N {
		ctx := context.Background()
		pool, apl := testenv.NewDestination(b, applier.DefaultTimeouts)
		var peakEvents, peakTombstones int64
		sample := func() (int64, int64) {
			var e, t int64
			if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM cdcflow.processed_events),
				(SELECT count(*) FROM cdcflow.row_versions WHERE deleted)`).Scan(&e, &t); err != nil {
				b.Fatal(err)
			}
			return e, t
		}
		stop := make(chan struct{})
		pruned := make(chan error, 1)
		go func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					pruned <- nil
					return
				case <-tick.C:
				}
				if _, err := apl.Prune(ctx, horizon); err != nil {
					pruned <- err
					return
				}
			}
		}()
		start := time.Now()
		for i := 0; i < len(events); i += batch {
			if _, err := apl.Apply(ctx, events[i:min(i+batch, len(events))]); err != nil {
				b.Fatal(err)
			}
			if (i/batch)%25 == 0 {
				e, t := sample()
				peakEvents, peakTombstones = max(peakEvents, e), max(peakTombstones, t)
			}
		}
		elapsed := time.Since(start)
		close(stop)
		if err := <-pruned; err != nil {
			b.Fatal(err)
		}
		finalEvents, finalTombstones := sample()
		rate := float64(n) / elapsed.Seconds()
		bound := int64(2 * rate * (horizon + every).Seconds())
		fmt.Printf("bookkeeping over %d changes at %.0f changes/s, pruned every %s with a horizon of %s: "+
			"processed_events at most %d (bound %d), %d at the end; tombstones at most %d, %d at the end\n",
			n, rate, every, horizon, peakEvents, bound, finalEvents, peakTombstones, finalTombstones)
		if peakEvents > bound || peakTombstones > bound {
			b.Fatalf("the bookkeeping grew past %d rows", bound)
		}
		if got, err := demo.Snapshot(ctx, pool); err != nil || got != want {
			b.Fatalf("the destination differs from the source's final state (err %v)", err)
		}
	}
}
