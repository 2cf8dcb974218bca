// Package applier writes batches of change events to the destination
// PostgreSQL: one transaction per batch, idempotent by action_id and guarded by
// per-row versions so that no change moves a row backwards.
//
// A batch costs a fixed number of statements whatever its size: the events are
// copied into a session temp table, one statement records the action_ids and
// picks, per row, the newest change that beats the row's stored version, and
// one DELETE and one upsert per table write the winners.
package applier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// Applier applies batches to the tables of its allowlist.
type Applier struct {
	pool    *pgxpool.Pool
	allowed map[string]bool

	mu     sync.Mutex
	tables map[string]*table // loaded lazily from the catalog
}

// stagingDDL creates the per-session table that holds the batch being applied.
// ON COMMIT DELETE ROWS empties it at the end of every transaction.
const stagingDDL = `CREATE TEMP TABLE IF NOT EXISTS cdcflow_batch (
	epoch     bigint  NOT NULL,
	action_id bigint  NOT NULL,
	tbl       text    NOT NULL,
	op        text    NOT NULL,
	key       jsonb   NOT NULL,
	after     jsonb,
	committed timestamptz,
	won       boolean NOT NULL DEFAULT false
) ON COMMIT DELETE ROWS`

// Timeouts bound how long one apply may wait on the destination. A batch
// that waits on a row lock or runs too long fails with a transient error
// (SQLSTATE 55P03 or 57014) and is retried, instead of holding its
// connection and its partition without end.
type Timeouts struct {
	Lock      time.Duration // lock_timeout; 0 leaves the server's setting
	Statement time.Duration // statement_timeout; 0 leaves the server's setting
}

// DefaultTimeouts are the worker's defaults.
var DefaultTimeouts = Timeouts{Lock: 10 * time.Second, Statement: time.Minute}

// eachDDL creates the per-session table that holds a batch whose events are
// applied one by one (see applyEach), numbered by idx.
const eachDDL = `CREATE TEMP TABLE IF NOT EXISTS cdcflow_each (
	idx       int     NOT NULL,
	epoch     bigint  NOT NULL,
	action_id bigint  NOT NULL,
	tbl       text    NOT NULL,
	op        text    NOT NULL,
	key       jsonb   NOT NULL,
	after     jsonb,
	committed timestamptz
) ON COMMIT DELETE ROWS`

// ConfigurePool prepares every connection of a pool for Apply, with the
// timeouts t. Pass it to db.Open for the pool given to New.
func (t Timeouts) ConfigurePool(cfg *pgxpool.Config) {
	params := cfg.ConnConfig.RuntimeParams
	if t.Lock > 0 {
		params["lock_timeout"] = strconv.FormatInt(t.Lock.Milliseconds(), 10)
	}
	if t.Statement > 0 {
		params["statement_timeout"] = strconv.FormatInt(t.Statement.Milliseconds(), 10)
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, stagingDDL); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, eachDDL)
		return err
	}
}

