package activities

import (
	"context"
	"errors"
	"fmt"

	commonpb "go.temporal.io/api/common/v1"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
)

// Reconciler runs again the batch workflows that closed without completing.
type Reconciler struct {
	Temporal  client.Client
	Converter converter.DataConverter // the one the batches were started with
	TaskQueue string
	// MaxRedrives is how often a batch is run again before its events are
	// parked instead.
	MaxRedrives int
	Metrics     *metrics.Apply // nil records nothing
}

// DefaultMaxRedrives is the default of Reconciler.MaxRedrives.
const DefaultMaxRedrives = 5

// closedUnfinished are the ways a batch workflow can close without having
// applied or parked its events.
var closedUnfinished = map[enumspb.WorkflowExecutionStatus]bool{
	enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:     true,
	enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED: true,
	enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:  true,
	enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:   true,
}

// RedriveClosedBatches finds the ApplyBatch workflows of the task queue
// whose latest run closed without completing and starts each again with the
// input of that run. A batch that closed that way MaxRedrives times already
// is started once more with ParkReason set: its events are parked for a
// person.
func (r *Reconciler) RedriveClosedBatches(ctx context.Context) (cdc.ReconcileReport, error) {
	var report cdc.ReconcileReport
	query := fmt.Sprintf("WorkflowType = '%s' AND TaskQueue = '%s' AND ExecutionStatus IN ('Failed', 'Terminated', 'TimedOut', 'Canceled')",
		cdc.WorkflowApplyBatch, r.TaskQueue)
	seen := map[string]bool{}
	var token []byte
	for {
		resp, err := r.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, NextPageToken: token})
		if err != nil {
			return report, fmt.Errorf("list closed batch workflows: %w", err)
		}
		for _, ex := range resp.Executions {
			id := ex.Execution.WorkflowId
			if seen[id] {
				continue
			}
			seen[id] = true
			parked, redriven, err := r.redrive(ctx, id)
			if err != nil {
				return report, err
			}
			switch {
			case parked:
				report.Parked = append(report.Parked, id)
			case redriven:
				report.Redriven = append(report.Redriven, id)
			}
			activity.RecordHeartbeat(ctx, len(seen))
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	r.Metrics.Redriven(ctx, len(report.Redriven), len(report.Parked))
	return report, nil
}

// redrive starts the batch id again when its latest run closed unfinished.
func (r *Reconciler) redrive(ctx context.Context, id string) (parked, redriven bool, err error) {
	desc, err := r.Temporal.DescribeWorkflow(ctx, id, "")
	if err != nil {
		return false, false, fmt.Errorf("describe batch %s: %w", id, err)
	}
	info := desc.RawResponse.WorkflowExecutionInfo
	if !closedUnfinished[info.Status] {
		return false, false, nil // run again already, by this reconciler or another
	}
	runID := info.Execution.RunId
	in, events, err := r.input(ctx, id, runID)
	if err != nil {
		return false, false, err
	}
	count, err := r.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId = '%s'", id)})
	if err != nil {
		return false, false, fmt.Errorf("count runs of batch %s: %w", id, err)
	}
	maxRedrives := r.MaxRedrives
	if maxRedrives <= 0 {
		maxRedrives = DefaultMaxRedrives
	}
	if int(count.Count) > maxRedrives {
		in.ParkReason = fmt.Sprintf("the batch workflow closed without completing %d times, last as %s", count.Count,
			info.Status.String())
	}
	opts := client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                r.TaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		TypedSearchAttributes:    carriedSearchAttributes(info.GetSearchAttributes()),
	}
	// The new run explains itself as the closed one did.
	opts.StaticSummary, _ = desc.GetStaticSummary()
	opts.StaticDetails, _ = desc.GetStaticDetails()
	_, err = r.Temporal.ExecuteWorkflow(ctx, opts, cdc.WorkflowApplyBatch, in, events)
	var exists *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &exists) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("start batch %s again: %w", id, err)
	}
	activity.GetLogger(ctx).Warn("batch workflow closed without completing; started it again",
		"workflow_id", id, "closed_run", runID, "status", info.Status.String(), "parking", in.ParkReason != "")
	return in.ParkReason != "", true, nil
}

// input reads the input the run was started with from its first event.
func (r *Reconciler) input(ctx context.Context, id, runID string) (cdc.BatchInput, event.Batch, error) {
	it := r.Temporal.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var in cdc.BatchInput
	var events event.Batch
	if !it.HasNext() {
		return in, events, fmt.Errorf("batch %s run %s has no history", id, runID)
	}
	first, err := it.Next()
	if err != nil {
		return in, events, fmt.Errorf("read history of batch %s: %w", id, err)
	}
	started := first.GetWorkflowExecutionStartedEventAttributes()
	if started == nil {
		return in, events, fmt.Errorf("batch %s run %s: first event is %s", id, runID, first.EventType)
	}
	if err := r.Converter.FromPayloads(started.Input, &in, &events); err != nil {
		return in, events, fmt.Errorf("decode input of batch %s: %w", id, err)
	}
	return in, events, nil
}

// carriedSearchAttributes are the batch search attributes the starter gave
// a closed run (those the server has), for the run that replaces it.
func carriedSearchAttributes(sa *commonpb.SearchAttributes) temporal.SearchAttributes {
	fields := sa.GetIndexedFields()
	dc := converter.GetDefaultDataConverter()
	var updates []temporal.SearchAttributeUpdate
	var tables []string
	if p, ok := fields[cdc.SearchTables]; ok && dc.FromPayload(p, &tables) == nil {
		updates = append(updates, temporal.NewSearchAttributeKeyKeywordList(cdc.SearchTables).ValueSet(tables))
	}
	var partition int64
	if p, ok := fields[cdc.SearchPartition]; ok && dc.FromPayload(p, &partition) == nil {
		updates = append(updates, temporal.NewSearchAttributeKeyInt64(cdc.SearchPartition).ValueSet(partition))
	}
	return temporal.NewSearchAttributes(updates...)
}
