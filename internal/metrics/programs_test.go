package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// get answers a GET of path from h with its status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestReadinessFollowsTheLastAnswer(t *testing.T) {
	health := NewHealth(DepSource, DepKafka)
	h := handler(prometheus.NewRegistry(), health)
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "live\n" {
		t.Errorf("/healthz = %d %q, want 200 live", code, body)
	}
	want := func(code int, lines ...string) {
		t.Helper()
		got, body := get(t, h, "/readyz")
		if got != code {
			t.Errorf("/readyz = %d, want %d:\n%s", got, code, body)
		}
		for _, l := range lines {
			if !strings.Contains(body, l) {
				t.Errorf("/readyz body lacks %q:\n%s", l, body)
			}
		}
	}
	want(http.StatusServiceUnavailable, "not ready\n", "source: not yet answered\n", "kafka: not yet answered\n")
	health.Set(DepSource, nil)
	want(http.StatusServiceUnavailable, "source: ok\n", "kafka: not yet answered\n")
	health.Set(DepKafka, nil)
	health.Set("unnamed", errors.New("ignored"))
	want(http.StatusOK, "ready\n", "source: ok\n", "kafka: ok\n")
	health.Set(DepKafka, errors.New("dial tcp: connection refused"))
	want(http.StatusServiceUnavailable, "kafka: dial tcp: connection refused (0s ago)\n")
	health.Set(DepKafka, nil)
	want(http.StatusOK, "kafka: ok\n")

	if health.Quiet(DepKafka, time.Hour) || !health.Quiet(DepKafka, 0) || NewHealth(DepKafka).Quiet(DepKafka, time.Hour) != true {
		t.Error("Quiet: want false just after an answer within an hour, true for 0 and before any answer")
	}
	var none *Health
	none.Set(DepKafka, errors.New("nothing recorded"))
	if ready, _ := none.Ready(); !ready {
		t.Error("a nil Health is not ready")
	}
}

// reader returns a meter provider recording into a manual reader.
func reader() (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	r := sdkmetric.NewManualReader()
	return r, sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
}

// byAttr returns the values of the int64 sum or gauge data points of m by
// the value of attribute key.
func byAttr(t *testing.T, data metricdata.Aggregation, key string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	var points []metricdata.DataPoint[int64]
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	default:
		t.Fatalf("data %T, want an int64 sum or gauge", data)
	}
	for _, dp := range points {
		v, _ := dp.Attributes.Value(attribute.Key(key))
		out[v.AsString()] = dp.Value
	}
	return out
}

