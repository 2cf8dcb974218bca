package workflows

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
)

// ignoreTimes leaves the workflow clock out of compared dead letters.
var ignoreTimes = cmpopts.IgnoreFields(cdc.DeadLetterRecord{}, "FirstFailure", "LastFailure", "BatchRunID")

func TestApplyBatchParksPoisonAndSummarizes(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 5)
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).
		Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 4, Duplicates: 1}}, nil).Once()
	in := cdc.BatchInput{Topic: "t", Partition: 2, FirstOffset: 10, LastOffset: 15, EventCount: 5, Offsets: []int64{10, 11, 13, 14, 15},
		Poison: []cdc.Poison{{Offset: 12, Value: []byte("{"), Size: 1, Error: "invalid change event: unexpected EOF"}}}
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, in, events)

	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	group := "dlq-default-test-workflow-id-undecodable-InvalidEvent"
	want := cdc.BatchSummary{Events: 6, Counts: cdc.Counts{Applied: 4, Duplicates: 1}, Failed: 1, DeadLetters: []string{group}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	wantParked := []cdc.DeadLetterRecord{{ID: cdc.PoisonDeadLetterID("t", 2, 12, []byte("{")), Group: group, Topic: "t", Partition: 2, Offset: 12, ErrorClass: cdc.ClassInvalidEvent,
		Error: "invalid change event: unexpected EOF", Attempts: 1, BatchWorkflowID: "default-test-workflow-id", Message: []byte("{")}}
	if diff := cmp.Diff(wantParked, *parked, ignoreTimes); diff != "" {
		t.Fatalf("parked (-want +got):\n%s", diff)
	}
}

// TestApplyBatchFailsOnUnretryableError: an error the activity gives up on
// (its retry policy never does for transient ones) fails the batch with the
// activity's error type and the batch's place in Kafka.
func TestApplyBatchFailsOnUnretryableError(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(apply.ApplyEvents, mock.Anything, mock.Anything, mock.Anything, mock.Anything).
		Return(cdc.ApplyOutcome{}, temporal.NewNonRetryableApplicationError("batch is not a JSON array", string(cdc.ClassInvalidEvent), nil)).Once()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", Partition: 1, FirstOffset: 5, LastOffset: 9, EventCount: 5}, event.Batch("x"))
	var appErr *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &appErr) {
		t.Fatalf("workflow error %v, want an application error", err)
	}
	if appErr.Type() != string(cdc.ClassInvalidEvent) || appErr.Message() != "apply t[1] offsets 5..9: batch is not a JSON array" {
		t.Fatalf("error %s: %q", appErr.Type(), appErr.Message())
	}
}

func TestApplyBatchRetriesFailedEventsThenParksThem(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 3)
	failed := cdc.FailedEvent{Index: 1, ActionID: 2, Table: "public.x", ErrorClass: cdc.ClassConstraint,
		Error: `new row for relation "x" violates check constraint "positive"`}
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).
		Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 2}, Failed: []cdc.FailedEvent{failed}}, nil).Once()
	// The later tries are of the failed event alone.
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int{1}, noClaims).
		Return(cdc.ApplyOutcome{Failed: []cdc.FailedEvent{failed}}, nil).Twice()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", Partition: 1, FirstOffset: 5, LastOffset: 7, EventCount: 3,
		Offsets: []int64{5, 6, 7}}, events)

	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	group := "dlq-default-test-workflow-id-public.x-ConstraintViolation"
	want := cdc.BatchSummary{Events: 3, Counts: cdc.Counts{Applied: 2}, Failed: 1, DeadLetters: []string{group}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	raws, err := events.Elements()
	if err != nil {
		t.Fatal(err)
	}
	wantParked := []cdc.DeadLetterRecord{{ID: "dlq-2", Group: group, ActionID: 2, Topic: "t", Partition: 1, Offset: 6, Table: "public.x",
		ErrorClass: cdc.ClassConstraint, Error: failed.Error, Attempts: cdc.DefaultMaxAttempts,
		BatchWorkflowID: "default-test-workflow-id", Message: raws[1]}}
	if diff := cmp.Diff(wantParked, *parked, ignoreTimes); diff != "" {
		t.Fatalf("parked (-want +got):\n%s", diff)
	}
	// Between the first and the last try the workflow paused 1 s, then 2 s.
	if rec := (*parked)[0]; rec.LastFailure.Sub(rec.FirstFailure) != 3*time.Second {
		t.Fatalf("failures from %s to %s, want 3s apart", rec.FirstFailure, rec.LastFailure)
	}
}

