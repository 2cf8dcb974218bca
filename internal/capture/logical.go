package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/wal"
)

// Logical publishes the changes a logical replication slot reads: capture
// from the write-ahead log, with no trigger and no outbox on the source.
//
// action_ids increase in commit order: the slot sends whole transactions
// in commit order, and Logical numbers their changes one after another. So
// that a change read again after a crash gets the action_id it had, the
// numbering is checkpointed on the source (capture_epoch.wal_through and
// wal_action_id) once Kafka acknowledged what it covers, always at the end
// of a transaction, and only then is the slot's position confirmed. A
// transaction the slot sends again that commits before the checkpoint is
// skipped; one after it is numbered from the checkpoint, as it was before.
// Changes are published while their transaction is still being read (the
// slot holds a large transaction on the source's disk, not here), so a crash
// may publish part of a transaction twice, under the same action_ids.
type Logical struct {
	c   *Capture
	wal wal.Config
	dsn string

	through   pglogrepl.LSN // the checkpoint: transactions that commit before it are published
	next      int64         // the action_id of the next change
	skip      bool          // the open transaction is published already
	allowed   map[string]bool
	txChanges int           // changes of the open transaction to publish
	pending   []event.Event // read, not yet published
	since     time.Time     // when the first of them was read
	bytes     int
	done      checkpoint // the end of the last transaction in pending or published
	saved     checkpoint // the checkpoint on the source
	confirmed atomic.Uint64
	inTx      bool      // between a transaction's Begin and Commit
	txCommit  time.Time // the open transaction's commit time
	// behind is when the oldest change read and not yet checkpointed was
	// committed (Unix nanoseconds), 0 when there is none: the slot's lag
	// in time.
	behind atomic.Int64
}

// checkpoint is where the numbering stands at the end of a transaction.
type checkpoint struct {
	end    pglogrepl.LSN
	action int64
}

// NewLogical returns a capture of the tables of cfg from the slot and
// publication of wc on the source at dsn (pool is on the same database);
// it sets up the publication and slot when it runs.
func NewLogical(pool *pgxpool.Pool, dsn string, pub Publisher, cfg Config, wc wal.Config, log *slog.Logger) *Logical {
	if cfg.MaxChangeBytes <= 0 {
		cfg.MaxChangeBytes = DefaultMaxChangeBytes
	}
	if cfg.ReadBytes <= 0 {
		cfg.ReadBytes = DefaultReadBytes
	}
	wc.Tables = cfg.Tables
	allowed := map[string]bool{}
	for _, t := range cfg.Tables {
		if norm, err := event.NormalizeTable(t); err == nil {
			allowed[norm] = true
		}
	}
	return &Logical{c: &Capture{cfg: cfg, pool: pool, pub: pub, log: log}, wal: wc, dsn: dsn, allowed: allowed}
}

