// Command devstack runs the whole cdcflow pipeline on local embedded services,
// for `make run`: PostgreSQL clusters from the installed binaries, the Temporal
// dev server with its Web UI, and an in-process Kafka-protocol broker, then
// the cdcflow programs against them, replicating the demo table employees. It
// stays in the foreground; Ctrl-C stops everything. Set CDCFLOW_SOURCE_DSN,
// CDCFLOW_DEST_DSN, KAFKA_BROKERS or TEMPORAL_ADDRESS to use running services
// instead.
package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/program"
)

func main() {
	program.Main("devstack", func(ctx context.Context, args []string) error { return run(ctx, args, os.Stdout) })
}

// settings of devstack itself; the programs it starts read their own.
type settings struct {
	SourceDSN  string `envconfig:"CDCFLOW_SOURCE_DSN" desc:"source PostgreSQL; empty starts a throwaway cluster"`
	DestDSN    string `envconfig:"CDCFLOW_DEST_DSN" desc:"destination PostgreSQL; empty starts a throwaway cluster"`
	Brokers    string `envconfig:"KAFKA_BROKERS" desc:"Kafka brokers; empty starts an in-process broker on 127.0.0.1:9092 (or a free port)"`
	Temporal   string `envconfig:"TEMPORAL_ADDRESS" desc:"Temporal frontend; empty starts the dev server on 127.0.0.1:7233 with its Web UI on :8233"`
	Topic      string `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	Partitions int32  `envconfig:"CDCFLOW_DEV_PARTITIONS" default:"4" desc:"partitions of the topic on the in-process broker"`
	DemoRate   int    `envconfig:"CDCFLOW_DEMO_RATE" default:"0" desc:"keep writing this many demo changes per second to employees on the source (0: off)"`
}

func loadSettings() (settings, error) {
	var s settings
	return s, config.Process(&s)
}

type stack struct {
	log     *slog.Logger
	output  *heldOutput // the programs' standard output and error
	closers []func()
	procs   []*localsvc.Process
	exits   chan error // one send per program that ended
}

func run(ctx context.Context, args []string, out io.Writer) error {
	s, err := program.Settings("devstack", "runs the cdcflow pipeline on local embedded services", args, out, loadSettings)
	if err != nil {
		return err
	}
	st := &stack{log: slog.New(slog.NewTextHandler(os.Stderr, nil)), output: &heldOutput{w: os.Stderr, held: true},
		exits: make(chan error, 8)}
	env, b, err := st.startUp(ctx, s)
	if err != nil {
		st.close()
		if ctx.Err() != nil {
			// Ctrl-C during start-up is no failure: what was called off
			// (initdb, a server or a program starting) has nothing to say.
			st.output.release(false)
			fmt.Fprintln(out, "\ncdcflow stopped: interrupted during start-up")
			return nil
		}
		st.output.release(true)
		return err
	}
	defer st.close()
	st.output.release(true)
	fmt.Fprint(out, b.String())
	if s.DemoRate > 0 {
		go st.writeDemo(ctx, envValue(env, "CDCFLOW_SOURCE_DSN"), s.DemoRate)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping cdcflow...")
		return nil
	case err := <-st.exits:
		return err
	}
}

// metricsPorts are where the programs serve their metrics and health,
// when those ports are free.
var metricsPorts = map[string]int{"worker": 9101, "starter": 9102, "capture": 9103}

// freePort returns port when it is free, else another free port.
func freePort(port int) (int, error) {
	if p := localsvc.PortOr(port); p != 0 {
		return p, nil
	}
	return localsvc.FreePort()
}

// startUp starts the services and the programs, waits until capture reads
// the log, and returns the programs' environment and what the banner says.
func (st *stack) startUp(ctx context.Context, s settings) ([]string, banner, error) {
	env, b, err := st.services(ctx, s)
	if err != nil {
		return nil, b, err
	}
	if err := st.start("codec", append(env, "CDCFLOW_CODEC_ADDR="+strings.TrimPrefix(b.codec, "http://"),
		"CDCFLOW_CODEC_ORIGINS="+b.ui+","+strings.Replace(b.ui, "127.0.0.1", "localhost", 1))); err != nil {
		return nil, b, err
	}
	for _, prog := range []string{"worker", "starter", "capture"} {
		port, err := freePort(metricsPorts[prog])
		if err != nil {
			return nil, b, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		b.metrics = append(b.metrics, [2]string{prog, "http://" + addr})
		if err := st.start(prog, append(env, "CDCFLOW_METRICS_ADDR="+addr)); err != nil {
			return nil, b, err
		}
	}
	return env, b, st.waitForSlot(ctx, env)
}

// services starts (or locates) PostgreSQL, Kafka and Temporal, creates the
// demo table on both sides, and returns the environment for the cdcflow
// programs and what the banner says.
func (st *stack) services(ctx context.Context, s settings) ([]string, banner, error) {
	b := banner{topic: s.Topic, namespace: os.Getenv("TEMPORAL_NAMESPACE")}
	env := []string{"CDCFLOW_TOPIC=" + s.Topic, "CDCFLOW_TABLES=" + demo.Table}
	if self, err := os.Executable(); err == nil {
		b.programs = filepath.Dir(self) // where start finds the programs, dlq too
	}

	// The source records commit times, so events carry them.
	sourceDSN, err := st.postgres(ctx, s.SourceDSN, 5432, "track_commit_timestamp=on")
	if err != nil {
		return nil, b, fmt.Errorf("start source PostgreSQL: %w", err)
	}
	destDSN, err := st.postgres(ctx, s.DestDSN, 5433)
	if err != nil {
		return nil, b, fmt.Errorf("start destination PostgreSQL: %w", err)
	}
	for _, dsn := range []string{sourceDSN, destDSN} {
		if err := createDemoTable(ctx, dsn); err != nil {
			return nil, b, err
		}
	}
	env = append(env, "CDCFLOW_SOURCE_DSN="+sourceDSN, "CDCFLOW_DEST_DSN="+destDSN)
	b.source, b.dest = sourceDSN, destDSN

	b.brokers = s.Brokers
	if b.brokers == "" {
		k, err := localsvc.StartKafka(localsvc.KafkaOptions{Port: localsvc.PortOr(9092), Topics: map[string]int32{s.Topic: s.Partitions}})
		if err != nil {
			return nil, b, fmt.Errorf("start Kafka-protocol broker: %w", err)
		}
		st.closers = append(st.closers, k.Close)
		b.brokers = strings.Join(k.Brokers, ",")
	}
	env = append(env, "KAFKA_BROKERS="+b.brokers)

	// The temporal CLI the dev server runs from, or the one an operator
	// would find for an external server.
	if bin, err := localsvc.TemporalBinary(); err == nil {
		if bin, err = filepath.Abs(bin); err == nil {
			b.temporalCLI = filepath.Dir(bin)
		}
	}
	// The codec the Web UI decodes compressed batches with.
	codecPort, err := freePort(8089)
	if err != nil {
		return nil, b, err
	}
	b.codec = fmt.Sprintf("http://127.0.0.1:%d", codecPort)
	b.temporal, b.ui = s.Temporal, "(external: see your Temporal Web UI)"
	if b.temporal == "" {
		t, err := localsvc.StartTemporal(ctx, localsvc.TemporalOptions{Port: localsvc.PortOr(7233), UI: true,
			UIPort: localsvc.PortOr(8233), UICodecEndpoint: b.codec, SearchAttributes: cdc.SearchAttributes})
		if err != nil {
			return nil, b, fmt.Errorf("start Temporal dev server: %w", err)
		}
		st.closers = append(st.closers, func() { t.Close() })
		b.temporal, b.ui = t.Address, t.UIAddress
	}
	env = append(env, "TEMPORAL_ADDRESS="+b.temporal)
	return env, b, nil
}

// waitForSlot waits, in logical capture mode, until capture has created its
// replication slot: only what commits after that is in the log it reads, so
// the banner's insert must come later.
func (st *stack) waitForSlot(ctx context.Context, env []string) error {
	// Capture reads the log unless told otherwise: the source has
	// wal_level=logical.
	mode, slot := cmp.Or(os.Getenv("CDCFLOW_CAPTURE_MODE"), "logical"), cmp.Or(os.Getenv("CDCFLOW_SLOT"), "cdcflow")
	if mode != "logical" {
		return nil
	}
	conn, err := pgx.Connect(ctx, envValue(env, "CDCFLOW_SOURCE_DSN"))
	if err != nil {
		return fmt.Errorf("connect to the source: %w", err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n); err != nil {
			return fmt.Errorf("look for capture's replication slot: %w", err)
		}
		if n == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture did not create its replication slot %s in 2 minutes (see its log above)", slot)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-st.exits:
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// postgres returns dsn, or starts a throwaway cluster (on port if it is free)
// and returns its DSN.
func (st *stack) postgres(ctx context.Context, dsn string, port int, settings ...string) (string, error) {
	if dsn != "" {
		return dsn, nil
	}
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresOptions{Port: localsvc.PortOr(port), Settings: settings})
	if err != nil {
		return "", err
	}
	st.closers = append(st.closers, func() { pg.Close() })
	return pg.DSN, nil
}

// createDemoTable creates the demo table, which cdcflow's own migrations
// never do: capture and worker replicate only tables that exist.
func createDemoTable(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	defer conn.Close(ctx)
	return demo.CreateTable(ctx, conn)
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// start runs a cdcflow program that was built beside devstack.
func (st *stack) start(prog string, env []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	p, err := localsvc.StartProgram(prog, filepath.Join(filepath.Dir(self), prog), env, st.output)
	if err != nil {
		return err
	}
	go func() {
		<-p.Done()
		if err := p.Err(); err != nil {
			st.exits <- fmt.Errorf("%s exited: %w", prog, err)
			return
		}
		st.exits <- fmt.Errorf("%s exited", prog)
	}()
	st.procs = append(st.procs, p)
	return nil
}

// close stops the programs, newest first, then the services.
func (st *stack) close() {
	for i := len(st.procs) - 1; i >= 0; i-- {
		if err := st.procs[i].Stop(syscall.SIGTERM, 15*time.Second); err != nil {
			st.log.Warn("program did not stop", "error", err)
		}
	}
	for i := len(st.closers) - 1; i >= 0; i-- {
		st.closers[i]()
	}
}

// heldOutput holds what the programs write during start-up, to be shown
// when start-up fails and not when it is interrupted, then passes it on.
type heldOutput struct {
	mu   sync.Mutex
	w    io.Writer
	held bool
	buf  bytes.Buffer
}

func (h *heldOutput) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

// release writes what was held, when show, and passes the rest on.
func (h *heldOutput) release(show bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if show {
		h.w.Write(h.buf.Bytes()) //nolint:errcheck // as the programs' own writes
	}
	h.buf.Reset()
	h.held = false
}
