// Command starter is cdcflow's thin Kafka poller: it cuts the change stream
// into batches and starts one ApplyBatch workflow per batch. It does no
// database work.
package main

import (
	"context"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/metrics"
	"github.com/cdcflow/cdcflow/internal/poller"
	"github.com/cdcflow/cdcflow/internal/program"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func main() { program.Main("starter", run) }

func run(ctx context.Context, args []string) error {
	cfg, log, err := program.Setup(ctx, "starter", "starts one Temporal workflow per batch of Kafka change events", args, config.LoadStarter)
	if err != nil {
		return err
	}
	// Ready once it joined the consumer group and Temporal answered, until
	// either fails.
	health := metrics.NewHealth(metrics.DepKafka, metrics.DepTemporal)
	mp, err := metrics.Serve(ctx, cfg.MetricsAddr, health, log)
	if err != nil {
		return err
	}
	// Credentials or TLS settings the brokers refuse stop the starter at
	// once, in one line, rather than in retries to join the group.
	if _, err := cfg.Conn.Connect(ctx); err != nil {
		return err
	}
	tc, err := temporalx.Dial(ctx, cfg.TemporalClient, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	health.Set(metrics.DepTemporal, nil)

	p := poller.New(poller.Config{
		Conn:           cfg.Conn,
		GroupID:        cfg.GroupID,
		TaskQueue:      cfg.TaskQueue,
		Namespace:      cfg.Namespace,
		MaxEvents:      cfg.BatchMaxEvents,
		MaxBytes:       cfg.BatchMaxBytes,
		MaxWait:        cfg.BatchMaxWait,
		IdleWait:       cfg.BatchIdleWait,
		MaxInFlight:    cfg.MaxInFlight,
		SessionTimeout: cfg.SessionTimeout,
		MaxAttempts:    cfg.MaxAttempts,
		OrderingWindow: cfg.OrderingWindow,
	}, tc, log)
	p.Health = health
	if p.Metrics, err = metrics.NewStarter(mp, p.Partitions); err != nil {
		return err
	}
	log.Info("starter started", "topic", cfg.Topic, "group", cfg.GroupID, "brokers", cfg.Brokers)
	err = p.Run(ctx)
	log.Info("starter stopped", "batches_started", p.Stats.BatchesStarted.Load(),
		"batches_existing", p.Stats.BatchesExisted.Load(), "messages", p.Stats.Messages.Load(),
		"redelivered", p.Stats.Redelivered.Load(),
		"poison", p.Stats.Poison.Load(), "orphan_chunks", p.Stats.OrphanChunks.Load())
	return err
}
