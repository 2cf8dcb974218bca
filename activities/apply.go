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
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/tracing"
)

// BatchApplier is what the apply activities need from the destination.
type BatchApplier interface {
	Apply(ctx context.Context, events []event.Event) (cdc.Counts, error)
	ApplyIsolating(ctx context.Context, events []event.Event) (cdc.Counts, []cdc.FailedEvent, error)
}

// ChunkFetcher reads messages at given offsets of a partition (the chunks
// of large changes); an offset the topic no longer holds is an error
// wrapping kafkax.ErrGone.
type ChunkFetcher interface {
	Read(ctx context.Context, topic string, partition int, offsets []int64) ([]kafka.Message, error)
}

// Apply applies change events to the destination.
type Apply struct {
	Applier BatchApplier
	Chunks  ChunkFetcher   // reads the chunks of large changes
	Metrics *metrics.Apply // nil records nothing
	// Health is told whether the destination answered each apply
	// (metrics.DepDestination); nil: not.
	Health *metrics.Health
}

// ApplyEvents applies the batch (or, when only is not empty, the events at
// those positions), in order, in one destination transaction. When that
// fails for a permanent reason it applies every event but the ones at fault
// and reports those as failed. Transient failures are returned as errors and
// retried by Temporal with the workflow's retry policy.
//
// A manifest is replaced by its full event, read from the chunks its claim
// names; the full event stays in this activity (a failed one is reported by
// its manifest and claim). A change capture marked too large is reported
// failed as ChangeTooLarge.
func (a *Apply) ApplyEvents(ctx context.Context, batch event.Batch, only []int, claims *cdc.BatchClaims) (cdc.ApplyOutcome, error) {
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
	events := make([]event.Event, 0, len(only))
	at := make([]int, 0, len(only)) // position in the batch of each of events
	var refused []cdc.FailedEvent
	for _, j := range only {
		if j < 0 || j >= len(raws) {
			return cdc.ApplyOutcome{}, invalidEvent(errors.New("event index out of range"))
		}
		ev, err := event.Decode(raws[j])
		if err != nil {
			return cdc.ApplyOutcome{}, invalidEvent(err)
		}
		switch {
		case ev.TooLarge != nil:
			refused = append(refused, cdc.FailedEvent{Index: j, Epoch: ev.Epoch, ActionID: ev.ActionID, Table: ev.Table,
				ErrorClass: cdc.ClassChangeTooLarge, Error: applier.TooLargeMessage(ev)})
			continue
		case ev.Op == event.OpTruncate:
			refused = append(refused, cdc.FailedEvent{Index: j, Epoch: ev.Epoch, ActionID: ev.ActionID, Table: ev.Table,
				ErrorClass: cdc.ClassTruncate, Error: applier.TruncateMessage(ev)})
			continue
		case ev.Chunks != nil:
			claim := claims.Check(j)
			full, err := a.resolve(ctx, ev, claim)
			var perm *claimError
			if errors.As(err, &perm) {
				refused = append(refused, cdc.FailedEvent{Index: j, Epoch: ev.Epoch, ActionID: ev.ActionID, Table: ev.Table,
					ErrorClass: perm.class, Error: perm.Error(), Claim: claim})
				continue
			}
			if err != nil {
				a.Metrics.Error(ctx, cdc.ClassTransient)
				activity.GetLogger(ctx).Warn("read chunks failed, will retry", "action_id", ev.ActionID,
					"attempt", activity.GetInfo(ctx).Attempt, "error", err)
				return cdc.ApplyOutcome{}, err
			}
			ev = full
		}
		events = append(events, ev)
		at = append(at, j)
	}
	var counts cdc.Counts
	var failed []cdc.FailedEvent
	if len(events) > 0 {
		start := time.Now()
		actx, span := tracing.Tracer().Start(ctx, "apply to the destination",
			trace.WithAttributes(attribute.Int("cdcflow.events", len(events))))
		counts, failed, err = a.Applier.ApplyIsolating(actx, events)
		span.SetAttributes(attribute.Int("cdcflow.applied", counts.Applied), attribute.Int("cdcflow.superseded", counts.Superseded),
			attribute.Int("cdcflow.duplicates", counts.Duplicates), attribute.Int("cdcflow.failed", len(failed)))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End() // at the destination commit, or the failure
		committed := time.Now()
		a.Metrics.Batch(ctx, committed.Sub(start))
		a.Health.Set(metrics.DepDestination, err)
		if err != nil {
			a.Metrics.Error(ctx, cdc.ClassTransient)
			activity.GetLogger(ctx).Warn("apply batch failed, will retry", "attempt", activity.GetInfo(ctx).Attempt, "error", err)
			return cdc.ApplyOutcome{}, err
		}
		a.latencies(ctx, events, failed, committed)
		for i := range failed {
			f := &failed[i]
			f.Index = at[f.Index] // position in the whole batch
			f.Claim = claims.Check(f.Index)
		}
	}
	out := cdc.ApplyOutcome{Counts: counts, Failed: append(refused, failed...)}
	a.Metrics.Outcomes(ctx, counts)
	for i := range out.Failed {
		f := &out.Failed[i]
		a.Metrics.Error(ctx, f.ErrorClass)
	}
	return out, nil
}