// Run reads the slot and publishes until ctx is cancelled; a failure
// (source, Kafka) is retried with capped backoff, from the checkpoint.
// Every ReportEvery it logs its progress and the slot's health.
func (l *Logical) Run(ctx context.Context) error {
	go func() {
		t := time.NewTicker(l.c.cfg.ReportEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				l.report(ctx)
			}
		}
	}()
	backoff := 100 * time.Millisecond
	for {
		err := l.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if pe := (*publishError)(nil); !errors.As(err, &pe) {
			l.c.cfg.Health.Set(metrics.DepSource, err)
		}
		l.c.log.Warn("log-based capture failed, retrying", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// run sets up, establishes the epoch and reads the slot until it fails.
func (l *Logical) run(ctx context.Context) error {
	if err := l.forgetMissingSlot(ctx); err != nil {
		return err
	}
	// The slot first: from its creation on, every commit is in the log.
	slotAt, created, err := wal.Setup(ctx, l.c.pool, l.wal)
	if err != nil {
		return err
	}
	if err := l.leaveTriggers(ctx); err != nil {
		return err
	}
	if err := l.establish(ctx, slotAt, created); err != nil {
		return err
	}
	l.pending, l.bytes, l.skip, l.txChanges = nil, 0, false, 0
	l.done = l.saved
	l.next = l.saved.action + 1
	l.through = l.saved.end
	l.confirmed.Store(uint64(l.saved.end))
	l.c.cfg.Health.Set(metrics.DepSource, nil) // set up and established: the stream starts
	return wal.NewStream(l.dsn, l.wal, wal.NewDecoder(l.c.pool, func(table string) bool { return l.allowed[table] })).Run(ctx, l, l.Confirmed)
}

// forgetMissingSlot, when the slot is missing (dropped to resync, or never
// made), unties the checkpoint from any slot before Setup creates one: a
// run that dies between creating the slot and establishing the epoch
// leaves a checkpoint that belongs to no slot, so the next run still starts
// a new epoch and asks for snapshots, rather than take the new slot for
// the old one and skip what the old one had not read.
func (l *Logical) forgetMissingSlot(ctx context.Context) error {
	_, err := l.c.pool.Exec(ctx, `UPDATE cdcflow.capture_epoch SET wal_slot = ''
		WHERE wal_slot <> '' AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, l.wal.Slot)
	if err != nil {
		return fmt.Errorf("record that replication slot %s is missing: %w", l.wal.Slot, err)
	}
	return nil
}

// leaveTriggers switches the captured tables from trigger capture, once
// the slot exists, so that no commit escapes both: it drops the capture
// triggers (each drop waits for the transactions writing the table, whose
// outbox rows are then committed), then publishes what the outbox still
// holds as trigger capture would. A change committed between the slot's
// creation and the drop is in both and is published twice; the log's copy
// comes in a later epoch (see establish), so it orders after.
func (l *Logical) leaveTriggers(ctx context.Context) error {
	for _, t := range l.c.cfg.Tables {
		schema, rel, _ := strings.Cut(t, ".")
		if _, err := l.c.pool.Exec(ctx, `DROP TRIGGER IF EXISTS cdcflow_capture ON `+pgx.Identifier{schema, rel}.Sanitize()); err != nil {
			return fmt.Errorf("drop the capture trigger of %s: %w", t, err)
		}
	}
	var n int64
	if err := l.c.pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.outbox`).Scan(&n); err != nil {
		return fmt.Errorf("read the outbox: %w", err)
	}
	if n == 0 {
		return nil
	}
	l.c.log.Warn("publishing what trigger capture left in the outbox before reading the log", "changes", n)
	drain, err := newOutbox(ctx, l.c.pool, l.c.pub, l.c.cfg, l.c.log)
	if err != nil {
		return err
	}
	for {
		published, err := drain.Step(ctx)
		if err != nil {
			return fmt.Errorf("publish what trigger capture left in the outbox: %w", err)
		}
		if published == 0 {
			return nil
		}
	}
}

// establish finds the epoch and reads the checkpoint. The checkpoint holds
// only for the slot and the allowlist it was written with: a new slot,
// another slot, a checkpoint ahead of the source's log (the cdcflow schema
// came from another server) or another allowlist (a transaction read again
// would be numbered otherwise) start a new epoch, with the checkpoint at
// the slot's position, and numbering going on above every action_id given
// before.
func (l *Logical) establish(ctx context.Context, slotAt pglogrepl.LSN, created bool) error {
	tx, err := l.c.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("establish the capture epoch: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var (
		slot, tables, through, current string
		action, published              int64
	)
	err = tx.QueryRow(ctx, `SELECT wal_slot, wal_tables, wal_through::text, wal_action_id, published_through, pg_current_wal_lsn()::text
		FROM cdcflow.capture_epoch FOR UPDATE`).Scan(&slot, &tables, &through, &action, &published, &current)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read the log capture checkpoint: %w", err)
	}
	allowlist := slices.Sorted(maps.Keys(l.allowed))
	want := strings.Join(allowlist, ",")
	var at, now pglogrepl.LSN
	if found {
		if at, err = pglogrepl.ParseLSN(through); err == nil {
			now, err = pglogrepl.ParseLSN(current)
		}
		if err != nil {
			return fmt.Errorf("read the log capture checkpoint: %w", err)
		}
	}
	fresh, onlyNew := "", false
	switch {
	case created:
		fresh = fmt.Sprintf("replication slot %s created at %s: changes before it are not in the log capture reads", l.wal.Slot, slotAt)
	case !found:
	case slot == "":
		fresh = fmt.Sprintf("the checkpoint belongs to no slot: capture switched from the trigger to the log, or slot %s was made anew", l.wal.Slot)
	case slot != l.wal.Slot:
		fresh = fmt.Sprintf("capture reads slot %s, its checkpoint belongs to slot %s", l.wal.Slot, slot)
	case at > now:
		fresh = fmt.Sprintf("the log checkpoint %s is ahead of the source's log (%s): the cdcflow schema came from another server", at, now)
	case tables != want:
		fresh = fmt.Sprintf("the captured tables changed (%s, were %s)", want, tables)
		onlyNew = true
	}
	held := func(_ context.Context, _ pgx.Tx, k event.Event) (bool, error) {
		// The slot sends again what commits at or after its position.
		at, err := pglogrepl.ParseLSN(k.LSN)
		return err == nil && at >= slotAt, nil
	}
	epoch, reason, err := establishEpoch(ctx, tx, l.c.cfg.Newest, time.Now(), epochCheck{held: held, fresh: fresh})
	if err != nil {
		return err
	}
	l.saved = checkpoint{end: at, action: action}
	if reason != "" {
		// One action_id is kept for the snapshot's rows, below every
		// change of the epoch.
		l.saved = checkpoint{end: slotAt, action: max(action, published) + 1}
		_, err := tx.Exec(ctx, `UPDATE cdcflow.capture_epoch SET wal_slot = $1, wal_tables = $2, wal_through = $3::text::pg_lsn, wal_action_id = $4`,
			l.wal.Slot, want, slotAt.String(), l.saved.action)
		if err != nil {
			return fmt.Errorf("record the log capture checkpoint: %w", err)
		}
		// Only a change of the allowlist (onlyNew) leaves the log of the
		// other tables whole: they need no new snapshot.
		if err := l.requestSnapshots(ctx, tx, epoch, l.saved.action, allowlist, onlyNew && reason == fresh, reason); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("establish the capture epoch: %w", err)
	}
	l.c.epoch = epoch
	if reason != "" {
		l.c.log.Warn("capture starts a new epoch", "source", epoch.Source, "epoch", epoch.Epoch, "reason", reason)
	}
	return nil
}

// requestSnapshots asks for snapshots of the tables in the new epoch
// (cdcflow.snapshots, served by a worker's Snapshot workflows): of every
// table, or with onlyNew of the tables without a snapshot. Their rows take
// the version (epoch, action), kept free below the epoch's changes. Tables
// no longer captured lose their row, so that capturing them again copies
// them again.
func (l *Logical) requestSnapshots(ctx context.Context, tx pgx.Tx, epoch Epoch, action int64, tables []string, onlyNew bool, reason string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM cdcflow.snapshots WHERE NOT (table_name = ANY($1)) OR NOT $2`, tables, onlyNew); err != nil {
		return fmt.Errorf("record the snapshots to take: %w", err)
	}
	if l.c.cfg.NoSnapshot {
		return nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO cdcflow.snapshots (table_name, source_id, epoch, action_id, reason)
		SELECT t, $2::uuid, $3, $4, $5 FROM unnest($1::text[]) t ON CONFLICT (table_name) DO NOTHING`,
		tables, epoch.Source, epoch.Epoch, action, reason)
	if err != nil {
		return fmt.Errorf("record the snapshots to take: %w", err)
	}
	if tag.RowsAffected() > 0 {
		l.c.log.Info("snapshots of the tables' rows requested", "tables", tag.RowsAffected(), "epoch", epoch.Epoch, "reason", reason)
	}
	return nil
}

