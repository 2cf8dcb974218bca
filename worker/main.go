// Command worker runs cdcflow's workflows and activities: it applies batches
// of change events to the destination PostgreSQL and parks what cannot be
// applied.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/worker"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/db"
	"github.com/cdcflow/cdcflow/internal/deadletter"
	"github.com/cdcflow/cdcflow/internal/kafkax"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/temporalx"
	"github.com/cdcflow/cdcflow/migrations"
	"github.com/cdcflow/cdcflow/workflows"
)

func main() { program.Main("worker", run) }

func run(ctx context.Context, args []string) error {
	cfg, log, err := program.Setup(ctx, "worker", "applies change batches to the destination PostgreSQL", args, config.LoadWorker)
	if err != nil {
		return err
	}
	// Ready once the destination answered and the Temporal worker runs,
	// until an apply cannot reach the destination or the worker fails.
	health := metrics.NewHealth(metrics.DepDestination, metrics.DepTemporal)
	mp, err := metrics.Serve(ctx, cfg.MetricsAddr, health, log)
	if err != nil {
		return err
	}
	// Credentials or TLS settings the brokers refuse stop the worker at
	// once, in one line, rather than when it first parks a change.
	kc, err := cfg.Conn.Connect(ctx)
	if err != nil {
		return err
	}

	if cfg.Migrate {
		if err := db.Migrate(ctx, cfg.DestDSN, migrations.DestFS()); err != nil {
			return fmt.Errorf("migrate destination: %w", err)
		}
	}
	timeouts := applier.Timeouts{Lock: cfg.LockTimeout, Statement: cfg.StatementTimeout}
	pool, err := db.Open(ctx, cfg.DestDSN, timeouts.ConfigurePool)
	if err != nil {
		return err
	}
	defer pool.Close()
	apl, err := applier.New(ctx, pool, cfg.Tables)
	if err != nil {
		return err
	}
	health.Set(metrics.DepDestination, nil)
	// The DLQ topic should be created with the change topic; where the
	// broker allows it, the first dead letter creates it.
	dlq := kc.Writer(cfg.DLQTopic, kafkax.WriterOptions{AutoCreateTopic: true})
	defer dlq.Close()
	m, err := metrics.NewApply(mp)
	if err != nil {
		return err
	}
	store := deadletter.NewStore(pool)
	if err := metrics.ObserveOpenDeadLetters(mp, store.Open); err != nil {
		return err
	}

	tc, err := temporalx.Dial(ctx, cfg.TemporalClient, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	w := worker.New(tc, cfg.TaskQueue, worker.Options{MaxConcurrentActivityExecutionSize: cfg.Activities,
		OnFatalError: func(err error) { health.Set(metrics.DepTemporal, fmt.Errorf("the Temporal worker stopped: %w", err)) }})
	workflows.Register(w)
	// Large changes travel as chunks in the change topic; the apply reads
	// them from there by the offsets the starter claimed, and parking reads
	// them to record the full change.
	chunks := kc.ChunkReader()
	w.RegisterActivity(&activities.Apply{Applier: apl, Chunks: chunks, Metrics: m, Health: health})
	w.RegisterActivity(&activities.DeadLetters{Store: store, Publisher: dlq, Chunks: chunks, Applier: apl, Metrics: m})
	w.RegisterActivity(&activities.Reconciler{Temporal: tc, Converter: temporalx.DataConverter(), TaskQueue: cfg.TaskQueue,
		MaxRedrives: cfg.MaxRedrives, Metrics: m})
	w.RegisterActivity(&activities.Bookkeeping{Pruner: apl, Horizon: cfg.RedeliveryHorizon})
	var source *pgxpool.Pool
	if cfg.SourceDSN != "" {
		if source, err = db.Open(ctx, cfg.SourceDSN, nil); err != nil {
			return err
		}
		defer source.Close()
	}
	w.RegisterActivity(&activities.Snapshots{Source: source, Applier: apl})
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	for _, s := range []struct {
		purpose, workflow string
		every             time.Duration
	}{{"reconcile", cdc.WorkflowReconcile, cfg.ReconcileEvery}, {"prune", cdc.WorkflowPrune, cfg.PruneEvery}} {
		if s.every == 0 {
			continue
		}
		if err := schedule(ctx, tc, s.purpose, s.workflow, cfg.TaskQueue, s.every); err != nil {
			w.Stop()
			if ctx.Err() != nil {
				log.Info("worker stopped while starting")
				return nil // told to stop: not a failure
			}
			return err
		}
	}
	if source != nil {
		go startSnapshots(ctx, tc, source, cfg.TaskQueue, cfg.SnapshotChunkPages, cfg.SnapshotParallel, cfg.SnapshotPoll, log)
	}
	health.Set(metrics.DepTemporal, nil)
	log.Info("worker started", "task_queue", cfg.TaskQueue, "temporal", cfg.Address, "tables", cfg.Tables, "dlq_topic", cfg.DLQTopic,
		"copies_snapshots", source != nil)
	<-ctx.Done()
	health.Set(metrics.DepTemporal, errors.New("the worker is stopping"))
	w.Stop()
	log.Info("worker stopped")
	return nil
}
