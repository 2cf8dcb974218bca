package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// TestSettings: the defaults, and values read from the environment.
func TestSettings(t *testing.T) {
	service := Service{
		Temporal: Temporal{TemporalClient: TemporalClient{Address: "127.0.0.1:7233", Namespace: "default"}, TaskQueue: "cdcflow-apply"},
		Conn:     kafkax.Conn{Brokers: []string{"127.0.0.1:9092"}, Topic: "cdcflow.changes"},
	}
	t.Run("starter", func(t *testing.T) {
		want := Starter{Service: service, GroupID: "cdcflow-starter", BatchMaxEvents: 2000, BatchMaxBytes: 1 << 20,
			BatchMaxWait: 200 * time.Millisecond, MaxInFlight: 4, MaxAttempts: 3, OrderingWindow: 5 * time.Minute, SessionTimeout: 30 * time.Second}
		check(t, want)(LoadStarter())
	})
	t.Run("capture", func(t *testing.T) {
		t.Setenv("CDCFLOW_TABLES", "employees")
		want := Capture{Conn: service.Conn, Log: service.Log, SourceDSN: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
			Tables: []string{"public.employees"}, BatchSize: 5000, PollInterval: 20 * time.Millisecond, ReportEvery: 10 * time.Second,
			Migrate: true, MaxChangeBytes: 8 << 20, Mode: "logical", Slot: "cdcflow", Publication: "cdcflow", Snapshot: "initial"}
		check(t, want)(LoadCapture())
		t.Setenv("CDCFLOW_MAX_CHANGE_BYTES", "16777216")
		t.Setenv("CDCFLOW_CAPTURE_MODE", "logical")
		t.Setenv("CDCFLOW_SLOT", "cdc_orders")
		want.MaxChangeBytes, want.Mode, want.Slot = 16<<20, "logical", "cdc_orders"
		check(t, want)(LoadCapture())
	})
	t.Run("worker", func(t *testing.T) {
		t.Setenv("CDCFLOW_TABLES", "employees, sales.orders")
		t.Setenv("CDCFLOW_TOPIC", "changes")
		want := Worker{Service: service, DestDSN: "postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable",
			Tables: []string{"public.employees", "sales.orders"}, Activities: 4, Migrate: true, DLQTopic: "changes_dlq",
			LockTimeout: 10 * time.Second, StatementTimeout: time.Minute, ReconcileEvery: time.Minute, MaxRedrives: 5,
			PruneEvery: time.Hour, RedeliveryHorizon: 7 * 24 * time.Hour, SnapshotPoll: 5 * time.Second, SnapshotChunkPages: 1024, SnapshotParallel: 2}
		want.Topic = "changes"
		check(t, want)(LoadWorker())
	})
}

// check returns a function that compares what a Load function returned
// with want.
func check[T any](t *testing.T, want T) func(T, error) {
	return func(got T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("settings (-want +got):\n%s", diff)
		}
	}
}

// TestTablesAreRequired: cdcflow writes only tables it is told to; there is
// no default table.
func TestTablesAreRequired(t *testing.T) {
	const want = `invalid CDCFLOW_TABLES="": want at least one table (schema.table, comma-separated)`
	if _, err := LoadWorker(); err == nil || err.Error() != want {
		t.Errorf("worker: got %v, want %q", err, want)
	}
	if _, err := LoadCapture(); err == nil || err.Error() != want {
		t.Errorf("capture: got %v, want %q", err, want)
	}
}

