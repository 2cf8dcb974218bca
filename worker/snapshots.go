package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/snapshot"
)

// startSnapshots starts a Snapshot workflow for every snapshot the source
// asks for, every poll, until ctx ends. Every worker may start them: a
// snapshot's workflow ID names its request, so a request has one
// workflow, and one that was terminated or failed is started again.
func startSnapshots(ctx context.Context, tc client.Client, src *pgxpool.Pool, queue string, pages int64, parallel int, poll time.Duration, log *slog.Logger) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if err := startPending(ctx, tc, src, queue, pages, parallel, log); err != nil && ctx.Err() == nil {
			log.Warn("start the snapshots the source asks for", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func startPending(ctx context.Context, tc client.Client, src *pgxpool.Pool, queue string, pages int64, parallel int, log *slog.Logger) error {
	pending, err := snapshot.Pending(ctx, src)
	if err != nil {
		return err
	}
	for _, in := range pending {
		in.ChunkPages, in.Parallel = pages, parallel
		id := cdc.SnapshotWorkflowID(in.Table, in.Source, in.Epoch)
		run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID:                       id,
			TaskQueue:                queue,
			WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
			StaticSummary:            fmt.Sprintf("Snapshot of %s, epoch %d", in.Table, in.Epoch),
		}, cdc.WorkflowSnapshot, in)
		if isAlreadyDone(err) {
			continue // completed; the source learns it from the workflow
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
		log.Debug("snapshot workflow running", "workflow_id", id, "run_id", run.GetRunID(), "table", in.Table)
	}
	return nil
}

func isAlreadyDone(err error) bool {
	var exists *serviceerror.WorkflowExecutionAlreadyStarted
	return errors.As(err, &exists)
}