// TestApplyBatchParksFinalClassesAtOnce: a change too large to publish and
// a large change whose chunks expired are parked after one try, with the
// claim of the large one, while the batch's claims reach the activity.
func TestApplyBatchParksFinalClassesAtOnce(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 3)
	claims := []cdc.Claim{{Index: 2, Offsets: []int64{3, 4, 5}}}
	check := &cdc.ClaimCheck{Topic: "t", Partition: 1, Offsets: []int64{3, 4, 5}}
	tooLarge := cdc.FailedEvent{Index: 0, ActionID: 1, Table: demo.Table, ErrorClass: cdc.ClassChangeTooLarge, Error: "too large"}
	expired := cdc.FailedEvent{Index: 2, ActionID: 3, Table: demo.Table, ErrorClass: cdc.ClassClaimExpired, Error: "gone", Claim: check}
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), &cdc.BatchClaims{Topic: "t", Partition: 1, Claims: claims}).
		Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 1}, Failed: []cdc.FailedEvent{tooLarge, expired}}, nil).Once()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", Partition: 1, FirstOffset: 1, LastOffset: 6, EventCount: 3,
		Offsets: []int64{1, 2, 6}, Claims: claims, MaxAttempts: 5}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	groups := []string{"dlq-default-test-workflow-id-public.employees-ChangeTooLarge", "dlq-default-test-workflow-id-public.employees-ClaimExpired"}
	if diff := cmp.Diff(cdc.BatchSummary{Events: 3, Counts: cdc.Counts{Applied: 1}, Failed: 2, DeadLetters: groups}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	raws, err := events.Elements()
	if err != nil {
		t.Fatal(err)
	}
	record := cdc.DeadLetterRecord{Topic: "t", Partition: 1, Attempts: 1, BatchWorkflowID: "default-test-workflow-id"}
	wantTooLarge, wantExpired := record, record
	wantTooLarge.ID, wantTooLarge.Group, wantTooLarge.ActionID, wantTooLarge.Offset, wantTooLarge.Table = "dlq-1", groups[0], 1, 1, demo.Table
	wantTooLarge.ErrorClass, wantTooLarge.Error, wantTooLarge.Message = tooLarge.ErrorClass, tooLarge.Error, raws[0]
	wantExpired.ID, wantExpired.Group, wantExpired.ActionID, wantExpired.Offset, wantExpired.Table = "dlq-3", groups[1], 3, 6, demo.Table
	wantExpired.ErrorClass, wantExpired.Error, wantExpired.Message, wantExpired.Claim = expired.ErrorClass, expired.Error, raws[2], check
	if diff := cmp.Diff([]cdc.DeadLetterRecord{wantTooLarge, wantExpired}, *parked, ignoreTimes); diff != "" {
		t.Fatalf("parked (-want +got):\n%s", diff)
	}
}

// TestApplyBatchRetryThatPasses: an event that fails once for a permanent
// reason and then applies (the cause was fixed meanwhile) is not parked.
func TestApplyBatchRetryThatPasses(t *testing.T) {
	env := newEnv(t)
	events := batchOf(t, 2)
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 1},
		Failed: []cdc.FailedEvent{{Index: 0, ActionID: 1, ErrorClass: cdc.ClassConstraint}}}, nil).Once()
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int{0}, noClaims).Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 1}}, nil).Once()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 2, MaxAttempts: 5}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.BatchSummary{Events: 2, Counts: cdc.Counts{Applied: 2}}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
}

