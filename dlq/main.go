// Command dlq replays or discards every parked change that matches a filter,
// for after the cause of a batch of failures was fixed. Parked changes are
// held in groups (the failures of one batch on one table with one error
// class, one DeadLetter workflow each); dlq decides every change still
// parked in each group that matches:
//
//	dlq list    [filters]
//	dlq replay  [filters]
//	dlq discard [filters] -reason "why"
//
// Filters: -table schema.table, -class ErrorClass, -since and -until (RFC 3339
// times the change was parked). Temporal is located by TEMPORAL_ADDRESS and
// TEMPORAL_NAMESPACE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func main() {
	program.Main("dlq", func(ctx context.Context, args []string) error { return run(ctx, args, os.Stdout) })
}

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

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay" && args[0] != "discard") {
		return errors.New("usage: dlq list|replay|discard [-table T] [-class C] [-since TIME] [-until TIME] [-reason R] (see docs/operations.md)")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	var f filter
	var since, until, reason string
	fs.StringVar(&f.table, "table", "", "only changes to this table (schema.table)")
	fs.StringVar(&f.class, "class", "", "only changes parked with this error class, e.g. ConstraintViolation")
	fs.StringVar(&since, "since", "", "only changes parked at or after this RFC 3339 time")
	fs.StringVar(&until, "until", "", "only changes parked at or before this RFC 3339 time")
	fs.StringVar(&reason, "reason", "", "why the changes are discarded (required for discard)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return program.ErrHelp
		}
		return err
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
	tcfg, err := config.LoadTemporal()
	if err != nil {
		return err
	}
	tc, err := temporalx.Dial(ctx, tcfg.Address, tcfg.Namespace, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer tc.Close()

	ids, err := parked(ctx, tc, f.Query())
	if err != nil {
		return err
	}
	for _, id := range ids {
		switch cmd {
		case "list":
			fmt.Fprintln(out, id)
			continue
		case "replay":
			err = tc.SignalWorkflow(ctx, id, "", cdc.SignalReplay, nil)
		case "discard":
			err = tc.SignalWorkflow(ctx, id, "", cdc.SignalDiscard, cdc.DiscardRequest{Reason: reason})
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", cmd, id, err)
		}
		fmt.Fprintf(out, "%s %s\n", cmd, id)
	}
	fmt.Fprintf(out, "%d dead letter groups matched\n", len(ids))
	return nil
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

// parked lists the IDs of the DeadLetter workflows (groups) that match query.
func parked(ctx context.Context, tc client.Client, query string) ([]string, error) {
	var ids []string
	var token []byte
	for {
		resp, err := tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list parked changes (%s): %w", query, err)
		}
		for _, ex := range resp.Executions {
			ids = append(ids, ex.Execution.WorkflowId)
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return ids, nil
		}
	}
}
