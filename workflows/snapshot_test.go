package workflows

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func chunksOf(n int) []cdc.SnapshotChunk {
	chunks := make([]cdc.SnapshotChunk, n)
	for i := range chunks {
		chunks[i] = cdc.SnapshotChunk{Schema: "public", Name: "employees", FirstPage: int64(i), EndPage: int64(i + 1)}
	}
	return chunks
}

func TestSnapshotCopiesEveryChunkThenRecordsItDone(t *testing.T) {
	env := newEnv(t)
	env.RegisterActivity(&activities.Snapshots{})
	in := cdc.SnapshotInput{Table: "public.employees", Source: "s", Epoch: 5, ActionID: 9, Parallel: 3}
	env.OnActivity(snapshots.PlanSnapshot, mock.Anything, in).Return(chunksOf(7), nil).Once()
	copied := map[int64]int{}
	failOnce := true
	var mu sync.Mutex // activities run on goroutines of their own
	env.OnActivity(snapshots.CopySnapshotChunk, mock.Anything, mock.Anything).Return(
		func(_ context.Context, c cdc.SnapshotCopy) (cdc.SnapshotCopied, error) {
			mu.Lock()
			defer mu.Unlock()
			if c.Epoch != 5 || c.ActionID != 9 || c.Table != "public.employees" {
				return cdc.SnapshotCopied{}, fmt.Errorf("chunk with the wrong version: %+v", c)
			}
			if c.Chunk.FirstPage == 3 && failOnce {
				failOnce = false
				return cdc.SnapshotCopied{}, errors.New("destination down")
			}
			copied[c.Chunk.FirstPage]++
			return cdc.SnapshotCopied{Read: 10, Written: 8}, nil
		})
	var finished cdc.SnapshotProgress
	env.OnActivity(snapshots.FinishSnapshot, mock.Anything, mock.Anything, mock.Anything).Return(
		func(_ context.Context, _ cdc.SnapshotInput, p cdc.SnapshotProgress) error {
			finished = p
			return nil
		}).Once()
	env.ExecuteWorkflow(Snapshot, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	want := cdc.SnapshotProgress{Table: "public.employees", Chunks: 7, Copied: 7, Rows: 70, Written: 56}
	if diff := cmp.Diff(want, finished); diff != "" {
		t.Fatalf("progress recorded (-want +got):\n%s", diff)
	}
	if len(copied) != 7 {
		t.Fatalf("chunks copied %v, want each of 7 once", copied)
	}
	for page, n := range copied {
		if n != 1 {
			t.Fatalf("chunk %d copied %d times", page, n)
		}
	}
}

func TestSnapshotOfAHugeTableContinuesAsNew(t *testing.T) {
	env := newEnv(t)
	env.RegisterActivity(&activities.Snapshots{})
	in := cdc.SnapshotInput{Table: "public.employees", Epoch: 5, ActionID: 9}
	n := SnapshotChunksPerRun + 20
	env.OnActivity(snapshots.PlanSnapshot, mock.Anything, in).Return(chunksOf(n), nil).Once()
	env.OnActivity(snapshots.CopySnapshotChunk, mock.Anything, mock.Anything).Return(cdc.SnapshotCopied{Read: 1, Written: 1}, nil).Times(SnapshotChunksPerRun)
	env.ExecuteWorkflow(Snapshot, in)
	var next *workflow.ContinueAsNewError
	if err := env.GetWorkflowError(); !errors.As(err, &next) {
		t.Fatalf("workflow ended with %v, want to continue as new", err)
	}
	var carried cdc.SnapshotInput
	if err := temporalx.DataConverter().FromPayloads(next.Input, &carried); err != nil {
		t.Fatal(err)
	}
	if carried.Progress == nil || carried.Progress.Copied != SnapshotChunksPerRun || len(carried.Chunks) != n || carried.Progress.Rows != int64(SnapshotChunksPerRun) {
		t.Fatalf("carried on: %d chunks, progress %+v", len(carried.Chunks), carried.Progress)
	}

	// The next run copies the rest, and plans nothing again.
	env2 := newEnv(t)
	env2.RegisterActivity(&activities.Snapshots{})
	env2.OnActivity(snapshots.CopySnapshotChunk, mock.Anything, mock.Anything).Return(
		func(_ context.Context, c cdc.SnapshotCopy) (cdc.SnapshotCopied, error) {
			if c.Chunk.FirstPage < int64(SnapshotChunksPerRun) {
				return cdc.SnapshotCopied{}, fmt.Errorf("chunk %d copied again", c.Chunk.FirstPage)
			}
			return cdc.SnapshotCopied{Read: 1, Written: 1}, nil
		}).Times(20)
	env2.OnActivity(snapshots.FinishSnapshot, mock.Anything, mock.Anything, cdc.SnapshotProgress{Table: in.Table, Chunks: n, Copied: n,
		Rows: int64(n), Written: int64(n)}).Return(nil).Once()
	env2.ExecuteWorkflow(Snapshot, carried)
	if err := env2.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotOfARewrittenTableStartsOver(t *testing.T) {
	env := newEnv(t)
	env.RegisterActivity(&activities.Snapshots{})
	in := cdc.SnapshotInput{Table: "public.employees", Epoch: 5, ActionID: 9, Parallel: 1}
	env.OnActivity(snapshots.PlanSnapshot, mock.Anything, in).Return(chunksOf(4), nil).Once()
	env.OnActivity(snapshots.CopySnapshotChunk, mock.Anything, mock.Anything).Return(cdc.SnapshotCopied{Read: 1, Written: 1}, nil).Once()
	env.OnActivity(snapshots.CopySnapshotChunk, mock.Anything, mock.Anything).Return(cdc.SnapshotCopied{},
		temporal.NewNonRetryableApplicationError("rewritten", cdc.ErrorSnapshotRewritten, nil)).Once()
	env.ExecuteWorkflow(Snapshot, in)
	var next *workflow.ContinueAsNewError
	if err := env.GetWorkflowError(); !errors.As(err, &next) {
		t.Fatalf("workflow ended with %v, want to start over as new", err)
	}
	var again cdc.SnapshotInput
	if err := temporalx.DataConverter().FromPayloads(next.Input, &again); err != nil {
		t.Fatal(err)
	}
	if again.Chunks != nil || again.Progress != nil || again.Table != in.Table || again.ActionID != in.ActionID {
		t.Fatalf("started over with %+v, want the request without chunks or progress", again)
	}
}
