// Package config loads and validates cdcflow's settings from the environment
// with envconfig. Every invalid value is reported as one *Error naming its
// variable. The programs' start-up (flags, logger, pprof) is internal/program.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// TemporalClient locates the Temporal service and says how to connect: TLS,
// optionally mutual (a client certificate), and an API key.
type TemporalClient struct {
	Address     string `envconfig:"TEMPORAL_ADDRESS" default:"127.0.0.1:7233" desc:"Temporal frontend host:port"`
	Namespace   string `envconfig:"TEMPORAL_NAMESPACE" default:"default" desc:"Temporal namespace"`
	TLS         bool   `envconfig:"TEMPORAL_TLS" default:"false" desc:"connect to Temporal over TLS (implied by the other TEMPORAL_TLS_ settings and TEMPORAL_API_KEY)"`
	TLSCAFile   string `envconfig:"TEMPORAL_TLS_CA_FILE" desc:"PEM file of the CAs that sign the frontend's certificate (default: the system's)"`
	TLSCertFile string `envconfig:"TEMPORAL_TLS_CERT_FILE" desc:"PEM file of a client certificate to present, for mutual TLS (with TEMPORAL_TLS_KEY_FILE)"`
	TLSKeyFile  string `envconfig:"TEMPORAL_TLS_KEY_FILE" desc:"PEM file of the client certificate's private key"`
	TLSServer   string `envconfig:"TEMPORAL_TLS_SERVER_NAME" desc:"name the frontend's certificate must hold (default: the host of TEMPORAL_ADDRESS)"`
	APIKey      string `envconfig:"TEMPORAL_API_KEY" secret:"true" desc:"API key sent with every request, as Temporal Cloud's API keys are; implies TLS (or TEMPORAL_API_KEY_FILE: a file holding it)"`
}

// Temporal locates the Temporal service and cdcflow's task queue.
type Temporal struct {
	TemporalClient
	TaskQueue string `envconfig:"CDCFLOW_TASK_QUEUE" default:"cdcflow-apply" desc:"task queue of the apply workflows"`
}