// Confirmed is how far the slot may be confirmed: the checkpoint, or past
// it the transactions with nothing to publish.
func (l *Logical) Confirmed() pglogrepl.LSN { return pglogrepl.LSN(l.confirmed.Load()) }

// Begin skips a transaction published before the checkpoint.
func (l *Logical) Begin(_ context.Context, tx wal.Tx) error {
	l.skip = tx.CommitLSN < l.through
	l.txChanges = 0
	l.inTx, l.txCommit = true, tx.CommitTime
	return nil
}

// Change numbers a change and publishes when enough is pending. (The
// decoder hands over only changes of tables on the allowlist.)
func (l *Logical) Change(ctx context.Context, tx wal.Tx, ch wal.Change) error {
	if l.skip {
		return nil
	}
	if len(l.pending) == 0 {
		l.since = time.Now()
	}
	l.txChanges++
	if l.behind.Load() == 0 {
		l.behind.Store(tx.CommitTime.UnixNano())
	}
	ev := event.Event{Source: l.c.epoch.Source, Epoch: l.c.epoch.Epoch, ActionID: l.next, Table: ch.Table, Op: ch.Op,
		Key: ch.Key, Before: ch.Before, After: ch.After, Unchanged: ch.Unchanged, CommitTime: tx.CommitTime,
		SchemaVersion: event.CurrentSchemaVersion, LSN: tx.CommitLSN.String(), Xid: tx.Xid}
	l.next++
	l.pending = append(l.pending, ev)
	l.bytes += len(ev.Before) + len(ev.After)
	if len(l.pending) >= l.c.cfg.BatchSize || l.bytes >= l.c.cfg.ReadBytes {
		return l.flush(ctx)
	}
	return nil
}

