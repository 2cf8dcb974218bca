package applier

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// ApplyIsolating applies events like Apply, but when the batch fails for a
// permanent reason it finds the events at fault and applies all the others.
// Every event is first checked alone against the allowlist and the
// destination's catalog, so that all invalid ones are set aside in one pass;
// the rest is applied as one batch, and when that fails inside PostgreSQL,
// in one transaction in which every event is applied under a savepoint of
// its own, in one round trip unless it fails. Only transient errors are
// returned as errors, with nothing reported as failed; the caller retries
// the whole call. A failed event's Index is its position in events; its
// Message is left for the caller.
func (a *Applier) ApplyIsolating(ctx context.Context, events []event.Event) (cdc.Counts, []cdc.FailedEvent, error) {
	var failed []cdc.FailedEvent
	valid := make([]int, 0, len(events))
	for i := range events {
		_, err := a.plan(ctx, events[i:i+1])
		aside, err := a.setAside(events, i, err, &failed)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		if !aside {
			valid = append(valid, i)
		}
	}
	if len(valid) == 0 {
		return cdc.Counts{}, failed, nil
	}
	batch := make([]event.Event, len(valid))
	for i, j := range valid {
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
	res, more, err := a.applyEach(ctx, events, valid)
	if err != nil {
		return cdc.Counts{}, nil, err
	}
	return res, append(failed, more...), nil
}

// eachChunk is how many events applyEach applies in one transaction. Each
// takes a subtransaction (its savepoint); past 64 in one transaction
// PostgreSQL's visibility checks slow down, so a large batch goes in
// transactions of this many.
const eachChunk = 50

// applyEach applies the events at idx, in order, in transactions of
// eachChunk events, each under a savepoint: an event that fails for a
// permanent reason is rolled back alone and reported, the others are
// committed. The events of a transaction are staged at once; each is then
// moved to the staging table and applied by one pipelined batch of
// statements, so that isolating a batch costs a round trip per event (two
// for one that fails).
func (a *Applier) applyEach(ctx context.Context, events []event.Event, idx []int) (cdc.Counts, []cdc.FailedEvent, error) {
	var res cdc.Counts
	var failed []cdc.FailedEvent
	for chunk := range slices.Chunk(idx, eachChunk) {
		r, f, err := a.applyChunk(ctx, events, chunk)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		res, failed = res.Add(r), append(failed, f...)
	}
	return res, failed, nil
}

func (a *Applier) applyChunk(ctx context.Context, events []event.Event, idx []int) (cdc.Counts, []cdc.FailedEvent, error) {
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("acquire a connection: %w", err)
	}
	defer conn.Release()
	// Each event's statement is prepared on the connection before the
	// transaction begins: one PostgreSQL refuses to parse (a column or table
	// dropped since the catalog was read) fails that event alone, instead of
	// aborting the transaction of all. Prepared by name, the statements also
	// outlive a failed batch, which would drop them from pgx's cache.
	var failed []cdc.FailedEvent
	writes := make(map[int]string, len(idx))
	todo := make([]int, 0, len(idx))
	for _, q := range []string{`SAVEPOINT cdcflow_each`, `RELEASE SAVEPOINT cdcflow_each`} {
		if _, err := conn.Conn().Prepare(ctx, q, q); err != nil {
			return cdc.Counts{}, nil, fmt.Errorf("prepare: %w", err)
		}
	}
	for _, i := range idx {
		write, err := a.oneStatement(ctx, events[i])
		if err == nil {
			if _, err = conn.Conn().Prepare(ctx, write, write); err != nil {
				err = classify(err)
			}
		}
		aside, err := a.setAside(events, i, err, &failed)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		if !aside {
			writes[i] = write
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return cdc.Counts{}, failed, nil
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("begin apply transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	// Deferred constraints are checked at each event, inside its savepoint,
	// not at the commit of all.
	if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("set constraints: %w", classify(err))
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"cdcflow_each"},
		[]string{"idx", "epoch", "action_id", "tbl", "op", "key", "after", "committed"}, eachRows(events, todo)); err != nil {
		return cdc.Counts{}, nil, fmt.Errorf("stage batch: %w", classify(err))
	}
	var res cdc.Counts
	for _, i := range todo {
		r, err := applyOne(ctx, tx, writes[i], i)
		aside, err := a.setAside(events, i, err, &failed)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		if !aside {
			res = res.Add(r)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		err = classify(err)
		var perm *PermanentError
		if !errors.As(err, &perm) {
			return cdc.Counts{}, nil, fmt.Errorf("commit batch: %w", err)
		}
		// Refused at commit, past the savepoints (a constraint trigger
		// that SET CONSTRAINTS does not reach): each event alone, then.
		failed = failed[:len(failed)-countFrom(failed, todo)]
		return a.applySingly(ctx, events, todo, failed)
	}
	return res, failed, nil
}

// countFrom counts the failures of events at positions in idx.
func countFrom(failed []cdc.FailedEvent, idx []int) int {
	n := 0
	for _, f := range failed {
		if slices.Contains(idx, f.Index) {
			n++
		}
	}
	return n
}

// applySingly applies each event at idx in a transaction of its own,
// adding the ones that fail for a permanent reason to failed.
func (a *Applier) applySingly(ctx context.Context, events []event.Event, idx []int, failed []cdc.FailedEvent) (cdc.Counts, []cdc.FailedEvent, error) {
	var res cdc.Counts
	for _, i := range idx {
		r, err := a.Apply(ctx, events[i:i+1])
		aside, err := a.setAside(events, i, err, &failed)
		if err != nil {
			return cdc.Counts{}, nil, err
		}
		if !aside {
			res = res.Add(r)
		}
	}
	return res, failed, nil
}

// oneStatement is the statement that applies ev alone (see oneSQL).
func (a *Applier) oneStatement(ctx context.Context, ev event.Event) (string, error) {
	plan, err := a.plan(ctx, []event.Event{ev})
	if err != nil {
		return "", err
	}
	p := plan[0]
	if p.deletes {
		return oneSQL(p.info.deleteFrom("ev b JOIN won USING (epoch, action_id)", "true")), nil
	}
	return oneSQL(p.info.upsertFrom(p.upsertColumns[0], "ev b JOIN won USING (epoch, action_id)", "true")), nil
}

// forgetOn drops the cached description of table when PostgreSQL refused a
// change to it for a reason the catalog explains (a column or the table
// gone, a column now generated), so that the next change reads it again.
func (a *Applier) forgetOn(table string, perm *PermanentError) {
	switch perm.ErrorClass {
	case cdc.ClassUnknownColumn, cdc.ClassUndefinedTable, cdc.ClassSchema:
		if perm.fromDatabase() {
			a.mu.Lock()
			delete(a.tables, table)
			a.mu.Unlock()
		}
	}
}

// applyOne applies the staged event at position i with the prepared
// statement write, under a savepoint of tx, and rolls back to it when that
// fails: three statements sent at once.
func applyOne(ctx context.Context, tx pgx.Tx, write string, i int) (cdc.Counts, error) {
	batch := &pgx.Batch{}
	batch.Queue(`SAVEPOINT cdcflow_each`)
	batch.Queue(write, i)
	batch.Queue(`RELEASE SAVEPOINT cdcflow_each`)
	var fresh, won int
	err := func() error {
		br := tx.SendBatch(ctx, batch)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&fresh, &won); err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		// The transaction is aborted until then: nothing may be prepared.
		if _, rbErr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT cdcflow_each; RELEASE SAVEPOINT cdcflow_each`,
			pgx.QueryExecModeSimpleProtocol); rbErr != nil {
			return cdc.Counts{}, fmt.Errorf("roll back to savepoint: %w", classify(rbErr))
		}
		return cdc.Counts{}, classify(err)
	}
	return cdc.Counts{Duplicates: 1 - fresh, Applied: won, Superseded: fresh - won}, nil
}

// oneSQL applies the event staged in cdcflow_each at idx $1 in one
// statement: it records its action_id, takes the row's version if the event
// is newer, and then, through write (over the rows b of ev joined to won),
// writes the row.
func oneSQL(write string) string {
	return `WITH ev AS (
	SELECT * FROM cdcflow_each WHERE idx = $1
), fresh AS (
	INSERT INTO cdcflow.processed_events (epoch, action_id, source_committed_at)
	SELECT epoch, action_id, committed FROM ev
	ON CONFLICT DO NOTHING
	RETURNING epoch, action_id
), won AS (
	INSERT INTO cdcflow.row_versions AS v (table_name, key, epoch, action_id, deleted)
	SELECT ev.tbl, ev.key, ev.epoch, ev.action_id, ev.op = 'delete' FROM ev JOIN fresh USING (epoch, action_id)
	ON CONFLICT (table_name, key) DO UPDATE
		SET epoch = EXCLUDED.epoch, action_id = EXCLUDED.action_id, deleted = EXCLUDED.deleted, updated_at = now()
		WHERE (v.epoch, v.action_id) < (EXCLUDED.epoch, EXCLUDED.action_id)
	RETURNING v.epoch, v.action_id
), written AS (
` + write + `
)
SELECT (SELECT count(*) FROM fresh)::int, (SELECT count(*) FROM won)::int`
}

func eachRows(events []event.Event, idx []int) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(idx), func(k int) ([]any, error) {
		ev := events[idx[k]]
		var after any
		if ev.After != nil {
			after = string(ev.After)
		}
		return []any{idx[k], ev.Epoch, ev.ActionID, ev.Table, string(ev.Op), string(ev.Key), after, ev.CommitTime}, nil
	})
}

func failure(events []event.Event, i int, perm *PermanentError) cdc.FailedEvent {
	return cdc.FailedEvent{Index: i, Epoch: events[i].Epoch, ActionID: events[i].ActionID, Table: events[i].Table, ErrorClass: perm.ErrorClass, Error: perm.Msg}
}

// fromDatabase reports whether PostgreSQL raised the error (classify), as
// opposed to a check made before any SQL ran.
func (e *PermanentError) fromDatabase() bool { return e.Err != nil }

// setAside files the outcome err of the event at i: a permanent failure is
// added to failed (and the table's catalog is read again if it explains the
// failure), reported as set aside; any other error is returned.
func (a *Applier) setAside(events []event.Event, i int, err error, failed *[]cdc.FailedEvent) (bool, error) {
	var perm *PermanentError
	switch {
	case errors.As(err, &perm):
		a.forgetOn(events[i].Table, perm)
		*failed = append(*failed, failure(events, i, perm))
		return true, nil
	case err != nil:
		return false, err
	}
	return false, nil
}
