// Command devstack runs the whole cdcflow pipeline on local embedded services,
// for `make run`: PostgreSQL clusters from the installed binaries, the Temporal
// dev server with its Web UI, and an in-process Kafka-protocol broker, then
// the cdcflow programs against them. It stays in the foreground; Ctrl-C stops
// everything. Set CDCFLOW_DEST_DSN, KAFKA_BROKERS or TEMPORAL_ADDRESS to use
// running services instead.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/testenv"
	"github.com/cdcflow/cdcflow/workflows"
)

func main() {
	config.Main("devstack", func(ctx context.Context, args []string) error { return run(ctx, args, os.Stdout) })
}

// Settings of devstack itself; the programs it starts read their own.
type settings struct {
	SourceDSN  string `envconfig:"CDCFLOW_SOURCE_DSN" desc:"source PostgreSQL; empty starts a throwaway cluster"`
	DestDSN    string `envconfig:"CDCFLOW_DEST_DSN" desc:"destination PostgreSQL; empty starts a throwaway cluster"`
	Brokers    string `envconfig:"KAFKA_BROKERS" desc:"Kafka brokers; empty starts an in-process broker on 127.0.0.1:9092 (or a free port)"`
	Temporal   string `envconfig:"TEMPORAL_ADDRESS" desc:"Temporal frontend; empty starts the dev server on 127.0.0.1:7233 with its Web UI on :8233"`
	Topic      string `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	Partitions int32  `envconfig:"CDCFLOW_DEV_PARTITIONS" default:"4" desc:"partitions of the topic on the in-process broker"`
	DemoRate   int    `envconfig:"CDCFLOW_DEMO_RATE" default:"0" desc:"keep writing this many demo changes per second to employees on the source (0: off)"`
}

type stack struct {
	log     *slog.Logger
	out     io.Writer
	closers []func()
	procs   []*child
	exits   chan error // one send per program that ended
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var s settings
	if err := config.ParseFlags("devstack", "runs the cdcflow pipeline on local embedded services", args, &s, out); err != nil {
		return err
	}
	if err := config.Process(&s); err != nil {
		return err
	}
	st := &stack{log: slog.New(slog.NewTextHandler(os.Stderr, nil)), out: out, exits: make(chan error, 8)}
	defer st.close()

	env, banner, err := st.services(ctx, s)
	if err != nil {
		return err
	}
	for _, prog := range []string{"worker", "starter", "capture"} {
		if err := st.start(prog, env); err != nil {
			return err
		}
	}
	fmt.Fprint(out, banner)
	if s.DemoRate > 0 {
		go st.demo(ctx, sourceDSN(env), s.DemoRate)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping cdcflow...")
		return nil
	case err := <-st.exits:
		return err
	}
}

// services starts (or locates) PostgreSQL, Kafka and Temporal, and returns
// the environment for the cdcflow programs and the banner to print.
func (st *stack) services(ctx context.Context, s settings) ([]string, string, error) {
	var b strings.Builder
	env := []string{"CDCFLOW_TOPIC=" + s.Topic}

	// The source records commit times, so events carry them.
	sourceDSN, err := st.postgres(ctx, s.SourceDSN, 5432, "track_commit_timestamp=on")
	if err != nil {
		return nil, "", fmt.Errorf("start source PostgreSQL: %w", err)
	}
	destDSN, err := st.postgres(ctx, s.DestDSN, 5433)
	if err != nil {
		return nil, "", fmt.Errorf("start destination PostgreSQL: %w", err)
	}
	env = append(env, "CDCFLOW_SOURCE_DSN="+sourceDSN, "CDCFLOW_DEST_DSN="+destDSN)
	fmt.Fprintf(&b, "  source       %s\n", sourceDSN)
	fmt.Fprintf(&b, "  destination  %s\n", destDSN)

	brokers := s.Brokers
	if brokers == "" {
		k, err := testenv.StartKafka(testenv.KafkaOptions{Port: portOr(9092), Topics: map[string]int32{s.Topic: s.Partitions}})
		if err != nil {
			return nil, "", fmt.Errorf("start Kafka-protocol broker: %w", err)
		}
		st.closers = append(st.closers, k.Close)
		brokers = strings.Join(k.Brokers, ",")
	}
	env = append(env, "KAFKA_BROKERS="+brokers)
	fmt.Fprintf(&b, "  kafka        %s (topic %s)\n", brokers, s.Topic)

	address, ui := s.Temporal, "(external: see your Temporal Web UI)"
	if address == "" {
		t, err := testenv.StartTemporal(ctx, testenv.TemporalOptions{Port: portOr(7233), UI: true, UIPort: portOr(8233),
			SearchAttributes: workflows.SearchAttributes})
		if err != nil {
			return nil, "", fmt.Errorf("start Temporal dev server: %w", err)
		}
		st.closers = append(st.closers, func() { t.Close() })
		address, ui = t.Address, t.UIAddress
	}
	env = append(env, "TEMPORAL_ADDRESS="+address)
	fmt.Fprintf(&b, "  temporal     %s\n  web ui       %s\n", address, ui)

	banner := "\ncdcflow is running. Ctrl-C stops everything.\n\n" + b.String() +
		"\nInsert a row on the source:\n\n" +
		"  psql '" + sourceDSN + "' -c \"INSERT INTO employees VALUES (1, 'Ada', 'Lovelace', '1815-12-10', 'London', 5000)\"\n" +
		"\nsee it on the destination:\n\n" +
		"  psql '" + destDSN + "' -c 'SELECT * FROM employees'\n" +
		"\nand its batch workflow in the Temporal Web UI.\n\n"
	return env, banner, nil
}

// postgres returns dsn, or starts a throwaway cluster (on port if it is free)
// and returns its DSN.
func (st *stack) postgres(ctx context.Context, dsn string, port int, settings ...string) (string, error) {
	if dsn != "" {
		return dsn, nil
	}
	pg, err := testenv.StartPostgres(ctx, testenv.PostgresOptions{Port: portOr(port), Settings: settings})
	if err != nil {
		return "", err
	}
	st.closers = append(st.closers, func() { pg.Close() })
	return pg.DSN, nil
}

func sourceDSN(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "CDCFLOW_SOURCE_DSN="); ok {
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
	cmd := exec.Command(filepath.Join(filepath.Dir(self), prog))
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Own process group: Ctrl-C reaches devstack, which stops programs in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", prog, err)
	}
	c := &child{name: prog, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		close(c.done)
		st.exits <- fmt.Errorf("%s exited: %v", prog, err)
	}()
	st.procs = append(st.procs, c)
	return nil
}

// close stops the programs, newest first, then the services.
func (st *stack) close() {
	for i := len(st.procs) - 1; i >= 0; i-- {
		c := st.procs[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			st.log.Warn("program did not stop in 15s; killing it", "program", c.name)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	for i := len(st.closers) - 1; i >= 0; i-- {
		st.closers[i]()
	}
}

// portOr returns port when it is free on 127.0.0.1, else 0 (pick any).
func portOr(port int) int {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0
	}
	l.Close()
	return port
}
