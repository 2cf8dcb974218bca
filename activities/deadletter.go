package activities

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/metrics"
)

// DeadLetterStore keeps the durable record of parked changes (the
// destination's dead_letters table).
type DeadLetterStore interface {
	// Record stores rec unless a record with its ID exists, and reports
	// whether that record was published to the DLQ topic already.
	Record(ctx context.Context, rec cdc.DeadLetterRecord) (published bool, err error)
	MarkPublished(ctx context.Context, id string) error
	Settle(ctx context.Context, s cdc.Settlement) error
}

// Publisher is the part of a Kafka writer the dead-letter activities use.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// DeadLetters parks changes that cannot be applied: in the store, and in the
// DLQ topic with their context as headers.
type DeadLetters struct {
	Store     DeadLetterStore
	Publisher Publisher      // writes to the DLQ topic
	Metrics   *metrics.Apply // nil records nothing
}

// Park records rec and publishes it to the DLQ topic. It is idempotent: a
// retried call finds the record and publishes only if that had not happened.
func (d *DeadLetters) Park(ctx context.Context, rec cdc.DeadLetterRecord) error {
	published, err := d.Store.Record(ctx, rec)
	if err != nil {
		return err
	}
	if published {
		return nil
	}
	d.Metrics.DeadLetter(ctx, rec.ErrorClass)
	if err := d.Publisher.WriteMessages(ctx, kafka.Message{Value: rec.Message, Headers: headers(rec)}); err != nil {
		return fmt.Errorf("publish dead letter %s: %w", rec.ID, err)
	}
	return d.Store.MarkPublished(ctx, rec.ID)
}

// Settle records the person's decision on a parked change.
func (d *DeadLetters) Settle(ctx context.Context, s cdc.Settlement) error {
	return d.Store.Settle(ctx, s)
}

func headers(rec cdc.DeadLetterRecord) []kafka.Header {
	h := func(k, v string) kafka.Header { return kafka.Header{Key: k, Value: []byte(v)} }
	return []kafka.Header{
		h(cdc.HeaderTopic, rec.Topic),
		h(cdc.HeaderPartition, strconv.Itoa(rec.Partition)),
		h(cdc.HeaderOffset, strconv.FormatInt(rec.Offset, 10)),
		h(cdc.HeaderActionID, strconv.FormatInt(rec.ActionID, 10)),
		h(cdc.HeaderTable, rec.Table),
		h(cdc.HeaderErrorClass, string(rec.ErrorClass)),
		h(cdc.HeaderError, rec.Error),
		h(cdc.HeaderAttempts, strconv.Itoa(rec.Attempts)),
		h(cdc.HeaderFirstFailure, rec.FirstFailure.UTC().Format(time.RFC3339Nano)),
		h(cdc.HeaderLastFailure, rec.LastFailure.UTC().Format(time.RFC3339Nano)),
		h(cdc.HeaderBatchWorkflowID, rec.BatchWorkflowID),
		h(cdc.HeaderBatchRunID, rec.BatchRunID),
	}
}
