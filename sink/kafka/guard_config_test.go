package kafka_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

// An external test: package config refers to this package's defaults
// (DefaultTransactionTimeout, MinSlots), so an internal test importing
// config would be an import cycle.

// The defaults and the shipped examples pass the guard, with the budget
// built from their keys as the job builder builds it, against a broker
// with Kafka's default transaction.max.timeout.ms (15 minutes).
func TestDefaultsAndExamplesPassTheTransactionTimeoutGuard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "900000"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs (%v)", err)
	}
	for _, file := range append([]string{""}, files...) {
		cfg, err := config.Load(config.Sources{File: file, Env: []string{}, Set: []string{"source.topic=in", "sink.topic=out", "job.name=guard"}})
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		budget := sinkkafka.TimeoutBudget{CheckpointInterval: cfg.Checkpoint.Interval, CheckpointTimeout: cfg.Checkpoint.Timeout,
			TolerableFailures: cfg.Checkpoint.TolerableFailures, RestartDelay: cfg.Restart.MaxRestartDelay(),
			OutageTolerance: cfg.Kafka.OutageTolerance}
		if err := sinkkafka.CheckTransactionTimeout(ctx, cl, cfg.Sink.TransactionTimeout, budget); err != nil {
			t.Errorf("config %q (defaults when empty): %v", file, err)
		}
	}
}
