// Package activities holds cdcflow's Temporal activities. Each activity struct
// keeps its dependencies as fields; workflows run them by registered name.
package activities

import (
	"context"
	"encoding/json"
	"errors"

	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
)

// Registered names of the activities; workflows run them as local
// activities by these names.
const (
	ApplyBatchName  = "ApplyBatch"
	ReplayEventName = "ReplayEvent"
	ParkName        = "Park"
	SettleName      = "Settle"
)

// BatchApplier is what the apply activities need from the destination.
type BatchApplier interface {
	Apply(ctx context.Context, events []event.Event) (applier.Result, error)
	ApplyIsolating(ctx context.Context, events []event.Event) (applier.Result, []applier.Failure, error)
}

// Apply applies batches of change events to the destination.
type Apply struct {
	Applier BatchApplier
	Metrics *metrics.Apply // nil records nothing
}

// FailedEvent is an event of a batch that failed for a permanent reason.
type FailedEvent struct {
	applier.Failure
	Message json.RawMessage `json:"message"` // the encoded event
}

// ApplyOutcome is what ApplyBatch did.
type ApplyOutcome struct {
	applier.Result
	Failed []FailedEvent `json:"failed,omitempty"`
}

// ApplyBatch applies the batch (or, when only is not empty, the events at
// those positions), in order, in one destination transaction. When that
// fails for a permanent reason it applies every event but the ones at fault
// and reports those as failed. Transient failures are returned as errors and
// retried by Temporal with the workflow's retry policy.
func (a *Apply) ApplyBatch(ctx context.Context, batch event.Batch, only []int) (ApplyOutcome, error) {
	raws, err := batch.Elements()
	if err != nil {
		return ApplyOutcome{}, temporal.NewNonRetryableApplicationError(err.Error(), applier.ErrTypeInvalidEvent, nil)
	}
	if len(only) == 0 {
		only = make([]int, len(raws))
		for i := range only {
			only[i] = i
		}
	}
	events := make([]event.Event, len(only))
	for i, j := range only {
		if j < 0 || j >= len(raws) {
			return ApplyOutcome{}, temporal.NewNonRetryableApplicationError("event index out of range", applier.ErrTypeInvalidEvent, nil)
		}
		if events[i], err = event.Decode(raws[j]); err != nil {
			return ApplyOutcome{}, temporal.NewNonRetryableApplicationError(err.Error(), applier.ErrTypeInvalidEvent, nil)
		}
	}
	start := time.Now()
	res, failed, err := a.Applier.ApplyIsolating(ctx, events)
	a.Metrics.Batch(ctx, time.Since(start))
	if err != nil {
		a.Metrics.Error(ctx, "transient")
		info := activity.GetInfo(ctx)
		activity.GetLogger(ctx).Warn("apply batch failed, will retry", "attempt", info.Attempt, "error", err)
		return ApplyOutcome{}, err
	}
	a.Metrics.Outcome(ctx, "applied", res.Applied)
	a.Metrics.Outcome(ctx, "superseded", res.Superseded)
	a.Metrics.Outcome(ctx, "duplicate", res.Duplicates)
	a.Metrics.Outcome(ctx, "failed", len(failed))
	out := ApplyOutcome{Result: res}
	for _, f := range failed {
		a.Metrics.Error(ctx, f.Class)
		f.Index = only[f.Index] // position in the whole batch
		out.Failed = append(out.Failed, FailedEvent{Failure: f, Message: raws[f.Index]})
	}
	return out, nil
}

// ReplayRequest asks to apply one parked change again.
type ReplayRequest struct {
	Message json.RawMessage `json:"message"`         // the encoded event
	After   json.RawMessage `json:"after,omitempty"` // a corrected row image
}

// ReplayEvent applies one parked change, with its row image replaced by a
// corrected one when given. It is subject to the same idempotency and version
// guard as any change: a replay of an event already applied is a duplicate,
// and one older than the row's current version is superseded.
func (a *Apply) ReplayEvent(ctx context.Context, req ReplayRequest) (applier.Result, error) {
	ev, err := event.Decode(req.Message)
	if err != nil {
		return applier.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), applier.ErrTypeInvalidEvent, nil)
	}
	if req.After != nil {
		if ev, err = withAfter(ev, req.After); err != nil {
			return applier.Result{}, temporal.NewNonRetryableApplicationError(err.Error(), applier.ErrTypeInvalidEvent, nil)
		}
	}
	res, err := a.Applier.Apply(ctx, []event.Event{ev})
	var perm *applier.PermanentError
	if errors.As(err, &perm) {
		return applier.Result{}, temporal.NewNonRetryableApplicationError(perm.Error(), perm.Type, nil, perm.ActionID)
	}
	return res, err
}

// withAfter replaces the row image of ev, checking it as a decoded event is.
func withAfter(ev event.Event, after json.RawMessage) (event.Event, error) {
	if ev.Op == event.OpDelete {
		return ev, errors.New("a delete has no row image to correct")
	}
	ev.After = after
	b, err := event.Encode(ev)
	if err != nil {
		return ev, err
	}
	return event.Decode(b)
}
