// Command dlq replays or discards every parked change that matches a filter,
// for after the cause of a batch of failures was fixed. Parked changes are
// held in groups (the failures of one batch on one table with one error
// class, one DeadLetter workflow each); dlq decides every change still
// parked in each group that matches, and says what came of it:
//
//	dlq list    [filters]
//	dlq replay  [filters] [-wait 2m]
//	dlq discard [filters] -reason "why"
//
// Filters: -table schema.table, -class ErrorClass, -since and -until (RFC 3339
// times the change was parked). Temporal is located by TEMPORAL_ADDRESS and
// TEMPORAL_NAMESPACE. The exit status is 1 when a replay left changes parked.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func main() {
	program.Main("dlq", func(ctx context.Context, args []string) error { return run(ctx, args, os.Stdout) })
}

const about = `dlq: lists, replays or discards the parked changes that match a filter

Usage:

  dlq list    [filters]
  dlq replay  [filters] [-wait DURATION]
  dlq discard [filters] -reason "why"

Filters:

  -table schema.table   only changes to this table
  -class ErrorClass     only changes parked with this error class, e.g. ConstraintViolation
  -since TIME           only changes parked at or after this RFC 3339 time
  -until TIME           only changes parked at or before this RFC 3339 time

replay and discard decide every change still parked in each matching group
and print what came of it; the exit status is 1 when a replay left changes
parked (their errors: temporal workflow query --workflow-id GROUP --type status).
See docs/operations.md, "Dead letters".

Environment variables:

`

type filter struct {
	table, class string
	since, until time.Time
}

// Query is the visibility query for groups of parked changes that match f.
func (f filter) Query() string {
	q := []string{fmt.Sprintf("WorkflowType = '%s'", cdc.WorkflowDeadLetter), fmt.Sprintf("%s = '%s'", cdc.SearchState, cdc.StateParked)}
	if f.table != "" {
		q = append(q, fmt.Sprintf("%s = '%s'", cdc.SearchTable, quote(f.table)))
	}
	if f.class != "" {
		q = append(q, fmt.Sprintf("%s = '%s'", cdc.SearchErrorClass, quote(f.class)))
	}
	if !f.since.IsZero() {
		q = append(q, fmt.Sprintf("StartTime >= '%s'", f.since.UTC().Format(time.RFC3339Nano)))
	}
	if !f.until.IsZero() {
		q = append(q, fmt.Sprintf("StartTime <= '%s'", f.until.UTC().Format(time.RFC3339Nano)))
	}
	return strings.Join(q, " AND ")
}

func quote(s string) string { return strings.ReplaceAll(s, "'", `\'`) }

// help prints what dlq does and the variables it reads.
func help(out io.Writer) error {
	fmt.Fprint(out, about)
	if err := program.Variables(out, &config.TemporalClient{}); err != nil {
		return err
	}
	return program.ErrHelp
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		return help(out)
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay" && args[0] != "discard") {
		return errors.New("usage: dlq list|replay|discard [-table T] [-class C] [-since TIME] [-until TIME] [-reason R] [-wait D] (dlq -h for more)")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f filter
	var since, until, reason string
	fs.StringVar(&f.table, "table", "", "")
	fs.StringVar(&f.class, "class", "", "")
	fs.StringVar(&since, "since", "", "")
	fs.StringVar(&until, "until", "", "")
	fs.StringVar(&reason, "reason", "", "")
	wait := fs.Duration("wait", 2*time.Minute, "")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return help(out)
		}
		return fmt.Errorf("%v (dlq -h for the usage)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (dlq -h for the usage)", fs.Arg(0))
	}
	var err error
	if f.since, err = parseTime("-since", since); err != nil {
		return err
	}
	if f.until, err = parseTime("-until", until); err != nil {
		return err
	}
	if cmd == "discard" && strings.TrimSpace(reason) == "" {
		return errors.New("discard needs -reason")
	}
	if *wait <= 0 {
		return fmt.Errorf("-wait %v: want a positive duration such as 2m", *wait)
	}
	tcfg, err := config.LoadTemporal()
	if err != nil {
		return err
	}
	tc, err := temporalx.Dial(ctx, tcfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer tc.Close()

	groups, err := parked(ctx, tc, f.Query())
	if err != nil {
		return err
	}
	if len(groups) == 0 {
		fmt.Fprintf(out, "no parked dead letter group matches (%s)\n", f.Query())
		return nil
	}
	if cmd == "list" {
		list(out, groups, time.Now())
		fmt.Fprintf(out, "%d dead letter groups matched\n", len(groups))
		return nil
	}
	name, payload := cdc.UpdateReplay, any(nil)
	if cmd == "discard" {
		name, payload = cdc.UpdateDiscard, cdc.DiscardRequest{Reason: reason}
	}
	failed := 0
	for _, g := range groups {
		line, ok := decide(ctx, tc, g.id, name, payload, *wait)
		fmt.Fprintf(out, "%s %s: %s\n", cmd, g.id, line)
		if !ok {
			failed++
		}
	}
	fmt.Fprintf(out, "%d dead letter groups matched\n", len(groups))
	if failed > 0 {
		return fmt.Errorf("%s left changes parked in %d of %d groups (see the lines above; "+
			"temporal workflow query --workflow-id GROUP --type status shows each change's error)", cmd, failed, len(groups))
	}
	return nil
}