// New returns an Applier that writes only the given tables (schema-qualified
// or not). It checks that every table exists and has a primary key.
func New(ctx context.Context, pool *pgxpool.Pool, tables []string) (*Applier, error) {
	a := &Applier{pool: pool, allowed: map[string]bool{}, tables: map[string]*table{}}
	for _, name := range tables {
		norm, err := event.NormalizeTable(name)
		if err != nil {
			return nil, fmt.Errorf("table allowlist: %w", err)
		}
		a.allowed[norm] = true
		if _, err := a.table(ctx, norm, true); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Apply applies events in one transaction. It returns a *PermanentError when
// the batch cannot be applied as it is; any other error is transient and the
// whole batch may be retried.
func (a *Applier) Apply(ctx context.Context, events []event.Event) (cdc.Counts, error) {
	var dups int
	events, dups = dedupe(events)
	byTable, err := a.plan(ctx, events)
	if err != nil {
		return cdc.Counts{}, err
	}
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return cdc.Counts{}, fmt.Errorf("begin apply transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	res, err := a.write(ctx, tx, events, byTable)
	if err != nil {
		return cdc.Counts{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return cdc.Counts{}, fmt.Errorf("commit batch: %w", classify(err))
	}
	res.Duplicates += dups
	return res, nil
}

// write applies planned events (no repeated action_id) in tx: it stages
// them, records their action_ids and writes the winning changes.
func (a *Applier) write(ctx context.Context, tx pgx.Tx, events []event.Event, byTable []*tablePlan) (cdc.Counts, error) {
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"cdcflow_batch"},
		[]string{"epoch", "action_id", "tbl", "op", "key", "after", "committed"}, stagingRows(events)); err != nil {
		return cdc.Counts{}, fmt.Errorf("stage batch: %w", classify(err))
	}

	batch := &pgx.Batch{}
	batch.Queue(recordSQL)
	for _, t := range byTable {
		if t.deletes {
			batch.Queue(t.info.deleteSQL, t.info.name)
		}
		for _, cols := range t.upsertColumns {
			batch.Queue(t.info.upsertSQL(cols, len(t.upsertColumns) > 1), t.info.name)
		}
	}
	br := tx.SendBatch(ctx, batch)
	var fresh, won int
	if err := br.QueryRow().Scan(&fresh, &won); err != nil {
		br.Close()
		return cdc.Counts{}, fmt.Errorf("record action ids: %w", classify(err))
	}
	for range batch.Len() - 1 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return cdc.Counts{}, fmt.Errorf("write rows: %w", classify(err))
		}
	}
	if err := br.Close(); err != nil {
		return cdc.Counts{}, fmt.Errorf("write rows: %w", classify(err))
	}
	return cdc.Counts{Duplicates: len(events) - fresh, Applied: won, Superseded: fresh - won}, nil
}

// recordSQL records the staged action_ids, keeps the fresh ones, and for each
// row takes the newest fresh change if it is newer than the row's stored
// version; those winners are marked in the staging table. Winners are locked
// in key order so that concurrent batches wait rather than deadlock.
const recordSQL = `WITH fresh AS (
	INSERT INTO cdcflow.processed_events (epoch, action_id, source_committed_at)
	SELECT epoch, action_id, committed FROM cdcflow_batch ORDER BY epoch, action_id
	ON CONFLICT DO NOTHING
	RETURNING epoch, action_id
), latest AS (
	SELECT DISTINCT ON (b.tbl, b.key) b.epoch, b.action_id, b.tbl, b.key, b.op
	FROM cdcflow_batch b JOIN fresh USING (epoch, action_id)
	ORDER BY b.tbl, b.key, b.epoch DESC, b.action_id DESC
), won AS (
	INSERT INTO cdcflow.row_versions AS v (table_name, key, epoch, action_id, deleted)
	SELECT tbl, key, epoch, action_id, op = 'delete' FROM latest ORDER BY tbl, key
	ON CONFLICT (table_name, key) DO UPDATE
		SET epoch = EXCLUDED.epoch, action_id = EXCLUDED.action_id, deleted = EXCLUDED.deleted, updated_at = now()
		WHERE (v.epoch, v.action_id) < (EXCLUDED.epoch, EXCLUDED.action_id)
	RETURNING v.epoch, v.action_id
), mark AS (
	UPDATE cdcflow_batch b SET won = true FROM won WHERE (b.epoch, b.action_id) = (won.epoch, won.action_id)
)
SELECT (SELECT count(*) FROM fresh)::int, (SELECT count(*) FROM won)::int`

// tablePlan is what one batch writes to one table.
type tablePlan struct {
	info          *table
	deletes       bool
	upsertColumns [][]string // one upsert per distinct column set, sorted
}

