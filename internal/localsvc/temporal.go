package localsvc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

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
	return "", fmt.Errorf("temporal CLI not found: run `make tools` (installs the pinned version) or set CDCFLOW_TEMPORAL_BIN")
}

// Temporal is a Temporal dev server run from the CLI, or an external server.
type Temporal struct {
	Address   string // host:port of the frontend gRPC service
	UIAddress string // http://host:port of the Web UI, empty when headless
	Namespace string

	proc *Process
	log  *Buffer
	bin  string
	args []string
}

// TemporalOptions tunes the dev server.
type TemporalOptions struct {
	Port, UIPort int  // 0 picks free ports
	UI           bool // serve the Web UI
	// UICodecEndpoint is the codec server the Web UI decodes payloads with
	// (cdcflow's codec program); empty: none.
	UICodecEndpoint string
	// SearchAttributes to register, name -> type (Keyword, Text, Int, ...).
	SearchAttributes map[string]string
	// DBFile keeps the server's state in this SQLite file, so that it
	// survives a restart; empty keeps it in memory.
	DBFile string
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
	t := &Temporal{Address: fmt.Sprintf("127.0.0.1:%d", port), Namespace: "default", log: &Buffer{}}
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
		if opts.UICodecEndpoint != "" {
			args = append(args, "--ui-codec-endpoint", opts.UICodecEndpoint)
		}
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
	if opts.DBFile != "" {
		args = append(args, "--db-filename", opts.DBFile)
	}
	t.bin, t.args = bin, args
	if err := t.Start(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Start starts the dev server made by StartTemporal (again, after Kill) and
// waits until it serves the namespace.
func (t *Temporal) Start(ctx context.Context) error {
	cmd := exec.Command(t.bin, t.args...)
	cmd.Env = append(os.Environ(), "TEMPORAL_ADDRESS=") // the CLI reads it too
	var err error
	if t.proc, err = Start("temporal dev server", cmd, t.log); err != nil {
		return err
	}
	err = t.proc.waitReady(ctx, 2*time.Minute, func() error { return t.ready(ctx) })
	if err == nil {
		return nil
	}
	t.Close()
	if ctx.Err() != nil {
		return err // called off: the server's log says only that
	}
	return fmt.Errorf("%w\n%s", err, t.log.String())
}

// Kill kills the dev server (SIGKILL), as a crash would; Start starts it
// again, with the state of its DBFile.
func (t *Temporal) Kill() {
	if t.proc != nil {
		t.proc.Kill()
	}
}

// Process is the dev server's process, nil for an external server: tests
// pause (SIGSTOP) and kill it.
func (t *Temporal) Process() *Process { return t.proc }

// Close stops the dev server.
func (t *Temporal) Close() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.Stop(syscall.SIGTERM, 20*time.Second)
}

// ready checks that the frontend answers for the namespace: it is
// registered a moment after the frontend comes up. It speaks gRPC directly
// rather than through the SDK, which would link the SDK's test support into
// devstack.
func (t *Temporal) ready(ctx context.Context) error {
	conn, err := grpc.NewClient(t.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	svc := workflowservice.NewWorkflowServiceClient(conn)
	// The namespace must exist: a workflow not found says the namespace
	// serves requests, but so would a namespace not found.
	if _, err := svc.DescribeNamespace(cctx, &workflowservice.DescribeNamespaceRequest{Namespace: t.Namespace}); err != nil {
		return err
	}
	_, err = svc.DescribeWorkflowExecution(cctx, &workflowservice.DescribeWorkflowExecutionRequest{
		Namespace: t.Namespace, Execution: &commonpb.WorkflowExecution{WorkflowId: "cdcflow-readiness-probe"}})
	if err == nil || status.Code(err) == codes.NotFound {
		return nil // the namespace serves requests
	}
	return err
}
