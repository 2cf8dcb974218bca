package config

import (
	"slices"
	"testing"
)

func TestVariables(t *testing.T) {
	got := Variables(TemporalClient{})
	if want := []string{"TEMPORAL_ADDRESS", "TEMPORAL_API_KEY", "TEMPORAL_NAMESPACE", "TEMPORAL_TLS", "TEMPORAL_TLS_CA_FILE",
		"TEMPORAL_TLS_CERT_FILE", "TEMPORAL_TLS_KEY_FILE", "TEMPORAL_TLS_SERVER_NAME"}; !slices.Equal(got, want) {
		t.Fatalf("Variables(TemporalClient{}) = %v, want %v", got, want)
	}
	// Embedded settings count, through pointers too.
	for _, spec := range []any{Worker{}, &Worker{}} {
		got := Variables(spec)
		for _, name := range []string{"TEMPORAL_ADDRESS", "CDCFLOW_TASK_QUEUE", "CDCFLOW_LOG_LEVEL", "KAFKA_BROKERS", "CDCFLOW_TOPIC",
			"CDCFLOW_DEST_DSN", "CDCFLOW_TABLES"} {
			if !slices.Contains(got, name) {
				t.Errorf("Variables(%T) = %v: no %s", spec, got, name)
			}
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("Variables(%T) = %v: want sorted and without repeats", spec, got)
		}
	}
	if got := Variables(Capture{}); slices.Contains(got, "TEMPORAL_ADDRESS") {
		t.Errorf("Variables(Capture{}) = %v: capture does not speak to Temporal", got)
	}
}
