package applier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// SnapshotStatementTimeout bounds the statements of one chunk's copy,
// below the chunk activity's 30 minutes.
const SnapshotStatementTimeout = 25 * time.Minute

// snapshotKey is the staging column of a copied row's key.
const snapshotKey = "cdcflow snapshot key"

// CopySnapshot writes rows a snapshot copies from the source to table, in
// one transaction: read writes them in COPY's text format, each row's key
// as JSON and then the columns it is given, which are the source's columns
// cols less those the destination generates. Every row takes the version
// (epoch, action): it replaces a row only if the row's stored version is
// older, so a change newer than the copy is never undone, and copying a
// chunk again writes nothing new. key is the source's primary key.
func (a *Applier) CopySnapshot(ctx context.Context, tbl string, key, cols []string, epoch, action int64,
	read func(cols []string, w io.Writer) error) (cdc.SnapshotCopied, error) {
	var res cdc.SnapshotCopied
	if !a.allowed[tbl] {
		return res, &PermanentError{ErrorClass: cdc.ClassTableNotAllowed, Msg: fmt.Sprintf("table %q is not on the allowlist (CDCFLOW_TABLES)", tbl)}
	}
	t, err := a.table(ctx, tbl, true)
	if err != nil {
		return res, err
	}
	if !slices.Equal(slices.Sorted(slices.Values(key)), t.sortedPK) {
		return res, &PermanentError{ErrorClass: cdc.ClassKeyMismatch, Msg: fmt.Sprintf("table %s: the source's primary key (%s) is not the destination's (%s)",
			tbl, strings.Join(key, ", "), strings.Join(t.sortedPK, ", "))}
	}
	var copied []string
	for _, c := range cols {
		switch {
		case c == snapshotKey:
			return res, &PermanentError{ErrorClass: cdc.ClassSchema, Msg: fmt.Sprintf("table %s has a column named %q, which the snapshot's staging uses", tbl, c)}
		case !t.columns[c]:
			return res, &PermanentError{ErrorClass: cdc.ClassUnknownColumn, Msg: fmt.Sprintf("table %s has no column %q", tbl, c)}
		case !t.generated[c]:
			copied = append(copied, c)
		}
	}

	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin snapshot transaction: %w", classify(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	quoted := make([]string, len(copied))
	for i, c := range copied {
		quoted[i] = quote(c)
	}
	// A chunk's copy lasts as long as the source takes to read it: the
	// statement timeout set for batches does not apply.
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL timezone = 'UTC'; SET LOCAL datestyle = 'ISO'; SET LOCAL intervalstyle = 'postgres';
		SET LOCAL statement_timeout = %d`, SnapshotStatementTimeout.Milliseconds())); err != nil {
		return res, fmt.Errorf("prepare the snapshot: %w", classify(err))
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE cdcflow_snapshot ON COMMIT DROP AS SELECT NULL::jsonb AS %s, %s FROM %s WITH NO DATA`,
		quote(snapshotKey), strings.Join(quoted, ", "), t.ident)); err != nil {
		return res, fmt.Errorf("stage the snapshot of %s: %w", tbl, classify(err))
	}

	pr, pw := io.Pipe()
	readErr := make(chan error, 1)
	go func() {
		err := read(copied, pw)
		pw.CloseWithError(err)
		readErr <- err
	}()
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, pr, `COPY cdcflow_snapshot FROM STDIN`)
	pr.CloseWithError(io.ErrClosedPipe) // a reader still writing stops
	if rerr := <-readErr; rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) {
		return res, rerr // the source failed first
	}
	if err != nil {
		return res, fmt.Errorf("stage the snapshot of %s: %w", tbl, classify(err))
	}
	res.Read = tag.RowsAffected()

	// Versions are taken in key order, as the apply takes them, so that a
	// snapshot and a batch wait for each other rather than deadlock.
	write := fmt.Sprintf(`WITH won AS (
	INSERT INTO cdcflow.row_versions AS v (table_name, key, epoch, action_id, deleted)
	SELECT $1, s.%[1]s, $2, $3, false FROM cdcflow_snapshot s ORDER BY s.%[1]s
	ON CONFLICT (table_name, key) DO UPDATE
		SET epoch = EXCLUDED.epoch, action_id = EXCLUDED.action_id, deleted = false, updated_at = now()
		WHERE (v.epoch, v.action_id) < (EXCLUDED.epoch, EXCLUDED.action_id)
	RETURNING v.key
)
%[2]s`, quote(snapshotKey), t.upsert(copied, "s", "cdcflow_snapshot s JOIN won ON won.key = s."+quote(snapshotKey), "true"))
	wtag, err := tx.Exec(ctx, write, tbl, epoch, action)
	if err != nil {
		return res, fmt.Errorf("write the snapshot of %s: %w", tbl, classify(err))
	}
	res.Written = wtag.RowsAffected()
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit the snapshot of %s: %w", tbl, classify(err))
	}
	return res, nil
}
