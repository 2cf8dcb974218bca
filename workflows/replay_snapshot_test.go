package workflows

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/migrations"
)

// TestRecordSnapshotHistory rewrites testdata/snapshot.json: a Snapshot of
// a source table in three chunks, copied by the real activities.
// CDCFLOW_RECORD_HISTORIES=1 go test ./workflows -run TestRecordSnapshotHistory.
func TestRecordSnapshotHistory(t *testing.T) {
	if os.Getenv("CDCFLOW_RECORD_HISTORIES") == "" {
		t.Skip("set CDCFLOW_RECORD_HISTORIES=1 to rewrite the recorded histories")
	}
	ctx := context.Background()
	c := testenv.Dial(t, testenv.TemporalServer(t))
	queue := fmt.Sprintf("record-%d", time.Now().UnixNano())
	_, apl := testenv.NewDestination(t, applier.DefaultTimeouts)
	source := testenv.Migrated(t, "source", migrations.SourceFS(), nil)
	if err := demo.CreateTable(ctx, source); err != nil {
		t.Fatal(err)
	}
	if _, err := source.Exec(ctx, `INSERT INTO employees (emp_id, first_name) SELECT g, repeat('x', 2000) FROM generate_series(1, 10) g;
		INSERT INTO cdcflow.snapshots (table_name, source_id, epoch, action_id, reason) VALUES ('public.employees', gen_random_uuid(), 5, 1, 'recorded')`); err != nil {
		t.Fatal(err)
	}
	var in cdc.SnapshotInput
	if err := source.QueryRow(ctx, `SELECT table_name, source_id::text, epoch, action_id FROM cdcflow.snapshots`).Scan(&in.Table, &in.Source, &in.Epoch, &in.ActionID); err != nil {
		t.Fatal(err)
	}
	in.ChunkPages, in.Parallel = 1, 2
	w := worker.New(c, queue, worker.Options{})
	Register(w)
	w.RegisterActivity(&activities.Snapshots{Source: source, Applier: apl})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	id := cdc.SnapshotWorkflowID(in.Table, in.Source, in.Epoch)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, cdc.WorkflowSnapshot, in)
	if err != nil {
		t.Fatal(err)
	}
	var p cdc.SnapshotProgress
	if err := run.Get(ctx, &p); err != nil || p.Rows != 10 || p.Chunks < 3 {
		t.Fatalf("snapshot: %+v, %v", p, err)
	}
	save(t, c, id, "snapshot.json")
}
