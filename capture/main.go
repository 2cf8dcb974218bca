// Command capture publishes row changes captured on the source PostgreSQL
// (by the outbox trigger) to Kafka as cdcflow change events.
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
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/migrations"
)

func main() { program.Main("capture", run) }

func run(ctx context.Context, args []string) error {
	cfg, log, err := program.Setup(ctx, "capture", "publishes source row changes to Kafka", args, config.LoadCapture)
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
	writer := kafkax.NewWriter(cfg.Brokers, cfg.Topic, kafkax.WriterOptions{BatchSize: cfg.BatchSize})
	defer writer.Close()

	c, err := capture.New(ctx, pool, writer, capture.Config{
		Tables:         cfg.Tables,
		BatchSize:      cfg.BatchSize,
		PollInterval:   cfg.PollInterval,
		ReportEvery:    cfg.ReportEvery,
		PublishGrace:   10 * time.Second,
		MaxChangeBytes: cfg.MaxChangeBytes,
		Newest: func(ctx context.Context, source string) (event.Event, bool, error) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			msgs, err := kafkax.LastMessages(ctx, cfg.Brokers, cfg.Topic, 16)
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
	}, log)
	if err != nil {
		return err
	}
	log.Info("capture started", "tables", cfg.Tables, "topic", cfg.Topic, "brokers", cfg.Brokers, "max_change_bytes", cfg.MaxChangeBytes)
	err = c.Run(ctx)
	log.Info("capture stopped", "published", c.Published())
	return err
}
