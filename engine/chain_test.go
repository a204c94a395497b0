package engine_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// An operator fed by a forward edge runs on its upstream's goroutine: the
// sink writes a record before the map sees the next one of its subtask.
// With DisableChaining each runs on its own goroutine and the map runs
// ahead while the sink sleeps. Both give the exact output, with
// checkpoints taken on the way.
func TestForwardEdgesAreChained(t *testing.T) {
	const perPart = 3000
	for _, unchained := range []bool{false, true} {
		name := "chained"
		if unchained {
			name = "unchained"
		}
		t.Run(name, func(t *testing.T) {
			parts := make([][]int64, 2)
			want := map[int64]int{}
			for s := range parts {
				for i := range perPart {
					v := int64(s)*1_000_000 + int64(i)
					parts[s] = append(parts[s], v)
					want[v] = 1
				}
			}
			var lastMapped [2]atomic.Int64
			var ahead, written atomic.Int64
			sink := &memSink[int64]{onWrite: func(v int64) error {
				if lastMapped[v/1_000_000].Load() != v {
					ahead.Add(1)
				}
				if written.Add(1)%100 == 0 {
					time.Sleep(time.Millisecond)
				}
				return nil
			}}
			j := engine.NewJob("chain", engine.Options{
				Checkpoint:      engine.CheckpointOptions{Interval: 5 * time.Millisecond},
				DisableChaining: unchained,
			})
			src := engine.FromSource(j, "source", 2, &memSource[int64]{parts: parts})
			mapped := engine.Map(src, "map", func(v int64) (int64, error) {
				lastMapped[v/1_000_000].Store(v)
				return v, nil
			})
			engine.SinkTo(mapped, "sink", 2, sink)
			if err := runJob(t, j); err != nil {
				t.Fatal(err)
			}
			if d := diffCounts(counts(sink.output()), want); d != "" {
				t.Fatalf("output not exact: %s", d)
			}
			completed := 0
			for _, cs := range j.Status().Checkpoints {
				if cs.Status == engine.CheckpointCompleted {
					completed++
				}
			}
			if completed < 2 {
				t.Errorf("%d checkpoints completed, want several", completed)
			}
			switch {
			case !unchained && ahead.Load() != 0:
				t.Errorf("the map ran ahead of the sink %d times: the forward edges are not chained", ahead.Load())
			case unchained && ahead.Load() == 0:
				t.Errorf("the map never ran ahead of the sink: DisableChaining left the operators chained")
			}
		})
	}
}

// A failure in a chained operator names that operator, not the head of
// its chain.
func TestChainedFailureNamesItsOperator(t *testing.T) {
	j := engine.NewJob("chainfail", engine.Options{})
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{{1, 2, 3}}})
	mapped := engine.Map(src, "map", func(v int) (int, error) { return v, nil })
	engine.SinkTo(mapped, "sink", 1, &memSink[int]{onWrite: func(v int) error {
		if v == 2 {
			return errTwo
		}
		return nil
	}})
	err := runJob(t, j)
	if !errors.Is(err, errTwo) || !strings.Contains(err.Error(), "operator sink subtask 0/1: "+errTwo.Error()) ||
		strings.Contains(err.Error(), "operator map") || strings.Contains(err.Error(), "operator source") {
		t.Fatalf("Run = %v, want the sink's error naming the sink only", err)
	}
}

var errTwo = errors.New("record 2 refused")
