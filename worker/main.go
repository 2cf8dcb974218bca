// Command worker runs cdcflow's workflows and activities: it applies batches
// of change events to the destination PostgreSQL.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
	"go.temporal.io/sdk/worker"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/migrations"
	"github.com/cdcflow/cdcflow/workflows"
)

func main() { config.Main("worker", run) }

func run(ctx context.Context, args []string) error {
	var cfg config.Worker
	if err := config.ParseFlags("worker", "applies change batches to the destination PostgreSQL", args, &cfg, os.Stdout); err != nil {
		return err
	}
	cfg, err := config.LoadWorker()
	if err != nil {
		return err
	}
	log := cfg.Logger()
	if err := cfg.ServePprof(ctx, log); err != nil {
		return err
	}

	if cfg.Migrate {
		if err := db.Migrate(ctx, cfg.DestDSN, migrations.DestFS()); err != nil {
			return fmt.Errorf("migrate destination: %w", err)
		}
	}
	pool, err := db.Open(ctx, cfg.DestDSN, applier.ConfigurePool)
	if err != nil {
		return err
	}
	defer pool.Close()
	apl, err := applier.New(ctx, pool, cfg.Tables)
	if err != nil {
		return err
	}

	tc, err := temporalx.Dial(ctx, cfg.Address, cfg.Namespace, log)
	if err != nil {
		return err
	}
	defer tc.Close()

	w := worker.New(tc, cfg.TaskQueue, worker.Options{
		MaxConcurrentActivityExecutionSize: cfg.Activities,
	})
	workflows.Register(w)
	dlq := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, // one dead letter at a time
		// The DLQ topic should be created with the change topic; where the
		// broker allows it, the first dead letter creates it.
		AllowAutoTopicCreation: true,
		BatchBytes:             event.MaxEventBytes + 64<<10,
	}
	defer dlq.Close()
	mp, err := metrics.Serve(ctx, cfg.MetricsAddr, log)
	if err != nil {
		return err
	}
	m, err := metrics.NewApply(mp)
	if err != nil {
		return err
	}
	w.RegisterActivity(&activities.Apply{Applier: apl, Metrics: m})
	w.RegisterActivity(&activities.DeadLetters{Pool: pool, Publisher: dlq, Topic: cfg.DLQTopic, Metrics: m})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	log.Info("worker started", "task_queue", cfg.TaskQueue, "temporal", cfg.Address, "tables", cfg.Tables, "dlq_topic", cfg.DLQTopic)
	<-ctx.Done()
	w.Stop()
	log.Info("worker stopped")
	return nil
}
