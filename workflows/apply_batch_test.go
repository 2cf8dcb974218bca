package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
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

func (f *fakeApplier) ApplyIsolating(ctx context.Context, evs []event.Event) (applier.Result, []applier.Failure, error) {
	res, err := f.Apply(ctx, evs)
	var perm *applier.PermanentError
	if errors.As(err, &perm) {
		for i, ev := range evs {
			if ev.ActionID == perm.ActionID {
				return applier.Result{Applied: len(evs) - 1}, []applier.Failure{{Index: i, ActionID: perm.ActionID,
					Table: "public.x", Class: perm.Type, Error: perm.Msg}}, nil
			}
		}
	}
	return res, nil, err
}

func (f *fakeApplier) Apply(_ context.Context, evs []event.Event) (applier.Result, error) {
	f.calls++
	if f.calls <= len(f.results) && f.results[f.calls-1] != nil {
		return applier.Result{}, f.results[f.calls-1]
	}
	if len(evs) == 0 || evs[0].ActionID < 1 {
		return applier.Result{}, errors.New("the activity did not decode the batch")
	}
	return applier.Result{Applied: len(evs) - 1, Duplicates: 1}, nil
}

// parked records what the Park and Settle activities were asked to do.
type parked struct {
	letters []activities.DeadLetter
	settled []string
}

func newEnv(t *testing.T, f *fakeApplier) (*testsuite.TestWorkflowEnvironment, *parked) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetDataConverter(temporalx.DataConverter())
	Register(env)
	env.RegisterActivity(&activities.Apply{Applier: f})
	// The DeadLetter workflows a batch starts are abandoned and would wait
	// for a person; here they only need to start. dead_letter_test.go runs them.
	env.OnWorkflow(DeadLetterName, mock.Anything, mock.Anything).Return(DeadLetterStatus{State: StatusParked}, nil)
	return env, recordDeadLetters(env)
}

// recordDeadLetters stands in for the Park and Settle activities.
func recordDeadLetters(env *testsuite.TestWorkflowEnvironment) *parked {
	p := &parked{}
	env.RegisterActivityWithOptions(func(_ context.Context, dl activities.DeadLetter) error {
		p.letters = append(p.letters, dl)
		return nil
	}, activity.RegisterOptions{Name: activities.ParkName})
	env.RegisterActivityWithOptions(func(_ context.Context, id, status, decision string) error {
		p.settled = append(p.settled, id+" "+status+" "+decision)
		return nil
	}, activity.RegisterOptions{Name: activities.SettleName})
	return p
}

func TestApplyBatchSummary(t *testing.T) {
	f := &fakeApplier{}
	env, p := newEnv(t, f)
	in := BatchInput{Topic: "t", Partition: 2, FirstOffset: 10, LastOffset: 15, EventCount: 5, Offsets: []int64{10, 11, 13, 14, 15},
		Poison: []Poison{{Offset: 12, Value: []byte("{"), Size: 1, Error: "invalid change event: unexpected EOF"}}}
	env.ExecuteWorkflow(ApplyBatchName, in, testEvents(t, 5))
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var sum BatchSummary
	if err := env.GetWorkflowResult(&sum); err != nil {
		t.Fatal(err)
	}
	if sum.Events != 6 || sum.Applied != 4 || sum.Duplicates != 1 || sum.Failed != 1 ||
		len(sum.DeadLetters) != 1 || sum.DeadLetters[0] != "dlq-t-2-12" {
		t.Fatalf("summary %+v", sum)
	}
	if len(p.letters) != 1 || p.letters[0].ErrorClass != applier.ErrTypeInvalidEvent || p.letters[0].Offset != 12 ||
		string(p.letters[0].Message) != "{" || p.letters[0].Attempts != 1 {
		t.Fatalf("parked %+v", p.letters)
	}
}

func TestApplyBatchRetriesTransientErrors(t *testing.T) {
	f := &fakeApplier{results: []error{errors.New("connection refused"), errors.New("deadlock detected")}}
	env, p := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", EventCount: 3}, testEvents(t, 3))
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if f.calls != 3 || len(p.letters) != 0 {
		t.Fatalf("%d attempts and %d dead letters, want 3 attempts and none: transient errors are never dead-lettered", f.calls, len(p.letters))
	}
}

func TestApplyBatchDeadLettersAfterMaxAttempts(t *testing.T) {
	perm := &applier.PermanentError{Type: applier.ErrTypeTableNotAllowed, ActionID: 2,
		Msg: `table "public.x" is not on the allowlist (CDCFLOW_TABLES)`}
	f := &fakeApplier{results: []error{perm, perm, perm, perm}}
	env, p := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", Partition: 1, FirstOffset: 5, LastOffset: 7, EventCount: 3,
		Offsets: []int64{5, 6, 7}}, testEvents(t, 3))
	var sum BatchSummary
	if err := env.GetWorkflowResult(&sum); err != nil {
		t.Fatal(err)
	}
	if f.calls != 3 {
		t.Fatalf("%d attempts, want 3 (DefaultMaxAttempts)", f.calls)
	}
	if sum.Failed != 1 || len(sum.DeadLetters) != 1 || sum.DeadLetters[0] != "dlq-2" {
		t.Fatalf("summary %+v", sum)
	}
	dl := p.letters[0]
	if dl.ErrorClass != applier.ErrTypeTableNotAllowed || dl.Attempts != 3 || dl.Offset != 6 || dl.ActionID != 2 ||
		dl.Error != perm.Msg || !dl.LastFailure.After(dl.FirstFailure) || !strings.Contains(string(dl.Message), `"action_id":2`) {
		t.Fatalf("dead letter %+v", dl)
	}
}

func TestApplyBatchAllPoison(t *testing.T) {
	f := &fakeApplier{}
	env, _ := newEnv(t, f)
	env.ExecuteWorkflow(ApplyBatchName, BatchInput{Topic: "t", Poison: []Poison{{Offset: 1, Error: "x"}, {Offset: 2, Error: "y"}}}, event.Batch(nil))
	var sum BatchSummary
	if err := env.GetWorkflowResult(&sum); err != nil {
		t.Fatal(err)
	}
	if sum.Events != 2 || sum.Failed != 2 || len(sum.DeadLetters) != 2 || f.calls != 0 {
		t.Fatalf("summary %+v after %d activity calls", sum, f.calls)
	}
}
