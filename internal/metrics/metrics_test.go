package metrics

import (
	"context"
	"maps"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cdcflow/cdcflow/internal/cdc"
)

// collect returns the metrics recorded so far, by name.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func TestBatchDurationBucketsAreSeconds(t *testing.T) {
	r := sdkmetric.NewManualReader()
	a, err := NewApply(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a.Batch(ctx, 3*time.Millisecond)
	a.Batch(ctx, 40*time.Millisecond)
	a.Batch(ctx, 40*time.Millisecond)
	a.Batch(ctx, 2*time.Second)
	h := collect(t, r)["cdcflow.apply.batch.duration"].(metricdata.Histogram[float64])
	dp := h.DataPoints[0]
	// Each batch lands in the bucket of its duration, not all in the first.
	want := map[float64]uint64{0.005: 1, 0.05: 2, 2.5: 1}
	for i, bound := range dp.Bounds {
		if dp.BucketCounts[i] != want[bound] {
			t.Errorf("bucket le=%v holds %d batches, want %d (bounds %v, counts %v)", bound, dp.BucketCounts[i], want[bound], dp.Bounds, dp.BucketCounts)
		}
	}
}

func TestAFailedChangeCountsOnceWhenParked(t *testing.T) {
	r := sdkmetric.NewManualReader()
	a, err := NewApply(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// One change of a batch of three fails three attempts, then is parked.
	a.Outcomes(ctx, cdc.Counts{Applied: 2})
	for range 3 {
		a.Outcomes(ctx, cdc.Counts{})
		a.Error(ctx, cdc.ClassConstraint)
	}
	a.DeadLetter(ctx, cdc.ClassConstraint)

	got := collect(t, r)
	events := map[string]int64{}
	for _, dp := range got["cdcflow.apply.events"].(metricdata.Sum[int64]).DataPoints {
		v, _ := dp.Attributes.Value(attribute.Key("outcome"))
		events[v.AsString()] = dp.Value
	}
	// Every outcome's series exists from the start, at 0 until counted.
	if want := map[string]int64{"applied": 2, "parked": 1, "superseded": 0, "duplicate": 0}; !maps.Equal(events, want) {
		t.Errorf("events by outcome = %v, want %v", events, want)
	}
	attempts := map[string]int64{}
	for _, dp := range got["cdcflow.apply.errors"].(metricdata.Sum[int64]).DataPoints {
		v, _ := dp.Attributes.Value(attribute.Key("error_class"))
		attempts[v.AsString()] = dp.Value
	}
	if len(attempts) != len(cdc.ErrorClasses) || attempts[string(cdc.ClassConstraint)] != 3 || attempts[string(cdc.ClassTransient)] != 0 {
		t.Errorf("failed attempts = %v, want 3 of ConstraintViolation and a 0 series for every other class", attempts)
	}
}
