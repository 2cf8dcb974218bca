package workflows

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

// replays records the ReplayEvent calls and answers them in turn.
type replays struct {
	answers []error
	got     []activities.ReplayRequest
}

func deadLetterEnv(t *testing.T, r *replays) (*testsuite.TestWorkflowEnvironment, *parked) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetDataConverter(temporalx.DataConverter())
	Register(env)
	p := recordDeadLetters(env)
	env.RegisterActivityWithOptions(func(_ context.Context, req activities.ReplayRequest) (applier.Result, error) {
		r.got = append(r.got, req)
		if n := len(r.got); n <= len(r.answers) && r.answers[n-1] != nil {
			return applier.Result{}, r.answers[n-1]
		}
		return applier.Result{Applied: 1}, nil
	}, activity.RegisterOptions{Name: activities.ReplayEventName})
	return env, p
}

var parkedRecord = activities.DeadLetter{ID: "dlq-7", ActionID: 7, Topic: "t", Partition: 1, Offset: 42,
	Table: "public.employees", ErrorClass: applier.ErrTypeConstraint, Error: "violates check constraint", Attempts: 3,
	Message: []byte(`{"action_id":7,"table":"public.employees","op":"insert","key":{"emp_id":1},"after":{"emp_id":1,"salary":-1},"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`)}

func signal(env *testsuite.TestWorkflowEnvironment, at time.Duration, name string, payload any) {
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(name, payload) }, at)
}

func TestDeadLetterReplayFailsThenSucceeds(t *testing.T) {
	r := &replays{answers: []error{temporal.NewNonRetryableApplicationError("still violates", applier.ErrTypeConstraint, nil)}}
	env, p := deadLetterEnv(t, r)
	var mid DeadLetterStatus
	signal(env, time.Minute, SignalReplay, nil)
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryStatus)
		if err != nil {
			t.Error(err)
			return
		}
		if err := v.Get(&mid); err != nil {
			t.Error(err)
		}
	}, 2*time.Minute)
	signal(env, 3*time.Minute, SignalReplay, map[string]any{})
	env.ExecuteWorkflow(DeadLetterName, DeadLetterInput{Record: parkedRecord})
	var st DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	if mid.State != StatusParked || mid.Attempts != 4 || mid.Error != "still violates" || len(mid.Decisions) != 1 {
		t.Fatalf("status after the failed replay %+v", mid)
	}
	if st.State != StatusReplayed || len(st.Decisions) != 2 || st.Decisions[1].Outcome != "applied" {
		t.Fatalf("final status %+v", st)
	}
	if len(p.settled) != 1 || p.settled[0] != "dlq-7 replayed applied" {
		t.Fatalf("settled %v", p.settled)
	}
	if string(st.Event) != string(parkedRecord.Message) || st.Offset != 42 || st.ActionID != 7 {
		t.Fatalf("status does not show the event: %+v", st)
	}
}

func TestDeadLetterRejectsMalformedSignals(t *testing.T) {
	r := &replays{}
	env, p := deadLetterEnv(t, r)
	signal(env, time.Minute, SignalReplay, "not an object")
	signal(env, 2*time.Minute, SignalReplay, map[string]any{"after": []int{1}})
	signal(env, 3*time.Minute, SignalDiscard, map[string]any{})
	signal(env, 4*time.Minute, SignalDiscard, map[string]any{"reason": "  "})
	signal(env, 5*time.Minute, SignalDiscard, map[string]any{"reason": "test data, not needed"})
	env.ExecuteWorkflow(DeadLetterName, DeadLetterInput{Record: parkedRecord})
	var st DeadLetterStatus
	if err := env.GetWorkflowResult(&st); err != nil {
		t.Fatal(err)
	}
	if st.State != StatusDiscarded || len(r.got) != 0 {
		t.Fatalf("state %s after %d replays", st.State, len(r.got))
	}
	wantErrors := []string{"replay payload: want {} or", "after: want a JSON object", "a reason is required", "a reason is required"}
	for i, want := range wantErrors {
		if d := st.Decisions[i]; d.Action != "rejected" || !strings.Contains(d.Error, want) {
			t.Fatalf("decision %d: %+v, want rejected with %q", i, d, want)
		}
	}
	if last := st.Decisions[4]; last.Action != SignalDiscard || last.Reason != "test data, not needed" {
		t.Fatalf("last decision %+v", last)
	}
	if p.settled[0] != "dlq-7 discarded test data, not needed" {
		t.Fatalf("settled %v", p.settled)
	}
}

func TestDeadLetterCorrectedReplayByUpdate(t *testing.T) {
	r := &replays{}
	env, _ := deadLetterEnv(t, r)
	var rejected, accepted error
	var result DeadLetterStatus
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(UpdateReplay, "bad", &testsuite.TestUpdateCallback{
			OnReject:   func(err error) { rejected = err },
			OnAccept:   func() {},
			OnComplete: func(any, error) {},
		}, ReplayRequest{After: json.RawMessage(`"oops"`)})
	}, time.Minute)
	env.RegisterDelayedCallback(func() {
		env.UpdateWorkflow(UpdateReplay, "good", &testsuite.TestUpdateCallback{
			OnReject: func(err error) { accepted = err },
			OnAccept: func() {},
			OnComplete: func(v any, err error) {
				if err == nil {
					result = v.(DeadLetterStatus)
				}
			},
		}, ReplayRequest{After: json.RawMessage(`{"emp_id":1,"salary":10}`)})
	}, 2*time.Minute)
	env.ExecuteWorkflow(DeadLetterName, DeadLetterInput{Record: parkedRecord})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if rejected == nil || !strings.Contains(rejected.Error(), "after: want a JSON object") {
		t.Fatalf("malformed update: %v", rejected)
	}
	if accepted != nil {
		t.Fatalf("valid update rejected: %v", accepted)
	}
	if len(r.got) != 1 || string(r.got[0].After) != `{"emp_id":1,"salary":10}` {
		t.Fatalf("replays %+v", r.got)
	}
	if result.State != StatusReplayed || !result.Decisions[0].Corrected {
		t.Fatalf("update result %+v", result)
	}
}
