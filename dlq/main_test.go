package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cdcflow/cdcflow/internal/program"
)

// TestHelp: -h, before or after the command, prints the usage and the
// variables dlq reads, and is not an error (exit status 0).
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"replay", "-h"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out)
		if !errors.Is(err, program.ErrHelp) {
			t.Fatalf("dlq %s: %v, want help", strings.Join(args, " "), err)
		}
		for _, want := range []string{"dlq replay  [filters]", "-reason", "TEMPORAL_ADDRESS", "127.0.0.1:7233", "TEMPORAL_NAMESPACE"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("dlq %s prints no %q:\n%s", strings.Join(args, " "), want, out.String())
			}
		}
	}
}

// TestBadCommandLines: each mistake is one line naming it.
func TestBadCommandLines(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage: dlq list|replay|discard"},
		{[]string{"resume"}, "usage: dlq list|replay|discard"},
		{[]string{"list", "-tabel", "x"}, "flag provided but not defined: -tabel (dlq -h for the usage)"},
		{[]string{"list", "public.employees"}, `unexpected argument "public.employees"`},
		{[]string{"replay", "-since", "yesterday"}, `-since "yesterday": want an RFC 3339 time`},
		{[]string{"discard", "-class", "InvalidEvent"}, "discard needs -reason"},
		{[]string{"replay", "-wait", "0s"}, "-wait 0s: want a positive duration"},
	} {
		err := run(context.Background(), c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("dlq %s: %v, want one line with %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestUnreachableTemporal: with nothing at TEMPORAL_ADDRESS, dlq says so at
// once, naming the address and the variable.
func TestUnreachableTemporal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port nothing listens on
	t.Setenv("TEMPORAL_ADDRESS", addr)
	start := time.Now()
	err = run(context.Background(), []string{"list"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "connect to Temporal at "+addr+" (TEMPORAL_ADDRESS)") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("dlq list: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("dlq list took %v to fail", took)
	}
}

func TestListShowsWhatEachGroupIs(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	list(&out, []group{{id: "dlq-a", table: "public.employees", class: "ConstraintViolation", changes: 2,
		parkedAt: now.Add(-90 * time.Second), err: "new row violates check constraint \"salary_positive\"\nDETAIL: ..."}}, now)
	want := "GROUP  TABLE             CLASS                CHANGES  PARKED     FIRST ERROR\n" +
		"dlq-a  public.employees  ConstraintViolation  2        1m30s ago  new row violates check constraint \"salary_positive\"\n"
	if out.String() != want {
		t.Fatalf("list:\n%s\nwant:\n%s", out.String(), want)
	}
}