// decide sends the update name to the group id and waits up to wait for
// what came of it: the line to print, and whether every change it named was
// decided.
func decide(ctx context.Context, tc client.Client, id, name string, payload any, wait time.Duration) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var args []any
	if payload != nil {
		args = []any{payload}
	}
	h, err := tc.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: id, UpdateName: name, Args: args,
		WaitForStage: client.WorkflowUpdateStageCompleted})
	var res cdc.DecisionResult
	if err == nil {
		err = h.Get(ctx, &res)
	}
	var timeout *client.WorkflowUpdateServiceTimeoutOrCanceledError
	var notFound *serviceerror.NotFound
	switch {
	case ctx.Err() != nil || errors.As(err, &timeout):
		return fmt.Sprintf("no answer within %v; the decision may still be under way (the worker down, or the destination): "+
			"query the group's status before deciding again", wait), false
	case errors.As(err, &notFound) || (err != nil && (strings.Contains(err.Error(), "already completed") ||
		strings.Contains(err.Error(), " already"))):
		// Listed as parked a moment ago: another person or dlq decided it since.
		return "decided already, elsewhere (" + err.Error() + ")", true
	case err != nil:
		return "refused: " + err.Error(), false
	case len(res.StillParked) > 0:
		line := cmp.Or(res.Outcome, "failed again") + "; still parked: " + strings.Join(res.StillParked, ", ")
		if res.Error != "" {
			line += ": " + res.Error
		}
		return line, false
	case res.Error != "":
		return "failed: " + res.Error, false
	}
	return res.Outcome, true
}

func parseTime(flagName, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return t, fmt.Errorf("%s %q: want an RFC 3339 time such as 2026-11-25T10:00:00Z", flagName, v)
	}
	return t, nil
}

// group is one DeadLetter workflow as the list shows it.
type group struct {
	id, table, class, err string
	changes               int
	parkedAt              time.Time
}

// parked lists the DeadLetter workflows (groups) that match query.
func parked(ctx context.Context, tc client.Client, query string) ([]group, error) {
	var out []group
	var token []byte
	for {
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list parked changes (%s): %w", query, err)
		}
		for _, ex := range resp.Executions {
			g := group{id: ex.Execution.WorkflowId, parkedAt: ex.StartTime.AsTime()}
			attrs := ex.GetSearchAttributes().GetIndexedFields()
			decode(attrs[cdc.SearchTable], &g.table)
			decode(attrs[cdc.SearchErrorClass], &g.class)
			memo := ex.GetMemo().GetFields()
			decode(memo["changes"], &g.changes)
			decode(memo["error"], &g.err)
			out = append(out, g)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return out, nil
		}
	}
}

// decode reads a search attribute or memo value; one missing or of another
// shape leaves v as it was.
func decode(p *commonpb.Payload, v any) {
	if p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, v)
	}
}

// list prints a line per group: what a person needs to pick one.
func list(out io.Writer, groups []group, now time.Time) {
	if len(groups) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTABLE\tCLASS\tCHANGES\tPARKED\tFIRST ERROR")
	for _, g := range groups {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s ago\t%s\n", g.id, g.table, g.class, g.changes,
			now.Sub(g.parkedAt).Round(time.Second), firstLine(g.err, 100))
	}
	tw.Flush()
}

// firstLine is the first line of s, cut to n runes.
func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
