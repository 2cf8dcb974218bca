package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/cdcflow/cdcflow/internal/localsvc"
)

// TestMetricsOfEveryProgram runs capture (in each mode), starter and worker
// with metrics addresses: each answers /healthz and, once its dependencies
// answered, /readyz; after some changes, each one's /metrics has its series
// with values that fit what was done.
//
// Then every metric an alert rule or a dashboard panel in deployments/ uses
// must be one of those exported: a renamed metric cannot leave an alert
// that never fires or an empty panel.
func TestMetricsOfEveryProgram(t *testing.T) {
	exported := map[string]bool{}
	for _, mode := range captureModes {
		t.Run(mode, func(t *testing.T) { testMetrics(t, mode, exported) })
	}
	if t.Failed() {
		return
	}
	used, err := usedMetricNames(filepath.Join("..", "..", "deployments"))
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 20 {
		t.Fatalf("found %d metric names in the alert rules and dashboards, want more", len(used))
	}
	for name, where := range used {
		if !exported[name] && name != "up" { // up is Prometheus's own
			t.Errorf("%s uses %s, which no program exports", strings.Join(where, ", "), name)
		}
	}
}

func testMetrics(t *testing.T, mode string, exported map[string]bool) {
	ports := map[string]int{}
	defer func() {
		for _, port := range ports {
			m, err := scrape(port)
			if err != nil {
				continue
			}
			for k := range m {
				name, _, _ := strings.Cut(k, "{")
				exported[name] = true
			}
		}
	}()
	p := newPipeline(t)
	p.withSource()
	addr := func(program string) string {
		port, err := localsvc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[program] = port
		return fmt.Sprintf("CDCFLOW_METRICS_ADDR=127.0.0.1:%d", port)
	}
	p.startCapture(mode, "employees", addr("capture"), "CDCFLOW_CAPTURE_REPORT=100ms")
	p.start("worker", addr("worker"))
	p.start("starter", addr("starter"))
	for _, program := range []string{"capture", "starter", "worker"} {
		eventually(t, time.Minute, program+" ready", func() (bool, string) {
			live, _ := httpGet(ports[program], "/healthz")
			ready, body := httpGet(ports[program], "/readyz")
			return live == http.StatusOK && ready == http.StatusOK, fmt.Sprintf("/healthz %d, /readyz %d: %s", live, ready, body)
		})
	}

	const rows = 200
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO employees (emp_id, first_name, last_name, dob, city, salary)
			SELECT i, 'E', 'L', '1990-01-01', 'Oslo', i FROM generate_series(1, ` + itoa(rows) + `) i`,
		`UPDATE employees SET salary = salary + 1 WHERE emp_id % 2 = 0`,
	} {
		if _, err := p.source.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	const changes = rows + rows/2
	p.waitSame("public.employees", "emp_id", 2*time.Minute)

	// capture
	want := func(program, what string, cond func(m series) (bool, string)) {
		t.Helper()
		eventually(t, time.Minute, program+": "+what, func() (bool, string) {
			m, err := scrape(ports[program])
			if err != nil {
				return false, err.Error()
			}
			return cond(m)
		})
	}
	want("capture", fmt.Sprintf("%d changes published, no publish errors", changes), func(m series) (bool, string) {
		n, errs := m.get(`cdcflow_capture_changes_total{table="public.employees"}`), m.get("cdcflow_capture_publish_errors_total")
		return n >= changes && errs == 0, fmt.Sprintf("published %v, errors %v", n, errs)
	})
	backlog := map[string][]string{
		"trigger": {"cdcflow_capture_outbox_rows", "cdcflow_capture_outbox_delay_seconds"},
		"logical": {"cdcflow_capture_slot_lag_bytes", "cdcflow_capture_slot_delay_seconds"},
	}[mode]
	want("capture", "the backlog reported, and drained", func(m series) (bool, string) {
		size, delay := m.get(backlog[0]), m.get(backlog[1])
		drained := delay == 0 && (mode == "logical" || size == 0)
		return size >= 0 && drained, fmt.Sprintf("%s %v, %s %v", backlog[0], size, backlog[1], delay)
	})
	if m, _ := scrape(ports["capture"]); m.has("cdcflow_capture_outbox_rows") == (mode == "logical") {
		t.Errorf("%s capture: outbox rows reported %v:\n%s", mode, m.has("cdcflow_capture_outbox_rows"), m)
	}

	// starter
	want("starter", "batches started, each timed, and the lag of every partition drained", func(m series) (bool, string) {
		started, existing := m.get("cdcflow_starter_batches_started_total"), m.get("cdcflow_starter_batches_existing_total")
		timed := m.get("cdcflow_starter_start_duration_seconds_count")
		messages := m.get("cdcflow_starter_messages_total")
		state := fmt.Sprintf("started %v, existing %v, timed %v, messages %v", started, existing, timed, messages)
		ok := started >= 1 && existing == 0 && timed == started+existing && messages >= changes &&
			m.get("cdcflow_starter_messages_redelivered_total") == 0
		for part := range partitions {
			lag := fmt.Sprintf(`cdcflow_starter_consumer_lag{partition="%d"}`, part)
			inFlight := fmt.Sprintf(`cdcflow_starter_batches_in_flight{partition="%d"}`, part)
			state += fmt.Sprintf("; partition %d: lag %v, in flight %v", part, m.get(lag), m.get(inFlight))
			ok = ok && m.has(lag) && m.get(lag) == 0 && m.has(inFlight) && m.get(inFlight) == 0
		}
		return ok, state
	})

	// worker
	want("worker", fmt.Sprintf("the latency of %d changes", changes), func(m series) (bool, string) {
		n, sum := m.get("cdcflow_apply_latency_seconds_count"), m.get("cdcflow_apply_latency_seconds_sum")
		// A change the same batch holds a newer change of is superseded.
		applied := m.get(`cdcflow_apply_events_total{outcome="applied"}`) + m.get(`cdcflow_apply_events_total{outcome="superseded"}`)
		inf := m.get(`cdcflow_apply_latency_seconds_bucket{le="+Inf"}`)
		return n >= changes && inf == n && sum > 0 && sum/n < 60 && applied >= changes,
			fmt.Sprintf("latency count %v, sum %v s, +Inf bucket %v; applied or superseded %v", n, sum, inf, applied)
	})
}

// series are the samples of one /metrics page, by name and labels.
type series map[string]float64

func (s series) get(name string) float64 { return s[name] }

func (s series) has(name string) bool {
	_, ok := s[name]
	return ok
}

func (s series) String() string {
	var b strings.Builder
	for k, v := range s {
		fmt.Fprintf(&b, "%s %v\n", k, v)
	}
	return b.String()
}

// scrape reads the metrics of the program serving them on port.
func scrape(port int) (series, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := series{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// httpGet returns the status and body of a GET of path on port (0 when
// nothing answers).
func httpGet(port int, path string) (int, string) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "; ")
	}
	return resp.StatusCode, b.String()
}

// usedMetricNames returns the metrics named by the alert rules
// (prometheus/alerts.yml) and the Grafana dashboards (grafana/dashboards)
// under dir, each with where it is used.
func usedMetricNames(dir string) (map[string][]string, error) {
	used := map[string][]string{}
	add := func(where, expr string) error {
		e, err := parser.ParseExpr(expr)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", where, expr, err)
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && !slices.Contains(used[vs.Name], where) {
				used[vs.Name] = append(used[vs.Name], where)
			}
			return nil
		})
		return nil
	}
	rules, errs := rulefmt.ParseFile(filepath.Join(dir, "prometheus", "alerts.yml"))
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if err := add("alert "+r.Alert.Value, r.Expr.Value); err != nil {
				return nil, err
			}
		}
	}
	boards, err := filepath.Glob(filepath.Join(dir, "grafana", "dashboards", "*.json"))
	if err != nil || len(boards) == 0 {
		return nil, fmt.Errorf("no dashboards in %s (%v)", dir, err)
	}
	for _, file := range boards {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var board struct {
			Title  string `json:"title"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &board); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		for _, p := range board.Panels {
			for _, tgt := range p.Targets {
				if err := add(fmt.Sprintf("dashboard %q panel %q", board.Title, p.Title), tgt.Expr); err != nil {
					return nil, err
				}
			}
		}
	}
	return used, nil
}
