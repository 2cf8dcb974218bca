// Package config reads cdcflow's settings from the environment with
// envconfig. Every variable has a local default, so the binaries start
// against `make run`'s services with no environment at all.
package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when CDCFLOW_PPROF_ADDR is set
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Temporal locates the Temporal service.
type Temporal struct {
	Address   string `envconfig:"TEMPORAL_ADDRESS" default:"127.0.0.1:7233" desc:"Temporal frontend host:port"`
	Namespace string `envconfig:"TEMPORAL_NAMESPACE" default:"default" desc:"Temporal namespace"`
	TaskQueue string `envconfig:"CDCFLOW_TASK_QUEUE" default:"cdcflow-apply" desc:"task queue of the apply workflows"`
}

// Log sets logging and diagnostics.
type Log struct {
	Level     slog.Level `envconfig:"CDCFLOW_LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	PprofAddr string     `envconfig:"CDCFLOW_PPROF_ADDR" desc:"serve Go's pprof profiles on this host:port (off when empty)"`
}

// Worker configures the worker binary.
type Worker struct {
	Temporal
	Log
	DestDSN string   `envconfig:"CDCFLOW_DEST_DSN" default:"postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable" desc:"destination PostgreSQL connection string"`
	Tables  []string `envconfig:"CDCFLOW_TABLES" default:"public.employees" desc:"comma-separated allowlist of tables to replicate (schema.table)"`
	// Activities bounds concurrent apply activities, and so destination connections.
	Activities  int      `envconfig:"CDCFLOW_WORKER_ACTIVITIES" default:"4" desc:"apply activities run at once by this worker"`
	Migrate     bool     `envconfig:"CDCFLOW_MIGRATE" default:"true" desc:"apply destination migrations at start"`
	Brokers     []string `envconfig:"KAFKA_BROKERS" default:"127.0.0.1:9092" desc:"comma-separated Kafka bootstrap brokers (for the dead-letter topic)"`
	Topic       string   `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	DLQTopic    string   `envconfig:"CDCFLOW_DLQ_TOPIC" desc:"dead-letter topic (default: the change topic + _dlq)"`
	MetricsAddr string   `envconfig:"CDCFLOW_METRICS_ADDR" desc:"serve Prometheus metrics at http://host:port/metrics (off when empty)"`
}