// Log sets logging and diagnostics.
type Log struct {
	Level     slog.Level `envconfig:"CDCFLOW_LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	PprofAddr string     `envconfig:"CDCFLOW_PPROF_ADDR" desc:"serve Go's pprof profiles on this host:port (off when empty)"`
	// MetricsAddr serves capture's, the starter's and the worker's metrics
	// and health; see metrics.Serve.
	MetricsAddr string `envconfig:"CDCFLOW_METRICS_ADDR" desc:"serve Prometheus metrics at http://host:port/metrics, liveness at /healthz and readiness at /readyz (off when empty)"`
}

// Service is what every long-running program that speaks to Temporal and
// Kafka shares.
type Service struct {
	Temporal
	Log
	kafkax.Conn
}

// LogSettings returns l; every program's settings have it through Log.
func (l Log) LogSettings() Log { return l }

// Worker configures the worker.
type Worker struct {
	Service
	DestDSN string   `envconfig:"CDCFLOW_DEST_DSN" secret:"true" default:"postgres://postgres@127.0.0.1:5433/postgres?sslmode=disable" desc:"destination PostgreSQL connection string (or CDCFLOW_DEST_DSN_FILE: a file holding it)"`
	Tables  []string `envconfig:"CDCFLOW_TABLES" desc:"comma-separated allowlist of tables to write (schema.table); required"`
	// Activities bounds concurrent apply activities, and so destination connections.
	Activities int  `envconfig:"CDCFLOW_WORKER_ACTIVITIES" default:"4" desc:"apply activities run at once by this worker"`
	Migrate    bool `envconfig:"CDCFLOW_MIGRATE" default:"true" desc:"apply destination migrations at start"`
	// Timeouts of one apply on the destination: a batch behind a row lock
	// or a runaway statement fails and is retried rather than hanging.
	LockTimeout      time.Duration `envconfig:"CDCFLOW_APPLY_LOCK_TIMEOUT" default:"10s" desc:"lock_timeout of apply transactions (0: the server's)"`
	StatementTimeout time.Duration `envconfig:"CDCFLOW_APPLY_STATEMENT_TIMEOUT" default:"60s" desc:"statement_timeout of apply transactions, below the apply activity's 2 minutes (0: the server's)"`
	// The reconciler runs batch workflows that closed without completing
	// again; see workflows.Reconcile.
	ReconcileEvery time.Duration `envconfig:"CDCFLOW_RECONCILE_EVERY" default:"1m" desc:"how often batch workflows that closed without completing are found and run again (0: never)"`
	// Idempotency records and tombstones older than the redelivery horizon
	// are pruned; see applier.Prune.
	PruneEvery        time.Duration `envconfig:"CDCFLOW_PRUNE_EVERY" default:"1h" desc:"how often idempotency records and tombstones past the redelivery horizon are deleted (0: never)"`
	RedeliveryHorizon time.Duration `envconfig:"CDCFLOW_REDELIVERY_HORIZON" default:"168h" desc:"how long a change may be redelivered (longer than the change topic's retention): older idempotency records and tombstones are pruned"`
	MaxRedrives       int           `envconfig:"CDCFLOW_MAX_REDRIVES" default:"5" desc:"runs of a batch that closed without completing before its events are parked instead"`
	DLQTopic          string        `envconfig:"CDCFLOW_DLQ_TOPIC" desc:"dead-letter topic (default: the change topic + _dlq)"`
	// Snapshots: the rows tables held when their log-based capture began
	// are copied by workers that can read the source.
	SourceDSN          string        `envconfig:"CDCFLOW_SOURCE_DSN" secret:"true" desc:"source PostgreSQL connection string, to copy the snapshots log-based capture asks for (this worker copies none when empty; give it to every worker; or CDCFLOW_SOURCE_DSN_FILE: a file holding it)"`
	SnapshotPoll       time.Duration `envconfig:"CDCFLOW_SNAPSHOT_POLL" default:"5s" desc:"how often the source is asked for snapshots to start"`
	SnapshotChunkPages int64         `envconfig:"CDCFLOW_SNAPSHOT_CHUNK_PAGES" default:"1024" desc:"table pages (8 kB each) a snapshot copies per activity"`
	SnapshotParallel   int           `envconfig:"CDCFLOW_SNAPSHOT_PARALLEL" default:"2" desc:"chunks one snapshot copies at once"`
}

// Starter configures the starter.
type Starter struct {
	Service
	GroupID        string        `envconfig:"CDCFLOW_GROUP_ID" default:"cdcflow-starter" desc:"Kafka consumer group of the starter"`
	BatchMaxEvents int           `envconfig:"CDCFLOW_BATCH_MAX_EVENTS" default:"2000" desc:"cut a batch at this many events"`
	BatchMaxBytes  int           `envconfig:"CDCFLOW_BATCH_MAX_BYTES" default:"1048576" desc:"cut a batch before it exceeds this many bytes (at most 1572864, below Temporal's 2 MB payload limit)"`
	BatchMaxWait   time.Duration `envconfig:"CDCFLOW_BATCH_MAX_WAIT" default:"200ms" desc:"cut a batch this long after its first event arrived"`
	BatchIdleWait  time.Duration `envconfig:"CDCFLOW_BATCH_IDLE_WAIT" default:"0s" desc:"when positive, cut a batch sooner: this long after its first event if no batch of its partition is being applied, else as soon as none is (0: off, wait CDCFLOW_BATCH_MAX_WAIT)"`
	MaxInFlight    int           `envconfig:"CDCFLOW_MAX_IN_FLIGHT" default:"4" desc:"running batch workflows per partition before the starter stops fetching"`
	MaxAttempts    int           `envconfig:"CDCFLOW_MAX_ATTEMPTS" default:"3" desc:"tries of a change failing for a permanent reason before it is dead-lettered"`
	OrderingWindow time.Duration `envconfig:"CDCFLOW_ORDERING_WINDOW" default:"5m" desc:"how long a change failing for an ordering-dependent reason (foreign key, unique value, missing table or column) is retried before it is dead-lettered"`
	SessionTimeout time.Duration `envconfig:"CDCFLOW_KAFKA_SESSION_TIMEOUT" default:"30s" desc:"consumer group session timeout: how soon a crashed starter's partitions move to another"`
}

// Capture configures capture.
type Capture struct {
	Log
	kafkax.Conn
	SourceDSN    string        `envconfig:"CDCFLOW_SOURCE_DSN" secret:"true" default:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" desc:"source PostgreSQL connection string (or CDCFLOW_SOURCE_DSN_FILE: a file holding it)"`
	Tables       []string      `envconfig:"CDCFLOW_TABLES" desc:"comma-separated tables to capture (schema.table), each with a primary key; required"`
	BatchSize    int           `envconfig:"CDCFLOW_CAPTURE_BATCH" default:"5000" desc:"outbox rows published per Kafka write"`
	PollInterval time.Duration `envconfig:"CDCFLOW_CAPTURE_POLL" default:"20ms" desc:"pause between reads when the outbox is empty"`
	ReportEvery  time.Duration `envconfig:"CDCFLOW_CAPTURE_REPORT" default:"10s" desc:"how often progress and outbox backlog are logged"`
	Migrate      bool          `envconfig:"CDCFLOW_MIGRATE" default:"true" desc:"apply source migrations (outbox, trigger function) at start"`
	Mode         string        `envconfig:"CDCFLOW_CAPTURE_MODE" default:"logical" desc:"how changes are captured: logical (from the write-ahead log, through a publication and a replication slot; the source needs wal_level=logical) or trigger (a row trigger and an outbox table, where logical replication is not available)"`
	Slot         string        `envconfig:"CDCFLOW_SLOT" default:"cdcflow" desc:"logical mode: the replication slot, created if missing"`
	Publication  string        `envconfig:"CDCFLOW_PUBLICATION" default:"cdcflow" desc:"logical mode: the publication of the captured tables, created if missing and given the tables it lacks"`
	Snapshot     string        `envconfig:"CDCFLOW_SNAPSHOT" default:"initial" desc:"logical mode: initial (copy the rows a table holds when its capture begins, by a worker's Snapshot workflow) or never (the destination was loaded otherwise)"`
	// MaxChangeBytes bounds a row image; see capture.Config.MaxChangeBytes.
	MaxChangeBytes int `envconfig:"CDCFLOW_MAX_CHANGE_BYTES" default:"8388608" desc:"largest row image of a change that is published (its JSON, bytea counted by its bytes); a change whose new row is larger is parked on the source in cdcflow.oversized_changes and dead-lettered as ChangeTooLarge"`
}

