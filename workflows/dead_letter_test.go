package workflows

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// parkedChange is change 7 of a group, as the Park activity returns it:
// with its key, without its message.
func parkedChange(actionID int64) cdc.DeadLetterRecord {
	return cdc.DeadLetterRecord{ID: cdc.DeadLetterID(0, actionID), Group: "dlq-b", ActionID: actionID, Topic: "t", Partition: 1,
		Offset: 40 + actionID, Table: "public.employees", ErrorClass: cdc.ClassConstraint, Error: "violates check constraint",
		Attempts: 3, Key: json.RawMessage(fmt.Sprintf(`{"emp_id":%d}`, actionID))}
}

// group is the input of a DeadLetter workflow holding the changes actionIDs.
func group(actionIDs ...int64) cdc.DeadLetterInput {
	in := cdc.DeadLetterInput{Group: "dlq-b", Table: "public.employees", ErrorClass: cdc.ClassConstraint}
	for _, id := range actionIDs {
		in.Changes = append(in.Changes, parkedChange(id))
	}
	return in
}

// status is the status of group(actionIDs...) with the changes' states and
// outcomes as given (in the same order), after decisions.
func status(in cdc.DeadLetterInput, state cdc.State, changes []cdc.ChangeStatus, decisions []cdc.Decision) cdc.DeadLetterStatus {
	st := cdc.DeadLetterStatus{Group: in.Group, Table: in.Table, ErrorClass: in.ErrorClass, State: state, Changes: changes, Decisions: decisions}
	for _, c := range changes {
		if c.State == cdc.StateParked {
			st.Parked++
		}
	}
	return st
}

func change(actionID int64, state cdc.State, outcome string) cdc.ChangeStatus {
	return cdc.ChangeStatus{DeadLetterRecord: parkedChange(actionID), State: state, Outcome: outcome}
}

func replayOf(after string, ids ...string) cdc.ReplayInput {
	in := cdc.ReplayInput{IDs: ids}
	if after != "" {
		in.After = json.RawMessage(after)
	}
	return in
}

func signal(env *testsuite.TestWorkflowEnvironment, at time.Duration, name string, payload any) {
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(name, payload) }, at)
}

// expectSettle expects the decisions to be recorded once, as want.
func expectSettle(env *testsuite.TestWorkflowEnvironment, want ...cdc.Settlement) {
	env.OnActivity(deadLetters.Settle, mock.Anything, want).Return(nil).Once()
}

// withoutTimes leaves the workflow clock out of st.
func withoutTimes(st cdc.DeadLetterStatus) cdc.DeadLetterStatus {
	decisions := make([]cdc.Decision, len(st.Decisions))
	for i, d := range st.Decisions {
		d.At = time.Time{}
		decisions[i] = d
	}
	st.Decisions = decisions
	changes := make([]cdc.ChangeStatus, len(st.Changes))
	for i, c := range st.Changes {
		c.LastFailure = time.Time{}
		changes[i] = c
	}
	st.Changes = changes
	return st
}

func TestDeadLetterReplayFailsThenSucceeds(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf("", "dlq-7")).
		Return([]cdc.ReplayResult{{ID: "dlq-7", ErrorClass: cdc.ClassConstraint, Error: "still violates"}}, nil).Once()
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf("", "dlq-7")).
		Return([]cdc.ReplayResult{{ID: "dlq-7", Outcome: "applied"}}, nil).Once()
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
	in := group(7)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var final cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&final); err != nil {
		t.Fatal(err)
	}

	failedReplay := cdc.Decision{Action: cdc.ActionReplay, IDs: []string{"dlq-7"}, Error: "still violates"}
	failedAgain := change(7, cdc.StateParked, "")
	failedAgain.Attempts, failedAgain.Error = 4, "still violates"
	wantMid := status(in, cdc.StateParked, []cdc.ChangeStatus{failedAgain}, []cdc.Decision{failedReplay})
	if diff := cmp.Diff(wantMid, withoutTimes(mid)); diff != "" {
		t.Fatalf("status after the failed replay (-want +got):\n%s", diff)
	}
	replayed := failedAgain
	replayed.State, replayed.Outcome = cdc.StateReplayed, "applied"
	wantFinal := status(in, cdc.StateReplayed, []cdc.ChangeStatus{replayed},
		[]cdc.Decision{failedReplay, {Action: cdc.ActionReplay, IDs: []string{"dlq-7"}, Outcome: "applied"}})
	if diff := cmp.Diff(wantFinal, withoutTimes(final)); diff != "" {
		t.Fatalf("final status (-want +got):\n%s", diff)
	}
}

