package jobs

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Every sink jobs builds takes checkpoint.max_concurrent
// (sinkkafka.SinkOptions.MaxConcurrentCheckpoints): exactly_once needs
// MinSlots(max_concurrent) transactional ids a subtask, so sink.slots
// too few for the checkpoints in flight is refused naming both keys — in
// a built-in job, in a Go job's jobs.Sink and in the repartition topic a
// distributed Go job's KeyBy writes (exactly_once whatever sink.delivery
// says, so config.Load, which checks the job's own sink, lets
// at_least_once with 5 slots through).
func TestSinksTakeMaxConcurrentCheckpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fakeCluster(t)
	refused := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("5 slots with checkpoint.max_concurrent 3 (MinSlots 11) built")
		}
		for _, key := range []string{"sink.slots", "checkpoint.max_concurrent 3", "11"} {
			if !strings.Contains(err.Error(), key) {
				t.Fatalf("the refusal does not name %q: %v", key, err)
			}
		}
	}
	t.Run("built-in job", func(t *testing.T) {
		cfg := testConfig(t, t.TempDir(), "copy", "checkpoint.max_concurrent=3", "state.backend=memory")
		cfg.Sink.Slots = 5 // a config a program changes after config.Load
		_, err := Build(ctx, cfg, Env{ClientOpts: client})
		refused(t, err)
		cfg.Sink.Slots = 11
		if _, err := Build(ctx, cfg, Env{ClientOpts: client}); err != nil {
			t.Fatalf("11 slots with checkpoint.max_concurrent 3: %v", err)
		}
	})
	t.Run("jobs.Sink", func(t *testing.T) {
		cfg := testConfig(t, t.TempDir(), "go", "job.name=totals", "checkpoint.max_concurrent=3", "state.backend=memory")
		cfg.Sink.Slots = 5
		_, err := Build(ctx, cfg, Env{ClientOpts: client, Dataflow: totalsDataflow})
		refused(t, err)
	})
	t.Run("repartition topic", func(t *testing.T) {
		cfg := groupConfig(t)
		cfg.Job.Name, cfg.Job.Type, cfg.Job.Parallelism = "totals", "go", 2
		cfg.State.Dir, cfg.Sink.TransactionalIDPrefix = t.TempDir(), "totals"
		cfg.Sink.Delivery, cfg.Sink.Slots, cfg.Checkpoint.MaxConcurrent = "at_least_once", 5, 3
		_, err := BuildGroup(ctx, cfg, Env{ClientOpts: client, Dataflow: totalsDataflow, Group: &Group{Index: 0, Count: 1}})
		refused(t, err)
	})
}
