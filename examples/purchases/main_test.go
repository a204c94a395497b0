package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/runner"
)

// The example program on kfake, run through the runner as its main does:
// refunds are dropped, every purchase yields the customer's new running
// total, `purchases stop` (the HTTP API) stops it with a savepoint, and the
// next run resumes from it, continuing the totals where they were.
func TestPurchasesStopsAndResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	job := runner.Job{Name: "purchases", Dataflow: Dataflow}
	addrFile := filepath.Join(dir, "addr")
	args := []string{"purchases", "run", "--config", "purchases.yaml", "--addr-file", addrFile,
		"--set", "kafka.brokers=" + strings.Join(c.ListenAddrs(), ","),
		"--set", "checkpoint.dir=" + filepath.Join(dir, "checkpoints"), "--set", "state.dir=" + filepath.Join(dir, "state"),
		"--set", "checkpoint.interval=20ms", "--set", "checkpoint.timeout=10s", "--set", "sink.transaction_timeout=1m",
		"--set", "restart.strategy=fixed-delay", "--set", "restart.delay=10ms", "--set", "http.listen=127.0.0.1:0"}

	reader, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("totals"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	last := map[string]Total{}
	var outputs int
	// runUntil runs the program until n more totals are visible, then
	// stops it with `purchases stop` and returns the savepoint it printed.
	runUntil := func(n int) string {
		t.Helper()
		os.Remove(addrFile)
		var stdout, stderr bytes.Buffer
		done := make(chan int, 1)
		go func() { done <- runner.Execute(ctx, job, args, &stdout, &stderr) }()
		for want := outputs + n; outputs < want; {
			fs := reader.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				t.Fatalf("%d of %d totals: %v\n%s", outputs, want, err, stderr.String())
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
		addr, err := os.ReadFile(addrFile)
		if err != nil {
			t.Fatalf("the HTTP address: %v", err)
		}
		var out, errOut bytes.Buffer
		if code := runner.Execute(ctx, job, []string{"purchases", "stop", "--http", strings.TrimSpace(string(addr))}, &out, &errOut); code != 0 {
			t.Fatalf("purchases stop: exit %d: %s", code, errOut.String())
		}
		if code := <-done; code != 0 {
			t.Fatalf("purchases run: exit %d after the stop:\n%s", code, stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}

	produce(Purchase{"ana", 1000}, Purchase{"bo", 500}, Purchase{"ana", -1000}, Purchase{"ana", 250})
	first := runUntil(3)
	if !strings.Contains(first, filepath.Join(dir, "checkpoints", "purchases", "savepoint-")) {
		t.Fatalf("the first run printed %q, want its savepoint under the checkpoint dir", first)
	}
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
