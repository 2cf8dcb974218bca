// Package activities holds cdcflow's Temporal activities. Each activity struct
// keeps its dependencies as fields; workflows refer to the methods through a
// nil pointer of the struct.
package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/event"
)

// BatchApplier is what the apply activity needs from the destination.
type BatchApplier interface {
	Apply(ctx context.Context, events []event.Event) (applier.Result, error)
}

// ApplyBatchName is the registered name of Apply.ApplyBatch; workflows run it
// as a local activity by this name.
const ApplyBatchName = "ApplyBatch"

// Apply applies batches of change events to the destination.
type Apply struct {
	Applier BatchApplier
}

// ApplyBatch applies the whole batch, in offset order, in one destination
// transaction. A
// permanent failure is returned as a non-retryable application error whose
// type is one of the applier.ErrType constants; anything else is retried by
// Temporal with the workflow's retry policy.
func (a *Apply) ApplyBatch(ctx context.Context, batch event.Batch) (applier.Result, error) {
	events, err := batch.Decode()
	if err != nil {
		return applier.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), applier.ErrTypeInvalidEvent, nil)
	}
	res, err := a.Applier.Apply(ctx, events)
	if err == nil {
		return res, nil
	}
	var perm *applier.PermanentError
	if errors.As(err, &perm) {
		return applier.Result{}, temporal.NewNonRetryableApplicationError(perm.Error(), perm.Type, nil, perm.ActionID)
	}
	info := activity.GetInfo(ctx)
	activity.GetLogger(ctx).Warn("apply batch failed, will retry", "attempt", info.Attempt, "error", err)
	return applier.Result{}, err
}