// Commit ends a transaction: the checkpoint may move past it once its
// changes are published. A transaction with nothing to publish (the
// checkpoint's own update, when a publication holds the cdcflow schema)
// writes no checkpoint; the slot may be confirmed past it at once when
// nothing before it waits to be published.
func (l *Logical) Commit(ctx context.Context, tx wal.Tx) error {
	l.inTx = false
	if l.skip {
		l.skip = false
		return nil
	}
	if l.txChanges == 0 {
		if len(l.pending) == 0 && l.done == l.saved && uint64(tx.EndLSN) > l.confirmed.Load() {
			l.confirmed.Store(uint64(tx.EndLSN))
		}
		return nil
	}
	l.done = checkpoint{end: tx.EndLSN, action: l.next - 1}
	if len(l.pending) >= l.c.cfg.BatchSize || (len(l.pending) > 0 && time.Since(l.since) >= MaxPublishDelay) {
		return l.flush(ctx)
	}
	return nil
}

// MaxPublishDelay bounds how long a change read waits to be published while
// the slot keeps sending (it is published at once when the slot goes quiet).
const MaxPublishDelay = 20 * time.Millisecond

// Idle publishes what is pending when the slot goes quiet.
func (l *Logical) Idle(ctx context.Context) error { return l.flush(ctx) }

// SlotLagWarning is how much of the source's log the slot may hold before
// each report warns.
const SlotLagWarning = 1 << 30

// SlotHealth is how far the slot is behind the source's log.
type SlotHealth struct {
	LagBytes  int64  // log written since the slot's confirmed position
	WALStatus string // reserved, extended, unreserved or lost
	Active    bool   // a capture is reading it
	// LagSeconds is how long ago the oldest change this capture read and
	// has not yet confirmed was committed (0 when it has none).
	LagSeconds float64
}

// Health reads the slot's health from the source.
func (l *Logical) Health(ctx context.Context) (SlotHealth, error) {
	var h SlotHealth
	err := l.c.pool.QueryRow(ctx, `SELECT coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::int8, coalesce(wal_status, ''), active
		FROM pg_replication_slots WHERE slot_name = $1`, l.wal.Slot).Scan(&h.LagBytes, &h.WALStatus, &h.Active)
	if err != nil {
		return h, fmt.Errorf("read replication slot %s: %w", l.wal.Slot, err)
	}
	if behind := l.behind.Load(); behind > 0 {
		h.LagSeconds = max(0, time.Since(time.Unix(0, behind)).Seconds())
	}
	return h, nil
}

