package activities_test

import (
	"context"
	"os"
	"testing"
	"time"

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

	now := time.Now()
	dl := cdc.DeadLetterRecord{ID: "dlq-7", ActionID: 7, Topic: "changes", Partition: 0, Offset: 41, Table: "public.employees",
		ErrorClass: "ConstraintViolation", Error: "violates check", Attempts: 3, FirstFailure: now, LastFailure: now,
		BatchWorkflowID: "cdc-changes-0-0-99", BatchRunID: "run", Message: []byte(`{"action_id":7}`)}
	for range 3 {
		if err := d.Park(ctx, dl); err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.dead_letters WHERE published_at IS NOT NULL`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || pub.sent != 1 {
		t.Fatalf("%d rows and %d DLQ messages after parking three times, want 1 and 1", rows, pub.sent)
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
	if string(m.Value) != `{"action_id":7}` || headers[cdc.HeaderOffset] != "41" || headers[cdc.HeaderAttempts] != "3" ||
		headers[cdc.HeaderErrorClass] != "ConstraintViolation" || headers[cdc.HeaderWorkflowID] != "cdc-changes-0-0-99" {
		t.Fatalf("DLQ message %s with headers %v", m.Value, headers)
	}

	if err := d.Settle(ctx, cdc.Settlement{ID: "dlq-7", State: cdc.StateDiscarded, Decision: "test data"}); err != nil {
		t.Fatal(err)
	}
	var state, decision string
	if err := pool.QueryRow(ctx, `SELECT state, decision FROM cdcflow.dead_letters WHERE id = 'dlq-7'`).Scan(&state, &decision); err != nil {
		t.Fatal(err)
	}
	if state != "discarded" || decision != "test data" {
		t.Fatalf("settled as %s %q", state, decision)
	}
	if err := d.Settle(ctx, cdc.Settlement{ID: "dlq-unknown", State: cdc.StateDiscarded, Decision: "x"}); err == nil || err.Error() != "settle dead letter dlq-unknown: no such dead letter" {
		t.Fatalf("settling an unknown dead letter: %v", err)
	}
}
