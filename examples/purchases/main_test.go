package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
)

// The example job on kfake: refunds are dropped, every purchase yields the
// customer's new running total, and a stop with a savepoint followed by a
// run from it continues the totals where they were.
func TestPurchasesKeepsRunningTotals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "purchases", "totals"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(ps ...Purchase) {
		t.Helper()
		for _, p := range ps {
			v, _ := json.Marshal(p)
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "purchases", Key: []byte(p.Customer), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	opts := Options{Brokers: c.ListenAddrs(), In: "purchases", Out: "totals", Dir: dir, Parallelism: 2,
		Interval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}

	reader, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("totals"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	last := map[string]Total{}
	var outputs int
	// runUntil runs the job until n more totals are visible, then stops it
	// with a savepoint.
	runUntil := func(n int) {
		t.Helper()
		j, err := BuildJob(opts)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- j.Run(ctx) }()
		for want := outputs + n; outputs < want; {
			fs := reader.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("%d of %d totals: %v", outputs, want, err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				var tot Total
				if err := json.Unmarshal(r.Value, &tot); err != nil {
					t.Fatalf("output %q: %v", r.Value, err)
				}
				last[tot.Customer] = tot
				outputs++
			})
		}
		if _, err := j.StopWithSavepoint(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, engine.ErrStopped) {
			t.Fatalf("Run: %v", err)
		}
	}

	produce(Purchase{"ana", 1000}, Purchase{"bo", 500}, Purchase{"ana", -1000}, Purchase{"ana", 250})
	runUntil(3)
	produce(Purchase{"bo", 700}, Purchase{"cy", 99})
	runUntil(2)
	want := map[string]Total{
		"ana": {"ana", 2, 1250},
		"bo":  {"bo", 2, 1200},
		"cy":  {"cy", 1, 99},
	}
	if fmt.Sprint(last) != fmt.Sprint(want) || outputs != 5 {
		t.Fatalf("%d totals, last per customer %v, want 5 and %v", outputs, last, want)
	}
}
