package poller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// change is what the Web UI is told of one change of a batch.
type change struct {
	table     string
	op        event.Op
	committed time.Time
	large     bool              // a manifest: its row image is read from its chunks
	trace     trace.SpanContext // the change's trace, when it is traced
}

// tableCount is the changes of a batch to one table, by operation.
type tableCount struct {
	table                                       string
	inserts, updates, deletes, truncates, total int
}

// description is how a batch's workflow explains itself in the Web UI: a
// summary line in the workflow list, details in Markdown on its page, and
// the tables it writes, for the CdcTables search attribute.
type description struct {
	summary, details string
	tables           []string
}

// summaryTables is how many tables the summary names before "and N more".
const summaryTables = 3

// describe explains the batch of partition of topic whose messages are at
// offsets: its changes, and poison undecodable messages.
func describe(topic string, partition int, offsets cdc.Offsets, changes []change, poison int) description {
	counts := map[string]*tableCount{}
	var first, last time.Time
	large := 0
	for _, c := range changes {
		tc := counts[c.table]
		if tc == nil {
			tc = &tableCount{table: c.table}
			counts[c.table] = tc
		}
		tc.total++
		switch c.op {
		case event.OpInsert:
			tc.inserts++
		case event.OpUpdate:
			tc.updates++
		case event.OpDelete:
			tc.deletes++
		case event.OpTruncate:
			tc.truncates++
		}
		if c.large {
			large++
		}
		if !c.committed.IsZero() && (first.IsZero() || c.committed.Before(first)) {
			first = c.committed
		}
		if c.committed.After(last) {
			last = c.committed
		}
	}
	byTable := make([]*tableCount, 0, len(counts))
	for _, tc := range counts {
		byTable = append(byTable, tc)
	}
	// The busiest tables first, then by name.
	slices.SortFunc(byTable, func(a, b *tableCount) int {
		return cmp.Or(cmp.Compare(b.total, a.total), strings.Compare(a.table, b.table))
	})
	var d description
	for _, tc := range byTable {
		d.tables = append(d.tables, tc.table)
	}
	slices.Sort(d.tables)
	ranges := offsets.String()

	var s strings.Builder
	fmt.Fprintf(&s, "%s", plural(len(changes), "change"))
	for i, tc := range byTable {
		switch {
		case i == 0:
			fmt.Fprintf(&s, " to %s", tc.table)
		case i == summaryTables:
			fmt.Fprintf(&s, " and %d more", len(byTable)-summaryTables)
		case i > summaryTables:
			continue
		default:
			fmt.Fprintf(&s, ", %s", tc.table)
		}
		if len(byTable) > 1 && i < summaryTables {
			fmt.Fprintf(&s, " (%d)", tc.total)
		}
	}
	if poison > 0 {
		fmt.Fprintf(&s, ", %s", plural(poison, "undecodable message"))
	}
	fmt.Fprintf(&s, " · partition %d · offsets %s", partition, shortRanges(offsets))
	d.summary = s.String()

	var b strings.Builder
	fmt.Fprintf(&b, "**%s** from partition %d of `%s`", plural(len(changes), "change"), partition, topic)
	if poison > 0 {
		fmt.Fprintf(&b, " and %s (parked at once)", plural(poison, "undecodable message"))
	}
	fmt.Fprintf(&b, ".\n\nOffsets: %s\n\n", ranges)
	if len(byTable) > 0 {
		b.WriteString("| table | inserts | updates | deletes | truncates |\n| --- | ---: | ---: | ---: | ---: |\n")
		for _, tc := range byTable {
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", tc.table, tc.inserts, tc.updates, tc.deletes, tc.truncates)
		}
		b.WriteString("\n")
	}
	if !first.IsZero() {
		fmt.Fprintf(&b, "Committed on the source from %s to %s.\n\n", first.UTC().Format(time.RFC3339Nano), last.UTC().Format(time.RFC3339Nano))
	}
	if large > 0 {
		fmt.Fprintf(&b, "%s read from their chunks on the topic when applied.\n\n", plural(large, "large change"))
	}
	b.WriteString("The input's events are the changes as published; the result counts what became of them. " +
		"A change that failed is parked as a dead letter: see the DeadLetter workflows this batch started.\n")
	d.details = b.String()
	return d
}

