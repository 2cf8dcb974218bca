package applier

import (
	"context"
	"errors"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// ApplyIsolating applies events like Apply, but when the batch fails for a
// permanent reason it finds the events at fault and applies all the others:
// an event named by a validation error is set aside at once, and a failure
// inside PostgreSQL is narrowed down by bisection, each half in its own
// transaction. Only transient errors are returned as errors, with nothing
// reported as failed; the caller retries the whole call. A failed event's
// Index is its position in events; its Message is left for the caller.
func (a *Applier) ApplyIsolating(ctx context.Context, events []event.Event) (cdc.Counts, []cdc.FailedEvent, error) {
	idx := make([]int, len(events))
	for i := range idx {
		idx[i] = i
	}
	var res cdc.Counts
	var failed []cdc.FailedEvent
	err := a.isolate(ctx, events, idx, &res, &failed)
	if err != nil {
		return cdc.Counts{}, nil, err
	}
	return res, failed, nil
}

func (a *Applier) isolate(ctx context.Context, events []event.Event, idx []int, res *cdc.Counts, failed *[]cdc.FailedEvent) error {
	for len(idx) > 0 {
		batch := make([]event.Event, len(idx))
		for i, j := range idx {
			batch[i] = events[j]
		}
		r, err := a.Apply(ctx, batch)
		if err == nil {
			*res = res.Add(r)
			return nil
		}
		var perm *PermanentError
		if !errors.As(err, &perm) {
			return err
		}
		// A validation error names its event: set it aside and go on.
		if at := position(batch, perm.ActionID); at >= 0 && !perm.fromDatabase() {
			*failed = append(*failed, failure(events, idx[at], perm))
			idx = append(idx[:at:at], idx[at+1:]...)
			continue
		}
		if len(idx) == 1 {
			*failed = append(*failed, failure(events, idx[0], perm))
			return nil
		}
		half := len(idx) / 2
		if err := a.isolate(ctx, events, idx[:half:half], res, failed); err != nil {
			return err
		}
		idx = idx[half:]
	}
	return nil
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
	return cdc.FailedEvent{Index: i, ActionID: events[i].ActionID, Table: events[i].Table, ErrorClass: perm.ErrorClass, Error: perm.Msg}
}

// fromDatabase reports whether PostgreSQL raised the error (classify), as
// opposed to a check made before any SQL ran.
func (e *PermanentError) fromDatabase() bool { return e.Err != nil }
