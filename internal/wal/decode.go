// Package wal reads the changes of the source's tables from its write-ahead
// log, through logical replication with the pgoutput plugin: a publication
// of the captured tables and a replication slot that keeps the log until
// cdcflow confirms it.
//
// The slot sends a transaction only once it has committed, whole and in
// commit order; PostgreSQL holds a large one on its own disk until then
// (logical_decoding_work_mem), so the reader needs no more memory for a
// transaction of a million rows than for one of a single row.
package wal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Tx is a committed transaction as the slot sends it.
type Tx struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN // of its commit record
	EndLSN     pglogrepl.LSN // just past it: what is confirmed once the transaction is published
	CommitTime time.Time
}

// Change is one row change of a transaction, with its row images written as
// the trigger capture writes them.
type Change struct {
	Table    string // schema.name; a partition's changes carry its root's name
	Op       event.Op
	Key      json.RawMessage // the primary key's columns
	Before   json.RawMessage // the old row, as far as the table's replica identity gives it
	After    json.RawMessage
	Position int // in its transaction, from 0
	// Unchanged names the columns left out of After: values stored out of
	// line (TOAST) that the update did not change and the log does not
	// carry. The apply must leave them as they are.
	Unchanged []string
}

// Handler receives what the decoder reads, in the log's order: Begin, the
// transaction's changes, Commit.
type Handler interface {
	Begin(ctx context.Context, tx Tx) error
	Change(ctx context.Context, tx Tx, c Change) error
	Commit(ctx context.Context, tx Tx) error
}

// Decoder turns pgoutput messages into transactions and changes.
type Decoder struct {
	pool      *pgxpool.Pool // reads primary keys and types
	allowed   func(table string) bool
	types     *types
	relations map[uint32]*relation
	tx        Tx
	inTx      bool
	position  int
}

// relation is a table as the last Relation message described it.
type relation struct {
	table   string
	skip    bool // not on the allowlist: its changes are not handed over
	columns []*pglogrepl.RelationMessageColumn
	infos   []*typeInfo
	key     []int // indexes of the primary key's columns in columns
}

// NewDecoder returns a decoder that reads types (and, for a table with
// replica identity FULL, its primary key) through pool, and hands over the
// changes of the tables allowed says yes to (nil: all).
func NewDecoder(pool *pgxpool.Pool, allowed func(table string) bool) *Decoder {
	if allowed == nil {
		allowed = func(string) bool { return true }
	}
	return &Decoder{pool: pool, allowed: allowed, types: newTypes(pool), relations: map[uint32]*relation{}}
}

