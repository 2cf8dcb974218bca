// Package testenv is the tests' side of cdcflow's local services: testing.TB
// helpers that share one PostgreSQL server and one Temporal dev server per
// test binary (started through internal/localsvc, or external ones), and give
// each test its own database and broker.
package testenv

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/migrations"
)

// Services a test binary shares, started on first use and stopped by Main.
// External services are used instead when these variables are set:
//
//	CDCFLOW_TEST_PG_DSN  a PostgreSQL superuser DSN (databases are created in it)
//	TEMPORAL_ADDRESS     a Temporal frontend host:port (namespace "default")
//	KAFKA_BROKERS        comma-separated Kafka brokers
var shared struct {
	mu       sync.Mutex
	pg       *localsvc.Postgres
	temporal *localsvc.Temporal
	closers  []func()
}

// Main runs the tests and then stops every shared service. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	for i := len(shared.closers) - 1; i >= 0; i-- {
		shared.closers[i]()
	}
	return code
}

// PG returns the shared PostgreSQL server.
func PG(t testing.TB) *localsvc.Postgres {
	t.Helper()
	return sharedService(t, &shared.pg, "PostgreSQL", func() (*localsvc.Postgres, bool) {
		if dsn := os.Getenv("CDCFLOW_TEST_PG_DSN"); dsn != "" {
			return localsvc.ExternalPostgres(dsn), true
		}
		return nil, false
	}, func() (*localsvc.Postgres, error) {
		return localsvc.StartPostgres(context.Background(), localsvc.PostgresOptions{Settings: []string{"track_commit_timestamp=on"}})
	})
}

// sharedService returns *slot, filling it on first use with the external
// service, if external finds one, or one that start starts and Main closes.
func sharedService[S interface{ Close() error }](t testing.TB, slot *S, what string, external func() (S, bool), start func() (S, error)) S {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var zero S
	if any(*slot) != any(zero) {
		return *slot
	}
	if s, ok := external(); ok {
		*slot = s
		return s
	}
	s, err := start()
	if err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	*slot = s
	shared.closers = append(shared.closers, func() { s.Close() })
	return s
}

// NewDatabase creates an empty database on the shared server for this test
// and returns its DSN.
func NewDatabase(t testing.TB, prefix string) string {
	t.Helper()
	dsn, err := PG(t).CreateDatabase(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// TemporalServer returns the shared Temporal server. Tests isolate themselves
// with their own task queue and workflow IDs.
func TemporalServer(t testing.TB) *localsvc.Temporal {
	t.Helper()
	return sharedService(t, &shared.temporal, "Temporal", func() (*localsvc.Temporal, bool) {
		if addr := os.Getenv("TEMPORAL_ADDRESS"); addr != "" {
			return &localsvc.Temporal{Address: addr, Namespace: "default"}, true
		}
		return nil, false
	}, func() (*localsvc.Temporal, error) {
		return localsvc.StartTemporal(context.Background(), localsvc.TemporalOptions{SearchAttributes: cdc.SearchAttributes})
	})
}

// NewKafka returns brokers that serve the given topics, created for this test:
// an in-process broker closed with the test, or the KAFKA_BROKERS cluster. The
// second result is the in-process broker, nil for an external cluster.
func NewKafka(t testing.TB, topics map[string]int32) ([]string, *localsvc.Kafka) {
	t.Helper()
	if brokers := os.Getenv("KAFKA_BROKERS"); brokers != "" {
		list := strings.Split(brokers, ",")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kafkax.CreateTopics(ctx, list, topics); err != nil {
			t.Fatal(err)
		}
		return list, nil
	}
	k, err := localsvc.StartKafka(localsvc.KafkaOptions{Topics: topics})
	if err != nil {
		t.Fatalf("start Kafka: %v", err)
	}
	t.Cleanup(k.Close)
	return k.Brokers, k
}

// ExternalServices reports whether tests run against external services.
func ExternalServices() bool {
	return os.Getenv("CDCFLOW_TEST_PG_DSN") != "" || os.Getenv("TEMPORAL_ADDRESS") != "" || os.Getenv("KAFKA_BROKERS") != ""
}

// Dial connects a client, with cdcflow's data converter, to tmp, closed with
// the test.
func Dial(t testing.TB, tmp *localsvc.Temporal) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: tmp.Address, Namespace: tmp.Namespace, Logger: quietLogger{},
		DataConverter: temporalx.DataConverter()})
	if err != nil {
		t.Fatalf("connect to Temporal at %s: %v", tmp.Address, err)
	}
	t.Cleanup(c.Close)
	return c
}

// quietLogger drops the SDK's log lines; test output stays readable.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// Migrated creates a database for this test with the migrations of fsys
// (migrations.SourceFS or DestFS) applied and returns a pool on it, closed
// with the test; configure, when not nil, prepares the pool.
func Migrated(t testing.TB, prefix string, fsys fs.FS, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	dsn := NewDatabase(t, prefix)
	if err := db.Migrate(ctx, dsn, fsys); err != nil {
		t.Fatal(err)
	}
	pool, err := db.Open(ctx, dsn, configure)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewDestination creates a migrated destination database for this test, with
// the demo table, and returns a pool configured with timeouts and an applier
// for tables (the demo table when none are given).
func NewDestination(t testing.TB, timeouts applier.Timeouts, tables ...string) (*pgxpool.Pool, *applier.Applier) {
	t.Helper()
	ctx := context.Background()
	pool := Migrated(t, "dest", migrations.DestFS(), timeouts.ConfigurePool)
	if err := demo.CreateTable(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if len(tables) == 0 {
		tables = []string{demo.Table}
	}
	apl, err := applier.New(ctx, pool, tables)
	if err != nil {
		t.Fatal(err)
	}
	return pool, apl
}

// DropSlotAtCleanup drops the replication slot slot when the test ends:
// slots belong to the whole server, outlive the test's database and hold
// the server's log. Its sender, if still running, is terminated first.
func DropSlotAtCleanup(t testing.TB, pool *pgxpool.Pool, slot string) {
	t.Cleanup(func() {
		ctx := context.Background()
		for range 50 {
			_, _ = pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
			_, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
			if err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the terminated sender has yet to let go of the slot
		}
		t.Errorf("replication slot %s could not be dropped", slot)
	})
}