func TestApplyBatchAllPoison(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", Poison: []cdc.Poison{{Offset: 1, Error: "x"}, {Offset: 2, Error: "y"}}}, event.Batch(nil))
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	want := cdc.BatchSummary{Events: 2, Failed: 2, DeadLetters: []string{"dlq-default-test-workflow-id-undecodable-InvalidEvent"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	if len(*parked) != 2 {
		t.Fatalf("parked %d, want 2", len(*parked))
	}
}

// TestApplyBatchRetriesTransientErrors: a failing activity (destination down,
// deadlock) is retried by the retry policy until it passes, and nothing is
// parked.
func TestApplyBatchRetriesTransientErrors(t *testing.T) {
	env := newEnv(t)
	events := batchOf(t, 3)
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(cdc.ApplyOutcome{}, errors.New("connection refused")).Once()
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(cdc.ApplyOutcome{}, errors.New("deadlock detected")).Once()
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 3}}, nil).Once()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 3}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.BatchSummary{Events: 3, Counts: cdc.Counts{Applied: 3}}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
}

// TestApplyBatchRetryPausesAreCapped: the pause between tries doubles from
// 1 s up to MaxRetryPause, whatever CDCFLOW_MAX_ATTEMPTS allows.
func TestApplyBatchRetryPausesAreCapped(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 1)
	failed := cdc.FailedEvent{Index: 0, ActionID: 1, Table: "public.employees", ErrorClass: cdc.ClassConstraint, Error: "violates check"}
	env.OnActivity(apply.ApplyEvents, mock.Anything, mock.Anything, mock.Anything, mock.Anything).Return(cdc.ApplyOutcome{Failed: []cdc.FailedEvent{failed}}, nil).Times(10)
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 1, Offsets: []int64{0}, MaxAttempts: 10}, events)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	// 1 + 2 + 4 + 8 + 16 + 32 s, then three pauses of a minute.
	if rec := (*parked)[0]; rec.LastFailure.Sub(rec.FirstFailure) != 243*time.Second {
		t.Fatalf("tries from %s to %s, want 243s apart", rec.FirstFailure, rec.LastFailure)
	}
}

// TestApplyBatchOutlastsTheLocalBudget: an apply that keeps failing past
// LocalActivityBudget goes on as a regular activity (retried by the server,
// adding nothing to the history per retry) and completes the batch.
func TestApplyBatchOutlastsTheLocalBudget(t *testing.T) {
	env := newEnv(t)
	events := batchOf(t, 2)
	var local, regular int
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(
		func(ctx context.Context, _ event.Batch, _ []int, _ *cdc.BatchClaims) (cdc.ApplyOutcome, error) {
			if activity.GetInfo(ctx).IsLocalActivity {
				local++
				return cdc.ApplyOutcome{}, errors.New("connection refused")
			}
			regular++
			if regular < 3 {
				return cdc.ApplyOutcome{}, errors.New("connection refused")
			}
			return cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 2}}, nil
		})
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 2}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.BatchSummary{Events: 2, Counts: cdc.Counts{Applied: 2}}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	if local < 2 || regular != 3 {
		t.Fatalf("%d local and %d regular tries, want several local ones, then 3 regular", local, regular)
	}
}

