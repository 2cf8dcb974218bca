// Package workflows holds cdcflow's deterministic workflow code.
package workflows

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/event"
)

// ApplyBatchName is the registered name of the ApplyBatch workflow.
const ApplyBatchName = "ApplyBatch"

// BatchInput describes one batch of messages from one Kafka partition, as the
// starter cut it. Its events travel beside it, as the workflow's second
// argument; those and Poison together cover every offset of the range.
type BatchInput struct {
	Topic       string   `json:"topic"`
	Partition   int      `json:"partition"`
	FirstOffset int64    `json:"first_offset"`
	LastOffset  int64    `json:"last_offset"`
	EventCount  int      `json:"event_count"`
	Offsets     []int64  `json:"offsets,omitempty"` // Kafka offset of each event
	Poison      []Poison `json:"poison,omitempty"`
	// MaxAttempts is how often an event failing for a permanent reason is
	// tried before it is dead-lettered (0: DefaultMaxAttempts).
	MaxAttempts int `json:"max_attempts,omitempty"`
}

// DefaultMaxAttempts is the default of BatchInput.MaxAttempts.
const DefaultMaxAttempts = 3

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

// BatchSummary is the result of ApplyBatch, shown in the Temporal Web UI.
type BatchSummary struct {
	Events     int `json:"events"`
	Applied    int `json:"applied"`
	Superseded int `json:"superseded"`
	Duplicates int `json:"duplicates"`
	// Failed counts messages that were not applied: each is dead-lettered.
	Failed int `json:"failed"`
	// DeadLetters are the IDs of the DeadLetter workflows of failed messages.
	DeadLetters []string `json:"dead_letters,omitempty"`
}

func (s *BatchSummary) add(r applier.Result) {
	s.Applied += r.Applied
	s.Superseded += r.Superseded
	s.Duplicates += r.Duplicates
}

// ApplyRetryPolicy retries transient failures (destination down, serialization
// failures, deadlocks) without limit, backing off to one attempt every 30 s.
// Permanent failures of single events are not errors of the activity: it
// reports them, and ApplyBatch retries those events MaxAttempts times itself.
var ApplyRetryPolicy = &temporal.RetryPolicy{
	InitialInterval:    500 * time.Millisecond,
	BackoffCoefficient: 2,
	MaximumInterval:    30 * time.Second,
	MaximumAttempts:    0,
}

// localActivities runs activities in the worker that runs the workflow, so a
// batch is not copied into the history a second time as activity input, and
// costs Temporal one workflow task instead of two tasks and an activity task.
func localActivities(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		// Without it the SDK would stop retrying after StartToCloseTimeout:
		// transient failures (a destination down for hours) retry until
		// they pass.
		ScheduleToCloseTimeout: 10 * 365 * 24 * time.Hour,
		RetryPolicy:            ApplyRetryPolicy,
	})
}

// ApplyBatch applies one batch to the destination. It never decodes the
// events: they go to the apply activity as they came. Events that fail for a
// permanent reason are tried again MaxAttempts times in all, then parked: in
// the DLQ topic, the dead_letters table, and a DeadLetter workflow each,
// which outlives the batch and waits for a person's decision.
func ApplyBatch(ctx workflow.Context, in BatchInput, events event.Batch) (BatchSummary, error) {
	ctx = localActivities(ctx)
	if workflow.GetVersion(ctx, "dead-letters", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return applyBatchV0(ctx, in, events)
	}
	sum := BatchSummary{Events: in.EventCount + len(in.Poison)}
	info := workflow.GetInfo(ctx)
	parked := make([]activities.DeadLetter, 0, len(in.Poison))
	base := activities.DeadLetter{Topic: in.Topic, Partition: in.Partition,
		BatchWorkflowID: info.WorkflowExecution.ID, BatchRunID: info.WorkflowExecution.RunID}
	for _, p := range in.Poison {
		// Decoding again cannot help: park at once.
		dl := base
		dl.ID = fmt.Sprintf("dlq-%s-%d-%d", in.Topic, in.Partition, p.Offset)
		dl.Offset, dl.ErrorClass, dl.Error, dl.Attempts = p.Offset, applier.ErrTypeInvalidEvent, p.Error, 1
		dl.FirstFailure, dl.LastFailure, dl.Message = workflow.Now(ctx), workflow.Now(ctx), p.Value
		parked = append(parked, dl)
	}

	if in.EventCount > 0 {
		maxAttempts := in.MaxAttempts
		if maxAttempts <= 0 {
			maxAttempts = DefaultMaxAttempts
		}
		first := workflow.Now(ctx)
		var only []int
		var failed []activities.FailedEvent
		for attempt := 1; attempt <= maxAttempts; attempt++ {
			if attempt > 1 {
				if err := workflow.Sleep(ctx, time.Duration(1<<(attempt-2))*time.Second); err != nil {
					return sum, err
				}
			}
			var out activities.ApplyOutcome
			if err := workflow.ExecuteLocalActivity(ctx, activities.ApplyBatchName, events, only).Get(ctx, &out); err != nil {
				return sum, batchError(in, err)
			}
			sum.add(out.Result)
			if failed = out.Failed; len(failed) == 0 {
				break
			}
			only = only[:0]
			for _, f := range failed {
				only = append(only, f.Index)
			}
		}
		for _, f := range failed {
			dl := base
			dl.ID = fmt.Sprintf("dlq-%d", f.ActionID)
			dl.ActionID, dl.Table, dl.ErrorClass, dl.Error, dl.Attempts = f.ActionID, f.Table, f.Class, f.Error, maxAttempts
			dl.Offset = -1
			if f.Index < len(in.Offsets) {
				dl.Offset = in.Offsets[f.Index]
			}
			dl.FirstFailure, dl.LastFailure, dl.Message = first, workflow.Now(ctx), f.Message
			parked = append(parked, dl)
		}
	}

	for _, dl := range parked {
		if err := park(ctx, dl); err != nil {
			return sum, err
		}
		sum.Failed++
		sum.DeadLetters = append(sum.DeadLetters, dl.ID)
	}
	return sum, nil
}