// Starter configures the starter binary.
type Starter struct {
	Temporal
	Log
	Brokers        []string      `envconfig:"KAFKA_BROKERS" default:"127.0.0.1:9092" desc:"comma-separated Kafka bootstrap brokers"`
	Topic          string        `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	GroupID        string        `envconfig:"CDCFLOW_GROUP_ID" default:"cdcflow-starter" desc:"Kafka consumer group of the starter"`
	BatchMaxEvents int           `envconfig:"CDCFLOW_BATCH_MAX_EVENTS" default:"2000" desc:"cut a batch at this many events"`
	BatchMaxBytes  int           `envconfig:"CDCFLOW_BATCH_MAX_BYTES" default:"1048576" desc:"cut a batch before it exceeds this many bytes (at most 1572864, below Temporal's 2 MB payload limit)"`
	BatchMaxWait   time.Duration `envconfig:"CDCFLOW_BATCH_MAX_WAIT" default:"200ms" desc:"cut a batch this long after its first event arrived"`
	MaxInFlight    int           `envconfig:"CDCFLOW_MAX_IN_FLIGHT" default:"4" desc:"running batch workflows per partition before the starter stops fetching"`
	MaxAttempts    int           `envconfig:"CDCFLOW_MAX_ATTEMPTS" default:"3" desc:"tries of a change failing for a permanent reason before it is dead-lettered"`
	SessionTimeout time.Duration `envconfig:"CDCFLOW_KAFKA_SESSION_TIMEOUT" default:"30s" desc:"consumer group session timeout: how soon a crashed starter's partitions move to another"`
}

// Capture configures the capture program.
type Capture struct {
	Log
	SourceDSN    string        `envconfig:"CDCFLOW_SOURCE_DSN" default:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" desc:"source PostgreSQL connection string"`
	Tables       []string      `envconfig:"CDCFLOW_TABLES" default:"public.employees" desc:"comma-separated tables to capture (schema.table); each needs a primary key"`
	Brokers      []string      `envconfig:"KAFKA_BROKERS" default:"127.0.0.1:9092" desc:"comma-separated Kafka bootstrap brokers"`
	Topic        string        `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	BatchSize    int           `envconfig:"CDCFLOW_CAPTURE_BATCH" default:"5000" desc:"outbox rows published per Kafka write"`
	PollInterval time.Duration `envconfig:"CDCFLOW_CAPTURE_POLL" default:"20ms" desc:"pause between reads when the outbox is empty"`
	ReportEvery  time.Duration `envconfig:"CDCFLOW_CAPTURE_REPORT" default:"10s" desc:"how often progress and outbox backlog are logged"`
	Migrate      bool          `envconfig:"CDCFLOW_MIGRATE" default:"true" desc:"apply source migrations (outbox, trigger function) at start"`
}

// LoadCapture reads the capture program's settings.
func LoadCapture() (Capture, error) {
	var c Capture
	if err := Process(&c); err != nil {
		return c, err
	}
	switch {
	case c.BatchSize < 1 || c.BatchSize > 100000:
		return c, invalid("CDCFLOW_CAPTURE_BATCH", c.BatchSize, "want 1..100000")
	case c.PollInterval <= 0:
		return c, invalid("CDCFLOW_CAPTURE_POLL", c.PollInterval, "want a positive duration such as 20ms")
	case c.ReportEvery <= 0:
		return c, invalid("CDCFLOW_CAPTURE_REPORT", c.ReportEvery, "want a positive duration such as 10s")
	case len(c.Brokers) == 0:
		return c, invalid("KAFKA_BROKERS", "", "want at least one host:port")
	case c.Topic == "":
		return c, invalid("CDCFLOW_TOPIC", "", "want a topic name")
	}
	tables, err := normalizeTables(c.Tables)
	c.Tables = tables
	return c, err
}

func normalizeTables(tables []string) ([]string, error) {
	if len(tables) == 0 {
		return nil, invalid("CDCFLOW_TABLES", "", "want at least one table")
	}
	out := make([]string, len(tables))
	for i, t := range tables {
		norm, err := event.NormalizeTable(strings.TrimSpace(t))
		if err != nil {
			return nil, invalid("CDCFLOW_TABLES", strings.Join(tables, ","), err.Error())
		}
		out[i] = norm
	}
	return out, nil
}

// MaxBatchBytes keeps a batch, as workflow input, well below Temporal's 2 MB
// payload limit: the events are re-encoded with some overhead per event.
const MaxBatchBytes = 1536 << 10

// LoadWorker reads the worker's settings.
func LoadWorker() (Worker, error) {
	var c Worker
	if err := Process(&c); err != nil {
		return c, err
	}
	if c.Activities < 1 {
		return c, invalid("CDCFLOW_WORKER_ACTIVITIES", c.Activities, "want at least 1")
	}
	if len(c.Brokers) == 0 {
		return c, invalid("KAFKA_BROKERS", "", "want at least one host:port")
	}
	if c.DLQTopic == "" {
		c.DLQTopic = c.Topic + "_dlq"
	}
	tables, err := normalizeTables(c.Tables)
	c.Tables = tables
	return c, err
}

// LoadStarter reads the starter's settings.
func LoadStarter() (Starter, error) {
	var c Starter
	if err := Process(&c); err != nil {
		return c, err
	}
	switch {
	case c.BatchMaxEvents < 1 || c.BatchMaxEvents > 100000:
		return c, invalid("CDCFLOW_BATCH_MAX_EVENTS", c.BatchMaxEvents, "want 1..100000")
	case c.BatchMaxBytes < 1024 || c.BatchMaxBytes > MaxBatchBytes:
		return c, invalid("CDCFLOW_BATCH_MAX_BYTES", c.BatchMaxBytes, fmt.Sprintf("want 1024..%d", MaxBatchBytes))
	case c.BatchMaxWait <= 0:
		return c, invalid("CDCFLOW_BATCH_MAX_WAIT", c.BatchMaxWait, "want a positive duration such as 200ms")
	case c.SessionTimeout < time.Second:
		return c, invalid("CDCFLOW_KAFKA_SESSION_TIMEOUT", c.SessionTimeout, "want at least 1s")
	case c.MaxAttempts < 1 || c.MaxAttempts > 100:
		return c, invalid("CDCFLOW_MAX_ATTEMPTS", c.MaxAttempts, "want 1..100")
	case c.MaxInFlight < 1:
		return c, invalid("CDCFLOW_MAX_IN_FLIGHT", c.MaxInFlight, "want at least 1")
	case len(c.Brokers) == 0:
		return c, invalid("KAFKA_BROKERS", "", "want at least one host:port")
	case c.Topic == "":
		return c, invalid("CDCFLOW_TOPIC", "", "want a topic name")
	}
	return c, nil
}

// Error is an invalid setting; its message is one line naming the variable.
type Error struct {
	Var, Value, Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s=%q: %s", e.Var, e.Value, e.Reason)
}

func invalid(name string, value any, reason string) error {
	return &Error{Var: name, Value: fmt.Sprint(value), Reason: reason}
}

// Process reads spec from the environment, reporting a bad value as *Error.
func Process(spec any) error {
	err := envconfig.Process("", spec)
	var perr *envconfig.ParseError
	if errors.As(err, &perr) {
		reason := "want " + perr.TypeName
		switch perr.TypeName {
		case "time.Duration":
			reason = "want a duration such as 200ms or 5s"
		case "slog.Level":
			reason = "want debug, info, warn or error"
		}
		return &Error{Var: perr.KeyName, Value: perr.Value, Reason: reason}
	}
	return err
}

// ServePprof serves net/http/pprof on PprofAddr, when set, until ctx ends.
func (l Log) ServePprof(ctx context.Context, log *slog.Logger) error {
	if l.PprofAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", l.PprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listener: %w", err)
	}
	srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(ln) //nolint:errcheck // ends with ErrServerClosed
	log.Info("serving pprof", "addr", ln.Addr().String())
	return nil
}

// Logger returns a text logger at the configured level.
func (l Log) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l.Level}))
}
