package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/demo"
)

const largeRows = `CREATE TABLE public.large_rows (id int PRIMARY KEY, kind text, t text, b bytea, j jsonb)`

// largeValue returns a value of about size bytes of a kind, as a parameter:
// random hex for text, random bytes for bytea, and for jsonb a JSON array of
// random strings, size bytes as PostgreSQL renders it.
func largeValue(kind string, size int) any {
	switch kind {
	case "text":
		return randomHex(size)
	case "bytea":
		b := make([]byte, size)
		_, _ = rand.Read(b)
		return b
	}
	if size < 64 {
		return "1"
	}
	var sb strings.Builder
	sb.WriteString(`[`)
	for sb.Len()+1024+3 < size-1 {
		if sb.Len() > 1 {
			sb.WriteString(`, `)
		}
		sb.WriteString(`"` + randomHex(1024) + `"`)
	}
	if sb.Len() > 1 {
		sb.WriteString(`, `)
	}
	sb.WriteString(`"` + randomHex(size-sb.Len()-3) + `"]`)
	return sb.String()
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// TestLargeRowsReplicateExactly: rows of text, bytea and jsonb of 1 byte, 1
// MiB, 4 MiB and about 8 MiB (the default limit, CDCFLOW_MAX_CHANGE_BYTES,
// is on each row image) are inserted and updated, the updates carrying both
// images (a bytea update of 8 MiB travels as 32 MiB of hex in 64 chunks),
// and arrive exactly; no batch's history grows with them. A row of 9 MiB is
// parked on the source and dead-lettered as ChangeTooLarge at once, while a
// later change to another table arrives, and its delete (whose too large
// before image is left out) replicates.
func TestLargeRowsReplicateExactly(t *testing.T) {
	for _, mode := range captureModes {
		t.Run("capture="+mode, func(t *testing.T) { largeRowsReplicateExactly(t, mode) })
	}
}

func largeRowsReplicateExactly(t *testing.T, mode string) {
	p := newPipeline(t)
	p.withSource()
	ctx := context.Background()
	if _, err := p.source.Exec(ctx, largeRows); err != nil {
		t.Fatal(err)
	}
	if _, err := p.dest.Exec(ctx, largeRows); err != nil {
		t.Fatal(err)
	}
	env := "CDCFLOW_TABLES=public.large_rows," + demo.Table
	p.start("worker", env)
	p.start("starter")
	p.startCapture(mode, "large_rows", env)

	const about8MiB = 8<<20 - 4<<10 // the value; the row image adds its other columns
	sizes := []int{1, 1 << 20, 4 << 20, about8MiB}
	kinds := []string{"text", "bytea", "jsonb"}
	column := map[string]string{"text": "t", "bytea": "b", "jsonb": "j"}
	insert := func(id int, kind string, size int) {
		t.Helper()
		sql := fmt.Sprintf(`INSERT INTO large_rows (id, kind, %s) VALUES ($1, $2, $3)`, column[kind])
		if _, err := p.source.Exec(ctx, sql, id, kind, largeValue(kind, size)); err != nil {
			t.Fatalf("insert %s of %d bytes: %v", kind, size, err)
		}
	}

	// One row of about 8 MiB alone, timed from its commit to its arrival.
	start := time.Now()
	insert(1, "text", about8MiB)
	eventually(t, 2*time.Minute, "the 8 MiB row on the destination", func() (bool, string) {
		var n int
		err := p.dest.QueryRow(ctx, `SELECT length(t) FROM large_rows WHERE id = 1`).Scan(&n)
		return err == nil && n == about8MiB, fmt.Sprint(n, err)
	})
	t.Logf("an insert of %d bytes of text replicated end to end in %s", about8MiB, time.Since(start).Round(time.Millisecond))

	type row struct {
		kind string
		size int
	}
	rows := map[int]row{}
	for _, kind := range kinds {
		for _, size := range sizes {
			id := 2 + len(rows)
			rows[id] = row{kind, size}
			insert(id, kind, size)
		}
	}
	// Updates carry the before and the after image.
	for id, r := range rows {
		sql := fmt.Sprintf(`UPDATE large_rows SET %s = $2 WHERE id = $1`, column[r.kind])
		if _, err := p.source.Exec(ctx, sql, id, largeValue(r.kind, r.size)); err != nil {
			t.Fatalf("update %s of %d bytes: %v", r.kind, r.size, err)
		}
	}
	p.waitSame("public.large_rows", "id", 5*time.Minute)

	// Beyond the limit: parked at capture; a later change to another table
	// arrives all the same.
	insert(100, "text", 9<<20)
	if _, err := p.source.Exec(ctx, `INSERT INTO employees VALUES (1, 'After', 'Large', '1990-01-02', 'Oslo', 1)`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the change after the oversized one on the destination", func() (bool, string) {
		n := p.count(`SELECT count(*) FROM employees WHERE first_name = 'After'`)
		return n == 1, fmt.Sprint(n)
	})
	var actionID, size, limit int64
	var keyText string
	eventually(t, time.Minute, "the oversized change kept on the source", func() (bool, string) {
		err := p.source.QueryRow(ctx, `SELECT action_id, key::text, size_bytes, limit_bytes FROM cdcflow.oversized_changes`).
			Scan(&actionID, &keyText, &size, &limit)
		return err == nil, fmt.Sprint(err)
	})
	if keyText != `{"id": 100}` || limit != 8<<20 || size <= limit || size > 9<<20+100 {
		t.Fatalf("kept key %s, size %d, limit %d", keyText, size, limit)
	}
	var epoch int64
	if err := p.source.QueryRow(ctx, `SELECT epoch FROM cdcflow.capture_epoch`).Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	dl := p.waitDeadLetter(cdc.DeadLetterID(epoch, actionID), cdc.StateParked)
	if dl.class != cdc.ClassChangeTooLarge {
		t.Fatalf("dead letter %+v, want class ChangeTooLarge", dl)
	}
	var attempts int
	var errText string
	if err := p.dest.QueryRow(ctx, `SELECT attempts, error FROM cdcflow.dead_letters WHERE action_id = $1`, actionID).
		Scan(&attempts, &errText); err != nil {
		t.Fatal(err)
	}
	wantErr := fmt.Sprintf(`insert of public.large_rows {"id":100}: a row image of %d bytes exceeds capture's limit of 8388608 bytes `+
		`(CDCFLOW_MAX_CHANGE_BYTES); the change was not published and is kept on the source in cdcflow.oversized_changes (action_id %d)`,
		size, actionID)
	if attempts != 1 || errText != wantErr {
		t.Fatalf("dead letter after %d attempts: %q, want after 1: %q", attempts, errText, wantErr)
	}
	desc, err := p.temporal.DescribeWorkflow(ctx, dl.group, "")
	if err != nil || desc.Status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("DeadLetter workflow: %v (%v), want running", desc, err)
	}
	if n := len(p.deadLetters()); n != 1 {
		t.Fatalf("%d dead letters, want only the oversized change", n)
	}

	// The row's delete carries a before image above the limit: it is left
	// out, and the delete replicates.
	if _, err := p.source.Exec(ctx, `DELETE FROM large_rows WHERE id = 100`); err != nil {
		t.Fatal(err)
	}
	p.waitSame("public.large_rows", "id", 2*time.Minute)
	var n int
	if err := p.dest.QueryRow(ctx, `SELECT count(*) FROM large_rows`).Scan(&n); err != nil || n != 1+len(rows) {
		t.Fatalf("%d rows on the destination (%v), want %d", n, err, 1+len(rows))
	}

	// The rows never went through Temporal: every batch's history is small.
	resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("TaskQueue = '%s' AND WorkflowType = '%s'", p.taskQueue, cdc.WorkflowApplyBatch)})
	if err != nil {
		t.Fatal(err)
	}
	var largest int64
	for _, ex := range resp.Executions {
		d, err := p.temporal.DescribeWorkflow(ctx, ex.Execution.WorkflowId, ex.Execution.RunId)
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, d.RawResponse.WorkflowExecutionInfo.HistorySizeBytes)
	}
	if largest == 0 || largest > 64<<10 {
		t.Fatalf("the largest history of %d batches has %d bytes, want some and at most 64 KiB", len(resp.Executions), largest)
	}
	t.Logf("%d batch workflows, the largest history %d bytes", len(resp.Executions), largest)
}