// shortRanges is the offsets' span, first-last.
func shortRanges(o cdc.Offsets) string {
	switch len(o) {
	case 0:
		return "none"
	case 1:
		return fmt.Sprint(o[0])
	}
	return fmt.Sprintf("%d-%d", o[0], o[len(o)-1])
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// searchable is the batch search attributes the server has, found once
// when the poller starts; an attribute it lacks is left off batches, so
// that a server without them still runs the pipeline.
type searchable struct {
	tables, partition, outcome bool
}

// batchSearchAttributes asks the server which of the batch search
// attributes it has, and logs the missing ones with how to add them.
func (p *Poller) batchSearchAttributes(ctx context.Context) searchable {
	resp, err := p.temporal.OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: p.cfg.Namespace})
	if err != nil {
		p.log.Warn("could not list the server's search attributes: batches are started without theirs", "error", err)
		return searchable{}
	}
	has := func(name string) bool {
		if _, ok := resp.GetCustomAttributes()[name]; ok {
			return true
		}
		p.log.Warn("search attribute missing: batches are started without it", "name", name,
			"add_it_with", fmt.Sprintf("temporal operator search-attribute create --name %s --type %s", name, cdc.SearchAttributes[name]))
		return false
	}
	return searchable{tables: has(cdc.SearchTables), partition: has(cdc.SearchPartition), outcome: has(cdc.SearchOutcome)}
}

var (
	searchTables    = temporal.NewSearchAttributeKeyKeywordList(cdc.SearchTables)
	searchPartition = temporal.NewSearchAttributeKeyInt64(cdc.SearchPartition)
)

// startOptions adds the batch's description to opts: its summary and
// details, and the search attributes the server has.
func (s *searchable) startOptions(opts *client.StartWorkflowOptions, in *cdc.BatchInput, d description) {
	opts.StaticSummary, opts.StaticDetails = clamp(d.summary, maxSummary), clamp(d.details, maxDetails)
	if s == nil {
		return
	}
	var updates []temporal.SearchAttributeUpdate
	if tables := fit(d.tables, maxTablesValue); s.tables && len(tables) > 0 {
		updates = append(updates, searchTables.ValueSet(tables))
	}
	if s.partition {
		updates = append(updates, searchPartition.ValueSet(int64(in.Partition)))
	}
	if len(updates) > 0 {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(updates...)
	}
	in.SetOutcome = s.outcome
}

// describeBatch explains the batch of partition made of entries.
func (p *Poller) describeBatch(partition int, batch []entry) description {
	offsets := make(cdc.Offsets, 0, len(batch))
	changes := make([]change, 0, len(batch))
	poison := 0
	for _, e := range batch {
		offsets = append(offsets, e.offset)
		switch {
		case e.chunk:
		case e.poison != nil:
			poison++
		default:
			changes = append(changes, e.change)
		}
	}
	return describe(p.cfg.Topic, partition, offsets, changes, poison)
}

// maxLinks bounds the changes a batch's span links to besides the one
// whose trace it continues.
const maxLinks = 128

// traceBatch starts the span of a batch's start in the trace of its first
// traced change, linking the others; Temporal's tracing interceptor
// carries it into the workflow. Without traced changes ctx is returned.
func traceBatch(ctx context.Context, id string, in cdc.BatchInput, batch []entry) (context.Context, func()) {
	var parent trace.SpanContext
	var links []trace.Link
	for _, e := range batch {
		switch sc := e.change.trace; {
		case !sc.IsValid():
		case !parent.IsValid():
			parent = sc
		case len(links) < maxLinks:
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if !parent.IsValid() {
		return ctx, func() {}
	}
	ctx, span := tracing.Tracer().Start(trace.ContextWithRemoteSpanContext(ctx, parent), "start batch",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("cdcflow.workflow_id", id), attribute.Int("cdcflow.partition", in.Partition),
			attribute.Int64("cdcflow.first_offset", in.FirstOffset), attribute.Int64("cdcflow.last_offset", in.LastOffset),
			attribute.Int("cdcflow.events", in.EventCount)))
	return ctx, func() { span.End() }
}

// Temporal's limits: user metadata of 400 bytes of summary and 20,000 of
// details, and 2 KB a search attribute value; cdcflow keeps below them.
const (
	maxSummary     = 300
	maxDetails     = 16000
	maxTablesValue = 1500
)

// clamp cuts s to at most n bytes, at a rune boundary, marking the cut.
func clamp(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-len("…")]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// fit is the tables whose names (JSON-quoted) fit n bytes together; a
// batch of more tables is found by the first ones only.
func fit(tables []string, n int) []string {
	size := 2
	for i, t := range tables {
		if size += len(t) + 3; size > n {
			return tables[:i]
		}
	}
	return tables
}
