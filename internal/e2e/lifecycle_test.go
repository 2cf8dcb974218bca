package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// TestClosedBatchesAreRedriven: batch workflows terminated before they ran
// (their offsets are committed already) are found by the reconciler and run
// again with their own input; every change arrives.
func TestClosedBatchesAreRedriven(t *testing.T) {
	p := newPipeline(t)
	const n = 400
	want := p.produce(n, 100, 21)
	// The starter starts and commits every batch while no worker runs them.
	p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=50")
	eventually(t, time.Minute, "all offsets committed", func() (bool, string) {
		c := p.committed()
		return c == n, fmt.Sprint(c)
	})
	ctx := context.Background()
	resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("TaskQueue = '%s' AND WorkflowType = '%s'", p.taskQueue, cdc.WorkflowApplyBatch)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Executions) < 3 {
		t.Fatalf("%d batch workflows, want at least 3", len(resp.Executions))
	}
	var terminated []string
	for _, ex := range resp.Executions[:3] {
		id := ex.Execution.WorkflowId
		if err := p.temporal.TerminateWorkflow(ctx, id, "", "terminated by the test"); err != nil {
			t.Fatal(err)
		}
		terminated = append(terminated, id)
	}

	p.start("worker", "CDCFLOW_RECONCILE_EVERY=1s")
	p.waitApplied(n)
	p.assertDestination(want)
	for _, id := range terminated {
		desc, err := p.temporal.DescribeWorkflow(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		if st := desc.RawResponse.WorkflowExecutionInfo.Status; st != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			t.Fatalf("batch %s is %s, want completed after the reconciler ran it again", id, st)
		}
		// The new run explains itself, and is found, as the first did.
		if summary, err := desc.GetStaticSummary(); err != nil || !strings.Contains(summary, " to public.employees") {
			t.Errorf("redriven batch %s has the summary %q (%v)", id, summary, err)
		}
		if _, ok := desc.RawResponse.WorkflowExecutionInfo.GetSearchAttributes().GetIndexedFields()[cdc.SearchTables]; !ok {
			t.Errorf("redriven batch %s lacks %s", id, cdc.SearchTables)
		}
	}
}

// TestBookkeepingIsPruned: the worker's Prune schedule deletes idempotency
// records and tombstones past the redelivery horizon.
func TestBookkeepingIsPruned(t *testing.T) {
	p := newPipeline(t)
	const n = 300
	p.produce(n, 50, 5)
	p.start("starter")
	p.start("worker", "CDCFLOW_PRUNE_EVERY=1s", "CDCFLOW_REDELIVERY_HORIZON=1m")
	p.waitApplied(n)
	tombstones := p.count(`SELECT count(*) FROM cdcflow.row_versions WHERE deleted`)
	if tombstones == 0 {
		t.Fatal("the workload deleted no row")
	}
	ctx := context.Background()
	for _, sql := range []string{
		`UPDATE cdcflow.processed_events SET applied_at = now() - interval '2 minutes'`,
		`UPDATE cdcflow.row_versions SET updated_at = now() - interval '2 minutes'`,
	} {
		if _, err := p.dest.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "bookkeeping pruned", func() (bool, string) {
		records := p.count(`SELECT count(*) FROM cdcflow.processed_events`)
		left := p.count(`SELECT count(*) FROM cdcflow.row_versions WHERE deleted`)
		return records == 0 && left == 0, fmt.Sprintf("%d records, %d tombstones", records, left)
	})
	if live := p.count(`SELECT count(*) FROM cdcflow.row_versions WHERE NOT deleted`); live != p.count(`SELECT count(*) FROM employees`) {
		t.Fatalf("%d versions of live rows, want one per row", live)
	}
}
