package metrics

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Health is a program's readiness: the dependencies it needs, each ready
// once it answered and until an operation on it fails. A program names its
// dependencies when it starts and sets each as it uses it (Set), so that
// readiness says how the last exchange with each went. A nil *Health
// records nothing.
type Health struct {
	mu   sync.Mutex
	deps []dependency
}

type dependency struct {
	name     string
	answered bool      // the last operation succeeded
	err      error     // the last operation's failure, nil when none or it answered
	at       time.Time // when the last operation ended
}

// Dependencies of the programs, as /readyz names them.
const (
	DepSource      = "source"      // the source PostgreSQL
	DepDestination = "destination" // the destination PostgreSQL
	DepKafka       = "kafka"       // the Kafka brokers (for the starter: its consumer group)
	DepTemporal    = "temporal"    // the Temporal service (for the worker: its Temporal worker)
)

// NewHealth returns the readiness of a program that needs deps: not ready
// until each has answered.
func NewHealth(deps ...string) *Health {
	h := &Health{deps: make([]dependency, len(deps))}
	for i, d := range deps {
		h.deps[i].name = d
	}
	return h
}

// Set records how an operation on dep ended: nil, it answered; otherwise
// the failure, and the program is not ready until dep answers again. A
// dependency the program did not name is ignored.
func (h *Health) Set(dep string, err error) {
	if h == nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.deps {
		if d := &h.deps[i]; d.name == dep {
			d.answered, d.err, d.at = err == nil, err, now
			return
		}
	}
}

// Quiet reports whether nothing was recorded for dep within the last d
// (or ever): a program that uses a dependency only now and then asks it
// when it has been quiet, so that its readiness stays recent.
func (h *Health) Quiet(dep string, d time.Duration) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.deps {
		if x.name == dep {
			return x.at.IsZero() || time.Since(x.at) >= d
		}
	}
	return false
}

// Ready reports whether every dependency answered last, and a line for
// each: "name: ok", "name: not yet answered" or "name: <error>".
func (h *Health) Ready() (bool, string) {
	if h == nil {
		return true, ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ready := true
	var b strings.Builder
	for _, d := range h.deps {
		switch {
		case d.answered:
			fmt.Fprintf(&b, "%s: ok\n", d.name)
		case d.err != nil:
			ready = false
			fmt.Fprintf(&b, "%s: %v (%s ago)\n", d.name, d.err, time.Since(d.at).Round(time.Second))
		default:
			ready = false
			fmt.Fprintf(&b, "%s: not yet answered\n", d.name)
		}
	}
	return ready, b.String()
}

// healthz answers 200 while the process runs.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "live")
}

// readyz answers 200 when every dependency of h answered last, else 503;
// the body has a line per dependency.
func (h *Health) readyz(w http.ResponseWriter, _ *http.Request) {
	ready, detail := h.Ready()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "not ready\n"+detail)
		return
	}
	fmt.Fprint(w, "ready\n"+detail)
}
