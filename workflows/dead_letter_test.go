package workflows

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

var parkedRecord = cdc.DeadLetterRecord{ID: "dlq-7", ActionID: 7, Topic: "t", Partition: 1, Offset: 42,
	Table: "public.employees", ErrorClass: cdc.ClassConstraint, Error: "violates check constraint", Attempts: 3,
	Message: []byte(`{"action_id":7,"table":"public.employees","op":"insert","key":{"emp_id":1},"after":{"emp_id":1,"salary":-1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`)}

// replayInput is what ReplayChange gets for a replay of parkedRecord.
func replayInput(after string) cdc.ReplayInput {
	in := cdc.ReplayInput{Message: parkedRecord.Message}
	if after != "" {
		in.After = json.RawMessage(after)
	}
	return in
}

func signal(env *testsuite.TestWorkflowEnvironment, at time.Duration, name string, payload any) {
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(name, payload) }, at)
}

// expectSettle expects the decision to be recorded once, as want.
func expectSettle(env *testsuite.TestWorkflowEnvironment, want cdc.Settlement) {
	env.OnActivity(deadLetters.Settle, mock.Anything, want).Return(nil).Once()
}

// decisions returns the decisions of st without their times.
func decisions(st cdc.DeadLetterStatus) []cdc.Decision {
	out := make([]cdc.Decision, len(st.Decisions))
	for i, d := range st.Decisions {
		d.At = time.Time{}
		out[i] = d
	}
	return out
}

func TestDeadLetterReplayFailsThenSucceeds(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(apply.ReplayChange, mock.Anything, replayInput("")).
		Return(cdc.Counts{}, temporal.NewNonRetryableApplicationError("still violates", string(cdc.ClassConstraint), nil)).Once()
	env.OnActivity(apply.ReplayChange, mock.Anything, replayInput("")).Return(cdc.Counts{Applied: 1}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "applied"})
	var mid cdc.DeadLetterStatus
	signal(env, time.Minute, cdc.SignalReplay, nil)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(cdc.QueryStatus)
		if err == nil {
			err = v.Get(&mid)
		}
		if err != nil {
			t.Error(err)
		}
	}, 2*time.Minute)
	signal(env, 3*time.Minute, cdc.SignalReplay, map[string]any{})
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, cdc.DeadLetterInput{Record: parkedRecord})
	var final cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&final); err != nil {
		t.Fatal(err)
	}

	failedReplay := cdc.Decision{Action: cdc.ActionReplay, Error: "still violates"}
	wantMid := cdc.DeadLetterStatus{DeadLetterRecord: parkedRecord, State: cdc.StateParked, Event: json.RawMessage(parkedRecord.Message),
		Decisions: []cdc.Decision{failedReplay}}
	wantMid.Message, wantMid.Attempts, wantMid.Error = nil, 4, "still violates"
	wantMid.LastFailure = mid.LastFailure
	if diff := cmp.Diff(wantMid, withoutDecisionTimes(mid)); diff != "" {
		t.Fatalf("status after the failed replay (-want +got):\n%s", diff)
	}
	wantFinal := wantMid
	wantFinal.State = cdc.StateReplayed
	wantFinal.Decisions = []cdc.Decision{failedReplay, {Action: cdc.ActionReplay, Outcome: "applied"}}
	if diff := cmp.Diff(wantFinal, withoutDecisionTimes(final)); diff != "" {
		t.Fatalf("final status (-want +got):\n%s", diff)
	}
}

func withoutDecisionTimes(st cdc.DeadLetterStatus) cdc.DeadLetterStatus {
	st.Decisions = decisions(st)
	return st
}

