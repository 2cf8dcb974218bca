// Package workflows holds cdcflow's deterministic workflow code: ApplyBatch,
// one per batch the starter cuts, and DeadLetter, one per group of parked
// changes (a batch's failures on one table with one error class).
package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// Register registers every cdcflow workflow with w.
func Register(w worker.WorkflowRegistry) {
	w.RegisterWorkflowWithOptions(ApplyBatch, workflow.RegisterOptions{Name: cdc.WorkflowApplyBatch})
	w.RegisterWorkflowWithOptions(DeadLetter, workflow.RegisterOptions{Name: cdc.WorkflowDeadLetter})
	w.RegisterWorkflowWithOptions(Reconcile, workflow.RegisterOptions{Name: cdc.WorkflowReconcile})
	w.RegisterWorkflowWithOptions(Prune, workflow.RegisterOptions{Name: cdc.WorkflowPrune})
	w.RegisterWorkflowWithOptions(Snapshot, workflow.RegisterOptions{Name: cdc.WorkflowSnapshot})
}

// Typed keys of the search attributes of DeadLetter workflows.
var (
	searchTable      = temporal.NewSearchAttributeKeyKeyword(cdc.SearchTable)
	searchErrorClass = temporal.NewSearchAttributeKeyKeyword(cdc.SearchErrorClass)
	searchState      = temporal.NewSearchAttributeKeyKeyword(cdc.SearchState)
	searchOutcome    = temporal.NewSearchAttributeKeyKeyword(cdc.SearchOutcome)
)

// Activities are run through method references of nil structs: the worker
// registered the real ones, and the method names are the activity names.
var (
	apply       *activities.Apply
	deadLetters *activities.DeadLetters
	reconciler  *activities.Reconciler
	bookkeeping *activities.Bookkeeping
)

// ApplyRetryPolicy retries transient failures (destination down, serialization
// failures, deadlocks) without limit, backing off to one attempt every 30 s.
// Permanent failures of single events are not errors of the activity: it
// reports them, and ApplyBatch retries those events MaxAttempts times itself.
var ApplyRetryPolicy = &temporal.RetryPolicy{
	InitialInterval:    500 * time.Millisecond,
	BackoffCoefficient: 2,
	MaximumInterval:    30 * time.Second,
	MaximumAttempts:    0,
}

// LocalActivityBudget is how long an activity retries as a local activity
// before it goes on as a regular one (see execute). Local retries write
// history (markers, timers, workflow task heartbeats) as they go; a regular
// activity's retries write none, so a workflow's history stays the same size
// whatever the length of an outage. Tests shorten it; it must not change
// while workers run.
var LocalActivityBudget = 2 * time.Minute

// execute runs an activity and stores its result in result (nil: none). It
// runs as a local activity first: in the worker that runs the workflow, so a
// batch is not copied into the history a second time as activity input, at
// the cost of one workflow task. When it has not passed within
// LocalActivityBudget (the destination or Kafka is down, a row stays
// locked) it goes on as a regular activity, which the server retries without
// limit and without adding to the history. A failure that retrying cannot
// fix (a non-retryable application error) ends it at once.
func execute(ctx workflow.Context, result any, activity any, args ...any) error {
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout:    2 * time.Minute,
		ScheduleToCloseTimeout: LocalActivityBudget,
		RetryPolicy:            ApplyRetryPolicy,
	})
	err := workflow.ExecuteLocalActivity(lctx, activity, args...).Get(ctx, result)
	var appErr *temporal.ApplicationError
	if err == nil || (errors.As(err, &appErr) && appErr.NonRetryable()) || temporal.IsCanceledError(err) {
		return err
	}
	// The budget ran out with the activity still failing for a reason that
	// may pass: the SDK gives up with its last error, or a timeout.
	workflow.GetLogger(ctx).Warn("activity still failing; retrying it as a regular activity", "error", err)
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy:         ApplyRetryPolicy, // no limit, no schedule-to-close: until it passes
	})
	return workflow.ExecuteActivity(actx, activity, args...).Get(ctx, result)
}

// MaxRetryPause caps the pause between two tries of events that failed for a
// permanent reason.
const MaxRetryPause = time.Minute

