// Command capture publishes row changes captured on the source PostgreSQL
// to Kafka as cdcflow change events: by a row trigger and an outbox table
// (CDCFLOW_CAPTURE_MODE=trigger) or from the write-ahead log through a
// replication slot (logical).
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cdcflow/cdcflow/internal/capture"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/wal"
	"github.com/cdcflow/cdcflow/migrations"
)

func main() { program.Main("capture", run) }

// writerBatch bounds the messages of one produce request. kafka-go
// allocates room for the full count with every request, whatever it
// carries: at the default CDCFLOW_CAPTURE_BATCH (5,000), 800 kB a partition
// and a request, which made most of capture's CPU time at 1,000 single-row
// transactions a second.
const writerBatch = 500

func run(ctx context.Context, args []string) error {
	cfg, log, err := program.Setup(ctx, "capture", "publishes source row changes to Kafka", args, config.LoadCapture)
	if err != nil {
		return err
	}
	// Ready once the source and Kafka answered, until reading the source
	// or publishing fails.
	health := metrics.NewHealth(metrics.DepSource, metrics.DepKafka)
	mp, err := metrics.Serve(ctx, cfg.MetricsAddr, health, log)
	if err != nil {
		return err
	}
	m, err := metrics.NewCapture(mp, cfg.Tables)
	if err != nil {
		return err
	}
	// Credentials or TLS settings the brokers refuse stop capture at once,
	// in one line; brokers not reachable yet are waited for.
	kc, err := cfg.Conn.Connect(ctx)
	if err != nil {
		return err
	}
	if cfg.Migrate {
		if err := db.Migrate(ctx, cfg.SourceDSN, migrations.SourceFS()); err != nil {
			return fmt.Errorf("migrate source: %w", err)
		}
	}
	pool, err := db.Open(ctx, cfg.SourceDSN, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	// A produce request carries at most writerBatch messages of a
	// partition: the writer makes room for that many with every request
	// (kafka-go), so a step of CDCFLOW_CAPTURE_BATCH changes goes as several.
	writer := kc.Writer(cfg.Topic, kafkax.WriterOptions{BatchSize: min(cfg.BatchSize, writerBatch)})
	defer writer.Close()
	go pingKafka(ctx, kc, cfg.Topic, cfg.ReportEvery, health)

	ccfg := capture.Config{
		Tables:         cfg.Tables,
		BatchSize:      cfg.BatchSize,
		PollInterval:   cfg.PollInterval,
		ReportEvery:    cfg.ReportEvery,
		PublishGrace:   10 * time.Second,
		MaxChangeBytes: cfg.MaxChangeBytes,
		NoSnapshot:     cfg.Snapshot == "never",
		Metrics:        m,
		Health:         health,
		Newest: func(ctx context.Context, source string) (event.Event, bool, error) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			msgs, err := kc.LastMessages(ctx, cfg.Topic, 16)
			if err != nil {
				return event.Event{}, false, err
			}
			values := make([][]byte, len(msgs))
			for i, m := range msgs {
				values[i] = m.Value
			}
			ev, found := capture.NewestOf(values, source)
			return ev, found, nil
		},
	}
	if cfg.Mode == "logical" {
		l := capture.NewLogical(pool, cfg.SourceDSN, writer, ccfg, wal.Config{Slot: cfg.Slot, Publication: cfg.Publication}, log)
		log.Info("capture started", "mode", cfg.Mode, "slot", cfg.Slot, "publication", cfg.Publication, "tables", cfg.Tables,
			"topic", cfg.Topic, "brokers", cfg.Brokers, "max_change_bytes", cfg.MaxChangeBytes)
		err = l.Run(ctx)
		log.Info("capture stopped", "published", l.Published())
		return err
	}
	c, err := capture.New(ctx, pool, writer, ccfg, log)
	if err != nil {
		return err
	}
	log.Info("capture started", "mode", cfg.Mode, "tables", cfg.Tables, "topic", cfg.Topic, "brokers", cfg.Brokers, "max_change_bytes", cfg.MaxChangeBytes)
	err = c.Run(ctx)
	log.Info("capture stopped", "published", c.Published())
	return err
}

// pingKafka asks Kafka for the topic whenever capture has not written to it
// for every, so that readiness says Kafka answered recently while the
// source is quiet too.
func pingKafka(ctx context.Context, kc *kafkax.Cluster, topic string, every time.Duration, health *metrics.Health) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if health.Quiet(metrics.DepKafka, every) {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := kc.Ping(pctx, topic)
			cancel()
			if ctx.Err() != nil {
				return
			}
			health.Set(metrics.DepKafka, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
