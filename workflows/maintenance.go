package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// Reconcile finds the batch workflows of its task queue that closed without
// completing — failed, terminated, timed out or canceled — and runs them
// again with their own input, or, after too many such closes, parks their
// events for a person. The worker runs it on a Temporal schedule: the
// starter commits a batch's offsets once its workflow started, so this is
// what keeps every committed offset applied or parked whatever befalls the
// workflow.
func Reconcile(ctx workflow.Context) (cdc.ReconcileReport, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3},
	})
	var report cdc.ReconcileReport
	err := workflow.ExecuteActivity(ctx, reconciler.RedriveClosedBatches).Get(ctx, &report)
	return report, err
}

// Prune deletes the destination's idempotency records and row tombstones
// older than the redelivery horizon (see applier.Prune). The worker runs it
// on a Temporal schedule.
func Prune(ctx workflow.Context) (cdc.PruneReport, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Hour,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3},
	})
	var report cdc.PruneReport
	err := workflow.ExecuteActivity(ctx, bookkeeping.PruneBookkeeping).Get(ctx, &report)
	return report, err
}