// ApplyBatch applies one batch to the destination. It never decodes the
// events: they go to the apply activity as they came, with the claims of
// large ones, whose full events the activity reads from Kafka. Events that
// fail for a permanent reason are tried MaxAttempts times in all (those
// whose class is final once), then parked: in the
// DLQ topic, the dead_letters table, and a DeadLetter workflow each, which
// outlives the batch and waits for a person's decision.
func ApplyBatch(ctx workflow.Context, in cdc.BatchInput, events event.Batch) (cdc.BatchSummary, error) {
	b := newBatch(ctx, in)
	parked := b.poisonRecords(ctx)
	if in.ParkReason != "" {
		records, err := b.batchRecords(ctx, events)
		if err != nil {
			return b.summary, err
		}
		return b.summary, b.close(ctx, append(parked, records...))
	}
	failed, err := b.applyWithRetries(ctx, events)
	if err != nil {
		return b.summary, err
	}
	records, err := b.failureRecords(ctx, events, failed)
	if err != nil {
		return b.summary, err
	}
	return b.summary, b.close(ctx, append(parked, records...))
}

// close parks the batch's failed changes, then records its outcome.
func (b *batch) close(ctx workflow.Context, records []cdc.DeadLetterRecord) error {
	if err := b.park(ctx, records); err != nil {
		return err
	}
	if !b.in.SetOutcome {
		return nil
	}
	outcome := cdc.OutcomeApplied
	if b.summary.Failed > 0 {
		outcome = cdc.OutcomeParked
	}
	return workflow.UpsertTypedSearchAttributes(ctx, searchOutcome.ValueSet(outcome))
}

// batch is the state of one ApplyBatch run.
type batch struct {
	in      cdc.BatchInput
	summary cdc.BatchSummary
	// record holds what every dead letter of this batch shares.
	record cdc.DeadLetterRecord
	// firstFailure is when the first attempt to apply was made.
	firstFailure time.Time
}

func newBatch(ctx workflow.Context, in cdc.BatchInput) *batch {
	info := workflow.GetInfo(ctx)
	if in.MaxAttempts <= 0 {
		in.MaxAttempts = cdc.DefaultMaxAttempts
	}
	return &batch{
		in:      in,
		summary: cdc.BatchSummary{Events: in.EventCount + len(in.Poison)},
		record: cdc.DeadLetterRecord{Topic: in.Topic, Partition: in.Partition,
			BatchWorkflowID: info.WorkflowExecution.ID, BatchRunID: info.WorkflowExecution.RunID},
	}
}

// poisonRecords makes a dead letter of every message that did not decode:
// decoding again cannot help, so they are parked at once.
func (b *batch) poisonRecords(ctx workflow.Context) []cdc.DeadLetterRecord {
	now := workflow.Now(ctx)
	out := make([]cdc.DeadLetterRecord, 0, len(b.in.Poison))
	for _, p := range b.in.Poison {
		rec := b.record
		rec.ID = cdc.PoisonDeadLetterID(b.in.Topic, b.in.Partition, p.Offset, p.Value)
		rec.Offset, rec.ErrorClass, rec.Error, rec.Attempts = p.Offset, cdc.ClassInvalidEvent, p.Error, 1
		rec.FirstFailure, rec.LastFailure, rec.Message = now, now, p.Value
		out = append(out, rec)
	}
	return out
}