// plan checks every event against the allowlist and the destination schema
// and groups the work by table, in a stable order.
func (a *Applier) plan(ctx context.Context, events []event.Event) ([]*tablePlan, error) {
	plans := map[string]*tablePlan{}
	colSets := map[string]map[string]bool{}
	for _, ev := range events {
		// Stand-ins carry no row image: the activity resolves a manifest
		// before it applies, and a change too large was never published.
		switch {
		case ev.TooLarge != nil:
			return nil, &PermanentError{ErrorClass: cdc.ClassChangeTooLarge, ActionID: ev.ActionID, Msg: TooLargeMessage(ev)}
		case ev.Op == event.OpTruncate:
			return nil, &PermanentError{ErrorClass: cdc.ClassTruncate, ActionID: ev.ActionID, Msg: TruncateMessage(ev)}
		case ev.Chunks != nil:
			return nil, &PermanentError{ErrorClass: cdc.ClassInvalidEvent, ActionID: ev.ActionID,
				Msg: "a manifest cannot be applied before its chunks are read"}
		}
		p := plans[ev.Table]
		if p == nil {
			if !a.allowed[ev.Table] {
				return nil, &PermanentError{ErrorClass: cdc.ClassTableNotAllowed, ActionID: ev.ActionID,
					Msg: fmt.Sprintf("table %q is not on the allowlist (CDCFLOW_TABLES)", ev.Table)}
			}
			info, err := a.table(ctx, ev.Table, false)
			if err != nil {
				return nil, err
			}
			p = &tablePlan{info: info}
			plans[ev.Table] = p
			colSets[ev.Table] = map[string]bool{}
		}
		if err := a.checkKey(ctx, p, ev); err != nil {
			return nil, err
		}
		if ev.Op == event.OpDelete {
			p.deletes = true
			continue
		}
		if err := ev.KeyDisagreement(); err != nil {
			return nil, &PermanentError{ErrorClass: cdc.ClassKeyMismatch, ActionID: ev.ActionID,
				Msg: fmt.Sprintf("table %s: key and row image name different rows: %v", ev.Table, err)}
		}
		cols, err := ev.AfterColumns()
		if err != nil {
			return nil, &PermanentError{ErrorClass: cdc.ClassInvalidEvent, ActionID: ev.ActionID, Msg: "after: " + err.Error()}
		}
		if err := a.checkColumns(ctx, p, ev.ActionID, cols); err != nil {
			return nil, err
		}
		cols = slices.Sorted(slices.Values(cols)) // a copy: the event's list stays as it was
		colSets[ev.Table][strings.Join(cols, "\x00")] = true
	}
	out := make([]*tablePlan, 0, len(plans))
	for name, p := range plans {
		for set := range colSets[name] {
			p.upsertColumns = append(p.upsertColumns, strings.Split(set, "\x00"))
		}
		slices.SortFunc(p.upsertColumns, func(x, y []string) int { return slices.Compare(x, y) })
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y *tablePlan) int { return strings.Compare(x.info.name, y.info.name) })
	return out, nil
}

// TooLargeMessage is the error of a change capture did not publish because
// a row image exceeded its limit: it says where the change is kept.
func TooLargeMessage(ev event.Event) string {
	return fmt.Sprintf("%s of %s %s: a row image of %d bytes exceeds capture's limit of %d bytes (CDCFLOW_MAX_CHANGE_BYTES); "+
		"the change was not published and is kept on the source in cdcflow.oversized_changes (action_id %d)",
		ev.Op, ev.Table, ev.Key, ev.TooLarge.Bytes, ev.TooLarge.Limit, ev.ActionID)
}

// TruncateMessage is the error of a TRUNCATE captured on the source: the
// apply does not empty a table on its own.
func TruncateMessage(ev event.Event) string {
	return fmt.Sprintf("the source truncated %s (commit LSN %s): cdcflow does not empty a destination table on its own; "+
		"the destination keeps the rows the source removed. Empty it or delete those rows, then discard this dead letter "+
		"(see operations.md, \"TRUNCATE\")", ev.Table, ev.LSN)
}

func (a *Applier) checkKey(ctx context.Context, p *tablePlan, ev event.Event) error {
	cols, err := ev.KeyColumns()
	if err != nil {
		return &PermanentError{ErrorClass: cdc.ClassInvalidEvent, ActionID: ev.ActionID, Msg: "key: " + err.Error()}
	}
	if err := a.checkColumns(ctx, p, ev.ActionID, cols); err != nil {
		return err
	}
	cols = slices.Sorted(slices.Values(cols))
	if !slices.Equal(cols, p.info.sortedPK) {
		return &PermanentError{ErrorClass: cdc.ClassKeyMismatch, ActionID: ev.ActionID,
			Msg: fmt.Sprintf("table %s: key columns (%s) are not the primary key (%s)",
				p.info.name, strings.Join(cols, ", "), strings.Join(p.info.sortedPK, ", "))}
	}
	return nil
}

