package activities_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// countingPublisher counts what reaches Kafka through it.
type countingPublisher struct {
	w    *kafka.Writer
	sent int
}

func (c *countingPublisher) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	c.sent += len(msgs)
	return c.w.WriteMessages(ctx, msgs...)
}

// TestParkIsIdempotent: parking the same change again (a retried activity, a
// redelivered batch) neither records nor publishes it a second time, and
// settling records the decision.
func TestParkIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.NewDatabase(t, "park")
	if err := db.Migrate(ctx, dsn, migrations.DestFS()); err != nil {
		t.Fatal(err)
	}
	pool, err := db.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	brokers, _ := testenv.NewKafka(t, map[string]int32{"changes_dlq": 1})
	pub := &countingPublisher{w: kafkax.NewWriter(brokers, "changes_dlq", kafkax.WriterOptions{})}
	defer pub.w.Close()
	d := &activities.DeadLetters{Store: deadletter.NewStore(pool), Publisher: pub}

	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	dl := cdc.DeadLetterRecord{ID: "dlq-7", ActionID: 7, Topic: "changes", Partition: 0, Offset: 41, Table: "public.employees",
		ErrorClass: "ConstraintViolation", Error: "violates check", Attempts: 3, FirstFailure: now, LastFailure: now,
		BatchWorkflowID: "cdc-changes-0-0-99", BatchRunID: "run", Message: []byte(`{"action_id":7}`)}
	for range 3 {
		if err := d.Park(ctx, dl); err != nil {
			t.Fatal(err)
		}
	}
	type parked struct{ Rows, Messages int }
	got := parked{Messages: pub.sent}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.dead_letters WHERE published_at IS NOT NULL`).Scan(&got.Rows); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(parked{Rows: 1, Messages: 1}, got); diff != "" {
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
	if string(m.Value) != `{"action_id":7}` {
		t.Fatalf("DLQ message %s, want the parked message", m.Value)
	}

	if err := d.Settle(ctx, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "test data"}); err != nil {
		t.Fatal(err)
	}
	var settled cdc.Settlement
	if err := pool.QueryRow(ctx, `SELECT id, state, outcome FROM cdcflow.dead_letters WHERE id = 'dlq-7'`).
		Scan(&settled.ID, &settled.State, &settled.Outcome); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Outcome: "test data"}, settled); diff != "" {
		t.Fatalf("settled (-want +got):\n%s", diff)
	}
	if err := d.Settle(ctx, cdc.Settlement{ID: "dlq-unknown", State: cdc.StateDiscarded, Outcome: "x"}); err == nil || err.Error() != "settle dead letter dlq-unknown: no such dead letter" {
		t.Fatalf("settling an unknown dead letter: %v", err)
	}
}