// applyWithRetries applies the events, then retries the ones that failed,
// alone: an event failing for a permanent reason until MaxAttempts tries in
// all (a final class, such as ChangeTooLarge, not again), one failing for an
// ordering-dependent reason (a foreign key whose row
// has not arrived, a column a migration is adding) until the ordering
// window has passed, with a growing pause between tries. It returns the
// events it gave up on.
func (b *batch) applyWithRetries(ctx workflow.Context, events event.Batch) ([]cdc.FailedEvent, error) {
	if b.in.EventCount == 0 {
		return nil, nil
	}
	b.firstFailure = workflow.Now(ctx)
	window := time.Duration(b.in.OrderingWindowSeconds) * time.Second
	if window <= 0 {
		window = cdc.DefaultOrderingWindow
	}
	var only []int // empty: the whole batch
	var gaveUp []cdc.FailedEvent
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			if err := workflow.Sleep(ctx, retryPause(attempt)); err != nil {
				return nil, err
			}
		}
		var out cdc.ApplyOutcome
		if err := execute(ctx, &out, apply.ApplyEvents, events, only, b.in.BatchClaims()); err != nil {
			return nil, b.applyError(err)
		}
		b.summary.Counts = b.summary.Counts.Add(out.Counts)
		only = only[:0]
		elapsed := workflow.Now(ctx).Sub(b.firstFailure)
		for _, f := range out.Failed {
			var retry bool
			switch {
			case f.ErrorClass.Final():
				retry = false
			case f.ErrorClass.OrderingDependent():
				retry = elapsed < window
			default:
				retry = attempt < b.in.MaxAttempts
			}
			if retry {
				only = append(only, f.Index)
				continue
			}
			f.Attempts = attempt
			gaveUp = append(gaveUp, f)
		}
		if len(only) == 0 {
			return gaveUp, nil
		}
	}
}

// retryPause is the pause before try attempt (2, 3, ...): 1 s, doubling, at
// most MaxRetryPause.
func retryPause(attempt int) time.Duration {
	if attempt-2 >= 6 { // 2^6 s > MaxRetryPause; larger shifts would overflow
		return MaxRetryPause
	}
	return min(time.Duration(1<<(attempt-2))*time.Second, MaxRetryPause)
}

// failureRecords makes a dead letter of every event that failed all its tries.
func (b *batch) failureRecords(ctx workflow.Context, events event.Batch, failed []cdc.FailedEvent) ([]cdc.DeadLetterRecord, error) {
	if len(failed) == 0 {
		return nil, nil
	}
	raws, err := elements(events)
	if err != nil {
		return nil, err
	}
	now := workflow.Now(ctx)
	out := make([]cdc.DeadLetterRecord, 0, len(failed))
	for _, f := range failed {
		rec := b.record
		rec.ID = cdc.DeadLetterID(f.Epoch, f.ActionID)
		rec.Epoch, rec.ActionID, rec.Table, rec.ErrorClass, rec.Error, rec.Attempts = f.Epoch, f.ActionID, f.Table, f.ErrorClass, f.Error, f.Attempts
		rec.Offset = -1
		if f.Index < len(b.in.Offsets) {
			rec.Offset = b.in.Offsets[f.Index]
		}
		if f.Index < len(raws) {
			rec.Message = raws[f.Index]
		}
		rec.FirstFailure, rec.LastFailure, rec.Claim = b.firstFailure, now, f.Claim
		out = append(out, rec)
	}
	return out, nil
}

// elements returns the encoded events of a batch. (workflowcheck flags the
// JSON parsing; splitting bytes is deterministic.)
//
//workflowcheck:ignore
func elements(events event.Batch) ([]json.RawMessage, error) {
	raws, err := events.Elements()
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), string(cdc.ClassInvalidEvent), nil)
	}
	return raws, nil
}

// batchRecords makes a dead letter of every event of a batch that the
// reconciler gave up re-running (ParkReason), so that a person decides.
// (workflowcheck flags encoding/json; parsing bytes is deterministic.)
//
//workflowcheck:ignore
func (b *batch) batchRecords(ctx workflow.Context, events event.Batch) ([]cdc.DeadLetterRecord, error) {
	if b.in.EventCount == 0 {
		return nil, nil
	}
	raws, err := elements(events)
	if err != nil {
		return nil, err
	}
	now := workflow.Now(ctx)
	out := make([]cdc.DeadLetterRecord, 0, len(raws))
	for i, raw := range raws {
		var ev struct {
			Epoch    int64  `json:"epoch"`
			ActionID int64  `json:"action_id"`
			Table    string `json:"table"`
		}
		_ = json.Unmarshal(raw, &ev) // the starter decoded every event of the batch
		rec := b.record
		rec.ID = cdc.DeadLetterID(ev.Epoch, ev.ActionID)
		rec.Epoch, rec.ActionID, rec.Table, rec.ErrorClass, rec.Error, rec.Attempts = ev.Epoch, ev.ActionID, ev.Table, cdc.ClassBatchFailed, b.in.ParkReason, 1
		rec.Offset = -1
		if i < len(b.in.Offsets) {
			rec.Offset = b.in.Offsets[i]
		}
		rec.FirstFailure, rec.LastFailure, rec.Message, rec.Claim = now, now, raw, b.in.BatchClaims().Check(i)
		out = append(out, rec)
	}
	return out, nil
}

