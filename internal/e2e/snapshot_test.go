package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestSnapshotOfAMillionRows: a source table holds 1,000,000 rows when log
// capture starts. The worker copies them in chunks while 4 writers insert,
// update, delete and move rows of the same table; the worker is killed in
// the middle of the copy and started again. The destination ends equal to
// the source, and the copy resumed from its chunks rather than starting
// over.
func TestSnapshotOfAMillionRows(t *testing.T) {
	const rows = 1_000_000
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	p.exec(p.source, fmt.Sprintf(`INSERT INTO employees SELECT i, 'f' || i, 'l' || i, date '1970-01-01' + i %% 20000, 'c' || i %% 97, i %% 100000
		FROM generate_series(1, %d) i`, rows))
	var slot string
	if err := p.source.QueryRow(ctx, `SELECT current_database()`).Scan(&slot); err != nil {
		t.Fatal(err)
	}
	testenv.DropSlotAtCleanup(t, p.source, slot)
	p.start("capture", "CDCFLOW_CAPTURE_MODE=logical", "CDCFLOW_SLOT="+slot)
	p.waitSlot(slot)
	// About 8,000 pages: some 40 chunks.
	settings := []string{"CDCFLOW_SNAPSHOT_POLL=200ms", "CDCFLOW_SNAPSHOT_CHUNK_PAGES=200"}
	worker := p.start("worker", settings...)
	p.start("starter")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			// 100 transactions a second each, some 1,000 changes a second
			// in all: a load the pipeline keeps up with.
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				n, err := writeTx(ctx, p.source, rng, rows+rows/10)
				if err != nil {
					t.Error(err)
					return
				}
				written.Add(int64(n))
			}
		}()
	}
	writing := true
	stopWriting := func() {
		if writing {
			close(stop)
			wg.Wait()
			writing = false
		}
	}
	defer stopWriting()

	var req cdc.SnapshotInput
	eventually(t, time.Minute, "the snapshot to be asked for", func() (bool, string) {
		err := p.source.QueryRow(ctx, `SELECT table_name, source_id::text, epoch, action_id FROM cdcflow.snapshots`).
			Scan(&req.Table, &req.Source, &req.Epoch, &req.ActionID)
		return err == nil, fmt.Sprint(err)
	})
	id := cdc.SnapshotWorkflowID(req.Table, req.Source, req.Epoch)
	progress := func() cdc.SnapshotProgress {
		var pr cdc.SnapshotProgress
		if v, err := p.temporal.QueryWorkflow(ctx, id, "", "progress"); err == nil {
			_ = v.Get(&pr)
		}
		return pr
	}
	var killedAt cdc.SnapshotProgress
	eventually(t, 3*time.Minute, "a quarter of the snapshot to be copied", func() (bool, string) {
		killedAt = progress()
		return killedAt.Chunks > 0 && killedAt.Copied >= killedAt.Chunks/4, fmt.Sprintf("progress %+v", killedAt)
	})
	worker.Kill()
	if killedAt.Copied == killedAt.Chunks {
		t.Fatalf("the snapshot was done before the worker was killed: %+v", killedAt)
	}
	p.start("worker", settings...)

	var done cdc.SnapshotProgress
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := p.temporal.GetWorkflow(wctx, id, "").Get(wctx, &done); err != nil {
		t.Fatalf("snapshot workflow: %v; progress %+v", err, progress())
	}
	stopWriting()
	p.waitSame("public.employees", "emp_id", 3*time.Minute)

	var recorded *int64
	if err := p.source.QueryRow(ctx, `SELECT rows_copied FROM cdcflow.snapshots WHERE done_at IS NOT NULL`).Scan(&recorded); err != nil || recorded == nil {
		t.Fatalf("the snapshot is not recorded as done on the source: %v", err)
	}
	// Resumed, not started over: chunks copied before the kill were not
	// read again; at most those running then were.
	chunk := int64(rows) / int64(done.Chunks)
	if done.Copied != done.Chunks || done.Rows < rows/2 || done.Rows > rows+written.Load()+int64(cdc.DefaultSnapshotParallel+1)*2*chunk {
		t.Fatalf("snapshot %+v after the kill at %+v (%d rows written meanwhile): chunks copied again beyond those running", done, killedAt, written.Load())
	}
	t.Logf("snapshot %+v; killed at %d of %d chunks; %d changes written during it", done, killedAt.Copied, killedAt.Chunks, written.Load())
}
