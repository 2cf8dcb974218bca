package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestDestinationOutage stops the destination PostgreSQL for 60 s while
// changes flow: nothing is dead-lettered, every change is applied once it is
// back, and the destination ends equal to the source.
func TestDestinationOutage(t *testing.T) {
	if testenv.ExternalServices() {
		t.Skip("stops and starts its own destination cluster")
	}
	ctx := context.Background()
	destPG := ownPostgres(t)
	p := newPipeline(t)
	p.withSource()
	p.useDest(destPG.DSN)
	p.start("capture")
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	worker := p.start("worker", fmt.Sprintf("CDCFLOW_METRICS_ADDR=127.0.0.1:%d", port))
	p.start("starter")

	written := p.duringLoad(func() {
		if err := destPG.Stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Second) // the outage itself: changes keep coming meanwhile
		if err := destPG.Start(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if n := p.count(`SELECT count(*) FROM cdcflow.dead_letters`); n != 0 {
		t.Fatalf("%d dead letters after an outage, want none", n)
	}
	// The destination can equal the source before every change is
	// recorded: a batch that failed during the outage may still wait for
	// its next retry while a later batch of its partition (up to
	// CDCFLOW_MAX_IN_FLIGHT run at once) applied newer changes to the same
	// rows. Its changes arrive, superseded, with that retry.
	eventually(t, 3*time.Minute, "every change written to be applied", func() (bool, string) {
		n := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
		return int64(n) >= written, fmt.Sprintf("%d changes applied, %d written", n, written)
	})
	if out := worker.out.String(); !containsAll(out, "apply batch failed, will retry") {
		t.Fatalf("the outage left no trace in the worker's log:\n%s", out)
	}
	// ... nor in its metrics.
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	transient := regexp.MustCompile(`cdcflow_apply_errors_total\{error_class="Transient"[^}]*\} (\d+)`).FindSubmatch(body)
	applied := regexp.MustCompile(`cdcflow_apply_events_total\{outcome="applied"[^}]*\} (\d+)`).FindSubmatch(body)
	parked := regexp.MustCompile(`cdcflow_dead_letters_total\{[^}]*\} [1-9]`).Match(body) // a transient failure is never parked
	if transient == nil || string(transient[1]) == "0" || applied == nil || parked {
		t.Fatalf("metrics after the outage:\n%s", body)
	}
	t.Logf("metrics: %s transient apply errors, %s events applied", transient[1], applied[1])
	t.Logf("%d changes written, all applied after a 60 s destination outage", written)
}

// TestTemporalPause freezes the Temporal server (SIGSTOP) for 60 s while
// changes flow, then lets it go on: without restarting anything, every change
// arrives.
func TestTemporalPause(t *testing.T) {
	if testenv.ExternalServices() {
		t.Skip("pauses its own Temporal server")
	}
	tmp, err := localsvc.StartTemporal(context.Background(), localsvc.TemporalOptions{SearchAttributes: cdc.SearchAttributes})
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	p := newPipeline(t)
	p.withSource()
	p.env["TEMPORAL_ADDRESS"] = tmp.Address
	p.temporal = testenv.Dial(t, tmp)
	p.start("capture")
	p.start("worker")
	p.start("starter")

	written := p.duringLoad(func() {
		if err := tmp.Process().Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Second) // the pause itself: changes keep coming meanwhile
		if err := tmp.Process().Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%d changes written, all applied after Temporal was paused for 60 s", written)
}

// TestSourceOutage stops the source PostgreSQL for 60 s while changes flow:
// capture waits for it and goes on, and every change committed before and
// after arrives.
func TestSourceOutage(t *testing.T) {
	if testenv.ExternalServices() {
		t.Skip("stops and starts its own source cluster")
	}
	ctx := context.Background()
	sourcePG := ownPostgres(t, "track_commit_timestamp=on")
	p := newPipeline(t)
	p.useSource(sourcePG.DSN)
	capture := p.start("capture")
	p.start("worker")
	p.start("starter")
	written := p.duringLoad(func() {
		if err := sourcePG.Stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Second) // the outage itself
		if err := sourcePG.Start(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if out := capture.out.String(); !containsAll(out, "capture step failed, retrying") {
		t.Fatalf("the outage left no trace in capture's log:\n%s", out)
	}
	t.Logf("%d changes written, all applied after a 60 s source outage", written)
}

// duringLoad keeps two writers changing rows on the source; once changes are
// seen arriving it runs fault, lets the writers go on a moment more, stops
// them, and waits until the destination equals the source. It returns how
// many rows the writers changed.
func (p *pipeline) duringLoad(fault func()) int64 {
	t, ctx := p.t, context.Background()
	waitTable(t, p.source, "employees")
	stop := make(chan struct{})
	var written atomic.Int64
	var wg sync.WaitGroup
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters() // also when the test fails early: no t.Error after it ended
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				n, err := writeTx(ctx, p.source, rng, 500)
				if err != nil {
					continue // the source is down: a writer's transaction fails, and it tries again
				}
				written.Add(int64(n))
			}
		}()
	}
	eventually(t, time.Minute, "changes flowing", func() (bool, string) {
		n := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
		return n > 200, "applied so far: " + itoa(n)
	})
	fault()
	time.Sleep(2 * time.Second) // a little more traffic after the fault
	stopWriters()
	p.waitSame("public.employees", "emp_id", 3*time.Minute)
	return written.Load()
}

// TestBrokerRestart stops the broker and starts it again, its log and the
// consumer group's offsets on disk as a Kafka broker keeps them, while
// changes flow: without restarting anything else, every change arrives.
func TestBrokerRestart(t *testing.T) {
	if testenv.ExternalServices() {
		t.Skip("restarts its own broker")
	}
	p := newPipeline(t)
	p.ownKafka()
	p.withSource()
	p.start("capture")
	p.start("worker")
	p.start("starter")
	written := p.duringLoad(func() {
		for range 2 {
			before := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
			if err := p.kafka.Restart(); err != nil {
				t.Fatal(err)
			}
			eventually(t, time.Minute, "changes flowing again", func() (bool, string) {
				after := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
				return after > before, fmt.Sprint(after, " applied")
			})
		}
	})
	if n := p.count(`SELECT count(*) FROM cdcflow.dead_letters`); n != 0 {
		t.Fatalf("%d dead letters after broker restarts, want none", n)
	}
	t.Logf("%d changes written, all applied through two broker restarts", written)
}