// checkColumns fails for a column the destination table lacks. The catalog is
// read again once before failing, in case the column was added since.
func (a *Applier) checkColumns(ctx context.Context, p *tablePlan, actionID int64, cols []string) error {
	for _, c := range cols {
		if p.info.columns[c] {
			continue
		}
		info, err := a.table(ctx, p.info.name, true)
		if err != nil {
			return err
		}
		p.info = info
		if !info.columns[c] {
			return &PermanentError{ErrorClass: cdc.ClassUnknownColumn, ActionID: actionID,
				Msg: fmt.Sprintf("table %s has no column %q", info.name, c)}
		}
	}
	return nil
}

// dedupe drops repeated changes (epoch and action_id) within a batch,
// keeping the first.
func dedupe(events []event.Event) ([]event.Event, int) {
	type id struct{ epoch, action int64 }
	seen := make(map[id]struct{}, len(events))
	out := events[:0:0]
	for _, ev := range events {
		if _, dup := seen[id{ev.Epoch, ev.ActionID}]; dup {
			continue
		}
		seen[id{ev.Epoch, ev.ActionID}] = struct{}{}
		out = append(out, ev)
	}
	return out, len(events) - len(out)
}

func stagingRows(events []event.Event) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(events), func(i int) ([]any, error) {
		ev := events[i]
		var after any
		if ev.After != nil {
			after = string(ev.After)
		}
		return []any{ev.Epoch, ev.ActionID, ev.Table, string(ev.Op), string(ev.Key), after, ev.CommitTime}, nil
	})
}

// table describes one allowlisted destination table, as read from the catalog.
type table struct {
	name      string // schema.table, as in events
	ident     string // quoted, safe to splice into SQL
	columns   map[string]bool
	generated map[string]bool // computed by the destination: never written
	// identityAlways: the table has a GENERATED ALWAYS identity column, whose
	// source value is written with OVERRIDING SYSTEM VALUE; such a column
	// (always) cannot be updated, and keeps the value it was inserted with,
	// as on the source.
	identityAlways bool
	always         map[string]bool
	sortedPK       []string
	deleteSQL      string
	loadedAt       time.Time
}

// reloadAfter is how old a table's cached description must be before a
// change naming a column it lacks makes it read again: a storm of such
// changes reads the catalog about once a second, not once a change.
const reloadAfter = time.Second