func TestDeadLetterRejectsMalformedSignals(t *testing.T) {
	env := newEnv(t)
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "test data, not needed"})
	signal(env, time.Minute, cdc.SignalReplay, "not an object")
	signal(env, 2*time.Minute, cdc.SignalReplay, map[string]any{"after": []int{1}})
	signal(env, 3*time.Minute, cdc.SignalDiscard, map[string]any{})
	signal(env, 4*time.Minute, cdc.SignalDiscard, map[string]any{"reason": "  "})
	signal(env, 5*time.Minute, cdc.SignalDiscard, map[string]any{"reason": "test data, not needed"})
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, cdc.DeadLetterInput{Record: parkedRecord})
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	want := []cdc.Decision{
		{Action: cdc.ActionRejected, Error: `replay payload: want {} or {"after": {...}}: json: cannot unmarshal string into Go value of type cdc.ReplayRequest`},
		{Action: cdc.ActionRejected, Error: "after: want a JSON object of column values"},
		{Action: cdc.ActionRejected, Error: `discard payload: a reason is required: {"reason": "..."}`},
		{Action: cdc.ActionRejected, Error: `discard payload: a reason is required: {"reason": "..."}`},
		{Action: cdc.ActionDiscard, Reason: "test data, not needed"},
	}
	if diff := cmp.Diff(parkedStatus(cdc.StateDiscarded, want), withoutDecisionTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

func TestDeadLetterCorrectedReplayByUpdate(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(apply.ReplayChange, mock.Anything, replayInput(`{"emp_id":1,"salary":10}`)).Return(cdc.Counts{Applied: 1}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "applied"})
	var rejected, accepted error
	var result cdc.DeadLetterStatus
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "bad", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejected = err },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, cdc.ReplayRequest{After: json.RawMessage(`"oops"`)})
	}, time.Minute)
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "good", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { accepted = err },
			OnAccept: func() {},
			OnComplete: func(v any, err error) {
				if err == nil {
					result = v.(cdc.DeadLetterStatus)
				}
			},
		}, cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":1,"salary":10}`)})
	}, 2*time.Minute)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, cdc.DeadLetterInput{Record: parkedRecord})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if rejected == nil || !strings.Contains(rejected.Error(), "after: want a JSON object") {
		t.Fatalf("malformed update: %v", rejected)
	}
	if accepted != nil {
		t.Fatalf("valid update rejected: %v", accepted)
	}
	want := parkedStatus(cdc.StateReplayed, []cdc.Decision{{Action: cdc.ActionReplay, Corrected: true, Outcome: "applied"}})
	if diff := cmp.Diff(want, withoutDecisionTimes(result)); diff != "" {
		t.Fatalf("update result (-want +got):\n%s", diff)
	}
}

// TestDeadLetterReplaySignalRacesUpdate: a replay signal and a corrected
// replay by update arrive together. One replay runs; the other sees it and
// is refused; the workflow completes.
func TestDeadLetterReplaySignalRacesUpdate(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(apply.ReplayChange, mock.Anything, replayInput("")).After(time.Second).Return(cdc.Counts{Applied: 1}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "applied"})
	var updateErr error
	completed := false
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(cdc.SignalReplay, nil)
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "corrected", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { updateErr = err },
			OnAccept:   func() {},
			OnComplete: func(_ any, err error) { completed, updateErr = true, err },
		}, cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":1,"salary":10}`)})
	}, time.Minute)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, cdc.DeadLetterInput{Record: parkedRecord})
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	if !completed || updateErr == nil || updateErr.Error() != "dead letter dlq-7 is replayed already" {
		t.Fatalf("update completed %v with %v, want refused as replayed already", completed, updateErr)
	}
	want := parkedStatus(cdc.StateReplayed, []cdc.Decision{{Action: cdc.ActionReplay, Outcome: "applied"}})
	if diff := cmp.Diff(want, withoutDecisionTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

// parkedStatus is the status of parkedRecord in state, after decisions.
func parkedStatus(state cdc.State, decisions []cdc.Decision) cdc.DeadLetterStatus {
	st := cdc.DeadLetterStatus{DeadLetterRecord: parkedRecord, State: state, Event: json.RawMessage(parkedRecord.Message), Decisions: decisions}
	st.Message = nil
	return st
}

// TestDeadLetterRefusesKeyChanges: a corrected image of another row is
// refused, by update before it is accepted and by signal as a rejected
// request; the change stays parked.
func TestDeadLetterRefusesKeyChanges(t *testing.T) {
	env := newEnv(t)
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "not needed"})
	var rejected error
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "other-row", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejected = err },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":999,"salary":10}`)})
	}, time.Minute)
	signal(env, 2*time.Minute, cdc.SignalReplay, map[string]any{"after": map[string]any{"salary": 10}})
	signal(env, 3*time.Minute, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "not needed"})
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, cdc.DeadLetterInput{Record: parkedRecord})
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	const wantRejected = "after: a replay cannot change the row's key: after has emp_id = 999, the key has 1"
	if rejected == nil || rejected.Error() != wantRejected {
		t.Fatalf("update with another row's image: %v, want %q", rejected, wantRejected)
	}
	want := parkedStatus(cdc.StateDiscarded, []cdc.Decision{
		{Action: cdc.ActionRejected, Error: `after: a replay cannot change the row's key: after lacks key column "emp_id"`},
		{Action: cdc.ActionDiscard, Reason: "not needed"},
	})
	if diff := cmp.Diff(want, withoutDecisionTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}
