// Command capture publishes row changes captured on the source PostgreSQL
// (by the outbox trigger) to Kafka as cdcflow change events.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/capture"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/migrations"
)

func main() { config.Main("capture", run) }

func run(ctx context.Context, args []string) error {
	var cfg config.Capture
	if err := config.ParseFlags("capture", "publishes source row changes to Kafka", args, &cfg, os.Stdout); err != nil {
		return err
	}
	cfg, err := config.LoadCapture()
	if err != nil {
		return err
	}
	log := cfg.Logger()
	if err := cfg.ServePprof(ctx, log); err != nil {
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

	writer := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{}, // all changes of a row share a partition
		RequiredAcks: kafka.RequireAll,
		BatchSize:    cfg.BatchSize,
		BatchBytes:   event.MaxEventBytes + 64<<10, // below the topic's max.message.bytes (2 MiB)
		BatchTimeout: time.Millisecond,             // capture hands over whole batches
	}
	defer writer.Close()

	c, err := capture.New(ctx, pool, writer, capture.Config{
		Tables:       cfg.Tables,
		BatchSize:    cfg.BatchSize,
		PollInterval: cfg.PollInterval,
		ReportEvery:  cfg.ReportEvery,
		PublishGrace: 10 * time.Second,
	}, log)
	if err != nil {
		return err
	}
	log.Info("capture started", "tables", cfg.Tables, "topic", cfg.Topic, "brokers", cfg.Brokers)
	err = c.Run(ctx)
	log.Info("capture stopped", "published", c.Published())
	return err
}
