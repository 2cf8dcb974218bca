// Package cdc is cdcflow's shared vocabulary: the types and names that the
// programs, the workflows and the activities exchange. It is a leaf: it links
// no database driver, no Kafka client and no metrics exporter, so that the
// starter and the dlq command can speak to the workflows without them. It
// does not link the Temporal SDK either, so that devstack, which uses its
// names, stays free of the SDK's test support.
package cdc

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Registered names of cdcflow's workflows.
const (
	WorkflowApplyBatch = "ApplyBatch"
	WorkflowDeadLetter = "DeadLetter"
)

// BatchWorkflowID is the deterministic ID of the ApplyBatch workflow for a
// batch: its place in Kafka and a digest of its messages (BatchDigest).
// Starting the same batch twice creates one workflow; a topic deleted and
// created again, whose offsets start over, has batches of its own.
func BatchWorkflowID(topic string, partition int, first, last int64, digest string) string {
	return fmt.Sprintf("cdc-%s-%d-%d-%d-%s", topic, partition, first, last, digest)
}

// BatchDigest is the digest of a batch's messages in BatchWorkflowID: the
// first 12 hex digits of the SHA-256 of their values, each preceded by its
// length.
func BatchDigest(values [][]byte) string {
	h := sha256.New()
	var n [8]byte
	for _, v := range values {
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write(v)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// BatchInput describes one batch of messages from one Kafka partition, as the
// starter cut it. Its events travel beside it, as the workflow's second
// argument; those, Poison and chunk messages together cover every offset of
// the range. A chunk message is a slice of a large event: it is not an event
// of the batch, but is named by the Claim of its event's manifest, or is an
// orphan (a run capture abandoned), skipped.
type BatchInput struct {
	Topic       string   `json:"topic"`
	Partition   int      `json:"partition"`
	FirstOffset int64    `json:"first_offset"`
	LastOffset  int64    `json:"last_offset"`
	EventCount  int      `json:"event_count"`
	Offsets     Offsets  `json:"offsets,omitempty"` // Kafka offset of each event, written as ranges
	Poison      []Poison `json:"poison,omitempty"`
	// Claims name the chunk messages of the batch's manifests, so that the
	// worker reads the full events from the topic; their bytes never travel
	// through Temporal.
	Claims []Claim `json:"claims,omitempty"`
	// MaxAttempts is how often an event failing for a permanent reason is
	// tried before it is dead-lettered (0: DefaultMaxAttempts).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// OrderingWindowSeconds is how long an event failing with an
	// ordering-dependent class (ErrorClass.OrderingDependent) is retried
	// before it is dead-lettered (0: DefaultOrderingWindow).
	OrderingWindowSeconds int `json:"ordering_window_seconds,omitempty"`
	// ParkReason, set by the reconciler on a batch whose workflow closed
	// without completing too often, parks every event of the batch for a
	// person instead of applying it.
	ParkReason string `json:"park_reason,omitempty"`
	// SetOutcome has the workflow record its outcome in the SearchOutcome
	// search attribute when it closes: the starter sets it when the server
	// has that attribute.
	SetOutcome bool `json:"set_outcome,omitempty"`
}

// Claim locates the full event of a manifest: the manifest is the batch's
// event at Index, its chunks are at Offsets (in chunk order) of the batch's
// partition.
type Claim struct {
	Index   int     `json:"index"`
	Offsets []int64 `json:"offsets"`
}

// BatchClaims is what the apply activity needs to read the full events of a
// batch's manifests.
type BatchClaims struct {
	Topic     string  `json:"topic"`
	Partition int     `json:"partition"`
	Claims    []Claim `json:"claims"`
}

// BatchClaims returns the claims of the batch for the apply activity, nil
// when it has none.
func (in BatchInput) BatchClaims() *BatchClaims {
	if len(in.Claims) == 0 {
		return nil
	}
	return &BatchClaims{Topic: in.Topic, Partition: in.Partition, Claims: in.Claims}
}

// Check returns where the chunks of the event at index are, nil when it
// has none.
func (c *BatchClaims) Check(index int) *ClaimCheck {
	if c == nil {
		return nil
	}
	for _, cl := range c.Claims {
		if cl.Index == index {
			return &ClaimCheck{Topic: c.Topic, Partition: c.Partition, Offsets: cl.Offsets}
		}
	}
	return nil
}

// ClaimCheck locates the chunks of one large change in Kafka, in chunk
// order: a failed or parked change whose message is a manifest carries it,
// so that its full event can be read (activities.ResolveClaim) for as long
// as the topic keeps it.
type ClaimCheck struct {
	Topic     string  `json:"topic"`
	Partition int     `json:"partition"`
	Offsets   []int64 `json:"offsets"`
}

// Registered name of the workflow that finds batch workflows closed without
// completing and runs them again.
const WorkflowReconcile = "Reconcile"

// ReconcileReport is the Reconcile workflow's result.
type ReconcileReport struct {
	// Redriven batches were started again with their own input.
	Redriven []string `json:"redriven,omitempty"`
	// Parked batches had closed without completing MaxRedrives times; every
	// event of theirs was parked instead.
	Parked []string `json:"parked,omitempty"`
}

// DefaultMaxAttempts is the default of BatchInput.MaxAttempts.
const DefaultMaxAttempts = 3

// DefaultOrderingWindow is the default of BatchInput.OrderingWindowSeconds.
const DefaultOrderingWindow = 5 * time.Minute

// Poison is a message that could not be decoded into an event.
type Poison struct {
	Offset int64 `json:"offset"`
	// Value is the message as received, cut to PoisonValueLimit bytes; the
	// original stays in Kafka at Offset.
	Value     []byte `json:"value"`
	Size      int    `json:"size"`
	Truncated bool   `json:"truncated,omitempty"`
	Error     string `json:"error"`
}

// PoisonValueLimit bounds the copy of an undecodable message kept in a batch.
const PoisonValueLimit = 16 << 10

// Counts says what happened to the events given to one apply. Every event
// is in exactly one of the three counts.
type Counts struct {
	// Applied changes wrote their row.
	Applied int `json:"applied"`
	// Superseded changes were recorded but wrote nothing, because a newer
	// change to the same row is already in the destination or in this batch.
	Superseded int `json:"superseded"`
	// Duplicates were applied before (their action_id is already recorded),
	// or appear twice in the batch, and were skipped.
	Duplicates int `json:"duplicates"`
}

// Add sums two counts.
func (c Counts) Add(o Counts) Counts {
	return Counts{Applied: c.Applied + o.Applied, Superseded: c.Superseded + o.Superseded, Duplicates: c.Duplicates + o.Duplicates}
}

// BatchSummary is the result of ApplyBatch, shown in the Temporal Web UI.
type BatchSummary struct {
	Events int `json:"events"`
	Counts
	// Failed counts messages that were not applied: each is dead-lettered.
	Failed int `json:"failed"`
	// DeadLetters are the IDs of the DeadLetter workflows (groups) of failed
	// messages.
	DeadLetters []string `json:"dead_letters,omitempty"`
}

// ApplyOutcome is the result of the ApplyEvents activity: what was applied,
// and the events that failed for a permanent reason.
type ApplyOutcome struct {
	Counts
	Failed []FailedEvent `json:"failed,omitempty"`
}

// FailedEvent is an event of a batch that failed for a permanent reason.
type FailedEvent struct {
	Index      int        `json:"index"` // position in the batch
	Epoch      int64      `json:"epoch,omitempty"`
	ActionID   int64      `json:"action_id"`
	Table      string     `json:"table"`
	ErrorClass ErrorClass `json:"error_class"`
	Error      string     `json:"error"`
	// Attempts is how often the event was tried, once it was given up.
	Attempts int `json:"attempts,omitempty"`
	// Claim locates the chunks of a large change, whose manifest is the
	// event in the batch.
	Claim *ClaimCheck `json:"claim,omitempty"`
}

// DeadLetterRecord is one parked change and why it was parked: a row of the
// dead_letters table, a record of the DLQ topic (Message as the value, the
// rest as headers), and, without its message, a change of its group's
// DeadLetter workflow.
type DeadLetterRecord struct {
	ID              string     `json:"id"`
	Group           string     `json:"group"` // the DeadLetter workflow that holds it
	Epoch           int64      `json:"epoch,omitempty"`
	ActionID        int64      `json:"action_id,omitempty"`
	Topic           string     `json:"topic"`
	Partition       int        `json:"partition"`
	Offset          int64      `json:"offset"`
	Table           string     `json:"table,omitempty"`
	ErrorClass      ErrorClass `json:"error_class"`
	Error           string     `json:"error"`
	Attempts        int        `json:"attempts"`
	FirstFailure    time.Time  `json:"first_failure"`
	LastFailure     time.Time  `json:"last_failure"`
	BatchWorkflowID string     `json:"batch_workflow_id"`
	BatchRunID      string     `json:"batch_run_id"`
	// Key is the changed row's key, for checking a corrected row image.
	Key json.RawMessage `json:"key,omitempty"`
	// Message is the Kafka message value as received: the change event, or
	// for an undecodable message the bytes kept of it. For a large change
	// the batch holds its manifest; Park records the full event, read from
	// the chunks Claim locates, and publishes the manifest to the DLQ topic.
	// It is left out of the DeadLetter workflow's input.
	Message []byte      `json:"message,omitempty"`
	Claim   *ClaimCheck `json:"claim,omitempty"`
}

// DeadLetterID is the ID of the dead letter of the change epoch and
// actionID: dlq-<action_id> in epoch 0, dlq-<epoch>-<action_id> after.
func DeadLetterID(epoch, actionID int64) string {
	if epoch == 0 {
		return fmt.Sprintf("dlq-%d", actionID)
	}
	return fmt.Sprintf("dlq-%d-%d", epoch, actionID)
}

// PoisonDeadLetterID is the ID of the dead letter of an undecodable message,
// which has no action_id: it is named by its place in Kafka and a digest of
// the bytes kept of it (value), so that a topic created again, whose
// offsets start over, does not reuse the IDs of the one before.
func PoisonDeadLetterID(topic string, partition int, offset int64, value []byte) string {
	sum := sha256.Sum256(value)
	return fmt.Sprintf("dlq-%s-%d-%d-%s", topic, partition, offset, hex.EncodeToString(sum[:4]))
}

// Header names of a record in the DLQ topic.
const (
	HeaderTopic           = "cdcflow-original-topic"
	HeaderPartition       = "cdcflow-original-partition"
	HeaderOffset          = "cdcflow-original-offset"
	HeaderActionID        = "cdcflow-action-id"
	HeaderTable           = "cdcflow-table"
	HeaderErrorClass      = "cdcflow-error-class"
	HeaderError           = "cdcflow-error"
	HeaderAttempts        = "cdcflow-attempts"
	HeaderFirstFailure    = "cdcflow-first-failure"
	HeaderLastFailure     = "cdcflow-last-failure"
	HeaderBatchWorkflowID = "cdcflow-batch-workflow-id"
	HeaderBatchRunID      = "cdcflow-batch-run-id"
)

// Registered name of the workflow that prunes the destination's
// bookkeeping.
const WorkflowPrune = "Prune"

// PruneReport is the Prune workflow's result: rows deleted.
type PruneReport struct {
	ProcessedEvents int64 `json:"processed_events"`
	Tombstones      int64 `json:"tombstones"`
}
