package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// Pruner deletes bookkeeping older than a horizon.
type Pruner interface {
	Prune(ctx context.Context, horizon time.Duration) (cdc.PruneReport, error)
}

// Bookkeeping keeps the destination's idempotency records and tombstones
// bounded.
type Bookkeeping struct {
	Pruner Pruner
	// Horizon is how long a change may be redelivered: records older than
	// it are deleted.
	Horizon time.Duration
}

// PruneBookkeeping deletes idempotency records and tombstones older than
// the redelivery horizon.
func (b *Bookkeeping) PruneBookkeeping(ctx context.Context) (cdc.PruneReport, error) {
	report, err := b.Pruner.Prune(ctx, b.Horizon)
	if err == nil {
		activity.GetLogger(ctx).Info("pruned bookkeeping", "horizon", b.Horizon,
			"processed_events", report.ProcessedEvents, "tombstones", report.Tombstones)
	}
	return report, err
}
