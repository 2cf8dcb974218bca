// Package snapshot reads the rows a source table holds, chunk by chunk, for
// the Snapshot workflow: the copy that log-based capture needs of the rows
// written before its slot existed.
//
// A chunk is a range of the table's pages, read by ctid (a TID range scan
// on PostgreSQL 14 and later), so that chunks can be read in parallel and
// read again after a crash without an ordering key. Every chunk is read at
// its own time, not in one snapshot: that is enough because the copy is
// versioned below every change the log carries (see the migration
// 00003_snapshots.sql). A row written after the slot's creation is
// corrected by its change from the log, whatever the copy read; a row not
// written since is read as it was.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// MaxChunks bounds the chunks of one table: a larger table gets larger
// chunks.
const MaxChunks = 10000

// CopyTimeout bounds the statements of one chunk's copy, on either side,
// below the chunk activity's 30 minutes; the destination pool's
// statement_timeout, set for batches, does not apply.
const CopyTimeout = 25 * time.Minute

// Plan cuts table (schema.table) into chunks of about pages pages of each
// of its leaf partitions (the table itself when not partitioned), values
// stored out of line (TOAST) counted, so that a chunk of wide rows is not
// larger than one of narrow rows. A table that does not exist has none.
// Before PostgreSQL 14, which cannot read a range of pages without reading
// the whole table, each leaf is one chunk.
func Plan(ctx context.Context, src *pgxpool.Pool, table string, pages int64) ([]cdc.SnapshotChunk, error) {
	if pages <= 0 {
		pages = cdc.DefaultSnapshotChunkPages
	}
	schema, rel, _ := strings.Cut(table, ".")
	rows, err := src.Query(ctx, `SELECT n.nspname, c.relname, c.oid::int8, $1::regclass::oid::int8, pg_relation_filenode(c.oid)::int8,
			pg_relation_size(c.oid) / current_setting('block_size')::int8, pg_table_size(c.oid) / current_setting('block_size')::int8,
			current_setting('server_version_num')::int >= 140000
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND (c.oid = $1::regclass OR c.oid IN (SELECT relid FROM pg_partition_tree($1::regclass) WHERE isleaf))
		ORDER BY n.nspname, c.relname`, pgx.Identifier{schema, rel}.Sanitize())
	type leaf struct {
		schema, name        string
		oid, root, filenode int64
		pages, withToast    int64
		ranges              bool
	}
	var leaves []leaf
	if err == nil {
		leaves, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (leaf, error) {
			var l leaf
			return l, r.Scan(&l.schema, &l.name, &l.oid, &l.root, &l.filenode, &l.pages, &l.withToast, &l.ranges)
		})
	}
	if errors.Is(gone(err), ErrGone) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", table, err)
	}
	var total int64
	for _, l := range leaves {
		total += l.withToast
	}
	if total/pages > MaxChunks {
		pages = total/MaxChunks + 1
	}
	var chunks []cdc.SnapshotChunk
	for _, l := range leaves {
		step := pages
		if l.pages > 0 && l.withToast > l.pages {
			step = max(1, pages*l.pages/l.withToast)
		}
		if !l.ranges {
			step = l.pages + 1
		}
		// The last chunk is open: it takes the pages the table grew by.
		for first := int64(0); ; first += step {
			c := cdc.SnapshotChunk{Schema: l.schema, Name: l.name, FirstPage: first,
				OID: uint32(l.oid), Root: uint32(l.root), Filenode: uint32(l.filenode)}
			if first+step < l.pages {
				c.EndPage = first + step
			}
			chunks = append(chunks, c)
			if c.EndPage == 0 {
				break
			}
		}
	}
	return chunks, nil
}

// Shape is what a copy needs of the source table: its columns (generated
// ones left out: the destination computes its own) and its primary key.
type Shape struct {
	Columns []string
	Key     []string
}

