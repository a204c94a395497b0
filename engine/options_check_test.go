package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// TestNewJobRefusesBadOptionsByName: every option NewJob cannot run with
// is refused by Run before anything runs, in a message naming the option
// and the bad value (before: negative values were silently replaced by the
// defaults, and a Storage opened for another job was used as it was).
func TestNewJobRefusesBadOptionsByName(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts engine.Options
		want []string
	}{
		{"negative interval", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: -time.Second}}, []string{"Checkpoint.Interval", "-1s", "negative"}},
		{"unknown mode", engine.Options{Checkpoint: engine.CheckpointOptions{Mode: 7}}, []string{"Checkpoint.Mode", "7"}},
		{"negative timeout", engine.Options{Checkpoint: engine.CheckpointOptions{Timeout: -time.Minute}}, []string{"Checkpoint.Timeout", "-1m0s"}},
		{"negative min pause", engine.Options{Checkpoint: engine.CheckpointOptions{MinPause: -time.Millisecond}}, []string{"Checkpoint.MinPause", "-1ms"}},
		{"negative max concurrent", engine.Options{Checkpoint: engine.CheckpointOptions{MaxConcurrent: -2}}, []string{"Checkpoint.MaxConcurrent", "-2"}},
		{"negative tolerable failures", engine.Options{Checkpoint: engine.CheckpointOptions{TolerableFailures: -1}}, []string{"Checkpoint.TolerableFailures", "-1"}},
		{"negative retained savepoints", engine.Options{Checkpoint: engine.CheckpointOptions{RetainSavepoints: -3}}, []string{"Checkpoint.RetainSavepoints", "-3"}},
		{"negative max parallelism", engine.Options{MaxParallelism: -1}, []string{"MaxParallelism", "-1", "outside 1..32768"}},
		{"max parallelism too large", engine.Options{MaxParallelism: 40000}, []string{"MaxParallelism", "40000", "outside 1..32768"}},
		{"negative channel capacity", engine.Options{ChannelCapacity: -5}, []string{"ChannelCapacity", "-5"}},
		{"negative watermark interval", engine.Options{WatermarkInterval: -time.Second}, []string{"WatermarkInterval", "-1s"}},
		{"storage of another job", engine.Options{Storage: dirstore.NewMemoryStorage("other", dirstore.StorageOptions{})}, []string{"Storage", `"other"`, `"wc"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := copyJob("wc", tc.opts, &memSource[int]{parts: [][]int{seq(0, 1)}}, &memSink[int]{})
			err := j.Run(context.Background())
			if err == nil {
				t.Fatal("Run ran the job")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if got := len(strings.Split(err.Error(), "\n")); got != 1 {
				t.Errorf("error %q has %d lines: want one refusal", err, got)
			}
		})
	}
}

// TestNewJobAcceptsZeroOptions: zero is every option's default, and the
// storage opened for the job's own name is accepted.
func TestNewJobAcceptsZeroOptions(t *testing.T) {
	if err := (engine.Options{}).Validate(); err != nil {
		t.Fatalf("zero options refused: %v", err)
	}
	st := dirstore.NewMemoryStorage("wc", dirstore.StorageOptions{})
	j := copyJob("wc", engine.Options{Storage: st}, &memSource[int]{parts: [][]int{seq(0, 3)}}, &memSink[int]{})
	if err := j.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
