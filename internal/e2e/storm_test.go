package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// TestDeadLetterStorm: every change of a busy table fails (a CHECK added on
// the destination rejects them all) while another table's changes flow.
// All of them are parked, in groups, with a bounded history per batch; the
// other table is applied; after the fix one bulk replay applies them all.
// The rate is measured by BenchmarkDeadLetterStorm.
func TestDeadLetterStorm(t *testing.T) {
	r := deadLetterStorm(t, 5000)
	if r.longestHistory > maxStormHistory {
		t.Errorf("a batch workflow's history has %d events, want at most %d whatever its failures", r.longestHistory, maxStormHistory)
	}
	if r.groups > r.batches {
		t.Errorf("%d DeadLetter workflows for %d batches, want at most one per batch and table", r.groups, r.batches)
	}
}

// maxStormHistory bounds the history of a batch whose every event fails:
// its tries, one park and one group start, whatever the batch's size.
const maxStormHistory = 60

// BenchmarkDeadLetterStorm measures the storm of TestDeadLetterStorm with
// CDCFLOW_BENCH_STORM failing changes (default 20,000).
func BenchmarkDeadLetterStorm(b *testing.B) {
	n := envInt("CDCFLOW_BENCH_STORM", 20000)
	for range b.N {
		r := deadLetterStorm(b, n)
		fmt.Printf("dead-letter storm: %d changes parked in %.1f s (%.0f/s) in %d groups over %d batches, longest batch history %d events; "+
			"%d changes to another table applied meanwhile in %.1f s; one bulk replay applied them all in %.1f s (%.0f/s)\n",
			n, r.parked.Seconds(), float64(n)/r.parked.Seconds(), r.groups, r.batches, r.longestHistory,
			r.others, r.othersApplied.Seconds(), r.replayed.Seconds(), float64(n)/r.replayed.Seconds())
	}
}

type stormResult struct {
	parked, othersApplied, replayed time.Duration
	others, batches, groups         int
	longestHistory                  int
}

func deadLetterStorm(t testing.TB, n int) stormResult {
	p := newPipeline(t)
	ctx := context.Background()
	p.env["CDCFLOW_TABLES"] = demo.Table + ",public.notes"
	if _, err := p.dest.Exec(ctx, `CREATE TABLE notes (id int PRIMARY KEY, body text);
		ALTER TABLE employees ADD CONSTRAINT salary_positive CHECK (salary > 0)`); err != nil {
		t.Fatal(err)
	}
	p.start("worker")
	p.start("starter")

	// n failing inserts of employees, and one note for every ten of them,
	// spread over the partitions by key as capture spreads them.
	others := n / 10
	msgs := make([]kafka.Message, 0, n+others)
	for i := 1; i <= n; i++ {
		ev := demo.Event(int64(i), event.OpInsert, demo.Employee{EmpID: i, FirstName: "E", LastName: "L", DOB: "1990-01-02", City: "Oslo", Salary: -i})
		msgs = append(msgs, message(t, ev))
		if i%10 == 0 {
			note := event.Event{ActionID: int64(n + i/10), Table: "public.notes", Op: event.OpInsert,
				Key: []byte(fmt.Sprintf(`{"id":%d}`, i/10)), After: []byte(fmt.Sprintf(`{"id":%d,"body":"note %d"}`, i/10, i/10)),
				CommitTime: time.Now().UTC(), SchemaVersion: event.CurrentSchemaVersion}
			msgs = append(msgs, message(t, note))
		}
	}
	w := kafkax.NewWriter(p.brokers, p.topic, kafkax.WriterOptions{BatchSize: 1000})
	defer w.Close()
	start := time.Now()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	var r stormResult
	r.others = others
	done := map[string]bool{}
	eventually(t, 10*time.Minute, fmt.Sprintf("%d parked and %d notes applied", n, others), func() (bool, string) {
		notes := p.count(`SELECT count(*) FROM notes`)
		if notes == others && !done["notes"] {
			r.othersApplied, done["notes"] = time.Since(start), true
		}
		parked := p.count(`SELECT count(*) FROM cdcflow.dead_letters WHERE state = 'parked'`)
		if parked == n && !done["parked"] {
			r.parked, done["parked"] = time.Since(start), true
		}
		return done["notes"] && done["parked"], fmt.Sprintf("%d parked, %d notes", parked, notes)
	})
	if rows := p.count(`SELECT count(*) FROM employees`); rows != 0 {
		t.Fatalf("%d employees applied, want none: every one violates the CHECK", rows)
	}
	r.batches, r.longestHistory = p.batchHistories()
	r.groups = p.count(`SELECT count(DISTINCT group_id) FROM cdcflow.dead_letters`)

	// The fix, then one bulk replay of the table.
	if _, err := p.dest.Exec(ctx, `ALTER TABLE employees DROP CONSTRAINT salary_positive`); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var out string
	eventually(t, time.Minute, "dlq replay to find every group", func() (bool, string) {
		var err error
		out, err = p.dlqCommand("list", "-table", demo.Table)
		return err == nil && strings.Contains(out, fmt.Sprintf("%d dead letter groups matched", r.groups)), out
	})
	if out, err := p.dlqCommand("replay", "-table", demo.Table); err != nil {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	eventually(t, 10*time.Minute, fmt.Sprintf("%d replayed", n), func() (bool, string) {
		replayed := p.count(`SELECT count(*) FROM cdcflow.dead_letters WHERE state = 'replayed'`)
		return replayed == n, fmt.Sprintf("%d replayed", replayed)
	})
	r.replayed = time.Since(start)
	if rows := p.count(`SELECT count(*) FROM employees WHERE salary < 0`); rows != n {
		t.Fatalf("%d employees after the replay, want %d", rows, n)
	}
	eventually(t, time.Minute, "every DeadLetter workflow closed", func() (bool, string) {
		resp, err := p.temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
			Query: fmt.Sprintf("TaskQueue = '%s' AND WorkflowType = '%s' AND ExecutionStatus = 'Running'", p.taskQueue, cdc.WorkflowDeadLetter)})
		if err != nil {
			return false, err.Error()
		}
		return resp.Count == 0, fmt.Sprintf("%d running", resp.Count)
	})
	return r
}

// message is ev as capture publishes it.
func message(t testing.TB, ev event.Event) kafka.Message {
	b, err := event.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return kafkax.Message(ev, b)
}

// batchHistories returns how many batch workflows the pipeline ran and the
// length of the longest history among them.
func (p *pipeline) batchHistories() (batches, longest int) {
	p.t.Helper()
	ctx := context.Background()
	var token []byte
	for {
		resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query:         fmt.Sprintf("TaskQueue = '%s' AND WorkflowType = '%s'", p.taskQueue, cdc.WorkflowApplyBatch),
			NextPageToken: token,
		})
		if err != nil {
			p.t.Fatal(err)
		}
		for _, ex := range resp.Executions {
			batches++
			n := 0
			it := p.temporal.GetWorkflowHistory(ctx, ex.Execution.WorkflowId, ex.Execution.RunId, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				if _, err := it.Next(); err != nil {
					p.t.Fatal(err)
				}
				n++
			}
			longest = max(longest, n)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return batches, longest
		}
	}
}
