package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
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