// TestDeadLetterGroupDecidedInParts: a group of three is replayed at once
// (one change fails again), then that one is corrected by update, and the
// group closes as decided when the last is discarded by ID.
func TestDeadLetterGroupDecidedInParts(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf("", "dlq-7", "dlq-8", "dlq-9")).
		Return([]cdc.ReplayResult{{ID: "dlq-7", Outcome: "replayed with 1 others"}, {ID: "dlq-8", ErrorClass: cdc.ClassConstraint, Error: "still violates"},
			{ID: "dlq-9", Outcome: "replayed with 1 others"}}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "replayed with 1 others"},
		cdc.Settlement{ID: "dlq-9", State: cdc.StateReplayed, Outcome: "replayed with 1 others"})
	signal(env, time.Minute, cdc.SignalReplay, nil)
	var rejected error
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "decided", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { rejected = err }, OnAccept: func() {}, OnComplete: func(any, error) {},
		}, cdc.ReplayRequest{IDs: []string{"dlq-7"}, After: json.RawMessage(`{"emp_id":7,"salary":10}`)})
	}, 2*time.Minute)
	signal(env, 3*time.Minute, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "not needed", IDs: []string{"dlq-8", "dlq-10"}})
	signal(env, 4*time.Minute, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "not needed", IDs: []string{"dlq-8"}})
	expectSettle(env, cdc.Settlement{ID: "dlq-8", State: cdc.StateDiscarded, Outcome: "not needed"})
	in := group(7, 8, 9)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	if rejected == nil || rejected.Error() != "ids: dlq-7 is replayed already" {
		t.Fatalf("correcting a replayed change: %v, want refused", rejected)
	}
	eight := change(8, cdc.StateDiscarded, "not needed")
	eight.Attempts, eight.Error = 4, "still violates"
	want := status(in, cdc.StateDecided, []cdc.ChangeStatus{
		change(7, cdc.StateReplayed, "replayed with 1 others"), eight, change(9, cdc.StateReplayed, "replayed with 1 others"),
	}, []cdc.Decision{
		{Action: cdc.ActionReplay, IDs: []string{"dlq-7", "dlq-8", "dlq-9"}, Outcome: "2 replayed, 1 failed again"},
		{Action: cdc.ActionRejected, Error: "ids: dlq-10 is not a change of dead letter group dlq-b"},
		{Action: cdc.ActionDiscard, IDs: []string{"dlq-8"}, Reason: "not needed", Outcome: "1 discarded"},
	})
	if diff := cmp.Diff(want, withoutTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

func TestDeadLetterRejectsMalformedSignals(t *testing.T) {
	env := newEnv(t)
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "test data, not needed"})
	signal(env, time.Minute, cdc.SignalReplay, "not an object")
	signal(env, 2*time.Minute, cdc.SignalReplay, map[string]any{"after": []int{1}})
	signal(env, 3*time.Minute, cdc.SignalDiscard, map[string]any{})
	signal(env, 4*time.Minute, cdc.SignalDiscard, map[string]any{"reason": "  "})
	signal(env, 5*time.Minute, cdc.SignalReplay, map[string]any{"ids": []string{"dlq-7", "dlq-7"}})
	signal(env, 6*time.Minute, cdc.SignalReplay, map[string]any{"id": "dlq-7"})
	signal(env, 7*time.Minute, cdc.SignalDiscard, map[string]any{"reason": "test data, not needed"})
	in := group(7)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	want := []cdc.Decision{
		{Action: cdc.ActionRejected, Error: `replay payload: want {}, {"ids": [...]} or {"ids": ["..."], "after": {...}}: json: cannot unmarshal string into Go value of type cdc.ReplayRequest`},
		{Action: cdc.ActionRejected, Error: "after: want a JSON object of column values"},
		{Action: cdc.ActionRejected, Error: `discard payload: a reason is required: {"reason": "...", "ids": [...]}`},
		{Action: cdc.ActionRejected, Error: `discard payload: a reason is required: {"reason": "...", "ids": [...]}`},
		{Action: cdc.ActionRejected, Error: "ids: dlq-7 is named twice"},
		{Action: cdc.ActionRejected, Error: `replay payload: want {}, {"ids": [...]} or {"ids": ["..."], "after": {...}}: json: unknown field "id"`},
		{Action: cdc.ActionDiscard, IDs: []string{"dlq-7"}, Reason: "test data, not needed", Outcome: "1 discarded"},
	}
	wantSt := status(in, cdc.StateDiscarded, []cdc.ChangeStatus{change(7, cdc.StateDiscarded, "test data, not needed")}, want)
	if diff := cmp.Diff(wantSt, withoutTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

func TestDeadLetterCorrectedReplayByUpdate(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf(`{"emp_id":7,"salary":10}`, "dlq-7")).
		Return([]cdc.ReplayResult{{ID: "dlq-7", Outcome: "applied"}}, nil).Once()
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
		}, cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":7,"salary":10}`)}) // the group's one change
	}, 2*time.Minute)
	in := group(7)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if rejected == nil || !strings.Contains(rejected.Error(), "after: want a JSON object") {
		t.Fatalf("malformed update: %v", rejected)
	}
	if accepted != nil {
		t.Fatalf("valid update rejected: %v", accepted)
	}
	want := status(in, cdc.StateParked, []cdc.ChangeStatus{change(7, cdc.StateReplayed, "applied")},
		[]cdc.Decision{{Action: cdc.ActionReplay, IDs: []string{"dlq-7"}, Corrected: true, Outcome: "applied"}})
	if diff := cmp.Diff(want, withoutTimes(result)); diff != "" {
		t.Fatalf("update result (-want +got):\n%s", diff)
	}
}

