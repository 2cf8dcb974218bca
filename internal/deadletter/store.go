// Package deadletter keeps parked changes in the destination's
// cdcflow.dead_letters table: one row per parked change, keyed by the ID of
// its DeadLetter workflow.
package deadletter

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// Store is the dead_letters table of one destination database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns the store of the migrated database behind pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Record inserts rec unless a row with its ID exists, and reports whether
// that row was published to the DLQ topic already.
func (s *Store) Record(ctx context.Context, rec cdc.DeadLetterRecord) (bool, error) {
	if rec.Message == nil {
		rec.Message = []byte{} // an empty or null Kafka record: recorded as empty
	}
	var published *time.Time
	err := s.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO cdcflow.dead_letters (id, action_id, topic, kafka_partition, kafka_offset, table_name,
				error_class, error, attempts, first_failed_at, last_failed_at, batch_workflow_id, batch_run_id, message)
			VALUES ($1, NULLIF($2, 0), $3, $4, $5, NULLIF($6, ''), $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (id) DO NOTHING
			RETURNING published_at)
		SELECT published_at FROM ins
		UNION ALL
		SELECT published_at FROM cdcflow.dead_letters WHERE id = $1
		LIMIT 1`,
		rec.ID, rec.ActionID, rec.Topic, rec.Partition, rec.Offset, rec.Table, string(rec.ErrorClass), rec.Error, rec.Attempts,
		rec.FirstFailure, rec.LastFailure, rec.BatchWorkflowID, rec.BatchRunID, rec.Message).Scan(&published)
	if err != nil {
		return false, fmt.Errorf("record dead letter %s: %w", rec.ID, err)
	}
	return published != nil, nil
}

// MarkPublished records that the dead letter id reached the DLQ topic.
func (s *Store) MarkPublished(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE cdcflow.dead_letters SET published_at = now() WHERE id = $1`, id); err != nil {
		return fmt.Errorf("mark dead letter %s published: %w", id, err)
	}
	return nil
}

// Settle records the decision taken on a parked change.
func (s *Store) Settle(ctx context.Context, st cdc.Settlement) error {
	tag, err := s.pool.Exec(ctx, `UPDATE cdcflow.dead_letters SET state = $2, outcome = $3, decided_at = now() WHERE id = $1`,
		st.ID, string(st.State), st.Outcome)
	if err != nil {
		return fmt.Errorf("settle dead letter %s: %w", st.ID, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("settle dead letter %s: no such dead letter", st.ID)
	}
	return nil
}
