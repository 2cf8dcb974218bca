package workflows

import (
	"context"
	"fmt"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestHistoryIsBoundedThroughOutages: a batch whose destination row stays
// locked for 5 s and one whose row stays locked for 25 s end with histories
// of the same size: after LocalActivityBudget the apply retries as a regular
// activity, whose retries the history does not record. Real Temporal server,
// real PostgreSQL.
func TestHistoryIsBoundedThroughOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("holds row locks for half a minute")
	}
	defer func(b time.Duration) { LocalActivityBudget = b }(LocalActivityBudget)
	LocalActivityBudget = 2 * time.Second

	ctx := context.Background()
	pool, apl := testenv.NewDestination(t, applier.Timeouts{Lock: 100 * time.Millisecond})
	c := testenv.Dial(t, testenv.TemporalServer(t))
	queue := fmt.Sprintf("history-%d", time.Now().UnixNano())
	w := worker.New(c, queue, worker.Options{})
	Register(w)
	w.RegisterActivity(&activities.Apply{Applier: apl})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	row := demo.Employee{EmpID: 1, DOB: "1990-01-01"}
	if _, err := apl.Apply(ctx, []event.Event{demo.Event(1, event.OpInsert, row)}); err != nil {
		t.Fatal(err)
	}
	events := func(locked time.Duration, actionID int64) int {
		holder, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.Exec(ctx, `SELECT * FROM employees WHERE emp_id = 1 FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		row.Salary = int(actionID)
		batch := event.NewBatch([][]byte{encode(t, demo.Event(actionID, event.OpUpdate, row))})
		id := fmt.Sprintf("%s-%d", queue, actionID)
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, cdc.WorkflowApplyBatch,
			cdc.BatchInput{Topic: "t", EventCount: 1, Offsets: []int64{actionID}}, batch)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(locked) // the outage: the row stays locked this long
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		var sum cdc.BatchSummary
		if err := run.Get(ctx, &sum); err != nil || sum.Applied != 1 {
			t.Fatalf("batch after a %s lock: %+v, %v", locked, sum, err)
		}
		n := 0
		it := c.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			if _, err := it.Next(); err != nil {
				t.Fatal(err)
			}
			n++
		}
		return n
	}
	short, long := events(5*time.Second, 2), events(25*time.Second, 3)
	t.Logf("history events: %d after a 5 s lock, %d after a 25 s lock", short, long)
	if long > short+2 {
		t.Fatalf("history grew with the outage: %d events after 5 s, %d after 25 s", short, long)
	}
}
