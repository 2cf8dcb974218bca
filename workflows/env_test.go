package workflows

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// newEnv returns a test environment with cdcflow's workflows and activities
// registered; tests mock the activities with OnActivity. The real activities
// are tested against PostgreSQL and Kafka where they live.
func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetDataConverter(temporalx.DataConverter())
	Register(env)
	env.RegisterActivity(&activities.Apply{})
	env.RegisterActivity(&activities.DeadLetters{})
	t.Cleanup(func() { env.AssertExpectations(t) })
	return env
}

// parkedRecords collects what the Park activity was given, and lets the
// DeadLetter children of a batch start without running them: they would wait
// for a person. dead_letter_test.go runs DeadLetter itself.
func parkedRecords(env *testsuite.TestWorkflowEnvironment) *[]cdc.DeadLetterRecord {
	var parked []cdc.DeadLetterRecord
	env.OnActivity(deadLetters.Park, mock.Anything, mock.Anything).Return(
		func(_ context.Context, recs []cdc.DeadLetterRecord) ([]cdc.DeadLetterRecord, error) {
			parked = append(parked, recs...)
			members := make([]cdc.DeadLetterRecord, len(recs))
			for i, rec := range recs {
				rec.Message = nil
				members[i] = rec
			}
			return members, nil
		}).Maybe()
	env.OnWorkflow(cdc.WorkflowDeadLetter, mock.Anything, mock.Anything).Return(cdc.DeadLetterStatus{State: cdc.StateParked}, nil).Maybe()
	return &parked
}

// noClaims is the claims argument of ApplyEvents for a batch without large
// events.
var noClaims = (*cdc.BatchClaims)(nil)

// batchOf returns n encoded demo inserts with action_ids 1..n.
func batchOf(t *testing.T, n int) event.Batch {
	t.Helper()
	encoded := make([][]byte, n)
	for i := range encoded {
		b, err := event.Encode(demo.Event(int64(i+1), event.OpInsert, demo.Employee{EmpID: i + 1, FirstName: "Ada"}))
		if err != nil {
			t.Fatal(err)
		}
		encoded[i] = b
	}
	return event.NewBatch(encoded)
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