// Describe reads the shape of the root table of chunk (table) on the
// source, found by its OID.
func Describe(ctx context.Context, src *pgxpool.Pool, table string, chunk cdc.SnapshotChunk) (Shape, error) {
	rows, err := src.Query(ctx, `SELECT a.attname, coalesce(a.attnum = ANY(i.indkey), false)
		FROM pg_attribute a
		LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
		WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, int64(chunk.Root))
	if err != nil {
		return Shape{}, fmt.Errorf("read the columns of %s on the source: %w", table, gone(err))
	}
	var s Shape
	for rows.Next() {
		var col string
		var key bool
		if err := rows.Scan(&col, &key); err != nil {
			return Shape{}, fmt.Errorf("read the columns of %s on the source: %w", table, err)
		}
		s.Columns = append(s.Columns, col)
		if key {
			s.Key = append(s.Key, col)
		}
	}
	if err := rows.Err(); err != nil {
		return Shape{}, fmt.Errorf("read the columns of %s on the source: %w", table, gone(err))
	}
	if len(s.Columns) == 0 {
		return Shape{}, fmt.Errorf("read the columns of %s on the source: %w", table, ErrGone)
	}
	if len(s.Key) == 0 {
		return Shape{}, fmt.Errorf("source table %s has no primary key", table)
	}
	return s, nil
}

// ErrRewritten is the error of reading a chunk of a table rewritten since
// the chunks were cut (VACUUM FULL, CLUSTER, a rewriting ALTER TABLE): its
// rows moved to other pages, which other chunks may have read already, so
// the table must be cut again.
var ErrRewritten = errors.New("the source table was rewritten since its chunks were cut")

// Read writes the rows of chunk to w in COPY's text format: first each
// row's key as JSON, rendered as capture renders it, then the columns cols.
// Values are written in a fixed style (UTC, ISO dates, exact floats) that
// the destination reads back unchanged. The table is found by its OID, so
// a rename does not lose it, and locked against a rewrite while it is read.
func Read(ctx context.Context, src *pgxpool.Pool, chunk cdc.SnapshotChunk, key, cols []string, w io.Writer) error {
	conn, err := src.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", chunk, err)
	}
	defer conn.Release()
	return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL timezone = 'UTC'; SET LOCAL datestyle = 'ISO'; SET LOCAL intervalstyle = 'postgres';
			SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'; SET LOCAL statement_timeout = %d`, CopyTimeout.Milliseconds())); err != nil {
			return fmt.Errorf("read %s: %w", chunk, err)
		}
		var schema, name string
		err := tx.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = $1::int8::oid`, int64(chunk.OID)).Scan(&schema, &name)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read %s: %w", chunk, ErrGone)
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", chunk, err)
		}
		chunk.Schema, chunk.Name = schema, name
		if _, err := tx.Exec(ctx, `LOCK TABLE ONLY `+pgx.Identifier{schema, name}.Sanitize()+` IN ACCESS SHARE MODE`); err != nil {
			return fmt.Errorf("read %s: %w", chunk, err)
		}
		var filenode int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(pg_relation_filenode($1::int8::oid), 0)::int8`, int64(chunk.OID)).Scan(&filenode); err != nil {
			return fmt.Errorf("read %s: %w", chunk, err)
		}
		if uint32(filenode) != chunk.Filenode {
			return fmt.Errorf("read %s: %w", chunk, ErrRewritten)
		}
		if _, err := tx.Conn().PgConn().CopyTo(ctx, w, readSQL(chunk, key, cols)); err != nil {
			return fmt.Errorf("read %s: %w", chunk, err)
		}
		return nil
	})
}

func readSQL(chunk cdc.SnapshotChunk, key, cols []string) string {
	pairs := make([]string, len(key))
	for i, k := range key {
		pairs[i] = literal(k) + ", t." + pgx.Identifier{k}.Sanitize()
	}
	selected := []string{"jsonb_build_object(" + strings.Join(pairs, ", ") + ")::text"}
	for _, c := range cols {
		selected = append(selected, "t."+pgx.Identifier{c}.Sanitize())
	}
	where := fmt.Sprintf("t.ctid >= '(%d,0)'::tid", chunk.FirstPage)
	if chunk.EndPage > 0 {
		where += fmt.Sprintf(" AND t.ctid < '(%d,0)'::tid", chunk.EndPage)
	}
	return fmt.Sprintf("COPY (SELECT %s FROM ONLY %s t WHERE %s) TO STDOUT",
		strings.Join(selected, ", "), pgx.Identifier{chunk.Schema, chunk.Name}.Sanitize(), where)
}

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ErrGone is the error of reading a source table (or partition) that does
// not exist: dropped since it was captured, it has no rows to copy.
var ErrGone = errors.New("the source table does not exist")

func gone(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("%w: %w", ErrGone, err)
	}
	return err
}

// Pending reads the snapshots capture asked for that no worker finished.
func Pending(ctx context.Context, src *pgxpool.Pool) ([]cdc.SnapshotInput, error) {
	rows, err := src.Query(ctx, `SELECT table_name, source_id::text, epoch, action_id FROM cdcflow.snapshots
		WHERE done_at IS NULL ORDER BY requested_at, table_name`)
	var reqs []cdc.SnapshotInput
	if err == nil {
		reqs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (cdc.SnapshotInput, error) {
			var q cdc.SnapshotInput
			return q, r.Scan(&q.Table, &q.Source, &q.Epoch, &q.ActionID)
		})
	}
	if errors.Is(gone(err), ErrGone) {
		return nil, nil // capture has not set up the source yet
	}
	if err != nil {
		return nil, fmt.Errorf("read the snapshots asked for: %w", err)
	}
	return reqs, nil
}

// Done records that the snapshot of in finished, having read rows rows;
// a request replaced since (a newer epoch) stays.
func Done(ctx context.Context, src *pgxpool.Pool, in cdc.SnapshotInput, rows int64) error {
	_, err := src.Exec(ctx, `UPDATE cdcflow.snapshots SET done_at = now(), rows_copied = $4
		WHERE table_name = $1 AND source_id = $2::uuid AND epoch = $3 AND done_at IS NULL`, in.Table, in.Source, in.Epoch, rows)
	if err != nil {
		return fmt.Errorf("record the snapshot of %s as done: %w", in.Table, err)
	}
	return nil
}
