package poller

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"go.temporal.io/sdk/client"
)

func TestDescribeABatch(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	var changes []change
	for i := range 5 {
		changes = append(changes, change{table: "public.employees", op: event.OpInsert, committed: at.Add(time.Duration(i) * time.Second)})
	}
	changes = append(changes,
		change{table: "public.payroll", op: event.OpUpdate, committed: at, large: true},
		change{table: "public.payroll", op: event.OpDelete, committed: at},
		change{table: "public.a", op: event.OpTruncate, committed: at},
		change{table: "public.b", op: event.OpDelete, committed: at},
		change{table: "public.c", op: event.OpDelete, committed: at})
	d := describe("cdcflow.changes", 3, cdc.Offsets{100, 101, 102, 103, 104, 105, 106, 107, 110, 111, 112}, changes, 1)

	wantSummary := "10 changes to public.employees (5), public.payroll (2), public.a (1) and 2 more, 1 undecodable message · partition 3 · offsets 100-112"
	if d.summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", d.summary, wantSummary)
	}
	if want := []string{"public.a", "public.b", "public.c", "public.employees", "public.payroll"}; !slices.Equal(d.tables, want) {
		t.Errorf("tables %v, want %v", d.tables, want)
	}
	for _, want := range []string{
		"**10 changes** from partition 3 of `cdcflow.changes` and 1 undecodable message (parked at once).",
		"Offsets: 100-107,110-112",
		"| public.employees | 5 | 0 | 0 | 0 |",
		"| public.payroll | 0 | 1 | 1 | 0 |",
		"| public.a | 0 | 0 | 0 | 1 |",
		"Committed on the source from 2026-11-26T10:00:00Z to 2026-11-26T10:00:04Z.",
		"1 large change read from their chunks",
	} {
		if !strings.Contains(d.details, want) {
			t.Errorf("details lack %q:\n%s", want, d.details)
		}
	}

	one := describe("t", 0, cdc.Offsets{7}, []change{{table: "public.employees", op: event.OpInsert}}, 0)
	if one.summary != "1 change to public.employees · partition 0 · offsets 7" {
		t.Errorf("summary of one change: %s", one.summary)
	}
	if strings.Contains(one.details, "Committed") {
		t.Errorf("details name commit times the change did not have:\n%s", one.details)
	}
	poison := describe("t", 1, cdc.Offsets{9}, nil, 1)
	if poison.summary != "0 changes, 1 undecodable message · partition 1 · offsets 9" || len(poison.tables) != 0 {
		t.Errorf("summary of a poison batch: %s, tables %v", poison.summary, poison.tables)
	}
}

// TestDescriptionsStayWithinTemporalsLimits: a batch of many tables with
// long names gets a summary, details and CdcTables within Temporal's limits.
func TestDescriptionsStayWithinTemporalsLimits(t *testing.T) {
	var changes []change
	for i := range 300 {
		changes = append(changes, change{table: fmt.Sprintf("public.%s_%03d", strings.Repeat("ü", 40), i), op: event.OpInsert})
	}
	offsets := make(cdc.Offsets, len(changes))
	for i := range offsets {
		offsets[i] = int64(i)
	}
	d := describe("t", 0, offsets, changes, 0)
	var opts client.StartWorkflowOptions
	var in cdc.BatchInput
	(&searchable{tables: true, partition: true, outcome: true}).startOptions(&opts, &in, d)
	if len(opts.StaticSummary) > maxSummary || !utf8.ValidString(opts.StaticSummary) || !strings.HasSuffix(opts.StaticSummary, "…") {
		t.Errorf("summary of %d bytes: %q", len(opts.StaticSummary), opts.StaticSummary)
	}
	if len(opts.StaticDetails) > maxDetails || !utf8.ValidString(opts.StaticDetails) {
		t.Errorf("details of %d bytes", len(opts.StaticDetails))
	}
	tables, ok := opts.TypedSearchAttributes.GetKeywordList(searchTables)
	if b, _ := json.Marshal(tables); !ok || len(b) > maxTablesValue || len(tables) == 0 || len(tables) == len(d.tables) {
		t.Errorf("CdcTables of %d bytes, %d of %d tables", len(b), len(tables), len(d.tables))
	}
}
