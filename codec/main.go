// Command codec serves cdcflow's payload codec to the Temporal Web UI and
// CLI (Temporal's remote-codec convention): a batch whose events were
// compressed on their way through Temporal reads as its JSON change events.
// Point the Web UI at it (the dev server's --ui-codec-endpoint, the UI's
// TEMPORAL_CODEC_ENDPOINT) or the CLI (--codec-endpoint).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func main() { program.Main("codec", run) }

type settings struct {
	config.Log
	Addr    string   `envconfig:"CDCFLOW_CODEC_ADDR" default:"127.0.0.1:8089" desc:"host:port the codec is served on, at http://host:port/decode (and /<namespace>/decode)"`
	Origins []string `envconfig:"CDCFLOW_CODEC_ORIGINS" default:"http://localhost:8233,http://127.0.0.1:8233" desc:"origins of the Web UI pages allowed to call the codec (CORS), comma-separated"`
}

func (s settings) LogSettings() config.Log { return s.Log }

func load() (settings, error) {
	var s settings
	if err := config.Process(&s); err != nil {
		return s, err
	}
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return s, fmt.Errorf("CDCFLOW_CODEC_ADDR %q: want host:port", s.Addr)
	}
	return s, nil
}

func run(ctx context.Context, args []string) error {
	s, log, err := program.Setup(ctx, "codec", "serves cdcflow's payload codec to the Temporal Web UI and CLI", args, load)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("codec listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/", temporalx.CodecHandler(s.Origins))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // closing anyway
	}()
	log.Info("serving the payload codec", "endpoint", "http://"+ln.Addr().String(), "origins", s.Origins)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
