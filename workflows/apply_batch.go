// Package workflows holds cdcflow's deterministic workflow code.
package workflows

import (
	"errors"
	"fmt"
	"time"

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
	Poison      []Poison `json:"poison,omitempty"`
}

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
	// Failed counts messages that were not applied: undecodable ones for now.
	Failed int `json:"failed"`
}

// ApplyRetryPolicy retries transient failures (destination down, serialization
// failures, deadlocks) without limit, backing off to one attempt every 30 s;
// permanent failures arrive as non-retryable errors and are not retried.
var ApplyRetryPolicy = &temporal.RetryPolicy{
	InitialInterval:    500 * time.Millisecond,
	BackoffCoefficient: 2,
	MaximumInterval:    30 * time.Second,
	MaximumAttempts:    0,
}

// ApplyBatch applies one batch to the destination in one activity. It never
// decodes the events: they go to the activity as they came.
func ApplyBatch(ctx workflow.Context, in BatchInput, events event.Batch) (BatchSummary, error) {
	log := workflow.GetLogger(ctx)
	sum := BatchSummary{Events: in.EventCount + len(in.Poison), Failed: len(in.Poison)}
	for _, p := range in.Poison {
		log.Error("undecodable message skipped", "topic", in.Topic, "partition", in.Partition,
			"offset", p.Offset, "error", p.Error)
	}
	if in.EventCount == 0 {
		return sum, nil
	}
	// A local activity: it runs in the worker that runs the workflow, so the
	// batch is not copied into the history a second time as activity input,
	// and a batch costs Temporal one workflow task instead of two tasks and
	// an activity task. Retries and their backoff are the same.
	ctx = workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy:         ApplyRetryPolicy,
	})
	var res applier.Result
	if err := workflow.ExecuteLocalActivity(ctx, activities.ApplyBatchName, events).Get(ctx, &res); err != nil {
		// Keep the activity's error type, so that the failed workflow can be
		// found by it, and say which batch it was.
		typ, cause := "ApplyFailed", err.Error()
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			typ, cause = appErr.Type(), appErr.Message()
		}
		msg := fmt.Sprintf("apply %s[%d] offsets %d..%d: %s", in.Topic, in.Partition, in.FirstOffset, in.LastOffset, cause)
		return sum, temporal.NewNonRetryableApplicationError(msg, typ, err)
	}
	sum.Applied, sum.Superseded, sum.Duplicates = res.Applied, res.Superseded, res.Duplicates
	return sum, nil
}

// Register registers every cdcflow workflow with w.
func Register(w worker.WorkflowRegistry) {
	w.RegisterWorkflowWithOptions(ApplyBatch, workflowOptions())
}

func workflowOptions() workflow.RegisterOptions {
	return workflow.RegisterOptions{Name: ApplyBatchName}
}