// park records the dead letters and publishes them in one activity, then
// starts a DeadLetter workflow per group (the failures on one table with one
// error class), which the batch abandons so that it waits on after the batch
// completed. Whatever the number of failures, parking adds a fixed number of
// events per group to the batch's history.
func (b *batch) park(ctx workflow.Context, records []cdc.DeadLetterRecord) error {
	if len(records) == 0 {
		return nil
	}
	b.summary.Failed += len(records)
	// A change delivered twice in the batch fails twice: one dead letter.
	seen := make(map[string]bool, len(records))
	unique := records[:0:0]
	for _, rec := range records {
		if !seen[rec.ID] {
			seen[rec.ID] = true
			unique = append(unique, rec)
		}
	}
	records = unique
	for i := range records {
		records[i].Group = cdc.DeadLetterGroupID(b.record.BatchWorkflowID, records[i].Table, records[i].ErrorClass)
	}
	workflow.GetLogger(ctx).Warn("parking changes", "changes", len(records), "first", records[0].ID,
		"error_class", records[0].ErrorClass, "error", records[0].Error)
	var members []cdc.DeadLetterRecord
	if err := execute(ctx, &members, deadLetters.Park, records); err != nil {
		return fmt.Errorf("park %d changes: %w", len(records), err)
	}
	var groups []cdc.DeadLetterInput
	at := map[string]int{}
	for _, rec := range members {
		i, ok := at[rec.Group]
		if !ok {
			i = len(groups)
			at[rec.Group] = i
			groups = append(groups, cdc.DeadLetterInput{Group: rec.Group, Table: rec.Table, ErrorClass: rec.ErrorClass})
		}
		groups[i].Changes = append(groups[i].Changes, rec)
	}
	for _, g := range groups {
		if err := startDeadLetter(ctx, g); err != nil {
			return err
		}
		b.summary.DeadLetters = append(b.summary.DeadLetters, g.Group)
	}
	return nil
}

func startDeadLetter(ctx workflow.Context, g cdc.DeadLetterInput) error {
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:        g.Group,
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			searchTable.ValueSet(g.Table), searchErrorClass.ValueSet(string(g.ErrorClass)),
			searchState.ValueSet(string(cdc.StateParked))),
		Memo: map[string]any{"changes": len(g.Changes), "error": g.Changes[0].Error, "first_action_id": g.Changes[0].ActionID},
	})
	for try := 0; ; try++ {
		child := workflow.ExecuteChildWorkflow(cctx, cdc.WorkflowDeadLetter, g)
		var started workflow.Execution
		err := child.GetChildWorkflowExecution().Get(ctx, &started)
		var exists *temporal.ChildWorkflowExecutionAlreadyStartedError
		if err == nil || !errors.As(err, &exists) {
			if err != nil {
				return fmt.Errorf("start DeadLetter workflow %s: %w", g.Group, err)
			}
			return nil
		}
		// Started by an earlier run of the same batch, and running: it
		// holds the changes it was given, and takes these too.
		err = workflow.SignalExternalWorkflow(ctx, g.Group, "", cdc.SignalAdopt, g.Changes).Get(ctx, nil)
		if err == nil || try > 0 {
			if err != nil {
				return fmt.Errorf("hand changes to DeadLetter workflow %s: %w", g.Group, err)
			}
			return nil
		}
		// It closed meanwhile: start it again.
	}
}

// applyError fails the batch for an error the apply activity gave up on. It
// keeps the activity's error type, so that the failed workflow can be found
// by it, and says which batch it was.
func (b *batch) applyError(err error) error {
	typ, cause := "ApplyFailed", err.Error()
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		typ, cause = appErr.Type(), appErr.Message()
	}
	msg := fmt.Sprintf("apply %s[%d] offsets %d..%d: %s", b.in.Topic, b.in.Partition, b.in.FirstOffset, b.in.LastOffset, cause)
	return temporal.NewNonRetryableApplicationError(msg, typ, err)
}
