package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/cdcflow/cdcflow/internal/temporalx"
)

// TemporalCLIVersion is the pinned Temporal CLI the Makefile installs.
const TemporalCLIVersion = "v1.5.1"

// TemporalBinary finds the temporal CLI: $CDCFLOW_TEMPORAL_BIN, then the
// Makefile's cache ($XDG_CACHE_HOME or ~/.cache)/cdcflow/bin, then $PATH.
func TemporalBinary() (string, error) {
	if p := os.Getenv("CDCFLOW_TEMPORAL_BIN"); p != "" {
		return p, nil
	}
	if cache, err := os.UserCacheDir(); err == nil {
		p := filepath.Join(cache, "cdcflow", "bin", "temporal")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("temporal"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("temporal CLI not found: run `make tools` (installs temporal %s) or set CDCFLOW_TEMPORAL_BIN", TemporalCLIVersion)
}

// Temporal is a Temporal dev server run from the CLI, or an external server.
type Temporal struct {
	Address   string // host:port of the frontend gRPC service
	UIAddress string // http://host:port of the Web UI, empty when headless
	Namespace string

	proc *process
	log  *bytes.Buffer
}

// TemporalOptions tunes the dev server.
type TemporalOptions struct {
	Port, UIPort int  // 0 picks free ports
	UI           bool // serve the Web UI
	// SearchAttributes to register, name -> type (Keyword, Text, Int, ...).
	SearchAttributes map[string]string
}

// StartTemporal starts `temporal server start-dev` (in-memory) on 127.0.0.1.
func StartTemporal(ctx context.Context, opts TemporalOptions) (*Temporal, error) {
	bin, err := TemporalBinary()
	if err != nil {
		return nil, err
	}
	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	t := &Temporal{Address: fmt.Sprintf("127.0.0.1:%d", port), Namespace: "default", log: &bytes.Buffer{}}
	args := []string{"server", "start-dev", "--ip", "127.0.0.1", "--port", strconv.Itoa(port),
		"--log-level", "error", "--namespace", t.Namespace}
	for name, typ := range opts.SearchAttributes {
		args = append(args, "--search-attribute", name+"="+typ)
	}
	if opts.UI {
		uiPort := opts.UIPort
		if uiPort == 0 {
			if uiPort, err = FreePort(); err != nil {
				return nil, err
			}
		}
		args = append(args, "--ui-port", strconv.Itoa(uiPort), "--ui-ip", "127.0.0.1")
		t.UIAddress = fmt.Sprintf("http://127.0.0.1:%d", uiPort)
	} else {
		args = append(args, "--headless")
	}
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	// A fixed metrics port would clash between concurrent dev servers.
	args = append(args, "--metrics-port", strconv.Itoa(metricsPort))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TEMPORAL_ADDRESS=") // the CLI reads it too
	if t.proc, err = startProcess("temporal dev server", cmd, t.log); err != nil {
		return nil, err
	}
	err = waitFor(t.proc, 2*time.Minute, func() error {
		c, err := client.Dial(client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{}})
		if err != nil {
			return err
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = c.CheckHealth(cctx, &client.CheckHealthRequest{})
		if err != nil {
			return err
		}
		// The namespace is registered a moment after the frontend is healthy.
		_, err = c.DescribeWorkflow(cctx, "cdcflow-readiness-probe", "")
		if err != nil && !isNotFound(err) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("%w\n%s", err, t.log.String())
	}
	return t, nil
}

// Close stops the dev server.
func (t *Temporal) Close() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.stop(syscall.SIGTERM, 20*time.Second)
}

// Dial connects a client, with cdcflow's data converter, to the server.
func (t *Temporal) Dial() (client.Client, error) {
	return client.Dial(client.Options{HostPort: t.Address, Namespace: t.Namespace, Logger: quietLogger{},
		DataConverter: temporalx.DataConverter()})
}
