# cdcflow — see README.md. `make run` and `make test` set up everything they
# need on a machine with Go and Debian's PostgreSQL 15.

SHELL     := /bin/bash
GO        ?= go
CACHE     := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cdcflow
TOOLS     := $(CACHE)/bin
TEMPORAL  := $(TOOLS)/temporal
STATICCHECK   := $(TOOLS)/staticcheck
WORKFLOWCHECK := $(TOOLS)/workflowcheck

TEMPORAL_CLI_VERSION  := v1.5.1
STATICCHECK_VERSION   := v0.8.2
WORKFLOWCHECK_VERSION := v0.6.0

export CDCFLOW_TEMPORAL_BIN := $(TEMPORAL)

.PHONY: all help build test lint fmt-check bench bench-workload bench-apply bench-e2e bench-storm bench-bookkeeping chaos fuzz run tools clean

all: build

## help: list the targets
help:
	@awk -F': ' '/^## / { sub(/^## /, ""); split($$0, t, ": "); printf "  %-12s %s\n", t[1], substr($$0, length(t[1]) + 3) }' $(MAKEFILE_LIST)

## tools: install the pinned Temporal CLI (dev server for tests and `make run`) into the cache
tools: $(TEMPORAL)

$(TEMPORAL):
	@mkdir -p $(TOOLS)
	@echo "installing temporal CLI $(TEMPORAL_CLI_VERSION) into $(TOOLS) (the first build takes a few minutes)"
	cd / && GOBIN=$(TOOLS) $(GO) install github.com/temporalio/cli/cmd/temporal@$(TEMPORAL_CLI_VERSION)

$(STATICCHECK):
	cd / && GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

$(WORKFLOWCHECK):
	cd / && GOBIN=$(TOOLS) $(GO) install go.temporal.io/sdk/contrib/tools/workflowcheck@$(WORKFLOWCHECK_VERSION)

## build: compile the programs into bin/
build:
	$(GO) build -o bin/ ./worker ./starter ./capture ./dlq ./codec ./devstack

## test: every test, with the race detector, against real PostgreSQL, Temporal and a Kafka-protocol broker
test: tools fmt-check
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## fmt-check: fail when a Go file is not gofmt-formatted
fmt-check:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; test -z "$$unformatted" || { echo "gofmt needed:"; echo "$$unformatted"; exit 1; }

## lint: gofmt, go vet, staticcheck and workflowcheck (workflow determinism)
lint: fmt-check $(STATICCHECK) $(WORKFLOWCHECK)
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(WORKFLOWCHECK) ./workflows/...

## bench-apply: events/s Kafka -> Temporal -> destination vs. the same SQL applied directly (100,000 events)
bench-apply: tools
	cd internal/e2e && $(GO) test -run '^$$' -bench BenchmarkApply -benchtime 1x -timeout 30m .

## bench: all benchmarks
bench: bench-workload bench-apply bench-e2e bench-storm bench-bookkeeping

## bench-workload: the compared workload (170,000 bulk changes, then 1,000 and 2,000 inserts/s, then a 1,000,000-row snapshot): writer's time, changes/s, p99, snapshot rows/s
bench-workload: tools
	cd internal/e2e && $(GO) test -run '^$$' -bench BenchmarkWorkload -benchtime 1x -timeout 60m .

## bench-e2e: source -> destination throughput, latency at full speed and at 2,000 changes/s, writers' time with and without capture; per capture mode (logical, trigger)
bench-e2e: tools
	cd internal/e2e && $(GO) test -run '^$$' -bench BenchmarkEndToEnd -benchtime 1x -timeout 60m .

## bench-storm: a dead-letter storm: every change of a busy table failing, parked in groups, then one bulk replay
bench-storm: tools
	cd internal/e2e && $(GO) test -run '^$$' -bench BenchmarkDeadLetterStorm -benchtime 1x -timeout 30m .

## bench-bookkeeping: 1,000,000 changes applied while the bookkeeping is pruned; fails if it grows past its bound
bench-bookkeeping: tools
	cd internal/e2e && $(GO) test -run '^$$' -bench BenchmarkBookkeeping -benchtime 1x -timeout 30m .

CHAOS_RUNS ?= 100
CHAOS_SEED ?= $(shell date +%s)

## chaos: the long fault campaign, CHAOS_RUNS runs (default 100) from CHAOS_SEED (default: the time); prints a line a run and a total
chaos: tools
	cd internal/e2e && set -o pipefail && CDCFLOW_CHAOS_RUNS=$(CHAOS_RUNS) CDCFLOW_CHAOS_SEED=$(CHAOS_SEED) $(GO) test -run '^TestChaos$$' -count=1 -timeout 0 -v . | grep --line-buffered -E '^(chaos:|runs |--- FAIL|FAIL|ok)'

## fuzz: fuzz the change-event decoder for a minute
# New inputs are not minimized (-fuzzminimizetime 0): minimizing each one
# stalls the count at "0/sec" for up to a minute, and a failing input is
# saved under testdata/fuzz as found, to be rerun with go test -run.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s -fuzzminimizetime 0 ./internal/event

## run: the whole pipeline on local embedded services, in the foreground until Ctrl-C
run: tools build
	./bin/devstack

## clean: remove the built programs
clean:
	rm -rf bin
