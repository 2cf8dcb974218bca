package applier

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// pruneChunk bounds the rows one prune statement deletes, so that pruning
// a large backlog is many short transactions, not one long one.
const pruneChunk = 10000

// Prune deletes the bookkeeping that no redelivery can need any more:
// idempotency records (processed_events) and tombstones of deleted rows
// (row_versions with deleted) older than horizon. Versions of live rows are
// never pruned: they guard the rows. While a change is parked, tombstones
// written since it first failed are kept, so that replaying it, however late,
// cannot bring a deleted row back.
//
// Rows a concurrent apply holds are skipped (the next prune takes them), so
// that pruning never deadlocks with applying.
//
// The horizon must exceed how long a change can be redelivered: the change
// topic's retention, and the time to recover a starter or reset a consumer
// group. A change redelivered after its records were pruned is applied
// again, and a stale insert of a row deleted before the horizon could bring
// that row back.
func Prune(ctx context.Context, pool *pgxpool.Pool, horizon time.Duration) (cdc.PruneReport, error) {
	var report cdc.PruneReport
	before := time.Now().Add(-horizon)
	for {
		tag, err := pool.Exec(ctx, `DELETE FROM cdcflow.processed_events p USING (
			SELECT epoch, action_id FROM cdcflow.processed_events WHERE applied_at < $1
			LIMIT $2 FOR UPDATE SKIP LOCKED) old
			WHERE p.epoch = old.epoch AND p.action_id = old.action_id`, before, pruneChunk)
		if err != nil {
			return report, fmt.Errorf("prune processed_events: %w", err)
		}
		report.ProcessedEvents += tag.RowsAffected()
		if tag.RowsAffected() < pruneChunk {
			break
		}
	}
	for {
		tag, err := pool.Exec(ctx, `DELETE FROM cdcflow.row_versions v USING (
			SELECT table_name, key FROM cdcflow.row_versions
			WHERE deleted AND updated_at < LEAST($1, (SELECT min(first_failed_at) FROM cdcflow.dead_letters WHERE state = 'parked'))
			LIMIT $2 FOR UPDATE SKIP LOCKED) old
			WHERE v.table_name = old.table_name AND v.key = old.key AND v.deleted`, before, pruneChunk)
		if err != nil {
			return report, fmt.Errorf("prune row_versions tombstones: %w", err)
		}
		report.Tombstones += tag.RowsAffected()
		if tag.RowsAffected() < pruneChunk {
			break
		}
	}
	return report, nil
}

// Prune prunes the bookkeeping of the applier's destination; see Prune.
func (a *Applier) Prune(ctx context.Context, horizon time.Duration) (cdc.PruneReport, error) {
	return Prune(ctx, a.pool, horizon)
}