// Decode handles one pgoutput message (the data of an XLogData).
func (d *Decoder) Decode(ctx context.Context, data []byte, h Handler) error {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		return d.relation(ctx, m)
	case *pglogrepl.BeginMessage:
		d.tx, d.inTx, d.position = Tx{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}, true, 0
		return h.Begin(ctx, d.tx)
	case *pglogrepl.CommitMessage:
		if !d.inTx {
			return fmt.Errorf("commit at %s outside a transaction", m.CommitLSN)
		}
		d.tx.EndLSN, d.inTx = m.TransactionEndLSN, false
		return h.Commit(ctx, d.tx)
	case *pglogrepl.InsertMessage:
		return d.change(ctx, h, m.RelationID, event.OpInsert, 0, nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		return d.change(ctx, h, m.RelationID, event.OpUpdate, m.OldTupleType, m.OldTuple, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return d.change(ctx, h, m.RelationID, event.OpDelete, m.OldTupleType, m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		if !d.inTx {
			return fmt.Errorf("a TRUNCATE outside a transaction")
		}
		for _, id := range m.RelationIDs {
			r := d.relations[id]
			if r == nil {
				return fmt.Errorf("a TRUNCATE of relation %d before its Relation message", id)
			}
			if r.skip {
				continue
			}
			if err := d.emit(ctx, h, Change{Table: r.table, Op: event.OpTruncate}); err != nil {
				return err
			}
		}
		return nil
	}
	return nil // types, origins, logical messages
}

// relation records a Relation message: sent before a table's first change
// and again after its schema changed. The key is the primary key: with
// replica identity DEFAULT the columns the message flags; with FULL (every
// column flagged) read from the catalog, which can only be today's.
// Tables off the allowlist are recorded as skipped, unresolved, so that
// nothing about them (a missing key, a dropped type) can stop the stream.
func (d *Decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	r := &relation{table: m.Namespace + "." + m.RelationName, columns: m.Columns}
	if !d.allowed(r.table) {
		r.skip = true
		d.relations[m.RelationID] = r
		return nil
	}
	for _, c := range m.Columns {
		r.infos = append(r.infos, d.types.info(ctx, c.DataType))
	}
	switch m.ReplicaIdentity {
	case 'd':
		for i, c := range m.Columns {
			if c.Flags&1 != 0 {
				r.key = append(r.key, i)
			}
		}
	case 'f':
		keys, err := d.primaryKey(ctx, m)
		if err != nil {
			return err
		}
		r.key = keys
	default:
		return fmt.Errorf("table %s has replica identity %q: cdcflow needs DEFAULT (its primary key) or FULL", r.table, m.ReplicaIdentity)
	}
	if len(r.key) == 0 {
		return fmt.Errorf("table %s has no primary key; cdcflow captures only tables with one", r.table)
	}
	d.relations[m.RelationID] = r
	return nil
}

// primaryKey reads the primary key of a table with replica identity FULL.
func (d *Decoder) primaryKey(ctx context.Context, m *pglogrepl.RelationMessage) ([]int, error) {
	table := m.Namespace + "." + m.RelationName
	rows, err := d.pool.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1::oid AND i.indisprimary`, int64(m.RelationID))
	if err != nil {
		return nil, fmt.Errorf("read the primary key of %s: %w", table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the primary key of %s: %w", table, err)
	}
	var key []int
	for _, name := range names {
		i := slices.IndexFunc(m.Columns, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("primary key column %s of %s is not in the log's description of the table", name, table)
		}
		key = append(key, i)
	}
	return key, nil
}

// change hands one row change to h: an update that changes the key goes as
// a delete of the old key and an insert of the new one, as in the trigger
// capture.
func (d *Decoder) change(ctx context.Context, h Handler, relID uint32, op event.Op, oldType uint8, old, new *pglogrepl.TupleData) error {
	if !d.inTx {
		return fmt.Errorf("a change of relation %d outside a transaction", relID)
	}
	r := d.relations[relID]
	if r == nil {
		return fmt.Errorf("a change of relation %d before its Relation message", relID)
	}
	if r.skip {
		return nil
	}
	var c Change
	c.Table = r.table
	var oldKey, newKey []byte
	var err error
	if old != nil {
		if oldKey, err = r.render(old, r.key, nil); err != nil {
			return fmt.Errorf("%s: old key: %w", r.table, err)
		}
		if oldType == 'O' { // replica identity FULL: the whole old row
			if c.Before, err = r.render(old, nil, nil); err != nil {
				return fmt.Errorf("%s: old row: %w", r.table, err)
			}
		} else {
			c.Before = oldKey
		}
	}
	if new != nil {
		if newKey, err = r.render(new, r.key, nil); err != nil {
			return fmt.Errorf("%s: key: %w", r.table, err)
		}
		var unchanged []string
		if c.After, err = r.render(new, nil, func(i int) bool {
			// The value the update kept is in a FULL old row, when there is one.
			if oldType == 'O' && i < len(old.Columns) && old.Columns[i].DataType == pglogrepl.TupleDataTypeText {
				new.Columns[i] = old.Columns[i]
				return true
			}
			unchanged = append(unchanged, r.columns[i].Name)
			return false
		}); err != nil {
			return fmt.Errorf("%s: row: %w", r.table, err)
		}
		c.Unchanged = unchanged
	}
	switch {
	case op == event.OpUpdate && oldKey != nil && !bytes.Equal(oldKey, newKey):
		del := Change{Table: c.Table, Op: event.OpDelete, Key: oldKey, Before: c.Before}
		if err := d.emit(ctx, h, del); err != nil {
			return err
		}
		c.Op, c.Key, c.Before = event.OpInsert, newKey, nil
	case new != nil:
		c.Op, c.Key = op, newKey
	default:
		c.Op, c.Key = op, oldKey
	}
	return d.emit(ctx, h, c)
}

func (d *Decoder) emit(ctx context.Context, h Handler, c Change) error {
	c.Position = d.position
	d.position++
	return h.Change(ctx, d.tx, c)
}

// render writes the columns of t (only those at the indexes in cols, or
// all) as a JSON object the way jsonb prints one: keys shortest first, then
// in byte order. A column whose value the log left out (unchanged TOAST) is
// offered to unchanged, which may fill it in and return true; otherwise it
// is left out of the object.
func (r *relation) render(t *pglogrepl.TupleData, cols []int, unchanged func(i int) bool) (json.RawMessage, error) {
	if len(t.Columns) != len(r.columns) {
		return nil, fmt.Errorf("a row of %d columns, the relation has %d", len(t.Columns), len(r.columns))
	}
	if cols == nil {
		cols = make([]int, len(r.columns))
		for i := range cols {
			cols[i] = i
		}
	}
	order := slices.Clone(cols)
	slices.SortFunc(order, func(a, b int) int {
		x, y := r.columns[a].Name, r.columns[b].Name
		if len(x) != len(y) {
			return len(x) - len(y)
		}
		return bytes.Compare([]byte(x), []byte(y))
	})
	out := []byte{'{'}
	first := true
	for _, i := range order {
		col := t.Columns[i]
		if col.DataType == pglogrepl.TupleDataTypeToast && (unchanged == nil || !unchanged(i)) {
			continue
		}
		col = t.Columns[i] // unchanged may have filled it in
		if !first {
			out = append(out, ", "...)
		}
		first = false
		out = appendString(out, []byte(r.columns[i].Name))
		out = append(out, ": "...)
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			out = append(out, "null"...)
		case pglogrepl.TupleDataTypeText:
			var err error
			if out, err = appendValue(out, r.infos[i], col.Data); err != nil {
				return nil, fmt.Errorf("column %s: %w", r.columns[i].Name, err)
			}
		default:
			return nil, fmt.Errorf("column %s: value of format %q", r.columns[i].Name, col.DataType)
		}
	}
	return append(out, '}'), nil
}