// TestDeadLetterReplaySignalRacesUpdate: a replay signal and a corrected
// replay by update arrive together. One replay runs; the other sees it and
// is refused; the workflow completes.
func TestDeadLetterReplaySignalRacesUpdate(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf("", "dlq-7")).After(time.Second).
		Return([]cdc.ReplayResult{{ID: "dlq-7", Outcome: "applied"}}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "applied"})
	var updateErr error
	completed := false
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(cdc.SignalReplay, nil)
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "corrected", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { updateErr = err },
			OnAccept:   func() {},
			OnComplete: func(_ any, err error) { completed, updateErr = true, err },
		}, cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":7,"salary":10}`)})
	}, time.Minute)
	in := group(7)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	if !completed || updateErr == nil || updateErr.Error() != "dead letter group dlq-b is replayed already" {
		t.Fatalf("update completed %v with %v, want refused as replayed already", completed, updateErr)
	}
	want := status(in, cdc.StateReplayed, []cdc.ChangeStatus{change(7, cdc.StateReplayed, "applied")},
		[]cdc.Decision{{Action: cdc.ActionReplay, IDs: []string{"dlq-7"}, Outcome: "applied"}})
	if diff := cmp.Diff(want, withoutTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

// TestDeadLetterRefusesKeyChanges: a corrected image of another row is
// refused, by update before it is accepted and by signal as a rejected
// request; so is a corrected image without naming which of several changes
// it corrects. The changes stay parked.
func TestDeadLetterRefusesKeyChanges(t *testing.T) {
	env := newEnv(t)
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "not needed"},
		cdc.Settlement{ID: "dlq-8", State: cdc.StateDiscarded, Outcome: "not needed"})
	var rejected error
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(cdc.UpdateReplayCorrected, "other-row", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejected = err },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, cdc.ReplayRequest{IDs: []string{"dlq-7"}, After: json.RawMessage(`{"emp_id":999,"salary":10}`)})
	}, time.Minute)
	signal(env, 2*time.Minute, cdc.SignalReplay, map[string]any{"ids": []string{"dlq-7"}, "after": map[string]any{"salary": 10}})
	signal(env, 3*time.Minute, cdc.SignalReplay, map[string]any{"after": map[string]any{"emp_id": 7}})
	signal(env, 4*time.Minute, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "not needed"})
	in := group(7, 8)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	const wantRejected = "after: a replay cannot change the row's key: after has emp_id = 999, the key has 7"
	if rejected == nil || rejected.Error() != wantRejected {
		t.Fatalf("update with another row's image: %v, want %q", rejected, wantRejected)
	}
	want := status(in, cdc.StateDiscarded, []cdc.ChangeStatus{change(7, cdc.StateDiscarded, "not needed"), change(8, cdc.StateDiscarded, "not needed")},
		[]cdc.Decision{
			{Action: cdc.ActionRejected, Error: `after: a replay cannot change the row's key: after lacks key column "emp_id"`},
			{Action: cdc.ActionRejected, Error: `after: a corrected row image is for one change; name it: {"ids": ["dlq-7"], "after": {...}}`},
			{Action: cdc.ActionDiscard, IDs: []string{"dlq-7", "dlq-8"}, Reason: "not needed", Outcome: "2 discarded"},
		})
	if diff := cmp.Diff(want, withoutTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

// TestDeadLetterAdoptsChangesOfALaterRun: a later run of the batch hands
// the running group more changes; it holds each once and waits for them too.
func TestDeadLetterAdoptsChangesOfALaterRun(t *testing.T) {
	env := newEnv(t)
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "not needed"},
		cdc.Settlement{ID: "dlq-8", State: cdc.StateDiscarded, Outcome: "not needed"})
	signal(env, time.Minute, cdc.SignalAdopt, []cdc.DeadLetterRecord{parkedChange(8), parkedChange(7)})
	signal(env, 2*time.Minute, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "not needed"})
	in := group(7)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	want := status(in, cdc.StateDiscarded, []cdc.ChangeStatus{change(7, cdc.StateDiscarded, "not needed"), change(8, cdc.StateDiscarded, "not needed")},
		[]cdc.Decision{{Action: cdc.ActionDiscard, IDs: []string{"dlq-7", "dlq-8"}, Reason: "not needed", Outcome: "2 discarded"}})
	if diff := cmp.Diff(want, withoutTimes(st)); diff != "" {
		t.Fatalf("status (-want +got):\n%s", diff)
	}
}

