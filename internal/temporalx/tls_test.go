package temporalx_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/internal/testcerts"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// frontend is a stand-in for the network end of a Temporal frontend that
// speaks TLS only (the dev server cannot): a gRPC server with the
// frontend's GetSystemInfo and health check, which records what clients
// sent: the authorization header and the client certificate.
type frontend struct {
	workflowservice.UnimplementedWorkflowServiceServer
	addr string

	mu            sync.Mutex
	authorization []string // of every call
	clientCN      []string // of every call made with a client certificate
}

func (f *frontend) GetSystemInfo(context.Context, *workflowservice.GetSystemInfoRequest) (*workflowservice.GetSystemInfoResponse, error) {
	return &workflowservice.GetSystemInfoResponse{ServerVersion: "stand-in"}, nil
}

func startFrontend(t *testing.T, cfg *tls.Config) *frontend {
	t.Helper()
	f := &frontend{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			f.mu.Lock()
			f.authorization = append(f.authorization, md.Get("authorization")...)
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
					f.clientCN = append(f.clientCN, ti.State.PeerCertificates[0].Subject.CommonName)
				}
			}
			f.mu.Unlock()
			return handler(ctx, req)
		}))
	workflowservice.RegisterWorkflowServiceServer(srv, f)
	hs := health.NewServer()
	hs.SetServingStatus(workflowservice.WorkflowService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	f.addr = ln.Addr().String()
	return f
}

func (f *frontend) seen() (auth, cn []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.authorization...), append([]string(nil), f.clientCN...)
}

// TestDialTLSAndAPIKey: Dial speaks TLS to a frontend that takes nothing
// else, checks its certificate against TEMPORAL_TLS_CA_FILE and
// TEMPORAL_TLS_SERVER_NAME, presents the client certificate, and sends the
// API key as "authorization: Bearer <key>" with every call; an API key
// alone implies TLS.
func TestDialTLSAndAPIKey(t *testing.T) {
	certs := testcerts.New(t, "temporal-ca")
	other := testcerts.New(t, "another-ca")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	call := func(t *testing.T, cfg config.TemporalClient) error {
		t.Helper()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		c, err := temporalx.Dial(ctx, cfg, quiet)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	}

	t.Run("API key implies TLS", func(t *testing.T) {
		f := startFrontend(t, certs.Server(false))
		cfg := config.TemporalClient{Address: f.addr, Namespace: "cdc", TLSCAFile: certs.CAFile, APIKey: "key-123"}
		if err := call(t, cfg); err != nil {
			t.Fatal(err)
		}
		auth, _ := f.seen()
		if len(auth) < 2 {
			t.Fatalf("authorization headers %q: want one on each call (system info, health)", auth)
		}
		for _, a := range auth {
			if a != "Bearer key-123" {
				t.Fatalf("authorization headers %q: want Bearer key-123", auth)
			}
		}
	})
	t.Run("mutual TLS and server name", func(t *testing.T) {
		f := startFrontend(t, certs.Server(true))
		cfg := config.TemporalClient{Address: f.addr, Namespace: "cdc", TLS: true, TLSCAFile: certs.CAFile,
			TLSCertFile: certs.ClientCertFile, TLSKeyFile: certs.ClientKeyFile, TLSServer: "localhost"}
		if err := call(t, cfg); err != nil {
			t.Fatal(err)
		}
		auth, cn := f.seen()
		if len(auth) != 0 || len(cn) == 0 || cn[0] != "client" {
			t.Fatalf("authorization %q, client certificates %q: want none, and the client's", auth, cn)
		}
	})
	for _, c := range []struct {
		name   string
		cfg    func(addr string) config.TemporalClient
		server *tls.Config
		want   string
	}{
		{"untrusted CA", func(addr string) config.TemporalClient {
			return config.TemporalClient{Address: addr, TLS: true, TLSCAFile: other.CAFile}
		}, certs.Server(false), "TEMPORAL_TLS_CA_FILE"},
		{"wrong server name", func(addr string) config.TemporalClient {
			return config.TemporalClient{Address: addr, TLS: true, TLSCAFile: certs.CAFile, TLSServer: "temporal.example.com"}
		}, certs.Server(false), "TEMPORAL_TLS_SERVER_NAME"},
		{"no TLS", func(addr string) config.TemporalClient {
			return config.TemporalClient{Address: addr}
		}, certs.Server(false), "TEMPORAL_TLS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFrontend(t, c.server)
			cfg := c.cfg(f.addr)
			cfg.Namespace = "cdc"
			err := call(t, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %s", err, c.want)
			}
			t.Log(err)
		})
	}
	t.Run("settings", func(t *testing.T) {
		for _, c := range []struct {
			cfg  config.TemporalClient
			want string
		}{
			{config.TemporalClient{TLSCAFile: certs.ClientKeyFile}, `invalid TEMPORAL_TLS_CA_FILE="` + certs.ClientKeyFile + `": holds no PEM certificate`},
			{config.TemporalClient{TLSCertFile: certs.ClientCertFile}, `invalid TEMPORAL_TLS_KEY_FILE="": want the key of TEMPORAL_TLS_CERT_FILE`},
			{config.TemporalClient{TLSKeyFile: certs.ClientKeyFile}, `invalid TEMPORAL_TLS_CERT_FILE="": want the certificate of TEMPORAL_TLS_KEY_FILE`},
		} {
			if err := c.cfg.Validate(); err == nil || err.Error() != c.want {
				t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
			}
			if _, err := temporalx.Dial(ctx, c.cfg, quiet); err == nil || err.Error() != c.want {
				t.Errorf("Dial(%+v) = %v, want %q", c.cfg, err, c.want)
			}
		}
	})
}

// TestDialRealServerOverTLS: the real Temporal dev server, behind a proxy
// that terminates TLS and wants a client certificate (the dev server has
// no TLS of its own), is reached by Dial with mutual TLS, and answers.
func TestDialRealServerOverTLS(t *testing.T) {
	tmp := testenv.TemporalServer(t)
	certs := testcerts.New(t, "temporal-ca")
	proxyTLS := certs.Server(true)
	proxyTLS.NextProtos = []string{"h2"} // gRPC's clients want it negotiated
	ln, err := tls.Listen("tcp", "127.0.0.1:0", proxyTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", tmp.Address)
				if err != nil {
					return
				}
				defer out.Close()
				go io.Copy(out, in) //nolint:errcheck // ends with the connection
				io.Copy(in, out)    //nolint:errcheck // ends with the connection
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := config.TemporalClient{Address: ln.Addr().String(), Namespace: tmp.Namespace, TLS: true, TLSCAFile: certs.CAFile,
		TLSCertFile: certs.ClientCertFile, TLSKeyFile: certs.ClientKeyFile}
	c, err := temporalx.Dial(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: tmp.Namespace})
	if err != nil || ns.GetNamespaceInfo().GetName() != tmp.Namespace {
		t.Fatalf("DescribeNamespace over TLS: %v, %v", ns, err)
	}
	// Without the client certificate the proxy refuses the handshake.
	cfg.TLSCertFile, cfg.TLSKeyFile = "", ""
	if c, err := temporalx.Dial(ctx, cfg, quiet); err == nil {
		c.Close()
		t.Fatal("Dial without the client certificate passed")
	}
}
