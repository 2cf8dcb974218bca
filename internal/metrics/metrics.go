// Package metrics exports cdcflow's OpenTelemetry metrics for Prometheus.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// Serve exports metrics at http://addr/metrics, and answers liveness at
// /healthz (200 while the process runs) and readiness at /readyz (200 when
// every dependency of health answered last, else 503), until ctx ends. It
// returns the meter provider to record the metrics with. An empty addr
// serves nothing and records nothing.
//
// Metric names follow one convention: cdcflow.<area>.<what> with a unit,
// which the exporter turns into cdcflow_<area>_<what>_<unit>, with _total
// for counters (a unit in braces, such as {change}, adds no suffix).
func Serve(ctx context.Context, addr string, health *Health, log *slog.Logger) (metric.MeterProvider, error) {
	if addr == "" {
		return noop.NewMeterProvider(), nil
	}
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: handler(reg, health), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), nil
}

// handler serves /metrics from reg, /healthz and /readyz of health.
func handler(reg *prometheus.Registry, health *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/readyz", health.readyz)
	return mux
}

// DurationBuckets are the bucket boundaries, in seconds, of the duration
// histograms: from 5 ms to a minute.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// LatencyBuckets are the bucket boundaries, in seconds, of the replication
// latency: DurationBuckets, then up to an hour, for a pipeline catching up.
var LatencyBuckets = slices.Concat(DurationBuckets, []float64{120, 300, 600, 1800, 3600})

// Apply holds the apply path's instruments.
type Apply struct {
	events      metric.Int64Counter
	errors      metric.Int64Counter
	deadLetters metric.Int64Counter
	duration    metric.Float64Histogram
	redriven    metric.Int64Counter
	latency     metric.Float64Histogram
	decided     metric.Int64Counter
}

// NewApply creates the apply path's instruments.
func NewApply(mp metric.MeterProvider) (*Apply, error) {
	m := mp.Meter("cdcflow")
	var a Apply
	var err error
	if a.events, err = m.Int64Counter("cdcflow.apply.events",
		metric.WithDescription("Change events by what became of them: applied, superseded (the row holds a newer change), duplicate (applied before), parked (a dead letter, counted once).")); err != nil {
		return nil, err
	}
	if a.errors, err = m.Int64Counter("cdcflow.apply.errors",
		metric.WithDescription("Failed apply attempts, by error_class: Transient (retried until they pass) or a permanent error class.")); err != nil {
		return nil, err
	}
	if a.deadLetters, err = m.Int64Counter("cdcflow.dead_letters",
		metric.WithDescription("Changes parked as dead letters, by error_class.")); err != nil {
		return nil, err
	}
	if a.duration, err = m.Float64Histogram("cdcflow.apply.batch.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(DurationBuckets...),
		metric.WithDescription("Time to apply one batch, failed attempts included.")); err != nil {
		return nil, err
	}
	if a.latency, err = m.Float64Histogram("cdcflow.apply.latency", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(LatencyBuckets...),
		metric.WithDescription("Time from a change's commit on the source to the commit of the destination transaction that applied it (clocks of two machines: skew shows here), one per change committed; a change delivered again is counted again.")); err != nil {
		return nil, err
	}
	if a.decided, err = m.Int64Counter("cdcflow.dead_letters.decided",
		metric.WithDescription("Parked changes a person decided, by decision: replayed (applied again, or found applied) or discarded.")); err != nil {
		return nil, err
	}
	if a.redriven, err = m.Int64Counter("cdcflow.batches.redriven",
		metric.WithDescription("Batch workflows that closed without completing and were started again, by outcome: redriven (applied again) or parked (every event parked after too many closes).")); err != nil {
		return nil, err
	}
	a.zero()
	return &a, nil
}