// LoadWorker reads the worker's settings.
func LoadWorker() (Worker, error) {
	return load(func(c *Worker) error {
		if err := c.TemporalClient.Validate(); err != nil {
			return err
		}
		if c.DLQTopic == "" {
			c.DLQTopic = c.Topic + "_dlq"
		}
		return firstBroken(c.Conn, &c.Tables,
			rule{"CDCFLOW_WORKER_ACTIVITIES", c.Activities, c.Activities >= 1, "want at least 1"},
			rule{"CDCFLOW_RECONCILE_EVERY", c.ReconcileEvery, c.ReconcileEvery == 0 || c.ReconcileEvery >= time.Second, "want 0 (never) or at least 1s"},
			rule{"CDCFLOW_MAX_REDRIVES", c.MaxRedrives, within(c.MaxRedrives, 1, 1000), "want 1..1000"},
			rule{"CDCFLOW_PRUNE_EVERY", c.PruneEvery, c.PruneEvery == 0 || c.PruneEvery >= time.Second, "want 0 (never) or at least 1s"},
			rule{"CDCFLOW_REDELIVERY_HORIZON", c.RedeliveryHorizon, c.RedeliveryHorizon >= time.Minute, "want at least 1m"},
			rule{"CDCFLOW_APPLY_LOCK_TIMEOUT", c.LockTimeout, c.LockTimeout >= 0 && c.LockTimeout < 2*time.Minute, "want 0 or a duration below 2m"},
			rule{"CDCFLOW_APPLY_STATEMENT_TIMEOUT", c.StatementTimeout, c.StatementTimeout >= 0 && c.StatementTimeout < 2*time.Minute,
				"want 0 or a duration below 2m, the apply activity's timeout"},
			rule{"CDCFLOW_SNAPSHOT_POLL", c.SnapshotPoll, c.SnapshotPoll >= 100*time.Millisecond, "want at least 100ms"},
			rule{"CDCFLOW_SNAPSHOT_CHUNK_PAGES", c.SnapshotChunkPages, c.SnapshotChunkPages >= 1 && c.SnapshotChunkPages <= 1<<20, "want 1..1048576"},
			rule{"CDCFLOW_SNAPSHOT_PARALLEL", c.SnapshotParallel, within(c.SnapshotParallel, 1, 64), "want 1..64"})
	})
}

