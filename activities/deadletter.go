package activities

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/metrics"
)

// Publisher is the part of a Kafka writer the dead-letter activity uses.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// DeadLetters parks changes that cannot be applied: in the DLQ topic, with
// their context as headers, and in the destination's dead_letters table.
type DeadLetters struct {
	Pool      *pgxpool.Pool
	Publisher Publisher
	Topic     string         // the DLQ topic
	Metrics   *metrics.Apply // nil records nothing
}

// DeadLetter is one parked change and why it was parked.
type DeadLetter struct {
	ID              string    `json:"id"` // also the DeadLetter workflow's ID
	ActionID        int64     `json:"action_id,omitempty"`
	Topic           string    `json:"topic"`
	Partition       int       `json:"partition"`
	Offset          int64     `json:"offset"`
	Table           string    `json:"table,omitempty"`
	ErrorClass      string    `json:"error_class"`
	Error           string    `json:"error"`
	Attempts        int       `json:"attempts"`
	FirstFailure    time.Time `json:"first_failure"`
	LastFailure     time.Time `json:"last_failure"`
	BatchWorkflowID string    `json:"batch_workflow_id"`
	BatchRunID      string    `json:"batch_run_id"`
	// Message is the Kafka message value as received: the change event, or
	// for an undecodable message the bytes kept of it.
	Message []byte `json:"message"`
}

// Park records dl and publishes it to the DLQ topic. It is idempotent: a
// retried call finds the row and publishes only if that had not happened.
func (d *DeadLetters) Park(ctx context.Context, dl DeadLetter) error {
	var published *time.Time
	err := d.Pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO cdcflow.dead_letters (id, action_id, topic, kafka_partition, kafka_offset, table_name,
				error_class, error, attempts, first_failed_at, last_failed_at, batch_workflow_id, batch_run_id, message)
			VALUES ($1, NULLIF($2, 0), $3, $4, $5, NULLIF($6, ''), $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (id) DO NOTHING
			RETURNING published_at)
		SELECT published_at FROM ins
		UNION ALL
		SELECT published_at FROM cdcflow.dead_letters WHERE id = $1
		LIMIT 1`,
		dl.ID, dl.ActionID, dl.Topic, dl.Partition, dl.Offset, dl.Table, dl.ErrorClass, dl.Error, dl.Attempts,
		dl.FirstFailure, dl.LastFailure, dl.BatchWorkflowID, dl.BatchRunID, dl.Message).Scan(&published)
	if err != nil {
		return fmt.Errorf("record dead letter %s: %w", dl.ID, err)
	}
	if published != nil {
		return nil
	}
	d.Metrics.DeadLetter(ctx, dl.ErrorClass)
	if err := d.Publisher.WriteMessages(ctx, kafka.Message{Topic: d.Topic, Value: dl.Message, Headers: headers(dl)}); err != nil {
		return fmt.Errorf("publish dead letter %s to %s: %w", dl.ID, d.Topic, err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE cdcflow.dead_letters SET published_at = now() WHERE id = $1`, dl.ID); err != nil {
		return fmt.Errorf("mark dead letter %s published: %w", dl.ID, err)
	}
	return nil
}

// Header names of a DLQ record.
const (
	HeaderTopic        = "cdcflow-original-topic"
	HeaderPartition    = "cdcflow-original-partition"
	HeaderOffset       = "cdcflow-original-offset"
	HeaderActionID     = "cdcflow-action-id"
	HeaderTable        = "cdcflow-table"
	HeaderErrorClass   = "cdcflow-error-class"
	HeaderError        = "cdcflow-error"
	HeaderAttempts     = "cdcflow-attempts"
	HeaderFirstFailure = "cdcflow-first-failure"
	HeaderLastFailure  = "cdcflow-last-failure"
	HeaderWorkflowID   = "cdcflow-workflow-id"
	HeaderRunID        = "cdcflow-run-id"
)

func headers(dl DeadLetter) []kafka.Header {
	h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
	return []kafka.Header{
		h(HeaderTopic, dl.Topic),
		h(HeaderPartition, strconv.Itoa(dl.Partition)),
		h(HeaderOffset, strconv.FormatInt(dl.Offset, 10)),
		h(HeaderActionID, strconv.FormatInt(dl.ActionID, 10)),
		h(HeaderTable, dl.Table),
		h(HeaderErrorClass, dl.ErrorClass),
		h(HeaderError, dl.Error),
		h(HeaderAttempts, strconv.Itoa(dl.Attempts)),
		h(HeaderFirstFailure, dl.FirstFailure.UTC().Format(time.RFC3339Nano)),
		h(HeaderLastFailure, dl.LastFailure.UTC().Format(time.RFC3339Nano)),
		h(HeaderWorkflowID, dl.BatchWorkflowID),
		h(HeaderRunID, dl.BatchRunID),
	}
}

// Settle records the person's decision on a parked change.
func (d *DeadLetters) Settle(ctx context.Context, id, status, decision string) error {
	tag, err := d.Pool.Exec(ctx, `UPDATE cdcflow.dead_letters SET status = $2, decision = $3, decided_at = now() WHERE id = $1`,
		id, status, decision)
	if err != nil {
		return fmt.Errorf("settle dead letter %s: %w", id, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("settle dead letter %s: no such dead letter", id)
	}
	return nil
}
