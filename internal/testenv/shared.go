package testenv

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/workflows"
)

// Services a test binary shares, started on first use and stopped by Main.
// External services are used instead when these variables are set:
//
//	CDCFLOW_TEST_PG_DSN  a PostgreSQL superuser DSN (databases are created in it)
//	TEMPORAL_ADDRESS     a Temporal frontend host:port (namespace "default")
//	KAFKA_BROKERS        comma-separated Kafka brokers
var shared struct {
	mu       sync.Mutex
	pg       *Postgres
	temporal *Temporal
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
func PG(t testing.TB) *Postgres {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.pg != nil {
		return shared.pg
	}
	if dsn := os.Getenv("CDCFLOW_TEST_PG_DSN"); dsn != "" {
		shared.pg = ExternalPostgres(dsn)
		return shared.pg
	}
	pg, err := StartPostgres(context.Background(), PostgresOptions{Settings: []string{"track_commit_timestamp=on"}})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	shared.pg = pg
	shared.closers = append(shared.closers, func() { pg.Close() })
	return pg
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
func TemporalServer(t testing.TB) *Temporal {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.temporal != nil {
		return shared.temporal
	}
	if addr := os.Getenv("TEMPORAL_ADDRESS"); addr != "" {
		shared.temporal = &Temporal{Address: addr, Namespace: "default"}
		return shared.temporal
	}
	tmp, err := StartTemporal(context.Background(), TemporalOptions{SearchAttributes: workflows.SearchAttributes})
	if err != nil {
		t.Fatalf("start Temporal: %v", err)
	}
	shared.temporal = tmp
	shared.closers = append(shared.closers, func() { tmp.Close() })
	return tmp
}

// NewKafka returns brokers that serve the given topics, created for this test:
// an in-process broker closed with the test, or the KAFKA_BROKERS cluster. The
// second result is the in-process broker, nil for an external cluster.
func NewKafka(t testing.TB, topics map[string]int32) ([]string, *Kafka) {
	t.Helper()
	if brokers := os.Getenv("KAFKA_BROKERS"); brokers != "" {
		list := strings.Split(brokers, ",")
		if err := createTopics(list, topics); err != nil {
			t.Fatal(err)
		}
		return list, nil
	}
	k, err := StartKafka(KafkaOptions{Topics: topics})
	if err != nil {
		t.Fatalf("start Kafka: %v", err)
	}
	t.Cleanup(k.Close)
	return k.Brokers, k
}

func createTopics(brokers []string, topics map[string]int32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return err
	}
	cc, err := kafka.DialContext(ctx, "tcp", ctrl.Host+":"+itoa(ctrl.Port))
	if err != nil {
		return err
	}
	defer cc.Close()
	var cfgs []kafka.TopicConfig
	for name, parts := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: name, NumPartitions: int(parts), ReplicationFactor: 1})
	}
	return cc.CreateTopics(cfgs...)
}

// ExternalServices reports whether tests run against external services.
func ExternalServices() bool {
	return os.Getenv("CDCFLOW_TEST_PG_DSN") != "" || os.Getenv("TEMPORAL_ADDRESS") != "" || os.Getenv("KAFKA_BROKERS") != ""
}