// TestApplyBatchParksAGivenUpBatch: a batch the reconciler gave up running
// again (ParkReason) parks every event, poison included, without applying.
func TestApplyBatchParksAGivenUpBatch(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	const reason = "the batch workflow closed without completing 6 times, last as WORKFLOW_EXECUTION_STATUS_TERMINATED"
	in := cdc.BatchInput{Topic: "t", Partition: 1, FirstOffset: 7, LastOffset: 9, EventCount: 2, Offsets: []int64{7, 9},
		Poison: []cdc.Poison{{Offset: 8, Value: []byte("x"), Error: "invalid change event"}}, ParkReason: reason}
	events := batchOf(t, 2)
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, in, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	poison, failed := "dlq-default-test-workflow-id-undecodable-InvalidEvent", "dlq-default-test-workflow-id-public.employees-BatchFailed"
	if diff := cmp.Diff(cdc.BatchSummary{Events: 3, Failed: 3, DeadLetters: []string{poison, failed}}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	raws, err := events.Elements()
	if err != nil {
		t.Fatal(err)
	}
	want := []cdc.DeadLetterRecord{
		{ID: cdc.PoisonDeadLetterID("t", 1, 8, []byte("x")), Group: poison, Topic: "t", Partition: 1, Offset: 8, ErrorClass: cdc.ClassInvalidEvent, Error: "invalid change event",
			Attempts: 1, BatchWorkflowID: "default-test-workflow-id", Message: []byte("x")},
		{ID: "dlq-1", Group: failed, ActionID: 1, Topic: "t", Partition: 1, Offset: 7, Table: demo.Table, ErrorClass: cdc.ClassBatchFailed, Error: reason,
			Attempts: 1, BatchWorkflowID: "default-test-workflow-id", Message: raws[0]},
		{ID: "dlq-2", Group: failed, ActionID: 2, Topic: "t", Partition: 1, Offset: 9, Table: demo.Table, ErrorClass: cdc.ClassBatchFailed, Error: reason,
			Attempts: 1, BatchWorkflowID: "default-test-workflow-id", Message: raws[1]},
	}
	if diff := cmp.Diff(want, *parked, ignoreTimes); diff != "" {
		t.Fatalf("parked (-want +got):\n%s", diff)
	}
}

// TestApplyBatchOrderingWindow: an event failing for an ordering-dependent
// reason (its foreign key's row not there yet) is retried for the ordering
// window, past MaxAttempts; one failing for a permanent reason gives up
// after MaxAttempts.
func TestApplyBatchOrderingWindow(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 3)
	fk := cdc.FailedEvent{Index: 0, ActionID: 1, Table: demo.Table, ErrorClass: cdc.ClassForeignKey, Error: "violates foreign key"}
	check := cdc.FailedEvent{Index: 1, ActionID: 2, Table: demo.Table, ErrorClass: cdc.ClassConstraint, Error: "violates check"}
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).
		Return(cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 1}, Failed: []cdc.FailedEvent{fk, check}}, nil).Once()
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int{0, 1}, noClaims).
		Return(cdc.ApplyOutcome{Failed: []cdc.FailedEvent{fk, check}}, nil).Twice()
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int{0}, noClaims).
		Return(cdc.ApplyOutcome{Failed: []cdc.FailedEvent{fk}}, nil).Times(8)
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 3, Offsets: []int64{0, 1, 2},
		MaxAttempts: 3, OrderingWindowSeconds: 300}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	groups := []string{"dlq-default-test-workflow-id-public.employees-ConstraintViolation",
		"dlq-default-test-workflow-id-public.employees-ForeignKeyViolation"}
	if diff := cmp.Diff(cdc.BatchSummary{Events: 3, Counts: cdc.Counts{Applied: 1}, Failed: 2, DeadLetters: groups}, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	// Tries at 0, 1, 3, 7, 15, 31, 63, 123, 183, 243 and 303 s: the 11th is
	// the first past the 300 s window.
	attempts := map[string]int{}
	for _, rec := range *parked {
		attempts[rec.ID] = rec.Attempts
	}
	if diff := cmp.Diff(map[string]int{"dlq-1": 11, "dlq-2": 3}, attempts); diff != "" {
		t.Fatalf("attempts (-want +got):\n%s", diff)
	}
}

