package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// countingPublisher counts what reaches Kafka through it.
type countingPublisher struct {
	w           *kafka.Writer
	sent, bytes int
}

func (c *countingPublisher) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	c.sent += len(msgs)
	for _, m := range msgs {
		c.bytes += len(m.Value)
	}
	return c.w.WriteMessages(ctx, msgs...)
}

// TestParkIsIdempotent: parking the same changes again (a retried activity,
// a redelivered batch) neither records nor publishes them a second time; a
// change parked before by another group is not held by the new one; and
// settling records the decisions.
func TestParkIsIdempotent(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Migrated(t, "park", migrations.DestFS(), nil)
	brokers, _ := testenv.NewKafka(t, map[string]int32{"changes_dlq": 1})
	pub := &countingPublisher{w: kafkax.NewWriter(brokers, "changes_dlq", kafkax.WriterOptions{})}
	defer pub.w.Close()
	d := &activities.DeadLetters{Store: deadletter.NewStore(pool), Publisher: pub}

	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	seven := cdc.DeadLetterRecord{ID: "dlq-7", Group: "group-a", ActionID: 7, Topic: "changes", Partition: 0, Offset: 41,
		Table: "public.employees", ErrorClass: "ConstraintViolation", Error: "violates check", Attempts: 3,
		FirstFailure: now, LastFailure: now, BatchWorkflowID: "cdc-changes-0-0-99", BatchRunID: "run",
		Message: []byte(`{"action_id":7,"table":"public.employees","op":"delete","key":{"emp_id":7},` +
			`"commit_time":"2026-11-25T10:00:00Z","schema_version":1}`)}
	eight := seven
	eight.ID, eight.ActionID, eight.Offset, eight.Message = "dlq-8", 8, 42, []byte("not json")
	wantMembers := []cdc.DeadLetterRecord{seven, eight}
	wantMembers[0].Key, wantMembers[0].Message = json.RawMessage(`{"emp_id":7}`), nil
	wantMembers[1].Message = nil
	for range 3 {
		members, err := d.Park(ctx, []cdc.DeadLetterRecord{seven, eight})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantMembers, members); diff != "" {
			t.Fatalf("members (-want +got):\n%s", diff)
		}
	}
	// Another batch failing on change 7 again (a redelivery): it stays
	// with its group, which holds it.
	again := seven
	again.Group, again.BatchWorkflowID = "group-b", "cdc-changes-0-100-199"
	if members, err := d.Park(ctx, []cdc.DeadLetterRecord{again}); err != nil || len(members) != 0 {
		t.Fatalf("parking change 7 again in another batch: members %v, error %v; want none", members, err)
	}
	// A later run of the same batch (redriven, its events parked as
	// BatchFailed): change 7 goes to the group it was recorded in, which
	// may never have started.
	redriven := seven
	redriven.Group, redriven.ErrorClass = "group-c", cdc.ClassBatchFailed
	members, err := d.Park(ctx, []cdc.DeadLetterRecord{redriven})
	if err != nil || len(members) != 1 || members[0].Group != "group-a" {
		t.Fatalf("parking change 7 in a later run of its batch: members %+v, error %v; want it in group-a", members, err)
	}
	type parked struct{ Rows, Messages int }
	got := parked{Messages: pub.sent}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.dead_letters WHERE published_at IS NOT NULL AND group_id = 'group-a'`).
		Scan(&got.Rows); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(parked{Rows: 2, Messages: 2}, got); diff != "" {
		t.Fatalf("after parking three times (-want +got):\n%s", diff)
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "changes_dlq", Partition: 0})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := r.ReadMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{}
	for _, h := range m.Headers {
		headers[h.Key] = string(h.Value)
	}
	wantHeaders := map[string]string{
		cdc.HeaderTopic: "changes", cdc.HeaderPartition: "0", cdc.HeaderOffset: "41", cdc.HeaderActionID: "7",
		cdc.HeaderTable: "public.employees", cdc.HeaderErrorClass: "ConstraintViolation", cdc.HeaderError: "violates check",
		cdc.HeaderAttempts: "3", cdc.HeaderFirstFailure: "2026-11-25T10:00:00Z", cdc.HeaderLastFailure: "2026-11-25T10:00:00Z",
		cdc.HeaderBatchWorkflowID: "cdc-changes-0-0-99", cdc.HeaderBatchRunID: "run",
	}
	if diff := cmp.Diff(wantHeaders, headers); diff != "" {
		t.Fatalf("DLQ headers (-want +got):\n%s", diff)
	}
	if string(m.Value) != string(seven.Message) {
		t.Fatalf("DLQ message %s, want the parked message", m.Value)
	}

	// A decision naming a change the table lacks (a row deleted by hand)
	// records nothing, and says so once: retrying cannot help.
	err = d.Settle(ctx, []cdc.Settlement{{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "x"}, {ID: "dlq-unknown", State: cdc.StateDiscarded, Outcome: "x"}})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.NonRetryable() ||
		appErr.Message() != "settle 2 dead letters: dlq-unknown not in cdcflow.dead_letters; nothing was recorded: decide the others by ID" {
		t.Fatalf("settling an unknown dead letter: %v", err)
	}
	if n := 0; pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.dead_letters WHERE state <> 'parked'`).Scan(&n) != nil || n != 0 {
		t.Fatalf("%d dead letters decided by a refused settlement", n)
	}
	decided := []cdc.Settlement{{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "test data"}, {ID: "dlq-8", State: cdc.StateReplayed, Outcome: "applied"}}
	if err := d.Settle(ctx, decided); err != nil {
		t.Fatal(err)
	}
	var settled []cdc.Settlement
	rows, err := pool.Query(ctx, `SELECT id, state, outcome FROM cdcflow.dead_letters ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s cdc.Settlement
		if err := rows.Scan(&s.ID, &s.State, &s.Outcome); err != nil {
			t.Fatal(err)
		}
		settled = append(settled, s)
	}
	if diff := cmp.Diff(decided, settled); diff != "" {
		t.Fatalf("settled (-want +got):\n%s", diff)
	}
}
