// Package program is the start-up every cdcflow command shares: signal
// handling and the exit status, the command line (which only knows -h, since
// settings come from the environment), the logger and the pprof endpoint.
package program

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when CDCFLOW_PPROF_ADDR is set
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/tracing"
)

// ErrHelp is returned when -h was given and usage printed.
var ErrHelp = flag.ErrHelp

// Main runs a cdcflow command: run gets a context cancelled by SIGINT or
// SIGTERM and the command-line arguments. An error is printed as one line
// prefixed with the command's name, and the exit status is 1.
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	for _, f := range atExit {
		f()
	}
	if err != nil && !errors.Is(err, ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Settings handles the command line of a program configured by the
// environment, then loads its settings with load. With -h it prints what the
// program does and every variable it reads to out, and returns ErrHelp.
func Settings[T any](name, about string, args []string, out io.Writer, load func() (T, error)) (T, error) {
	var spec T
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "%s: %s\n\nUsage: %s [-h]\n\nEnvironment variables:\n\n", name, about, name)
			if err := Variables(out, &spec); err != nil {
				return spec, err
			}
			return spec, ErrHelp
		}
		return spec, fmt.Errorf("%v (%s is configured by environment variables; see %s -h)", err, name, name)
	}
	if fs.NArg() > 0 {
		return spec, fmt.Errorf("unexpected argument %q (%s is configured by environment variables; see %s -h)", fs.Arg(0), name, name)
	}
	return load()
}

// Setup is a program's start-up in one call: the command line and settings
// (see Settings), then the logger and the pprof endpoint (see Start), and
// trace export when the environment configures it (see internal/tracing).
func Setup[T interface{ LogSettings() config.Log }](ctx context.Context, name, about string, args []string,
	load func() (T, error)) (T, *slog.Logger, error) {
	cfg, err := Settings(name, about, args, os.Stdout, load)
	if err != nil {
		return cfg, nil, err
	}
	log, err := Start(ctx, cfg.LogSettings())
	if err != nil {
		return cfg, log, err
	}
	shutdown, err := tracing.Setup(ctx, name, log)
	if err != nil {
		return cfg, log, err
	}
	atExit = append(atExit, func() {
		// Send the spans still buffered, within a few seconds.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("traces not all exported", "error", err)
		}
	})
	return cfg, log, nil
}

// atExit runs when the program's run returns.
var atExit []func()

// Start returns the logger for the settings in l and, when l.PprofAddr is
// set, serves Go's pprof profiles there until ctx ends.
func Start(ctx context.Context, l config.Log) (*slog.Logger, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l.Level}))
	if l.PprofAddr == "" {
		return log, nil
	}
	ln, err := net.Listen("tcp", l.PprofAddr)
	if err != nil {
		return nil, fmt.Errorf("pprof listener: %w", err)
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	log.Info("serving pprof", "addr", ln.Addr().String())
	return log, nil
}

// Variables writes one line per variable of spec (a pointer to an
// envconfig struct): name, type, default, meaning.
func Variables(out io.Writer, spec any) error {
	tw := tabwriter.NewWriter(out, 1, 0, 2, ' ', 0)
	if err := envconfig.Usagef("", spec, tw, usageFormat); err != nil {
		return err
	}
	return tw.Flush()
}

const usageFormat = `{{range .}}  {{usage_key .}}{{"\t"}}{{usage_type .}}{{"\t"}}{{if usage_default .}}{{usage_default .}}{{else}}-{{end}}{{"\t"}}{{usage_description .}}
{{end}}`
