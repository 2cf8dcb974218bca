package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestAChangeIsOneTrace exports the programs' traces over OTLP to a
// receiver in the test (the network end of a collector): a change inserted
// on the source is one trace, from capture (starting at its source commit)
// through the starter's batch start and the Temporal workflow and activity
// (the SDK's tracing interceptor) to the destination commit, spanning the
// three programs.
func TestAChangeIsOneTrace(t *testing.T) {
	rcv := newSpanReceiver(t)
	p := newPipeline(t)
	p.withSource()
	otlp := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.url, "OTEL_BSP_SCHEDULE_DELAY=100"}
	p.start("worker", otlp...)
	p.start("starter", otlp...)
	p.startCapture("logical", "employees", otlp...)
	p.exec(p.source, `INSERT INTO employees VALUES (7, 'Ada', 'Lovelace', '1815-12-10', 'London', 5000)`)
	p.waitSame("public.employees", "emp_id", time.Minute)

	// The capture span of the change, and its trace.
	var trace []span
	eventually(t, time.Minute, "the change's trace, down to the destination commit", func() (bool, string) {
		all := rcv.spans()
		i := slices.IndexFunc(all, func(s span) bool { return s.name == "capture public.employees" })
		if i < 0 {
			return false, fmt.Sprintf("%d spans, none from capture", len(all))
		}
		trace = trace[:0]
		for _, s := range all {
			if s.trace == all[i].trace {
				trace = append(trace, s)
			}
		}
		return slices.ContainsFunc(trace, func(s span) bool { return s.name == "apply to the destination" }), fmt.Sprint(trace)
	})
	byID := map[string]span{}
	for _, s := range trace {
		byID[s.id] = s
	}
	// From the destination commit up to the change's capture, each span is
	// the child of the one before, across the programs.
	var path, services []string
	for i := slices.IndexFunc(trace, func(s span) bool { return s.name == "apply to the destination" }); ; {
		s := trace[i]
		path = append([]string{s.name}, path...)
		if !slices.Contains(services, s.service) {
			services = append(services, s.service)
		}
		parent, ok := byID[s.parent]
		if !ok {
			if s.parent != "" {
				t.Fatalf("span %q has a parent the trace lacks: %v", s.name, trace)
			}
			break
		}
		i = slices.Index(trace, parent)
	}
	got := strings.Join(path, " > ")
	t.Logf("the change's trace: %s", got)
	for _, want := range []string{"capture public.employees", "start batch", "StartWorkflow:ApplyBatch", "RunWorkflow:ApplyBatch",
		"ApplyEvents", "apply to the destination"} {
		if !strings.Contains(got, want) {
			t.Errorf("the change's trace %s lacks %s", got, want)
		}
	}
	if path[0] != "capture public.employees" {
		t.Errorf("the trace starts at %s, not at capture", path[0])
	}
	slices.Sort(services)
	if want := []string{"cdcflow-capture", "cdcflow-starter", "cdcflow-worker"}; !slices.Equal(services, want) {
		t.Errorf("the trace spans %v, want %v", services, want)
	}
}

// span is one exported span, as the receiver got it.
type span struct {
	trace, id, parent, name, service string
}

func (s span) String() string {
	return fmt.Sprintf("%s/%s(%s<-%s)", s.service, s.name, s.id[:4], s.parent)
}

// spanReceiver takes OTLP/HTTP trace exports (protobuf) and keeps their
// spans.
type spanReceiver struct {
	url string
	mu  sync.Mutex
	got []span
}

func newSpanReceiver(t *testing.T) *spanReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &spanReceiver{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(r.export), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *spanReceiver) export(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	var export collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &export)
	}
	if req.URL.Path != "/v1/traces" || err != nil {
		http.Error(w, fmt.Sprintf("%s: %v", req.URL.Path, err), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range export.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				parent := ""
				if len(s.ParentSpanId) > 0 {
					parent = hex.EncodeToString(s.ParentSpanId)
				}
				r.got = append(r.got, span{trace: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId),
					parent: parent, name: s.Name, service: service})
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Write(b) //nolint:errcheck // the exporter retries
}

func (r *spanReceiver) spans() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}