// park records a dead letter and starts its DeadLetter workflow, which is
// abandoned by the batch so that it waits on after the batch completed.
func park(ctx workflow.Context, dl activities.DeadLetter) error {
	workflow.GetLogger(ctx).Warn("parking change", "id", dl.ID, "error_class", dl.ErrorClass, "error", dl.Error)
	if err := workflow.ExecuteLocalActivity(ctx, activities.ParkName, dl).Get(ctx, nil); err != nil {
		return fmt.Errorf("park %s: %w", dl.ID, err)
	}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:        dl.ID,
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			SearchTable.ValueSet(dl.Table), SearchErrorClass.ValueSet(dl.ErrorClass), SearchStatus.ValueSet(StatusParked)),
		Memo: map[string]any{"error": dl.Error, "error_class": dl.ErrorClass, "action_id": dl.ActionID},
	})
	child := workflow.ExecuteChildWorkflow(cctx, DeadLetterName, DeadLetterInput{Record: dl})
	var started workflow.Execution
	if err := child.GetChildWorkflowExecution().Get(ctx, &started); err != nil {
		var exists *temporal.ChildWorkflowExecutionAlreadyStartedError
		if errors.As(err, &exists) {
			return nil // parked before, by an earlier delivery of the same change
		}
		return fmt.Errorf("start DeadLetter workflow %s: %w", dl.ID, err)
	}
	return nil
}

func batchError(in BatchInput, err error) error {
	// Keep the activity's error type, so that the failed workflow can be
	// found by it, and say which batch it was.
	typ, cause := "ApplyFailed", err.Error()
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		typ, cause = appErr.Type(), appErr.Message()
	}
	msg := fmt.Sprintf("apply %s[%d] offsets %d..%d: %s", in.Topic, in.Partition, in.FirstOffset, in.LastOffset, cause)
	return temporal.NewNonRetryableApplicationError(msg, typ, err)
}

// applyBatchV0 is ApplyBatch before dead letters: poison was logged and
// skipped, and a permanent failure failed the whole batch. It stays for
// workflows started before, which replay through it.
func applyBatchV0(ctx workflow.Context, in BatchInput, events event.Batch) (BatchSummary, error) {
	sum := BatchSummary{Events: in.EventCount + len(in.Poison), Failed: len(in.Poison)}
	for _, p := range in.Poison {
		workflow.GetLogger(ctx).Error("undecodable message skipped", "topic", in.Topic, "partition", in.Partition,
			"offset", p.Offset, "error", p.Error)
	}
	if in.EventCount == 0 {
		return sum, nil
	}
	var out activities.ApplyOutcome
	if err := workflow.ExecuteLocalActivity(ctx, activities.ApplyBatchName, events, []int(nil)).Get(ctx, &out); err != nil {
		return sum, batchError(in, err)
	}
	if len(out.Failed) > 0 {
		f := out.Failed[0]
		return sum, batchError(in, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("action_id %d: %s", f.ActionID, f.Error), f.Class, nil))
	}
	sum.add(out.Result)
	return sum, nil
}

// Register registers every cdcflow workflow with w.
func Register(w worker.WorkflowRegistry) {
	w.RegisterWorkflowWithOptions(ApplyBatch, workflow.RegisterOptions{Name: ApplyBatchName})
	w.RegisterWorkflowWithOptions(DeadLetter, workflow.RegisterOptions{Name: DeadLetterName})
}
