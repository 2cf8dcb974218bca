package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/event"
)

// breakdown prints where the time of the changes published since since
// went, median and 99th percentile of each leg: source commit to Kafka
// (capture), Kafka to the start of their batch workflow (starter), and the
// workflow's start to its close (Temporal and the apply).
func (p *pipeline) breakdown(b *testing.B, since time.Time) {
	b.Helper()
	ctx := context.Background()
	type span struct{ start, close time.Time }
	batches := map[[2]int64]span{} // partition, last offset
	firsts := map[int64][]int64{}  // partition: first offsets, sorted
	var token []byte
	for {
		resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{NextPageToken: token,
			Query: fmt.Sprintf("WorkflowType = 'ApplyBatch' AND TaskQueue = '%s' AND StartTime > '%s'", p.taskQueue, since.UTC().Format(time.RFC3339Nano))})
		if err != nil {
			b.Fatal(err)
		}
		for _, ex := range resp.Executions {
			var part, first, last int64
			rest := strings.TrimPrefix(ex.Execution.WorkflowId, "cdc-"+p.topic+"-")
			if _, err := fmt.Sscanf(strings.ReplaceAll(rest, "-", " "), "%d %d %d", &part, &first, &last); err != nil {
				continue
			}
			batches[[2]int64{part, first}] = span{ex.StartTime.AsTime(), ex.CloseTime.AsTime()}
			firsts[part] = append(firsts[part], first)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	var capture, starter, apply []time.Duration
	for part, fs := range firsts {
		slices.Sort(fs)
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.brokers, Topic: p.topic, Partition: int(part), MaxWait: 50 * time.Millisecond})
		if err := r.SetOffset(fs[0]); err != nil {
			b.Fatal(err)
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			m, err := r.ReadMessage(rctx)
			cancel()
			if err != nil {
				break
			}
			ev, err := event.Decode(m.Value)
			if err != nil {
				continue
			}
			i, _ := slices.BinarySearch(fs, m.Offset+1)
			if i == 0 {
				continue
			}
			s, ok := batches[[2]int64{part, fs[i-1]}]
			if !ok {
				continue
			}
			capture = append(capture, m.Time.Sub(ev.CommitTime))
			starter = append(starter, s.start.Sub(m.Time))
			apply = append(apply, s.close.Sub(s.start))
		}
		r.Close()
	}
	pct := func(d []time.Duration, q float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return d[min(len(d)-1, int(q*float64(len(d))))].Round(time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "             where the time went (%d changes, %d batches), p50/p99: commit to Kafka %v/%v, Kafka to batch start %v/%v, batch start to close %v/%v\n",
		len(capture), len(batches), pct(capture, .5), pct(capture, .99), pct(starter, .5), pct(starter, .99), pct(apply, .5), pct(apply, .99))
}

// cpuParts names the processes whose CPU time a phase accounts for.
type cpuParts struct {
	programs map[string]*proc // capture, starter, worker
	temporal int              // the Temporal server's pid
}

// cpuNow reads the CPU time (user and system, seconds) of each part: the
// programs, the Temporal server, every PostgreSQL process (source and
// destination share a server), and this process (the in-process Kafka
// broker and the writers).
func (c cpuParts) cpuNow() map[string]float64 {
	out := map[string]float64{}
	for name, pr := range c.programs {
		out[name] = cpuSeconds(pr.Pid())
	}
	out["temporal"] = cpuSeconds(c.temporal)
	out["kafka+bench"] = cpuSeconds(os.Getpid())
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
			out["postgres"] += cpuSeconds(pid)
		}
	}
	return out
}

// cpuSeconds is the CPU time of process pid so far, in seconds.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces), from the
	// third: utime and stime are the 14th and 15th, in clock ticks.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// cpuReport prints what each part used between before and after, over a
// phase of wall time d on this machine's cores.
func cpuReport(before, after map[string]float64, d time.Duration) {
	names := make([]string, 0, len(after))
	var total float64
	for name := range after {
		names = append(names, name)
		total += after[name] - before[name]
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmpFloat(after[b]-before[b], after[a]-before[a])
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", n, after[n]-before[n]))
	}
	fmt.Fprintf(os.Stderr, "             cpu: %s; %.1f s of %d cores x %.1f s\n", strings.Join(parts, ", "), total, runtime.NumCPU(), d.Seconds())
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// profiler takes CPU profiles of the programs when CDCFLOW_BENCH_PPROF
// names a directory: each program serves pprof on a port of its own.
type profiler struct {
	dir   string
	addrs map[string]string
}

func newProfiler(b *testing.B) *profiler {
	pr := &profiler{dir: os.Getenv("CDCFLOW_BENCH_PPROF"), addrs: map[string]string{}}
	if pr.dir != "" {
		if err := os.MkdirAll(pr.dir, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	return pr
}

// setting is the pprof setting of program name (none when off).
func (pr *profiler) setting(b *testing.B, name string) string {
	if pr.dir == "" {
		return "CDCFLOW_LOG_LEVEL=warn"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pr.addrs[name] = ln.Addr().String()
	ln.Close()
	return "CDCFLOW_PPROF_ADDR=" + pr.addrs[name]
}

// profile takes a CPU profile of every program for d, in the background,
// into <dir>/<phase>-<program>.pprof; wait waits for them.
func (pr *profiler) profile(phase string, d time.Duration) (wait func()) {
	var wg sync.WaitGroup
	for name, addr := range pr.addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())))
			if err != nil {
				fmt.Fprintf(os.Stderr, "profile %s: %v\n", name, err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			path := filepath.Join(pr.dir, phase+"-"+name+".pprof")
			if err := os.WriteFile(path, body, 0o644); err == nil {
				fmt.Fprintf(os.Stderr, "             profile of %s: %s\n", name, path)
			}
		}()
	}
	return wg.Wait
}