func (l *Logical) report(ctx context.Context) {
	h, err := l.Health(ctx)
	if err != nil {
		l.c.log.Warn("read the slot's health", "error", err)
		return
	}
	l.c.cfg.Metrics.Slot(ctx, h.LagBytes, h.LagSeconds)
	args := []any{"published", atomic.LoadInt64(&l.c.published), "slot", l.wal.Slot, "slot_lag_bytes", h.LagBytes,
		"slot_lag_seconds", fmt.Sprintf("%.1f", h.LagSeconds), "wal_status", h.WALStatus}
	switch {
	case h.WALStatus == "lost":
		l.c.log.Error("the replication slot lost the log it needs: changes are lost; set capture up again (operations.md)", args...)
	case h.LagBytes > SlotLagWarning || h.WALStatus == "unreserved":
		l.c.log.Warn("the replication slot holds much of the source's log: capture is behind or stopped", args...)
	default:
		l.c.log.Info("capture progress", args...)
	}
}

// Published returns how many events this Logical published.
func (l *Logical) Published() int64 { return atomic.LoadInt64(&l.c.published) }

// flush publishes the pending changes, then records the checkpoint of the
// last complete transaction and lets the slot be confirmed up to it.
func (l *Logical) flush(ctx context.Context) error {
	if len(l.pending) > 0 {
		if err := l.fillUnchanged(ctx, l.pending); err != nil {
			return err
		}
		writes, ids, parked, err := l.c.prepare(ctx, l.pending)
		if err != nil {
			return err
		}
		for _, w := range writes {
			if err := l.c.publish(ctx, w); err != nil {
				return fmt.Errorf("publish %d messages of %d events from action_id %d: %w", len(w), len(ids), ids[0], err)
			}
		}
		if err := l.keepOversized(ctx, parked); err != nil {
			return err
		}
		atomic.AddInt64(&l.c.published, int64(len(ids)))
		l.c.parked += int64(len(parked.ids))
		l.c.count(ctx, l.pending)
		l.pending, l.bytes = l.pending[:0], 0
	}
	if l.done == l.saved {
		return nil
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.cfg.PublishGrace)
	defer cancel()
	_, err := l.c.pool.Exec(dctx, `UPDATE cdcflow.capture_epoch SET wal_through = $1::text::pg_lsn, wal_action_id = $2,
		published_through = greatest(published_through, $2)`, l.done.end.String(), l.done.action)
	if err != nil {
		return fmt.Errorf("record the log capture checkpoint %s: %w", l.done.end, err)
	}
	l.saved = l.done
	if uint64(l.done.end) > l.confirmed.Load() {
		l.confirmed.Store(uint64(l.done.end))
	}
	if l.inTx && l.txChanges > 0 {
		l.behind.Store(l.txCommit.UnixNano()) // published, checkpointed at its end
	} else {
		l.behind.Store(0)
	}
	return nil
}

