package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func testEvents(t *testing.T, n int) event.Batch {
	encoded := make([][]byte, n)
	for i := range encoded {
		b, err := event.Encode(event.Event{ActionID: int64(i + 1), Table: "public.employees", Op: event.OpInsert,
			Key: json.RawMessage(`{"emp_id":1}`), After: json.RawMessage(`{"emp_id":1}`),
			CommitTime: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), SchemaVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		encoded[i] = b
	}
	return event.NewBatch(encoded)
}

// fakeApplier stands in for the destination in workflow unit tests only; the
// activity and end-to-end tests use real PostgreSQL.
type fakeApplier struct {
	results []error // returned by successive calls; nil means success
	calls   int
}

func (f *fakeApplier) Apply(_ context.Context, evs []event.Event) (applier.Result, error) {
	f.calls++
	if f.calls <= len(f.results) && f.results[f.calls-1] != nil {
		return applier.Result{}, f.results[f.calls-1]
	}
	if len(evs) == 0 || evs[0].ActionID != 1 {
		return applier.Result{}, errors.New("the activity did not decode the batch")
	}
	return applier.Result{Applied: len(evs) - 1, Duplicates: 1}, nil
}

func newEnv(t *testing.T, f *fakeApplier) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetDataConverter(temporalx.DataConverter())
	env.RegisterWorkflowWithOptions(ApplyBatch, workflowOptions())
	env.RegisterActivity(&activities.Apply{Applier: f})
	return env
}

func TestApplyBatchSummary(t *testing.T) {
	f := &fakeApplier{}
	env := newEnv(t, f)
	in := BatchInput{Topic: "t", Partition: 2, FirstOffset: 10, LastOffset: 15, EventCount: 5,
		Poison: []Poison{{Offset: 12, Value: []byte("{"), Size: 1, Error: "invalid change event: unexpected EOF"}}}
	env.ExecuteWorkflow(ApplyBatchName, in, testEvents(t, 5))
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var sum BatchSummary
	if err := env.GetWorkflowResult(&sum); err != nil {
		t.Fatal(err)
	}
	if want := (BatchSummary{Events: 6, Applied: 4, Duplicates: 1, Failed: 1}); sum != want {
		t.Fatalf("summary %+v, want %+v", sum, want)
	}
}

func TestApplyBatchRetriesTransientErrors(t *testing.T) {
	f := &fakeApplier{results: []error{errors.New("connection refused"), errors.New("deadlock detected")}}
	env := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", EventCount: 3}, testEvents(t, 3))
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if f.calls != 3 {
		t.Fatalf("%d attempts, want 3", f.calls)
	}
}

func TestApplyBatchStopsOnPermanentError(t *testing.T) {
	f := &fakeApplier{results: []error{&applier.PermanentError{Type: applier.ErrTypeTableNotAllowed, ActionID: 2,
		Msg: `table "public.x" is not on the allowlist (CDCFLOW_TABLES)`}}}
	env := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", Partition: 1, FirstOffset: 5, LastOffset: 7, EventCount: 3}, testEvents(t, 3))
	err := env.GetWorkflowError()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		t.Fatalf("error %v, want an application error", err)
	}
	if appErr.Type() != applier.ErrTypeTableNotAllowed || !appErr.NonRetryable() {
		t.Fatalf("error type %q non-retryable=%v", appErr.Type(), appErr.NonRetryable())
	}
	if want := `apply t[1] offsets 5..7: action_id 2: table "public.x" is not on the allowlist (CDCFLOW_TABLES)`; appErr.Message() != want {
		t.Fatalf("message %q, want %q", appErr.Message(), want)
	}
	if f.calls != 1 {
		t.Fatalf("%d attempts, want 1: permanent errors are not retried", f.calls)
	}
}

func TestApplyBatchAllPoison(t *testing.T) {
	f := &fakeApplier{}
	env := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", Poison: []Poison{{Offset: 1, Error: "x"}, {Offset: 2, Error: "y"}}}, event.Batch(nil))
	var sum BatchSummary
	if err := env.GetWorkflowResult(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != (BatchSummary{Events: 2, Failed: 2}) || f.calls != 0 {
		t.Fatalf("summary %+v after %d activity calls", sum, f.calls)
	}
}
