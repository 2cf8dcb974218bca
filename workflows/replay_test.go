package workflows

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestReplayRecordedHistories replays histories recorded from a real server
// (testdata/*.json, written by TestRecordHistories). A change to a workflow
// that alters the commands it issues for these inputs fails here; once
// cdcflow is released, such a change goes behind workflow.GetVersion (see
// docs/versioning.md).
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d recorded histories, want at least 3", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{DataConverter: temporalx.DataConverter()})
			if err != nil {
				t.Fatal(err)
			}
			Register(r)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, file); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRecordHistories rewrites testdata/*.json by running each workflow on a
// real Temporal server, with the real activities against PostgreSQL and the
// Kafka protocol: CDCFLOW_RECORD_HISTORIES=1 go test ./workflows -run
// TestRecordHistories.
func TestRecordHistories(t *testing.T) {
	if os.Getenv("CDCFLOW_RECORD_HISTORIES") == "" {
		t.Skip("set CDCFLOW_RECORD_HISTORIES=1 to rewrite the recorded histories")
	}
	ctx := context.Background()
	tmp := testenv.TemporalServer(t)
	c := testenv.Dial(t, tmp)
	queue := fmt.Sprintf("record-%d", time.Now().UnixNano())
	pool, apl := testenv.NewDestination(t, applier.Timeouts{Lock: 100 * time.Millisecond})
	if _, err := pool.Exec(ctx, `ALTER TABLE employees ADD CONSTRAINT salary_not_negative CHECK (salary >= 0)`); err != nil {
		t.Fatal(err)
	}
	brokers, _ := testenv.NewKafka(t, map[string]int32{"record_dlq": 1})
	dlq := kafkax.NewWriter(brokers, "record_dlq", kafkax.WriterOptions{})
	defer dlq.Close()
	deadLetters := &activities.DeadLetters{Store: deadletter.NewStore(pool), Publisher: dlq, Applier: apl}
	w := worker.New(c, queue, worker.Options{})
	Register(w)
	w.RegisterActivity(&activities.Apply{Applier: apl})
	w.RegisterActivity(deadLetters)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	suffix := fmt.Sprint(time.Now().UnixNano())

	// A batch of four events, one poison message and one event that fails
	// every try (a negative salary): applied, parked twice.
	batchID := "cdc-record-" + suffix
	encoded := make([][]byte, 4)
	for i := range encoded {
		salary := 10
		if i == 1 {
			salary = -1
		}
		encoded[i] = encode(t, demo.Event(int64(i+1), event.OpInsert, demo.Employee{EmpID: i + 1, DOB: "1990-01-01", Salary: salary}))
	}
	events := event.NewBatch(encoded)
	in := cdc.BatchInput{Topic: "record-" + suffix, Partition: 0, FirstOffset: 0, LastOffset: 4, EventCount: 4,
		Offsets: []int64{0, 1, 3, 4}, Poison: []cdc.Poison{{Offset: 2, Value: []byte("{"), Size: 1, Error: "invalid change event: unexpected EOF"}}}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: batchID, TaskQueue: queue}, cdc.WorkflowApplyBatch, in, events)
	if err != nil {
		t.Fatal(err)
	}
	var sum cdc.BatchSummary
	if err := run.Get(ctx, &sum); err != nil || sum.Failed != 2 {
		t.Fatalf("batch: %+v, %v", sum, err)
	}
	save(t, c, batchID, "apply_batch_dead_letters.json")

	// A batch whose row stays locked past the local budget: the apply goes
	// on as a regular activity.
	defer func(b time.Duration) { LocalActivityBudget = b }(LocalActivityBudget)
	LocalActivityBudget = time.Second
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT * FROM employees WHERE emp_id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	outageID := "cdc-record-outage-" + suffix
	update := event.NewBatch([][]byte{encode(t, demo.Event(5, event.OpUpdate, demo.Employee{EmpID: 1, DOB: "1990-01-01", Salary: 5}))})
	run, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: outageID, TaskQueue: queue}, cdc.WorkflowApplyBatch,
		cdc.BatchInput{Topic: in.Topic, Partition: 1, EventCount: 1, Offsets: []int64{0}}, update)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // the outage
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, &sum); err != nil || sum.Applied != 1 {
		t.Fatalf("batch after the outage: %+v, %v", sum, err)
	}
	save(t, c, outageID, "apply_batch_outage.json")

	// A group of two parked changes replayed by signal after a malformed
	// request.
	start := func(id string, actionIDs ...int64) client.WorkflowRun {
		var recs []cdc.DeadLetterRecord
		for _, actionID := range actionIDs {
			recs = append(recs, cdc.DeadLetterRecord{ID: cdc.DeadLetterID(0, actionID), Group: id, ActionID: actionID, Topic: in.Topic,
				Offset: actionID, Table: demo.Table, ErrorClass: cdc.ClassConstraint, Error: "violates check", Attempts: 3,
				Message: encode(t, demo.Event(actionID, event.OpInsert, demo.Employee{EmpID: int(actionID), DOB: "1990-01-01", Salary: 1}))})
		}
		members, err := deadLetters.Park(ctx, recs)
		if err != nil {
			t.Fatal(err)
		}
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, cdc.WorkflowDeadLetter,
			cdc.DeadLetterInput{Group: id, Table: demo.Table, ErrorClass: cdc.ClassConstraint, Changes: members})
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	replayID := "dlq-replay-" + suffix
	replayed := start(replayID, 6, 7)
	signal := func(id, name string, arg any) {
		if err := c.SignalWorkflow(ctx, id, "", name, arg); err != nil {
			t.Fatal(err)
		}
	}
	signal(replayID, cdc.SignalReplay, "not an object")
	signal(replayID, cdc.SignalReplay, nil)
	wait(t, replayed, cdc.StateReplayed)
	save(t, c, replayID, "dead_letter_replay.json")

	// A corrected replay by update.
	correctedID := "dlq-corrected-" + suffix
	corrected := start(correctedID, 8)
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: correctedID, UpdateName: cdc.UpdateReplayCorrected,
		WaitForStage: client.WorkflowUpdateStageCompleted, Args: []any{cdc.ReplayRequest{After: json.RawMessage(`{"emp_id":8,"salary":10}`)}}})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	wait(t, corrected, cdc.StateReplayed)
	save(t, c, correctedID, "dead_letter_corrected.json")

	// A discard.
	discardID := "dlq-discard-" + suffix
	discarded := start(discardID, 9)
	signal(discardID, cdc.SignalDiscard, cdc.DiscardRequest{Reason: "test data"})
	wait(t, discarded, cdc.StateDiscarded)
	save(t, c, discardID, "dead_letter_discard.json")
}

func wait(t *testing.T, run client.WorkflowRun, want cdc.State) {
	t.Helper()
	var st cdc.DeadLetterStatus
	if err := run.Get(context.Background(), &st); err != nil || st.State != want {
		t.Fatalf("%s ended %s (%v), want %s", run.GetID(), st.State, err, want)
	}
}

// save writes the history of workflowID to testdata/file.
func save(t *testing.T, c client.Client, workflowID, file string) {
	t.Helper()
	it := c.GetWorkflowHistory(context.Background(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", file)
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

func encode(t *testing.T, ev event.Event) []byte {
	t.Helper()
	b, err := event.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
