package applier_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// TestPrune: idempotency records and tombstones past the horizon go; live
// rows' versions stay; tombstones written since a still-parked change first
// failed stay.
func TestPrune(t *testing.T) {
	d := newDest(t)
	ctx := context.Background()
	var next int64
	round := func(inserts, deletes []int, age time.Duration) {
		t.Helper()
		var evs []event.Event
		for _, k := range inserts {
			next++
			evs = append(evs, emp(next, event.OpInsert, k, "A", "Oslo", 1))
		}
		for _, k := range deletes {
			next++
			evs = append(evs, emp(next, event.OpDelete, k, "", "", 0))
		}
		d.apply(t, evs...)
		// Backdate what this round wrote.
		d.exec(t, `UPDATE cdcflow.processed_events SET applied_at = now() - interval '`+age.String()+`' WHERE applied_at > now() - interval '1 minute'`)
		d.exec(t, `UPDATE cdcflow.row_versions SET updated_at = now() - interval '`+age.String()+`' WHERE updated_at > now() - interval '1 minute'`)
	}
	keys := func(from, to int) []int {
		var out []int
		for k := from; k <= to; k++ {
			out = append(out, k)
		}
		return out
	}
	round(keys(1, 100), keys(1, 50), 3*time.Hour)         // old: 150 records, 50 tombstones
	round(keys(101, 150), keys(101, 120), 90*time.Minute) // past the horizon, but after the parked change failed
	d.exec(t, `INSERT INTO cdcflow.dead_letters (id, group_id, topic, kafka_partition, kafka_offset, error_class, error, attempts,
		first_failed_at, last_failed_at, batch_workflow_id, batch_run_id, message)
		VALUES ('dlq-x', 'g', 't', 0, 0, 'ConstraintViolation', 'e', 3, now() - interval '2 hours', now(), 'b', 'r', '')`)
	round(keys(200, 210), nil, 0) // recent

	report, err := d.apl.Prune(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.PruneReport{ProcessedEvents: 150 + 70, Tombstones: 50}, report); diff != "" {
		t.Fatalf("pruned (-want +got):\n%s", diff)
	}
	type left struct{ Records, LiveVersions, Tombstones int }
	got := left{
		Records:      d.count(t, `SELECT count(*) FROM cdcflow.processed_events`),
		LiveVersions: d.count(t, `SELECT count(*) FROM cdcflow.row_versions WHERE NOT deleted`),
		Tombstones:   d.count(t, `SELECT count(*) FROM cdcflow.row_versions WHERE deleted`),
	}
	if diff := cmp.Diff(left{Records: 11, LiveVersions: 50 + 30 + 11, Tombstones: 20}, got); diff != "" {
		t.Fatalf("left (-want +got):\n%s", diff)
	}

	// Once the parked change is decided, the younger tombstones go too.
	d.exec(t, `UPDATE cdcflow.dead_letters SET state = 'discarded'`)
	if report, err = d.apl.Prune(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(cdc.PruneReport{Tombstones: 20}, report); diff != "" {
		t.Fatalf("pruned after the decision (-want +got):\n%s", diff)
	}
}
