// Command starter is cdcflow's thin Kafka poller: it cuts the change stream
// into batches and starts one ApplyBatch workflow per batch.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/poller"
	"github.com/cdcflow/cdcflow/internal/temporalx"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "starter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var cfg config.Starter
	if err := config.ParseFlags("starter", "starts one Temporal workflow per batch of Kafka change events", args, &cfg, os.Stdout); err != nil {
		return err
	}
	cfg, err := config.LoadStarter()
	if err != nil {
		return err
	}
	log := cfg.Logger()
	if err := cfg.ServePprof(ctx, log); err != nil {
		return err
	}

	tc, err := client.DialContext(ctx, client.Options{
		HostPort:      cfg.Address,
		Namespace:     cfg.Namespace,
		Logger:        tlog.NewStructuredLogger(log),
		DataConverter: temporalx.DataConverter(),
	})
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s: %w", cfg.Address, err)
	}
	defer tc.Close()

	p := poller.New(poller.Config{
		Brokers:        cfg.Brokers,
		Topic:          cfg.Topic,
		GroupID:        cfg.GroupID,
		TaskQueue:      cfg.TaskQueue,
		MaxEvents:      cfg.BatchMaxEvents,
		MaxBytes:       cfg.BatchMaxBytes,
		MaxWait:        cfg.BatchMaxWait,
		MaxInFlight:    cfg.MaxInFlight,
		SessionTimeout: cfg.SessionTimeout,
	}, tc, log)
	log.Info("starter started", "topic", cfg.Topic, "group", cfg.GroupID, "brokers", cfg.Brokers)
	err = p.Run(ctx)
	log.Info("starter stopped", "batches_started", p.Stats.BatchesStarted.Load(),
		"batches_existing", p.Stats.BatchesExisted.Load(), "messages", p.Stats.Messages.Load(),
		"redelivered", p.Stats.Redelivered.Load(),
		"poison", p.Stats.Poison.Load())
	return err
}