// LoadStarter reads the starter's settings.
func LoadStarter() (Starter, error) {
	return load(func(c *Starter) error {
		if err := c.TemporalClient.Validate(); err != nil {
			return err
		}
		return firstBroken(c.Conn, nil,
			rule{"CDCFLOW_BATCH_MAX_EVENTS", c.BatchMaxEvents, within(c.BatchMaxEvents, 1, 100000), "want 1..100000"},
			// A batch travels as one workflow input payload, and must stay
			// below Temporal's 2 MB limit as a single largest event does.
			rule{"CDCFLOW_BATCH_MAX_BYTES", c.BatchMaxBytes, within(c.BatchMaxBytes, 1024, event.MaxEventBytes),
				fmt.Sprintf("want 1024..%d", event.MaxEventBytes)},
			rule{"CDCFLOW_BATCH_MAX_WAIT", c.BatchMaxWait, c.BatchMaxWait > 0, "want a positive duration such as 200ms"},
			rule{"CDCFLOW_BATCH_IDLE_WAIT", c.BatchIdleWait, c.BatchIdleWait >= 0 && c.BatchIdleWait <= c.BatchMaxWait, "want 0 or a duration up to CDCFLOW_BATCH_MAX_WAIT"},
			rule{"CDCFLOW_KAFKA_SESSION_TIMEOUT", c.SessionTimeout, c.SessionTimeout >= time.Second, "want at least 1s"},
			rule{"CDCFLOW_MAX_ATTEMPTS", c.MaxAttempts, within(c.MaxAttempts, 1, 100), "want 1..100"},
			rule{"CDCFLOW_ORDERING_WINDOW", c.OrderingWindow, c.OrderingWindow >= time.Second && c.OrderingWindow <= 24*time.Hour, "want 1s..24h"},
			rule{"CDCFLOW_MAX_IN_FLIGHT", c.MaxInFlight, c.MaxInFlight >= 1, "want at least 1"})
	})
}

// LoadCapture reads capture's settings.
func LoadCapture() (Capture, error) {
	return load(func(c *Capture) error {
		return firstBroken(c.Conn, &c.Tables,
			rule{"CDCFLOW_CAPTURE_BATCH", c.BatchSize, within(c.BatchSize, 1, 100000), "want 1..100000"},
			rule{"CDCFLOW_CAPTURE_POLL", c.PollInterval, c.PollInterval > 0, "want a positive duration such as 20ms"},
			rule{"CDCFLOW_CAPTURE_REPORT", c.ReportEvery, c.ReportEvery > 0, "want a positive duration such as 10s"},
			rule{"CDCFLOW_CAPTURE_MODE", c.Mode, c.Mode == "trigger" || c.Mode == "logical", "want logical or trigger"},
			rule{"CDCFLOW_SLOT", c.Slot, slotName.MatchString(c.Slot), "want 1..63 lowercase letters, digits and underscores (a replication slot's name)"},
			rule{"CDCFLOW_SNAPSHOT", c.Snapshot, c.Snapshot == "initial" || c.Snapshot == "never", "want initial or never"},
			rule{"CDCFLOW_PUBLICATION", c.Publication, c.Publication != "" && len(c.Publication) <= 63, "want a name of 1..63 bytes"},
			rule{"CDCFLOW_MAX_CHANGE_BYTES", c.MaxChangeBytes, within(c.MaxChangeBytes, 1024, event.MaxChangeBytesLimit),
				fmt.Sprintf("want 1024..%d bytes (1 KiB to 64 MiB)", event.MaxChangeBytesLimit)})
	})
}

