package activities

import (
	"context"
	"errors"
	"io"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/snapshot"
)

// Snapshots copies the rows source tables held when their log-based
// capture began (the Snapshot workflow's activities). Every failure is
// retried: a snapshot that cannot go on (a column the destination lacks,
// a role that may not read the table) waits, with its error in the Web UI,
// until a person fixes the cause.
type Snapshots struct {
	Source  *pgxpool.Pool // nil when the worker has no CDCFLOW_SOURCE_DSN
	Applier *applier.Applier
}

// SnapshotHeartbeat is how often a chunk's copy heartbeats; the Snapshot
// workflow gives it a heartbeat timeout a few times longer.
const SnapshotHeartbeat = 2 * time.Second

var errNoSource = errors.New("this worker cannot copy snapshots: it has no source to read (set CDCFLOW_SOURCE_DSN on every worker)")

// PlanSnapshot cuts the table of in into chunks.
func (s *Snapshots) PlanSnapshot(ctx context.Context, in cdc.SnapshotInput) ([]cdc.SnapshotChunk, error) {
	if s.Source == nil {
		return nil, errNoSource
	}
	return snapshot.Plan(ctx, s.Source, in.Table, in.ChunkPages)
}

// CopySnapshotChunk copies the rows of one chunk to the destination.
func (s *Snapshots) CopySnapshotChunk(ctx context.Context, in cdc.SnapshotCopy) (cdc.SnapshotCopied, error) {
	if s.Source == nil {
		return cdc.SnapshotCopied{}, errNoSource
	}
	shape, err := snapshot.Describe(ctx, s.Source, in.Table, in.Chunk)
	if errors.Is(err, snapshot.ErrGone) {
		return cdc.SnapshotCopied{}, nil // dropped since: nothing to copy
	}
	if err != nil {
		return cdc.SnapshotCopied{}, err
	}
	// Heartbeats tell a copy whose worker died from a slow one, so that the
	// chunk is copied again soon, not after the activity's timeout.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(SnapshotHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	res, err := s.Applier.CopySnapshot(ctx, in.Table, shape.Key, shape.Columns, in.Epoch, in.ActionID, func(cols []string, w io.Writer) error {
		return snapshot.Read(ctx, s.Source, in.Chunk, shape.Key, cols, w)
	})
	switch {
	case errors.Is(err, snapshot.ErrGone):
		return cdc.SnapshotCopied{}, nil // the partition was dropped since: its rows are gone
	case errors.Is(err, snapshot.ErrRewritten):
		return cdc.SnapshotCopied{}, temporal.NewNonRetryableApplicationError(err.Error(), cdc.ErrorSnapshotRewritten, nil)
	}
	return res, err
}

// FinishSnapshot records on the source that the snapshot is done.
func (s *Snapshots) FinishSnapshot(ctx context.Context, in cdc.SnapshotInput, p cdc.SnapshotProgress) error {
	if s.Source == nil {
		return errNoSource
	}
	return snapshot.Done(ctx, s.Source, in, p.Rows)
}
