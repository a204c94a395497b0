package engine_test

import (
	"context"
	"io"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// genSource emits 0..n-1 on every subtask; its state is the next number.
type genSource struct{ n int }

func (g genSource) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[int], error) {
	return &genReader{n: g.n}, nil
}

type genReader struct{ n, next int }

func (r *genReader) Next(context.Context) (int, bool, error) {
	if r.next >= r.n {
		return 0, false, io.EOF
	}
	r.next++
	return r.next - 1, true, nil
}

func (r *genReader) SnapshotState(int64) ([][]byte, error) {
	return [][]byte{strconv.AppendInt(nil, int64(r.next), 10)}, nil
}
func (r *genReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *genReader) Close() error                                          { return nil }

// countSink counts records; it has no transactions.
type countSink struct{ n *atomic.Int64 }

func (s countSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[wordCount], error) {
	return s, nil
}
func (s countSink) Write(context.Context, wordCount) error { s.n.Add(1); return nil }
func (s countSink) SnapshotState(context.Context, int64) ([][]byte, error) {
	return nil, nil
}
func (s countSink) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (s countSink) NotifyCheckpointAborted(context.Context, int64) error  { return nil }
func (s countSink) Close(context.Context) error                           { return nil }

// runPipeline pushes n records per source subtask through map → keyed sum
// → map and returns the records per second.
func runPipeline(b *testing.B, n int, interval time.Duration, backend state.KeyedBackendFactory) float64 {
	j := engine.NewJob("bench", engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: interval},
		Backend:    backend,
	})
	src := engine.FromSource(j, "source", 2, genSource{n: n})
	words := engine.Map(src, "word", func(v int) (wordCount, error) {
		return wordCount{Word: "w" + strconv.Itoa(v%1000), Count: 1}, nil
	})
	sums := engine.Sum(engine.KeyBy(words, func(wc wordCount) string { return wc.Word }, state.StringCodec{}), "sum", 2,
		state.JSONCodec[wordCount]{}, func(wc wordCount) int64 { return wc.Count },
		func(wc wordCount, s int64) wordCount { wc.Count = s; return wc })
	out := engine.Filter(sums, "nonzero", func(wc wordCount) bool { return wc.Count > 0 })
	var got atomic.Int64
	engine.SinkTo(out, "sink", 2, countSink{&got})
	start := time.Now()
	if err := j.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	if got.Load() != int64(2*n) {
		b.Fatalf("%d records out, want %d", got.Load(), 2*n)
	}
	return float64(2*n) / time.Since(start).Seconds()
}

// BenchmarkKeyedPipeline measures a source → map → keyed sum → filter →
// sink job with checkpoints every 100ms against the same job without
// checkpoints, in the same run, and reports the ratio.
//
//	go test -run '^$' -bench KeyedPipeline ./engine
func BenchmarkKeyedPipeline(b *testing.B) {
	const n = 100_000
	backends := map[string]func(b *testing.B) state.KeyedBackendFactory{
		"memory": func(*testing.B) state.KeyedBackendFactory { return statebackend.NewMemoryFactory() },
		"pebble": func(b *testing.B) state.KeyedBackendFactory {
			return statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: b.TempDir()})
		},
	}
	for _, name := range []string{"memory", "pebble"} {
		b.Run(name, func(b *testing.B) {
			var none, ckpt float64
			for i := 0; i < b.N; i++ {
				none += runPipeline(b, n, 0, backends[name](b))
				ckpt += runPipeline(b, n, 100*time.Millisecond, backends[name](b))
			}
			b.ReportMetric(none/float64(b.N), "rec/s-no-checkpoints")
			b.ReportMetric(ckpt/float64(b.N), "rec/s-checkpoint-100ms")
			b.ReportMetric(ckpt/none, "ratio")
		})
	}
}

// BenchmarkTwoInputs measures the input loop of a subtask with two input
// channels (two source subtasks feeding one map subtask, which aligns
// their barriers), with a checkpoint every 10ms: records per second
// through the loop's two-input fast path.
//
//	go test -run '^$' -bench TwoInputs ./engine
func BenchmarkTwoInputs(b *testing.B) {
	const n = 200_000
	for _, mode := range []engine.CheckpointMode{engine.ExactlyOnce, engine.AtLeastOnce} {
		name := map[engine.CheckpointMode]string{engine.ExactlyOnce: "exactly_once", engine.AtLeastOnce: "at_least_once"}[mode]
		b.Run(name, func(b *testing.B) {
			var rate float64
			for i := 0; i < b.N; i++ {
				j := engine.NewJob("two", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond, Mode: mode}})
				src := engine.FromSource(j, "source", 2, genSource{n: n})
				one := engine.WithParallelism(src, "one", 1)
				out := engine.Map(one, "word", func(v int) (wordCount, error) { return wordCount{Count: int64(v)}, nil })
				var got atomic.Int64
				engine.SinkTo(out, "sink", 1, countSink{&got})
				start := time.Now()
				if err := j.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
				if got.Load() != 2*n {
					b.Fatalf("%d records out, want %d", got.Load(), 2*n)
				}
				rate += float64(2*n) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate/float64(b.N), "rec/s")
		})
	}
}

// BenchmarkCopy measures the copy path: a source feeding a sink of the
// same parallelism, chained (one goroutine per subtask, a call per
// record) and unchained (a channel per record), with a checkpoint every
// 100ms: records per second.
//
//	go test -run '^$' -bench Copy ./engine
func BenchmarkCopy(b *testing.B) {
	const n = 500_000
	for _, unchained := range []bool{false, true} {
		name := map[bool]string{false: "chained", true: "unchained"}[unchained]
		b.Run(name, func(b *testing.B) {
			var rate float64
			for i := 0; i < b.N; i++ {
				j := engine.NewJob("copy", engine.Options{DisableChaining: unchained,
					Checkpoint: engine.CheckpointOptions{Interval: 100 * time.Millisecond}})
				src := engine.FromSource(j, "source", 2, genSource{n: n})
				out := engine.Map(src, "wrap", func(v int) (wordCount, error) { return wordCount{Count: int64(v)}, nil })
				var got atomic.Int64
				engine.SinkTo(out, "sink", 2, countSink{&got})
				start := time.Now()
				if err := j.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
				if got.Load() != 2*n {
					b.Fatalf("%d records out, want %d", got.Load(), 2*n)
				}
				rate += float64(2*n) / time.Since(start).Seconds()
			}
			b.ReportMetric(rate/float64(b.N), "rec/s")
		})
	}
}
