package applier

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// ApplyIsolating applies events like Apply, but when the batch fails for a
// permanent reason it finds the events at fault and applies all the others.
// An event named by a validation error (checked before any SQL runs) is set
// aside and the rest tried again as one batch. A failure inside PostgreSQL
// sends the rest through one transaction in which every event is applied
// under a savepoint of its own: isolating even a batch whose every event
// fails costs one transaction and a few statements per event. Only transient
// errors are returned as errors, with nothing reported as failed; the caller
// retries the whole call. A failed event's Index is its position in events;
// its Message is left for the caller.
func (a *Applier) ApplyIsolating(ctx context.Context, events []event.Event) (cdc.Counts, []cdc.FailedEvent, error) {
	idx := make([]int, len(events))
	for i := range idx {
		idx[i] = i
	}
	var failed []cdc.FailedEvent
	for len(idx) > 0 {
		batch := make([]event.Event, len(idx))
		for i, j := range idx {
			batch[i] = events[j]
		}
		res, err := a.Apply(ctx, batch)
		if err == nil {
			return res, failed, nil
		}
		var perm *PermanentError
		if !errors.As(err, &perm) {
			return cdc.Counts{}, nil, err
		}
		if at := position(batch, perm.ActionID); at >= 0 && !perm.fromDatabase() {
			failed = append(failed, failure(events, idx[at], perm))
			idx = append(idx[:at:at], idx[at+1:]...)
			continue
		}
		res, more, err := a.applyEach(ctx, events, idx)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		return res, append(failed, more...), nil
	}
	return cdc.Counts{}, failed, nil
}

// applyEach applies the events at idx, in order, in one transaction, each
// under a savepoint: an event that fails for a permanent reason is rolled
// back alone and reported, the others are committed together.
func (a *Applier) applyEach(ctx context.Context, events []event.Event, idx []int) (cdc.Counts, []cdc.FailedEvent, error) {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("begin apply transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var res cdc.Counts
	var failed []cdc.FailedEvent
	for _, i := range idx {
		one := events[i : i+1]
		r, err := a.applySavepoint(ctx, tx, one)
		var perm *PermanentError
		switch {
		case errors.As(err, &perm):
			failed = append(failed, failure(events, i, perm))
		case err != nil:
			return cdc.Counts{}, nil, err
		default:
			res = res.Add(r)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("commit batch: %w", classify(err))
	}
	return res, failed, nil
}

// applySavepoint applies events under a savepoint of tx, and rolls back to it
// when that fails.
func (a *Applier) applySavepoint(ctx context.Context, tx pgx.Tx, events []event.Event) (cdc.Counts, error) {
	plan, err := a.plan(ctx, events)
	if err != nil {
		return cdc.Counts{}, err
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return cdc.Counts{}, fmt.Errorf("savepoint: %w", classify(err))
	}
	res, err := a.write(ctx, sp, events, plan)
	if err != nil {
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return cdc.Counts{}, fmt.Errorf("roll back to savepoint: %w", classify(rbErr))
		}
		return cdc.Counts{}, err
	}
	// The staged rows of this event must not be applied again with the next.
	if _, err := sp.Exec(ctx, `DELETE FROM cdcflow_batch`); err != nil {
		return cdc.Counts{}, fmt.Errorf("clear staging: %w", classify(err))
	}
	if err := sp.Commit(ctx); err != nil {
		return cdc.Counts{}, fmt.Errorf("release savepoint: %w", classify(err))
	}
	return res, nil
}

func position(batch []event.Event, actionID int64) int {
	if actionID == 0 {
		return -1
	}
	for i, ev := range batch {
		if ev.ActionID == actionID {
			return i
		}
	}
	return -1
}

func failure(events []event.Event, i int, perm *PermanentError) cdc.FailedEvent {
	return cdc.FailedEvent{Index: i, Epoch: events[i].Epoch, ActionID: events[i].ActionID, Table: events[i].Table, ErrorClass: perm.ErrorClass, Error: perm.Msg}
}

// fromDatabase reports whether PostgreSQL raised the error (classify), as
// opposed to a check made before any SQL ran.
func (e *PermanentError) fromDatabase() bool { return e.Err != nil }
