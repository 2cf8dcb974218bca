// Package deadletter keeps parked changes in the destination's
// cdcflow.dead_letters table: one row per parked change, keyed by its ID,
// naming the group (DeadLetter workflow) that holds it.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// Store is the dead_letters table of one destination database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns the store of the migrated database behind pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Recorded is what Record found of one record.
type Recorded struct {
	// Member: the row is still parked, in the record's group or in a group
	// of the same batch (recorded by an earlier run of it, whose group may
	// never have started), so that group's workflow must hold it. A change
	// parked by another batch, or decided already, is not.
	Member bool
	// Group is the group the row belongs to.
	Group string
	// Published: the row reached the DLQ topic already.
	Published bool
}

// Record inserts every record whose ID has no row yet, in one round trip,
// and reports for each what the table holds.
func (s *Store) Record(ctx context.Context, recs []cdc.DeadLetterRecord) ([]Recorded, error) {
	batch := &pgx.Batch{}
	ids := make([]string, len(recs))
	for i, rec := range recs {
		ids[i] = rec.ID
		msg := rec.Message
		if msg == nil {
			msg = []byte{} // an empty or null Kafka record: recorded as empty
		}
		batch.Queue(`INSERT INTO cdcflow.dead_letters (id, group_id, epoch, action_id, topic, kafka_partition, kafka_offset,
				table_name, error_class, error, attempts, first_failed_at, last_failed_at, batch_workflow_id, batch_run_id, message)
			VALUES ($1, $2, CASE WHEN $4 <> 0 THEN $3::bigint END, NULLIF($4, 0), $5, $6, $7, NULLIF($8, ''), $9, $10, $11, $12, $13, $14, $15, $16)
			ON CONFLICT (id) DO NOTHING`,
			rec.ID, rec.Group, rec.Epoch, rec.ActionID, rec.Topic, rec.Partition, rec.Offset, rec.Table, string(rec.ErrorClass),
			rec.Error, rec.Attempts, rec.FirstFailure, rec.LastFailure, rec.BatchWorkflowID, rec.BatchRunID, msg)
	}
	batch.Queue(`SELECT id, group_id, state, published_at, batch_workflow_id FROM cdcflow.dead_letters WHERE id = ANY($1)`, ids)
	br := s.pool.SendBatch(ctx, batch)
	defer br.Close()
	for range recs {
		if _, err := br.Exec(); err != nil {
			return nil, fmt.Errorf("record %d dead letters: %w", len(recs), err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read %d dead letters: %w", len(recs), err)
	}
	type row struct {
		group, state, batch string
		published           *time.Time
	}
	found := map[string]row{}
	var id string
	var r row
	if _, err := pgx.ForEachRow(rows, []any{&id, &r.group, &r.state, &r.published, &r.batch}, func() error {
		found[id] = r
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read %d dead letters: %w", len(recs), err)
	}
	out := make([]Recorded, len(recs))
	for i, rec := range recs {
		r, ok := found[rec.ID]
		if !ok {
			return nil, fmt.Errorf("dead letter %s: not recorded", rec.ID)
		}
		out[i] = Recorded{Member: r.state == string(cdc.StateParked) && (r.group == rec.Group || r.batch == rec.BatchWorkflowID),
			Group: r.group, Published: r.published != nil}
	}
	return out, nil
}

// MarkPublished records that the dead letters ids reached the DLQ topic.
func (s *Store) MarkPublished(ctx context.Context, ids []string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE cdcflow.dead_letters SET published_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("mark %d dead letters published: %w", len(ids), err)
	}
	return nil
}

// Messages returns the recorded message of each of ids.
func (s *Store) Messages(ctx context.Context, ids []string) (map[string][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, message FROM cdcflow.dead_letters WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("read %d dead letters: %w", len(ids), err)
	}
	out := make(map[string][]byte, len(ids))
	var id string
	var msg []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &msg}, func() error {
		out[id] = msg
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read %d dead letters: %w", len(ids), err)
	}
	return out, nil
}

// FailedAgain records replays that failed: each change's attempts grow by
// one and its error and last failure are the replay's, so that the row
// tells what the workflow's status does.
func (s *Store) FailedAgain(ctx context.Context, failed []cdc.ReplayResult) error {
	if len(failed) == 0 {
		return nil
	}
	ids, classes, errs := make([]string, len(failed)), make([]string, len(failed)), make([]string, len(failed))
	for i, f := range failed {
		ids[i], classes[i], errs[i] = f.ID, string(f.ErrorClass), f.Error
	}
	if _, err := s.pool.Exec(ctx, `UPDATE cdcflow.dead_letters d
		SET attempts = d.attempts + 1, error_class = f.class, error = f.error, last_failed_at = now()
		FROM unnest($1::text[], $2::text[], $3::text[]) AS f(id, class, error)
		WHERE d.id = f.id AND d.state = 'parked'`, ids, classes, errs); err != nil {
		return fmt.Errorf("record %d failed replays: %w", len(failed), err)
	}
	return nil
}

// Open counts the changes parked now.
func (s *Store) Open(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM cdcflow.dead_letters WHERE state = 'parked'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count parked changes: %w", err)
	}
	return n, nil
}

// ErrNotRecorded is a decision on a change the dead_letters table lacks (a
// row deleted by hand): trying again cannot help.
var ErrNotRecorded = errors.New("not in cdcflow.dead_letters")

// Settle records the decisions taken on parked changes, all or none: a
// change the table lacks fails it with ErrNotRecorded.
func (s *Store) Settle(ctx context.Context, settled []cdc.Settlement) error {
	var ids, states, outcomes []string
	seen := make(map[string]bool, len(settled))
	for _, st := range settled {
		if !seen[st.ID] {
			seen[st.ID] = true
			ids, states, outcomes = append(ids, st.ID), append(states, string(st.State)), append(outcomes, st.Outcome)
		}
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE cdcflow.dead_letters d SET state = s.state, outcome = s.outcome, decided_at = now()
			FROM unnest($1::text[], $2::text[], $3::text[]) AS s(id, state, outcome) WHERE d.id = s.id RETURNING d.id`, ids, states, outcomes)
		if err != nil {
			return fmt.Errorf("settle %d dead letters: %w", len(ids), err)
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("settle %d dead letters: %w", len(ids), err)
		}
		if len(found) != len(ids) {
			var missing []string
			for _, id := range ids {
				if !slices.Contains(found, id) {
					missing = append(missing, id)
				}
			}
			return fmt.Errorf("settle %d dead letters: %s %w; nothing was recorded: decide the others by ID",
				len(ids), strings.Join(missing, ", "), ErrNotRecorded)
		}
		return nil
	})
}