// table returns the catalog description of name, reading it when it is not
// cached or reload is set.
func (a *Applier) table(ctx context.Context, name string, reload bool) (*table, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tables[name]; ok && (!reload || time.Since(t.loadedAt) < reloadAfter) {
		return t, nil
	}
	schema, rel, _ := strings.Cut(name, ".")
	rows, err := a.pool.Query(ctx, `
		SELECT a.attname, COALESCE(a.attnum = ANY(i.indkey), false), a.attgenerated <> '', a.attidentity = 'a'
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
		  AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, schema, rel)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	t := &table{name: name, ident: pgx.Identifier{schema, rel}.Sanitize(), columns: map[string]bool{}, generated: map[string]bool{},
		always: map[string]bool{}, loadedAt: time.Now()}
	for rows.Next() {
		var col string
		var inPK, generated, identityAlways bool
		if err := rows.Scan(&col, &inPK, &generated, &identityAlways); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", name, err)
		}
		t.columns[col] = true
		t.generated[col] = generated
		t.identityAlways = t.identityAlways || identityAlways
		t.always[col] = identityAlways
		if inPK {
			t.sortedPK = append(t.sortedPK, col)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	if len(t.columns) == 0 {
		return nil, &PermanentError{ErrorClass: cdc.ClassUndefinedTable, Msg: fmt.Sprintf("destination table %s does not exist", name)}
	}
	if len(t.sortedPK) == 0 {
		return nil, &PermanentError{ErrorClass: cdc.ClassSchema, Msg: fmt.Sprintf("destination table %s has no primary key", name)}
	}
	slices.Sort(t.sortedPK)
	t.deleteSQL = t.buildDeleteSQL()
	a.tables[name] = t
	return t, nil
}

func (t *table) buildDeleteSQL() string {
	return t.deleteFrom("cdcflow_batch b", "b.won AND b.op = 'delete' AND b.tbl = $1")
}

// deleteFrom deletes the rows whose keys the rows b of from name, where
// where holds.
func (t *table) deleteFrom(from, where string) string {
	var match []string
	for _, c := range t.sortedPK {
		q := quote(c)
		match = append(match, fmt.Sprintf("t.%s = k.%s", q, q))
	}
	return fmt.Sprintf(`DELETE FROM %s t
USING %s, LATERAL jsonb_populate_record(NULL::%s, b.key) k
WHERE %s AND %s`, t.ident, from, t.ident, where, strings.Join(match, " AND "))
}

// upsertSQL writes the winning inserts and updates of the batch for one set of
// columns. jsonb_populate_record converts each JSON value to its column's
// type, so a bad value fails here with SQLSTATE class 22.
// When a batch mixes row images with different column sets, each set gets its
// own upsert and filter selects the rows with exactly that set. Generated
// columns are computed by the destination and left out; an identity column
// that the destination generates ALWAYS takes the source's value, so that
// the row keeps its key.
func (t *table) upsertSQL(cols []string, filter bool) string {
	where := "b.won AND b.op <> 'delete' AND b.tbl = $1"
	if filter {
		where += fmt.Sprintf(` AND (SELECT array_agg(k ORDER BY k COLLATE "C") FROM jsonb_object_keys(b.after) k) = %s`, textArray(cols))
	}
	return t.upsertFrom(cols, "cdcflow_batch b", where)
}

// upsertFrom writes the row images of the rows b of from, where where holds,
// with the columns cols.
func (t *table) upsertFrom(cols []string, from, where string) string {
	return t.upsert(cols, "r", fmt.Sprintf("%s, LATERAL jsonb_populate_record(NULL::%s, b.after) r", from, t.ident), where)
}

// upsert inserts or updates the columns cols (generated ones left out) of
// the rows alias of from, where where holds. A GENERATED ALWAYS identity
// column is inserted with the source's value and never updated.
func (t *table) upsert(cols []string, alias, from, where string) string {
	var quoted, selected, set []string
	for _, c := range cols {
		if t.generated[c] {
			continue
		}
		q := quote(c)
		quoted = append(quoted, q)
		selected = append(selected, alias+"."+q)
		if !slices.Contains(t.sortedPK, c) && !t.always[c] {
			set = append(set, fmt.Sprintf("%s = EXCLUDED.%s", q, q))
		}
	}
	conflict := "DO NOTHING"
	if len(set) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(set, ", ")
	}
	pk := make([]string, len(t.sortedPK))
	for i, c := range t.sortedPK {
		pk[i] = quote(c)
	}
	overriding := ""
	if t.identityAlways {
		overriding = " OVERRIDING SYSTEM VALUE"
	}
	return fmt.Sprintf(`INSERT INTO %s (%s)%s
SELECT %s FROM %s
WHERE %s
ON CONFLICT (%s) %s`,
		t.ident, strings.Join(quoted, ", "), overriding, strings.Join(selected, ", "), from,
		where, strings.Join(pk, ", "), conflict)
}

func quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

// textArray renders names as a SQL text[] literal with every element quoted.
func textArray(names []string) string {
	lits := make([]string, len(names))
	for i, n := range names {
		lits[i] = "'" + strings.ReplaceAll(n, "'", "''") + "'"
	}
	return "ARRAY[" + strings.Join(lits, ", ") + "]::text[]"
}

// IsTransient reports whether err may pass on retry.
func IsTransient(err error) bool {
	var perm *PermanentError
	return err != nil && !errors.As(err, &perm)
}