// fillUnchanged completes the updates that leave out values stored out of
// line (TOAST) they did not change, which the log does not carry: it reads
// those columns of the rows from the source, once per table. So every event
// says its whole row, and the destination needs no earlier change to apply
// it, whatever order batches are applied in. The value read may be newer
// than the change (a later change set it), never older; the later change
// writes it again. A row deleted since keeps the columns named in
// Unchanged: the apply leaves them as they are, and the delete follows.
func (l *Logical) fillUnchanged(ctx context.Context, events []event.Event) error {
	byTable := map[string][]int{}
	for i, ev := range events {
		if len(ev.Unchanged) > 0 {
			byTable[ev.Table] = append(byTable[ev.Table], i)
		}
	}
	for table, idx := range byTable {
		keyCols, err := events[idx[0]].KeyColumns()
		if err != nil {
			return fmt.Errorf("key of action_id %d: %w", events[idx[0]].ActionID, err)
		}
		var cols []string
		keys := make([]string, len(idx))
		for n, i := range idx {
			keys[n] = string(events[i].Key)
			for _, c := range events[i].Unchanged {
				if !slices.Contains(cols, c) {
					cols = append(cols, c)
				}
			}
		}
		schema, rel, _ := strings.Cut(table, ".")
		ident := pgx.Identifier{schema, rel}.Sanitize()
		var match, fields []string
		for _, c := range keyCols {
			q := pgx.Identifier{c}.Sanitize()
			match = append(match, "t."+q+" = r."+q)
		}
		for _, c := range cols {
			fields = append(fields, "'"+strings.ReplaceAll(c, "'", "''")+"', to_jsonb(t."+pgx.Identifier{c}.Sanitize()+")")
		}
		query := `SELECT k.i::int, jsonb_build_object(` + strings.Join(fields, ", ") + `)::text
			FROM unnest($1::jsonb[]) WITH ORDINALITY AS k(key, i), LATERAL jsonb_populate_record(NULL::` + ident + `, k.key) r
			JOIN ` + ident + ` t ON ` + strings.Join(match, " AND ")
		values := map[int]map[string]json.RawMessage{}
		err = pgx.BeginFunc(ctx, l.c.pool, func(tx pgx.Tx) error {
			// Values print as the trigger capture's do.
			if _, err := tx.Exec(ctx, `SET LOCAL timezone = 'UTC'; SET LOCAL intervalstyle = 'postgres'; SET LOCAL extra_float_digits = 1`); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, query, keys)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var n int
				var obj string
				if err := rows.Scan(&n, &obj); err != nil {
					return err
				}
				var m map[string]json.RawMessage
				if err := json.Unmarshal([]byte(obj), &m); err != nil {
					return err
				}
				values[n-1] = m
			}
			return rows.Err()
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42703") {
			// The table or a column is gone (dropped or renamed since): its
			// rows are gone too, or will be by a change that follows.
			continue
		}
		if err != nil {
			return fmt.Errorf("read the unchanged out-of-line values of %d rows of %s: %w", len(idx), table, err)
		}
		for n, i := range idx {
			got, ok := values[n]
			if !ok {
				continue // deleted since
			}
			var after map[string]json.RawMessage
			if err := json.Unmarshal(events[i].After, &after); err != nil {
				return fmt.Errorf("row image of action_id %d: %w", events[i].ActionID, err)
			}
			var left []string
			for _, c := range events[i].Unchanged {
				if v, ok := got[c]; ok {
					after[c] = v
				} else {
					left = append(left, c)
				}
			}
			filled, err := json.Marshal(after)
			if err != nil {
				return fmt.Errorf("row image of action_id %d: %w", events[i].ActionID, err)
			}
			events[i].After, events[i].Unchanged = filled, left
		}
	}
	return nil
}

// keepOversized keeps on the source the changes too large to publish,
// whose marks Kafka acknowledged.
func (l *Logical) keepOversized(ctx context.Context, o oversized) error {
	if len(o.ids) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for i, ev := range o.originals {
		b.Queue(`INSERT INTO cdcflow.oversized_changes (action_id, table_name, op, key, before, after, changed_at, committed_at, size_bytes, limit_bytes)
			VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $7, $8, $9) ON CONFLICT (action_id) DO NOTHING`,
			ev.ActionID, ev.Table, string(ev.Op), string(ev.Key), nullable(ev.Before), nullable(ev.After), ev.CommitTime, o.sizes[i], l.c.cfg.MaxChangeBytes)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.cfg.PublishGrace)
	defer cancel()
	if err := l.c.pool.SendBatch(dctx, b).Close(); err != nil {
		return fmt.Errorf("keep %d changes too large in cdcflow.oversized_changes: %w", len(o.ids), err)
	}
	for _, ev := range o.events {
		l.c.log.Warn("change too large: published its mark, kept the change in cdcflow.oversized_changes", "action_id", ev.ActionID,
			"table", ev.Table, "op", ev.Op, "key", string(ev.Key), "bytes", ev.TooLarge.Bytes, "limit", ev.TooLarge.Limit)
	}
	return nil
}