// zero starts every series of the counters at 0, so that dashboards and
// alerts find them before the first event of their kind.
func (a *Apply) zero() {
	ctx := context.Background()
	with := func(k, v string) metric.AddOption { return metric.WithAttributes(attribute.String(k, v)) }
	for _, o := range []string{"applied", "superseded", "duplicate", "parked"} {
		a.events.Add(ctx, 0, with("outcome", o))
	}
	for _, c := range cdc.ErrorClasses {
		a.errors.Add(ctx, 0, with("error_class", string(c)))
		if c != cdc.ClassTransient {
			a.deadLetters.Add(ctx, 0, with("error_class", string(c)))
		}
	}
	for _, d := range []cdc.State{cdc.StateReplayed, cdc.StateDiscarded} {
		a.decided.Add(ctx, 0, with("decision", string(d)))
	}
	for _, o := range []string{"redriven", "parked"} {
		a.redriven.Add(ctx, 0, with("outcome", o))
	}
}

// Redriven counts batches the reconciler started again to apply, and those
// it started again to park.
func (a *Apply) Redriven(ctx context.Context, redriven, parked int) {
	if a == nil {
		return
	}
	if redriven > 0 {
		a.redriven.Add(ctx, int64(redriven), metric.WithAttributes(attribute.String("outcome", "redriven")))
	}
	if parked > 0 {
		a.redriven.Add(ctx, int64(parked), metric.WithAttributes(attribute.String("outcome", "parked")))
	}
}

// Outcomes counts the events of one apply by outcome. A change that fails
// is not counted here: it is tried again, and counted once when it is
// applied or parked (DeadLetter).
func (a *Apply) Outcomes(ctx context.Context, c cdc.Counts) {
	if a == nil {
		return
	}
	for _, o := range []struct {
		name string
		n    int
	}{{"applied", c.Applied}, {"superseded", c.Superseded}, {"duplicate", c.Duplicates}} {
		if o.n > 0 {
			a.events.Add(ctx, int64(o.n), metric.WithAttributes(attribute.String("outcome", o.name)))
		}
	}
}

// Error counts one failed attempt of class.
func (a *Apply) Error(ctx context.Context, class cdc.ErrorClass) {
	if a != nil {
		a.errors.Add(ctx, 1, metric.WithAttributes(errorClass(class)))
	}
}

// DeadLetter counts one parked change of class, also as an event whose
// outcome is parked.
func (a *Apply) DeadLetter(ctx context.Context, class cdc.ErrorClass) {
	if a != nil {
		a.deadLetters.Add(ctx, 1, metric.WithAttributes(errorClass(class)))
		a.events.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "parked")))
	}
}

// Decided counts parked changes settled in state (replayed or discarded).
func (a *Apply) Decided(ctx context.Context, state cdc.State, n int) {
	if a != nil && n > 0 {
		a.decided.Add(ctx, int64(n), metric.WithAttributes(attribute.String("decision", string(state))))
	}
}

// ObserveOpenDeadLetters exports how many changes are parked now, as count
// tells at each collection (a scrape).
func ObserveOpenDeadLetters(mp metric.MeterProvider, count func(context.Context) (int64, error)) error {
	m := mp.Meter("cdcflow")
	open, err := m.Int64ObservableGauge("cdcflow.dead_letters.open", metric.WithUnit("{change}"),
		metric.WithDescription("Changes parked now, waiting for a person to replay or discard them."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		// A scrape collects every metric under one lock: a destination
		// that does not answer must not hold them all.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		n, err := count(ctx)
		if err != nil {
			return err
		}
		o.ObserveInt64(open, n)
		return nil
	}, open)
	return err
}

func errorClass(c cdc.ErrorClass) attribute.KeyValue {
	return attribute.String("error_class", string(c))
}

// Latency records, for one change committed at the destination at
// committed, how long after its commit on the source that was (0 when the
// clocks disagree).
func (a *Apply) Latency(ctx context.Context, source, committed time.Time) {
	if a != nil && !source.IsZero() {
		a.latency.Record(ctx, max(0, committed.Sub(source).Seconds()))
	}
}

// Batch records how long applying a batch took.
func (a *Apply) Batch(ctx context.Context, d time.Duration) {
	if a != nil {
		a.duration.Record(ctx, d.Seconds())
	}
}
