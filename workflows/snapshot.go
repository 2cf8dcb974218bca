package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
)

var snapshots *activities.Snapshots

// SnapshotRetryPolicy retries a chunk until it is copied: a failure that
// needs a person (a column the destination lacks) waits for the fix with
// its error in the Web UI, one attempt a minute.
var SnapshotRetryPolicy = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    time.Minute,
}

// SnapshotChunksPerRun bounds the chunks one run of a Snapshot copies
// before it continues as new, so that its history stays small however large
// the table.
const SnapshotChunksPerRun = 500

// Snapshot copies the rows a table holds to the destination, in chunks of
// its pages, Parallel chunks at a time; each chunk is one activity, so a
// crash costs the chunks being copied, not the snapshot. Its progress is
// the workflow's current details in the Web UI and its "progress" query.
// It ends by recording on the source that the snapshot is done.
func Snapshot(ctx workflow.Context, in cdc.SnapshotInput) (cdc.SnapshotProgress, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute,
		HeartbeatTimeout:    10 * activities.SnapshotHeartbeat,
		RetryPolicy:         SnapshotRetryPolicy,
	})
	progress := cdc.SnapshotProgress{Table: in.Table}
	if in.Progress != nil {
		progress = *in.Progress
	}
	if err := workflow.SetQueryHandler(ctx, "progress", func() (cdc.SnapshotProgress, error) { return progress, nil }); err != nil {
		return progress, err
	}
	show := func() {
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("Snapshot of %s (epoch %d): %d of %d chunks copied, %d rows read, %d written",
			in.Table, in.Epoch, progress.Copied, progress.Chunks, progress.Rows, progress.Written))
	}
	if in.Chunks == nil && in.Progress == nil {
		if err := workflow.ExecuteActivity(ctx, snapshots.PlanSnapshot, in).Get(ctx, &in.Chunks); err != nil {
			return progress, err
		}
		progress.Chunks = len(in.Chunks)
	}
	show()

	parallel := in.Parallel
	if parallel <= 0 {
		parallel = cdc.DefaultSnapshotParallel
	}
	// progress.Copied chunks are copied, those before next; the rest are
	// copied in order.
	next, started, running := progress.Copied, 0, 0
	sel := workflow.NewSelector(ctx)
	var failed error
	for progress.Copied < len(in.Chunks) && failed == nil {
		if started == SnapshotChunksPerRun && running == 0 {
			in.Progress = &progress
			return progress, workflow.NewContinueAsNewError(ctx, Snapshot, in)
		}
		for running < parallel && next < len(in.Chunks) && started < SnapshotChunksPerRun {
			f := workflow.ExecuteActivity(ctx, snapshots.CopySnapshotChunk, cdc.SnapshotCopy{
				Table: in.Table, Epoch: in.Epoch, ActionID: in.ActionID, Chunk: in.Chunks[next]})
			running++
			started++
			next++
			sel.AddFuture(f, func(f workflow.Future) {
				running--
				var got cdc.SnapshotCopied
				if err := f.Get(ctx, &got); err != nil {
					failed = err
					return
				}
				progress.Copied++
				progress.Rows += got.Read
				progress.Written += got.Written
				show()
			})
		}
		sel.Select(ctx)
	}
	var appErr *temporal.ApplicationError
	if errors.As(failed, &appErr) && appErr.Type() == cdc.ErrorSnapshotRewritten {
		// The table was rewritten: its rows moved between chunks. Cut it
		// again and copy it all; the rows copied already keep their copy
		// (the same version is not written twice).
		workflow.GetLogger(ctx).Warn("the table was rewritten during its snapshot: copying it again", "table", in.Table)
		in.Chunks, in.Progress = nil, nil
		return progress, workflow.NewContinueAsNewError(ctx, Snapshot, in)
	}
	if failed != nil {
		return progress, failed
	}
	if err := workflow.ExecuteActivity(ctx, snapshots.FinishSnapshot, in, progress).Get(ctx, nil); err != nil {
		return progress, err
	}
	return progress, nil
}
