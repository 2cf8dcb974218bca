package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// schedule makes sure workflow runs on the task queue every so often,
// creating its schedule or updating its interval. Workers of one task queue
// share the schedule, named cdcflow-<purpose>-<task queue>.
func schedule(ctx context.Context, tc client.Client, purpose, workflow, queue string, every time.Duration) error {
	id := "cdcflow-" + purpose + "-" + queue
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	_, err := tc.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:      id,
		Spec:    spec,
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Action:  &client.ScheduleWorkflowAction{ID: id, Workflow: workflow, TaskQueue: queue},
	})
	if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		err = tc.ScheduleClient().GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				in.Description.Schedule.Spec = &spec
				return &client.ScheduleUpdate{Schedule: &in.Description.Schedule}, nil
			},
		})
	}
	if err != nil {
		return fmt.Errorf("schedule %s: %w", id, err)
	}
	return nil
}