func TestCaptureCountsByTable(t *testing.T) {
	r, mp := reader()
	c, err := NewCapture(mp, []string{"public.a", "public.b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Published(ctx, "public.a", 3)
	c.Published(ctx, "public.a", 2)
	c.Published(ctx, "public.c", 1) // not in the allowlist: counted too
	c.PublishError(ctx)
	c.Outbox(ctx, 7, 1500*time.Millisecond)
	got := collect(t, r)
	if changes := byAttr(t, got["cdcflow.capture.changes"], "table"); len(changes) != 3 ||
		changes["public.a"] != 5 || changes["public.b"] != 0 || changes["public.c"] != 1 {
		t.Errorf("changes by table = %v, want public.a 5, public.b 0, public.c 1", changes)
	}
	if errs := got["cdcflow.capture.publish.errors"].(metricdata.Sum[int64]).DataPoints; len(errs) != 1 || errs[0].Value != 1 {
		t.Errorf("publish errors = %+v, want 1", errs)
	}
	if rows := got["cdcflow.capture.outbox.rows"].(metricdata.Gauge[int64]).DataPoints; len(rows) != 1 || rows[0].Value != 7 {
		t.Errorf("outbox rows = %+v, want 7", rows)
	}
	if d := got["cdcflow.capture.outbox.delay"].(metricdata.Gauge[float64]).DataPoints; len(d) != 1 || d[0].Value != 1.5 {
		t.Errorf("outbox delay = %+v, want 1.5 s", d)
	}
	if _, ok := got["cdcflow.capture.slot.lag"]; ok {
		t.Error("trigger-mode capture reports a slot lag")
	}
}

func TestStarterPartitionsAndStarts(t *testing.T) {
	r, mp := reader()
	parts := map[int][2]int64{0: {12, 1}, 3: {0, 4}}
	s, err := NewStarter(mp, func(_ context.Context, report func(partition int, lag, inFlight int64)) {
		for p, v := range parts {
			report(p, v[0], v[1])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.Started(ctx, false, 10, 1, 30*time.Millisecond)
	s.Started(ctx, true, 4, 0, 2*time.Millisecond)
	s.Skipped(ctx, 2)
	got := collect(t, r)
	if lag := byAttr(t, got["cdcflow.starter.consumer.lag"], "partition"); len(lag) != 2 || lag["0"] != 12 || lag["3"] != 0 {
		t.Errorf("lag by partition = %v, want 0: 12, 3: 0", lag)
	}
	if n := byAttr(t, got["cdcflow.starter.batches.in_flight"], "partition"); len(n) != 2 || n["0"] != 1 || n["3"] != 4 {
		t.Errorf("in flight by partition = %v, want 0: 1, 3: 4", n)
	}
	for name, want := range map[string]int64{"cdcflow.starter.batches.started": 1, "cdcflow.starter.batches.existing": 1,
		"cdcflow.starter.messages": 16, "cdcflow.starter.messages.redelivered": 4, "cdcflow.starter.messages.poison": 1} {
		if dp := got[name].(metricdata.Sum[int64]).DataPoints; len(dp) != 1 || dp[0].Value != want {
			t.Errorf("%s = %+v, want %d", name, dp, want)
		}
	}
	h := got["cdcflow.starter.start.duration"].(metricdata.Histogram[float64]).DataPoints[0]
	if h.Count != 2 || h.Bounds[0] != 0.005 || h.BucketCounts[0] != 1 || h.BucketCounts[3] != 1 {
		t.Errorf("start duration: count %d, bounds %v, buckets %v; want one start up to 5 ms and one in (25, 50] ms",
			h.Count, h.Bounds, h.BucketCounts)
	}
	// A partition no longer read is no longer reported.
	delete(parts, 3)
	if lag := byAttr(t, collect(t, r)["cdcflow.starter.consumer.lag"], "partition"); len(lag) != 1 {
		t.Errorf("lag by partition after partition 3 went = %v, want partition 0 alone", lag)
	}
}

func TestLatencyFromSourceCommit(t *testing.T) {
	r, mp := reader()
	a, err := NewApply(mp)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	a.Latency(ctx, now.Add(-40*time.Millisecond), now)
	a.Latency(ctx, now.Add(-90*time.Second), now)
	a.Latency(ctx, now.Add(time.Second), now) // the source's clock ahead: 0
	a.Latency(ctx, time.Time{}, now)          // no commit time: not recorded
	h := collect(t, r)["cdcflow.apply.latency"].(metricdata.Histogram[float64]).DataPoints[0]
	want := map[float64]uint64{0.005: 1, 0.05: 1, 120: 1}
	if h.Count != 3 {
		t.Errorf("latency count = %d, want 3", h.Count)
	}
	for i, bound := range h.Bounds {
		if h.BucketCounts[i] != want[bound] {
			t.Errorf("bucket le=%v holds %d changes, want %d (bounds %v, counts %v)", bound, h.BucketCounts[i], want[bound], h.Bounds, h.BucketCounts)
		}
	}
}

// TestPrometheusNames: the names the exporter gives the instruments, as
// the operations guide lists them.
func TestPrometheusNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	ctx := context.Background()
	c, err := NewCapture(mp, []string{"public.t"})
	if err != nil {
		t.Fatal(err)
	}
	c.Outbox(ctx, 1, time.Second)
	c.Slot(ctx, 1, 1)
	s, err := NewStarter(mp, func(_ context.Context, report func(int, int64, int64)) { report(0, 1, 1) })
	if err != nil {
		t.Fatal(err)
	}
	s.Started(ctx, false, 1, 0, time.Millisecond)
	a, err := NewApply(mp)
	if err != nil {
		t.Fatal(err)
	}
	a.Latency(ctx, time.Now(), time.Now())
	_, body := get(t, handler(reg, nil), "/metrics")
	for _, name := range []string{
		`cdcflow_capture_changes_total{table="public.t"} 0`, "cdcflow_capture_publish_errors_total 0",
		"cdcflow_capture_outbox_rows 1", "cdcflow_capture_outbox_delay_seconds 1",
		"cdcflow_capture_slot_lag_bytes 1", "cdcflow_capture_slot_delay_seconds 1",
		`cdcflow_starter_consumer_lag{partition="0"} 1`, `cdcflow_starter_batches_in_flight{partition="0"} 1`,
		"cdcflow_starter_batches_started_total 1", "cdcflow_starter_batches_existing_total 0",
		"cdcflow_starter_messages_total 1", "cdcflow_starter_messages_redelivered_total 0", "cdcflow_starter_messages_poison_total 0",
		"cdcflow_starter_start_duration_seconds_count 1", "cdcflow_apply_latency_seconds_count 1",
	} {
		if !strings.Contains(body, "\n"+name+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", name, body)
		}
	}
}