func TestInvalidValues(t *testing.T) {
	type load func() error
	starter := func() error { _, err := LoadStarter(); return err }
	worker := func() error { _, err := LoadWorker(); return err }
	capture := func() error { _, err := LoadCapture(); return err }
	cases := []struct {
		name, value string
		load        load
		want        string
	}{
		{"CDCFLOW_BATCH_MAX_EVENTS", "many", starter, `invalid CDCFLOW_BATCH_MAX_EVENTS="many": want int`},
		{"CDCFLOW_BATCH_MAX_EVENTS", "0", starter, `invalid CDCFLOW_BATCH_MAX_EVENTS="0": want 1..100000`},
		{"CDCFLOW_BATCH_MAX_BYTES", "3000000", starter, `invalid CDCFLOW_BATCH_MAX_BYTES="3000000": want 1024..1572864`},
		{"CDCFLOW_BATCH_MAX_WAIT", "soon", starter, `invalid CDCFLOW_BATCH_MAX_WAIT="soon": want a duration such as 200ms or 5s`},
		{"CDCFLOW_BATCH_MAX_WAIT", "-1s", starter, `invalid CDCFLOW_BATCH_MAX_WAIT="-1s": want a positive duration such as 200ms`},
		{"CDCFLOW_MAX_IN_FLIGHT", "0", starter, `invalid CDCFLOW_MAX_IN_FLIGHT="0": want at least 1`},
		{"CDCFLOW_BATCH_IDLE_WAIT", "1s", starter, `invalid CDCFLOW_BATCH_IDLE_WAIT="1s": want 0 or a duration up to CDCFLOW_BATCH_MAX_WAIT`},
		{"CDCFLOW_KAFKA_SESSION_TIMEOUT", "10ms", starter, `invalid CDCFLOW_KAFKA_SESSION_TIMEOUT="10ms": want at least 1s`},
		{"CDCFLOW_LOG_LEVEL", "loud", starter, `invalid CDCFLOW_LOG_LEVEL="loud": want debug, info, warn or error`},
		{"CDCFLOW_TOPIC", "", starter, `invalid CDCFLOW_TOPIC="": want a topic name`},
		{"KAFKA_BROKERS", "", capture, `invalid KAFKA_BROKERS="": want at least one host:port`},
		{"CDCFLOW_TABLES", "a.b.c", worker, `invalid CDCFLOW_TABLES="a.b.c": want schema.table, got "a.b.c"`},
		{"CDCFLOW_WORKER_ACTIVITIES", "0", worker, `invalid CDCFLOW_WORKER_ACTIVITIES="0": want at least 1`},
		{"CDCFLOW_MIGRATE", "perhaps", worker, `invalid CDCFLOW_MIGRATE="perhaps": want bool`},
		{"CDCFLOW_APPLY_STATEMENT_TIMEOUT", "5m", worker, `invalid CDCFLOW_APPLY_STATEMENT_TIMEOUT="5m0s": want 0 or a duration below 2m, the apply activity's timeout`},
		{"CDCFLOW_CAPTURE_POLL", "0s", capture, `invalid CDCFLOW_CAPTURE_POLL="0s": want a positive duration such as 20ms`},
		{"CDCFLOW_CAPTURE_MODE", "wal", capture, `invalid CDCFLOW_CAPTURE_MODE="wal": want logical or trigger`},
		{"CDCFLOW_SLOT", "My-Slot", capture, `invalid CDCFLOW_SLOT="My-Slot": want 1..63 lowercase letters, digits and underscores (a replication slot's name)`},
		{"CDCFLOW_SNAPSHOT", "always", capture, `invalid CDCFLOW_SNAPSHOT="always": want initial or never`},
		{"CDCFLOW_SNAPSHOT_PARALLEL", "0", worker, `invalid CDCFLOW_SNAPSHOT_PARALLEL="0": want 1..64`},
		{"CDCFLOW_SNAPSHOT_CHUNK_PAGES", "-1", worker, `invalid CDCFLOW_SNAPSHOT_CHUNK_PAGES="-1": want 1..1048576`},
		{"CDCFLOW_SNAPSHOT_POLL", "1ms", worker, `invalid CDCFLOW_SNAPSHOT_POLL="1ms": want at least 100ms`},
		{"CDCFLOW_PUBLICATION", "", capture, `invalid CDCFLOW_PUBLICATION="": want a name of 1..63 bytes`},
		{"CDCFLOW_MAX_CHANGE_BYTES", "8MiB", capture, `invalid CDCFLOW_MAX_CHANGE_BYTES="8MiB": want int`},
		{"CDCFLOW_MAX_CHANGE_BYTES", "100", capture, `invalid CDCFLOW_MAX_CHANGE_BYTES="100": want 1024..67108864 bytes (1 KiB to 64 MiB)`},
		{"CDCFLOW_MAX_CHANGE_BYTES", "134217728", capture, `invalid CDCFLOW_MAX_CHANGE_BYTES="134217728": want 1024..67108864 bytes (1 KiB to 64 MiB)`},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			if c.name != "CDCFLOW_TABLES" {
				t.Setenv("CDCFLOW_TABLES", "public.employees")
			}
			t.Setenv(c.name, c.value)
			err := c.load()
			if err == nil || err.Error() != c.want {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}