// TestParkOutlastsTheLocalBudget: parking goes through the same local-then-
// regular path as applying, so a DLQ topic or destination down for long
// does not grow the batch's history either.
func TestParkOutlastsTheLocalBudget(t *testing.T) {
	env := newEnv(t)
	env.OnWorkflow(cdc.WorkflowDeadLetter, mock.Anything, mock.Anything).Return(cdc.DeadLetterStatus{State: cdc.StateParked}, nil)
	var local, regular int
	env.OnActivity(deadLetters.Park, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, recs []cdc.DeadLetterRecord) ([]cdc.DeadLetterRecord, error) {
			if activity.GetInfo(ctx).IsLocalActivity {
				local++
				return nil, errors.New("kafka: broker not available")
			}
			regular++
			return recs, nil
		})
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", Poison: []cdc.Poison{{Offset: 3, Error: "x"}}}, event.Batch(nil))
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	want := cdc.BatchSummary{Events: 1, Failed: 1, DeadLetters: []string{"dlq-default-test-workflow-id-undecodable-InvalidEvent"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("summary (-want +got):\n%s", diff)
	}
	if local < 2 || regular != 1 {
		t.Fatalf("%d local and %d regular tries, want several local ones, then 1 regular", local, regular)
	}
}

// TestApplyBatchParksAChangeDeliveredTwiceOnce: the same change twice in a
// batch (a capture retry) that fails is one dead letter, held once.
func TestApplyBatchParksAChangeDeliveredTwiceOnce(t *testing.T) {
	env := newEnv(t)
	parked := parkedRecords(env)
	events := batchOf(t, 2)
	twice := []cdc.FailedEvent{
		{Index: 0, ActionID: 7, Table: demo.Table, ErrorClass: cdc.ClassInvalidEvent, Error: "bad"},
		{Index: 1, ActionID: 7, Table: demo.Table, ErrorClass: cdc.ClassInvalidEvent, Error: "bad"},
	}
	env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(cdc.ApplyOutcome{Failed: twice}, nil).Once()
	env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 2, Offsets: []int64{4, 5}}, events)
	var got cdc.BatchSummary
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if got.Failed != 2 || len(*parked) != 1 || (*parked)[0].ID != "dlq-7" || (*parked)[0].Offset != 4 {
		t.Fatalf("summary %+v, parked %+v; want 2 failed and dlq-7 parked once", got, *parked)
	}
}

// TestApplyBatchRecordsItsOutcome: a batch the starter asks to (the server
// has the attribute) records applied or parked in CdcOutcome as it closes;
// one not asked records nothing.
func TestApplyBatchRecordsItsOutcome(t *testing.T) {
	for _, c := range []struct {
		name       string
		setOutcome bool
		failed     bool
		want       string // "" for no upsert
	}{
		{"applied", true, false, cdc.OutcomeApplied},
		{"parked", true, true, cdc.OutcomeParked},
		{"not asked", false, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := newEnv(t)
			parkedRecords(env)
			events := batchOf(t, 2)
			outcome := cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 2}}
			if c.failed {
				outcome = cdc.ApplyOutcome{Counts: cdc.Counts{Applied: 1}, Failed: []cdc.FailedEvent{{Index: 1, ActionID: 2, ErrorClass: cdc.ClassInvalidEvent}}}
			}
			env.OnActivity(apply.ApplyEvents, mock.Anything, events, []int(nil), noClaims).Return(outcome, nil).Once()
			var upserts []string
			env.OnUpsertTypedSearchAttributes(mock.Anything).Run(func(args mock.Arguments) {
				if v, ok := args.Get(0).(temporal.SearchAttributes).GetKeyword(temporal.NewSearchAttributeKeyKeyword(cdc.SearchOutcome)); ok {
					upserts = append(upserts, v)
				}
			}).Return(nil).Maybe()
			env.ExecuteWorkflow(cdc.WorkflowApplyBatch, cdc.BatchInput{Topic: "t", EventCount: 2, SetOutcome: c.setOutcome}, events)
			if err := env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			var want []string
			if c.want != "" {
				want = []string{c.want}
			}
			if !slices.Equal(upserts, want) {
				t.Fatalf("CdcOutcome set to %v, want %v", upserts, want)
			}
		})
	}
}
