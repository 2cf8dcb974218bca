// Package activities holds cdcflow's Temporal activities. Each activity
// struct keeps its dependencies as fields, behind the small interfaces it
// declares; the worker registers the structs, and workflows run their methods
// through method references (var a *Apply; a.ApplyEvents), so an activity's
// name is its method's name.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
)

// BatchApplier is what the apply activities need from the destination.
type BatchApplier interface {
	Apply(ctx context.Context, events []event.Event) (cdc.Counts, error)
	ApplyIsolating(ctx context.Context, events []event.Event) (cdc.Counts, []cdc.FailedEvent, error)
}

// Apply applies change events to the destination.
type Apply struct {
	Applier BatchApplier
	Metrics *metrics.Apply // nil records nothing
}

// ApplyEvents applies the batch (or, when only is not empty, the events at
// those positions), in order, in one destination transaction. When that
// fails for a permanent reason it applies every event but the ones at fault
// and reports those as failed. Transient failures are returned as errors and
// retried by Temporal with the workflow's retry policy.
func (a *Apply) ApplyEvents(ctx context.Context, batch event.Batch, only []int) (cdc.ApplyOutcome, error) {
	raws, err := batch.Elements()
	if err != nil {
		return cdc.ApplyOutcome{}, invalidEvent(err)
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
			return cdc.ApplyOutcome{}, invalidEvent(errors.New("event index out of range"))
		}
		if events[i], err = event.Decode(raws[j]); err != nil {
			return cdc.ApplyOutcome{}, invalidEvent(err)
		}
	}
	start := time.Now()
	counts, failed, err := a.Applier.ApplyIsolating(ctx, events)
	a.Metrics.Batch(ctx, time.Since(start))
	if err != nil {
		a.Metrics.Error(ctx, cdc.ClassTransient)
		activity.GetLogger(ctx).Warn("apply batch failed, will retry", "attempt", activity.GetInfo(ctx).Attempt, "error", err)
		return cdc.ApplyOutcome{}, err
	}
	a.Metrics.Outcomes(ctx, counts, len(failed))
	out := cdc.ApplyOutcome{Counts: counts, Failed: failed}
	for i := range out.Failed {
		f := &out.Failed[i]
		a.Metrics.Error(ctx, f.ErrorClass)
		f.Index = only[f.Index] // position in the whole batch
	}
	return out, nil
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

func invalidEvent(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), string(cdc.ClassInvalidEvent), nil)
}