// load reads settings of type T from the environment and validates them.
func load[T any](validate func(*T) error) (T, error) {
	var c T
	if err := Process(&c); err != nil {
		return c, err
	}
	return c, validate(&c)
}

// rule is one condition a setting must meet.
type rule struct {
	name   string
	value  any
	ok     bool
	reason string
}

// firstBroken reports the first broken rule, then checks the Kafka settings
// and, when tables is not nil, normalizes the table allowlist.
func firstBroken(conn kafkax.Conn, tables *[]string, rules ...rule) error {
	for _, r := range rules {
		if !r.ok {
			return invalid(r.name, r.value, r.reason)
		}
	}
	if name, err := conn.Validate(); err != nil {
		value := os.Getenv(name)
		if name == "KAFKA_BROKERS" {
			value = strings.Join(conn.Brokers, ",")
		}
		return invalid(name, value, err.Error())
	}
	if tables == nil {
		return nil
	}
	var err error
	*tables, err = allowlist(*tables)
	return err
}

// slotName is what PostgreSQL accepts as a replication slot's name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func within(n, lo, hi int) bool { return n >= lo && n <= hi }

// LoadTemporal reads only where Temporal is and how to connect, for tools
// that need no more.
func LoadTemporal() (TemporalClient, error) {
	var c TemporalClient
	if err := Process(&c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate reports a TLS setting that is wrong (see TLSConfig).
func (c TemporalClient) Validate() error {
	_, err := c.TLSConfig()
	return err
}

// TLSConfig returns the TLS configuration of connections to Temporal, nil
// without TLS. A CA file that does not parse, or a client certificate
// without its key, is an *Error naming the variable.
func (c TemporalClient) TLSConfig() (*tls.Config, error) {
	if !c.UsesTLS() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServer}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, invalid("TEMPORAL_TLS_CA_FILE", c.TLSCAFile, pathless(err))
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, invalid("TEMPORAL_TLS_CA_FILE", c.TLSCAFile, "holds no PEM certificate")
		}
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return nil, invalid("TEMPORAL_TLS_KEY_FILE", "", "want the key of TEMPORAL_TLS_CERT_FILE")
	case c.TLSKeyFile != "" && c.TLSCertFile == "":
		return nil, invalid("TEMPORAL_TLS_CERT_FILE", "", "want the certificate of TEMPORAL_TLS_KEY_FILE")
	case c.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, invalid("TEMPORAL_TLS_CERT_FILE", c.TLSCertFile, "with TEMPORAL_TLS_KEY_FILE: "+err.Error())
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// UsesTLS reports whether Temporal is reached over TLS: TEMPORAL_TLS, any
// other TLS setting, or an API key (Temporal Cloud takes one over TLS only).
func (c TemporalClient) UsesTLS() bool {
	return c.TLS || c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" || c.TLSServer != "" || c.APIKey != ""
}

// allowlist normalizes the table allowlist. It has no default: cdcflow
// writes only the tables it is told to.
func allowlist(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, invalid("CDCFLOW_TABLES", "", "want at least one table (schema.table, comma-separated)")
	}
	out := make([]string, len(list))
	for i, t := range list {
		norm, err := event.NormalizeTable(strings.TrimSpace(t))
		if err != nil {
			return nil, invalid("CDCFLOW_TABLES", strings.Join(list, ","), err.Error())
		}
		out[i] = norm
	}
	return out, nil
}

// Error is an invalid setting; its message is one line naming the variable.
type Error struct {
	Var, Value, Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid %s=%q: %s", e.Var, redactValue(e.Var, e.Value), e.Reason)
}

func invalid(name string, value any, reason string) error {
	return &Error{Var: name, Value: fmt.Sprint(value), Reason: reason}
}

// Process reads spec from the environment, reporting a bad value as *Error.
// A secret setting (tagged secret:"true") may be given in a file instead,
// named by <NAME>_FILE; see readSecretFiles.
func Process(spec any) error {
	err := envconfig.Process("", spec)
	if err == nil {
		err = readSecretFiles(spec)
	}
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
