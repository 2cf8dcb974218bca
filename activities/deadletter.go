package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
)

// DeadLetterStore keeps the durable record of parked changes (the
// destination's dead_letters table).
type DeadLetterStore interface {
	// Record stores every record whose ID has no row yet and reports, for
	// each, whether its group holds it and whether it was published.
	Record(ctx context.Context, recs []cdc.DeadLetterRecord) ([]deadletter.Recorded, error)
	MarkPublished(ctx context.Context, ids []string) error
	Messages(ctx context.Context, ids []string) (map[string][]byte, error)
	Settle(ctx context.Context, settled []cdc.Settlement) error
	// FailedAgain records replays that failed again.
	FailedAgain(ctx context.Context, failed []cdc.ReplayResult) error
}

// Publisher is the part of a Kafka writer the dead-letter activities use.
type Publisher interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// DeadLetters parks changes that cannot be applied, in the store and in the
// DLQ topic with their context as headers, and replays them when a person
// asks.
type DeadLetters struct {
	Store     DeadLetterStore
	Publisher Publisher      // writes to the DLQ topic
	Chunks    ChunkFetcher   // reads the chunks of large changes
	Applier   BatchApplier   // replays parked changes
	Metrics   *metrics.Apply // nil records nothing
}

// Park records the changes of a batch that failed and publishes them to the
// DLQ topic, all at once. A large change is recorded as its full event, read
// from its chunks, and published as its manifest (the DLQ topic takes no
// larger messages than the change topic); when its chunks are gone it is
// recorded as its manifest. It is idempotent: a retried call finds the
// records and publishes only what had not been. It returns the records each
// group's DeadLetter workflow holds, without their messages and with the
// changed row's key and the group the row belongs to: a change an earlier
// run of the batch parked goes to its group again (started anew if it never
// was, or was terminated), while one parked by another batch, or decided
// already, is left out.
func (d *DeadLetters) Park(ctx context.Context, recs []cdc.DeadLetterRecord) ([]cdc.DeadLetterRecord, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	stored := slices.Clone(recs)
	for i, rec := range recs {
		if rec.Claim == nil {
			continue
		}
		full, err := ResolveClaim(ctx, d.Chunks, rec.Message, rec.Claim)
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.NonRetryable() {
			continue // the manifest is all there is
		}
		if err != nil {
			return nil, err
		}
		stored[i].Message = full
	}
	found, err := d.Store.Record(ctx, stored)
	if err != nil {
		return nil, err
	}
	var msgs []kafka.Message
	var ids []string
	var members []cdc.DeadLetterRecord
	for i, rec := range recs {
		if !found[i].Published {
			d.Metrics.DeadLetter(ctx, rec.ErrorClass)
			msgs = append(msgs, kafka.Message{Value: rec.Message, Headers: headers(rec)})
			ids = append(ids, rec.ID)
		}
		if found[i].Member {
			rec.Key = changeKey(rec.Message)
			rec.Message, rec.Group = nil, found[i].Group
			members = append(members, rec)
		}
	}
	if len(msgs) > 0 {
		if err := d.Publisher.WriteMessages(ctx, msgs...); err != nil {
			return nil, fmt.Errorf("publish %d dead letters: %w", len(msgs), err)
		}
		if err := d.Store.MarkPublished(ctx, ids); err != nil {
			return nil, err
		}
	}
	return members, nil
}

// changeKey is the row key of an encoded change, or nil for a message that
// is not one.
func changeKey(msg []byte) json.RawMessage {
	ev, err := event.Decode(msg)
	if err != nil {
		return nil
	}
	return ev.Key
}

// Settle records the person's decisions on parked changes.
func (d *DeadLetters) Settle(ctx context.Context, settled []cdc.Settlement) error {
	if len(settled) == 0 {
		return nil
	}
	if err := d.Store.Settle(ctx, settled); err != nil {
		if errors.Is(err, deadletter.ErrNotRecorded) {
			// Retrying would hold the group's decisions for good.
			return temporal.NewNonRetryableApplicationError(err.Error(), "DeadLetterNotRecorded", err)
		}
		return err
	}
	by := map[cdc.State]int{}
	for _, s := range settled {
		by[s.State]++
	}
	for state, n := range by {
		d.Metrics.Decided(ctx, state, n)
	}
	return nil
}

// ReplayChanges applies parked changes once more, the one named with a
// corrected row image when one is given, in one destination transaction
// from which a change that fails again is set aside alone. They are subject
// to the same idempotency and version guard as any change: a replay of a
// change applied before is a duplicate, one older than the row's current
// version is superseded. Transient failures are errors, retried. A change
// that fails again has the new failure recorded in its dead_letters row.
func (d *DeadLetters) ReplayChanges(ctx context.Context, in cdc.ReplayInput) ([]cdc.ReplayResult, error) {
	msgs, err := d.Store.Messages(ctx, in.IDs)
	if err != nil {
		return nil, err
	}
	results := make([]cdc.ReplayResult, len(in.IDs))
	var events []event.Event
	var at []int // results index of each event
	for i, id := range in.IDs {
		results[i].ID = id
		msg, ok := msgs[id]
		if !ok {
			results[i].ErrorClass, results[i].Error = cdc.ClassInvalidEvent, "no such dead letter"
			continue
		}
		ev, err := event.DecodeWhole(msg) // a large change is recorded whole
		if err == nil && in.After != nil {
			ev, err = withAfter(ev, in.After)
		}
		if err != nil {
			results[i].ErrorClass, results[i].Error = cdc.ClassInvalidEvent, err.Error()
			continue
		}
		events = append(events, ev)
		at = append(at, i)
	}
	if len(events) > 0 {
		counts, failed, err := d.Applier.ApplyIsolating(ctx, events)
		if err != nil {
			return nil, err
		}
		outcome := replayOutcome(counts, len(events)-len(failed))
		for i := range at {
			results[at[i]].Outcome = outcome
		}
		for _, f := range failed {
			r := &results[at[f.Index]]
			r.Outcome, r.ErrorClass, r.Error = "", f.ErrorClass, f.Error
		}
	}
	var again []cdc.ReplayResult
	for _, r := range results {
		if r.Error != "" {
			again = append(again, r)
		}
	}
	if err := d.Store.FailedAgain(ctx, again); err != nil {
		return nil, err
	}
	return results, nil
}

// replayOutcome says what the replay of n changes did.
func replayOutcome(c cdc.Counts, n int) string {
	if n == 1 {
		switch {
		case c.Applied > 0:
			return "applied"
		case c.Superseded > 0:
			return "superseded: the row already holds a newer change"
		default:
			return "duplicate: the change was applied before"
		}
	}
	return fmt.Sprintf("replayed with %d others: %d applied, %d superseded by newer changes, %d applied before",
		n-1, c.Applied, c.Superseded, c.Duplicates)
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