// latencies records the replication latency of each event the destination
// committed at committed: all but the failed (indexes into events).
func (a *Apply) latencies(ctx context.Context, events []event.Event, failed []cdc.FailedEvent, committed time.Time) {
	if a.Metrics == nil {
		return
	}
	var skip []bool
	if len(failed) > 0 {
		skip = make([]bool, len(events))
		for _, f := range failed {
			if f.Index >= 0 && f.Index < len(events) {
				skip[f.Index] = true
			}
		}
	}
	for i := range events {
		if skip == nil || !skip[i] {
			a.Metrics.Latency(ctx, events[i].CommitTime, committed)
		}
	}
}

// claimError is a claim that reading again cannot resolve.
type claimError struct {
	class cdc.ErrorClass
	err   error
}

func (e *claimError) Error() string { return e.err.Error() }
func (e *claimError) Unwrap() error { return e.err }

// resolve reads the full event of a manifest from the chunks claim names.
func (a *Apply) resolve(ctx context.Context, manifest event.Event, claim *cdc.ClaimCheck) (event.Event, error) {
	if claim == nil {
		return event.Event{}, &claimError{cdc.ClassInvalidEvent,
			fmt.Errorf("action_id %d is a manifest, and no claim names its chunks", manifest.ActionID)}
	}
	if a.Chunks == nil {
		return event.Event{}, errors.New("the worker has no Kafka reader for the chunks of large changes")
	}
	msgs, err := a.Chunks.Read(ctx, claim.Topic, claim.Partition, claim.Offsets)
	if errors.Is(err, kafkax.ErrGone) {
		return event.Event{}, &claimError{cdc.ClassClaimExpired, fmt.Errorf(
			"the chunks of action_id %d are gone from the change topic (its retention passed before the change was applied): %w",
			manifest.ActionID, err)}
	}
	if err != nil {
		return event.Event{}, fmt.Errorf("read the chunks of action_id %d: %w", manifest.ActionID, err)
	}
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		c, ok, err := kafkax.ChunkOf(m.Headers)
		if err == nil && (!ok || c.ActionID != manifest.ActionID || c.Index != i || c.Count != len(msgs)) {
			err = fmt.Errorf("%s[%d] offset %d is not chunk %d/%d of action_id %d", claim.Topic, claim.Partition, m.Offset,
				i, len(msgs), manifest.ActionID)
		}
		if err != nil {
			return event.Event{}, &claimError{cdc.ClassInvalidEvent, err}
		}
		parts[i] = m.Value
	}
	full, _, err := event.Assemble(manifest, parts)
	if err != nil {
		return event.Event{}, &claimError{cdc.ClassInvalidEvent, err}
	}
	return full, nil
}

// ResolveClaim returns the full encoded event that message, the manifest of
// a large change, stands for: read from the chunks claim names and checked
// against the manifest. A message that is not a manifest is returned as it
// is. Failures that reading again cannot fix are non-retryable application
// errors of type ClaimExpired (the topic no longer holds the chunks) or
// InvalidEvent; any other error may pass on retry.
func ResolveClaim(ctx context.Context, chunks ChunkFetcher, message []byte, claim *cdc.ClaimCheck) ([]byte, error) {
	manifest, err := event.Decode(message)
	if err != nil {
		return nil, invalidEvent(err)
	}
	if manifest.Chunks == nil {
		return message, nil
	}
	a := Apply{Chunks: chunks}
	full, err := a.resolve(ctx, manifest, claim)
	var perm *claimError
	if errors.As(err, &perm) {
		return nil, temporal.NewNonRetryableApplicationError(perm.Error(), string(perm.class), nil)
	}
	if err != nil {
		return nil, err
	}
	return event.Encode(full)
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
	return event.DecodeWhole(b)
}

func invalidEvent(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), string(cdc.ClassInvalidEvent), nil)
}