// update sends a replay or discard update at the given time and keeps what
// came of it: the refusal, or the answer.
type updateOutcome struct {
	refused error
	result  cdc.DecisionResult
	err     error
}

func update(env *testsuite.TestWorkflowEnvironment, at time.Duration, name, id string, payload any) *updateOutcome {
	o := &updateOutcome{}
	env.RegisterDelayedCallback(func() {
		cb := &testsuite.TestUpdateCallback{
			OnReject: func(err error) { o.refused = err },
			OnAccept: func() {},
			OnComplete: func(v any, err error) {
				o.err = err
				if err == nil {
					o.result = v.(cdc.DecisionResult)
				}
			},
		}
		if payload == nil {
			env.UpdateWorkflow(name, id, cb)
			return
		}
		env.UpdateWorkflow(name, id, cb, payload)
	}, at)
	return o
}

// TestDeadLetterDecisionsByUpdate: the replay and discard updates refuse a
// request that cannot be used before accepting it, and answer with what came
// of an accepted one, a replay that failed again included.
func TestDeadLetterDecisionsByUpdate(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(deadLetters.ReplayChanges, mock.Anything, replayOf("", "dlq-7", "dlq-8")).
		Return([]cdc.ReplayResult{{ID: "dlq-7", Outcome: "replayed with 1 others"}, {ID: "dlq-8", ErrorClass: cdc.ClassConstraint, Error: "still violates"}}, nil).Once()
	expectSettle(env, cdc.Settlement{ID: "dlq-7", State: cdc.StateReplayed, Outcome: "replayed with 1 others"})
	expectSettle(env, cdc.Settlement{ID: "dlq-8", State: cdc.StateDiscarded, Outcome: "test data"})
	malformed := update(env, time.Minute, cdc.UpdateReplay, "u1", map[string]any{"id": "dlq-7"})
	unknown := update(env, 2*time.Minute, cdc.UpdateReplay, "u2", cdc.ReplayRequest{IDs: []string{"dlq-9"}})
	noReason := update(env, 3*time.Minute, cdc.UpdateDiscard, "u3", nil)
	replayed := update(env, 4*time.Minute, cdc.UpdateReplay, "u4", nil) // every change still parked
	discarded := update(env, 5*time.Minute, cdc.UpdateDiscard, "u5", cdc.DiscardRequest{Reason: "test data"})
	in := group(7, 8)
	env.ExecuteWorkflow(cdc.WorkflowDeadLetter, in)
	var st cdc.DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		o    *updateOutcome
		want string
	}{
		{malformed, `replay payload: want {}, {"ids": [...]} or {"ids": ["..."], "after": {...}}: json: unknown field "id"`},
		{unknown, "ids: dlq-9 is not a change of dead letter group dlq-b"},
		{noReason, `discard payload: want {"reason": "...", "ids": [...]}: no payload`},
	} {
		if c.o.refused == nil || c.o.refused.Error() != c.want {
			t.Errorf("update refused with %v, want %q", c.o.refused, c.want)
		}
	}
	if replayed.refused != nil || replayed.err != nil {
		t.Fatalf("replay update: refused %v, failed %v", replayed.refused, replayed.err)
	}
	r := replayed.result
	r.At = time.Time{}
	wantReplay := cdc.DecisionResult{Decision: cdc.Decision{Action: cdc.ActionReplay, IDs: []string{"dlq-7", "dlq-8"}, Outcome: "1 replayed, 1 failed again"},
		Group: "dlq-b", State: cdc.StateParked, Parked: 1, StillParked: []string{"dlq-8"}}
	if diff := cmp.Diff(wantReplay, r); diff != "" || !r.Failed() {
		t.Errorf("replay answer (-want +got):\n%s", diff)
	}
	d := discarded.result
	d.At = time.Time{}
	wantDiscard := cdc.DecisionResult{Decision: cdc.Decision{Action: cdc.ActionDiscard, IDs: []string{"dlq-8"}, Reason: "test data", Outcome: "1 discarded"},
		Group: "dlq-b", State: cdc.StateDecided}
	if diff := cmp.Diff(wantDiscard, d); diff != "" || d.Failed() {
		t.Errorf("discard answer (-want +got):\n%s", diff)
	}
	// Refused updates leave no trace in the decisions.
	if len(st.Decisions) != 2 || st.State != cdc.StateDecided {
		t.Errorf("final status: %+v", st)
	}
}
