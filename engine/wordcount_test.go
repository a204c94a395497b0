package engine_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// wordCount is the running count of a word after one of its occurrences.
type wordCount struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// textParts returns lines of words for each source subtask; "laowang"
// (the seeds' poison word) appears in every part.
func textParts(subtasks, lines int, seed uint64) [][]string {
	vocab := []string{"flink", "kafka", "pebble", "barrier", "laowang", "hello", "world", "state", "offset"}
	rng := rand.New(rand.NewPCG(seed, 7))
	parts := make([][]string, subtasks)
	for s := range parts {
		for range lines {
			n := 1 + rng.IntN(5)
			ws := make([]string, n)
			for i := range ws {
				ws[i] = vocab[rng.IntN(len(vocab))]
			}
			parts[s] = append(parts[s], strings.Join(ws, " "))
		}
		parts[s] = append(parts[s], "laowang")
	}
	return parts
}

// expectedCounts is the exact output of a running word count: for each
// word w occurring n times, (w,1) ... (w,n), each once.
func expectedCounts(parts [][]string) map[wordCount]int {
	n := map[string]int64{}
	want := map[wordCount]int{}
	for _, p := range parts {
		for _, line := range p {
			for _, w := range strings.Fields(line) {
				n[w]++
				want[wordCount{w, n[w]}] = 1
			}
		}
	}
	return want
}

// wordCountJob builds source → split → keyBy(word).sum → sink. poison is
// how many times the word "laowang" still throws; plan injects failures at
// random points of the split, after the sum and in the sink.
func wordCountJob(name string, opts engine.Options, src engine.Source[string], sink engine.Sink[wordCount], poison *atomic.Int64, plan *failPlan) *engine.Job {
	j := engine.NewJob(name, opts)
	lines := engine.FromSource(j, "source", 2, src)
	words := engine.FlatMap(lines, "split", func(line string, out func(wordCount)) error {
		if err := plan.hit("split"); err != nil {
			return err
		}
		for _, w := range strings.Fields(line) {
			if w == "laowang" && poison.Add(-1) >= 0 {
				return errors.New("poison word laowang")
			}
			out(wordCount{Word: w, Count: 1})
		}
		return nil
	})
	keyed := engine.KeyBy(words, func(wc wordCount) string { return wc.Word }, state.StringCodec{})
	sums := engine.Sum(keyed, "count", 3, state.JSONCodec[wordCount]{},
		func(wc wordCount) int64 { return wc.Count },
		func(wc wordCount, n int64) wordCount { wc.Count = n; return wc })
	// A failure after the keyed state was updated, before the output.
	checked := engine.Map(sums, "check", func(wc wordCount) (wordCount, error) { return wc, plan.hit("check") })
	engine.SinkTo(checked, "sink", 2, sink)
	return j
}

// The seeds' example: a poison word throws and the job restarts from the
// latest checkpoint; with random failures on top, the committed output is
// still exactly the running counts, for every state backend and storage.
func TestWordCountExactUnderFailures(t *testing.T) {
	cases := []struct {
		name      string
		backend   func(t *testing.T) state.KeyedBackendFactory
		storage   func(t *testing.T) checkpoint.Storage
		unchained bool
	}{
		{"memory", func(*testing.T) state.KeyedBackendFactory { return statebackend.NewMemoryFactory() },
			func(*testing.T) checkpoint.Storage { return dirstore.NewMemoryStorage("wc", dirstore.StorageOptions{}) }, false},
		{"memory-unchained", func(*testing.T) state.KeyedBackendFactory { return statebackend.NewMemoryFactory() },
			func(*testing.T) checkpoint.Storage { return dirstore.NewMemoryStorage("wc", dirstore.StorageOptions{}) }, true},
		{"pebble-incremental-files", func(t *testing.T) state.KeyedBackendFactory {
			return statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir(), Incremental: true})
		}, func(t *testing.T) checkpoint.Storage {
			st, err := dirstore.NewFileStorage(t.TempDir(), "wc", dirstore.StorageOptions{Retained: 2})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parts := textParts(2, 1500, 1)
			src := &memSource[string]{parts: parts, pauseEvery: 20, pause: time.Millisecond}
			rng := rand.New(rand.NewPCG(2, 3))
			var at []int64
			for range 4 {
				at = append(at, 1+rng.Int64N(3000))
			}
			plan := newFailPlan(at...)
			sink := &memSink[wordCount]{onWrite: func(wordCount) error { return plan.hit("sink") }}
			var poison atomic.Int64
			poison.Store(2)
			j := wordCountJob("wc", engine.Options{
				Checkpoint:      engine.CheckpointOptions{Interval: 10 * time.Millisecond},
				Restart:         engine.FixedDelay(20, 0),
				Backend:         tc.backend(t),
				Storage:         tc.storage(t),
				DisableChaining: tc.unchained,
			}, src, sink, &poison, plan)
			if err := runJob(t, j); err != nil {
				t.Fatalf("job failed: %v", err)
			}
			st := j.Status()
			if st.State != engine.JobFinished {
				t.Errorf("state %s, want FINISHED", st.State)
			}
			if st.Restarts < 2 {
				t.Errorf("%d restarts, want at least the 2 of the poison word", st.Restarts)
			}
			if d := diffCounts(counts(sink.output()), expectedCounts(parts)); d != "" {
				t.Fatalf("output is not exact after %d restarts (%d injected failures): %s", st.Restarts, plan.fired.Load(), d)
			}
			completed := 0
			for _, cs := range st.Checkpoints {
				if cs.Status == engine.CheckpointCompleted {
					completed++
				}
			}
			if completed < 3 {
				t.Errorf("only %d checkpoints completed: the failures did not hit a job that checkpoints", completed)
			}
			t.Logf("%d restarts, %d injected failures, %d checkpoints completed", st.Restarts, plan.fired.Load(), completed)
		})
	}
}

// With the none strategy the poison word fails the job with its error.
func TestPoisonWordWithoutRestartFails(t *testing.T) {
	parts := textParts(2, 50, 3)
	var poison atomic.Int64
	poison.Store(1)
	sink := &memSink[wordCount]{}
	j := wordCountJob("wc", engine.Options{Restart: engine.NoRestart()},
		&memSource[string]{parts: parts}, sink, &poison, newFailPlan())
	err := runJob(t, j)
	if err == nil || !strings.Contains(err.Error(), "poison word laowang") {
		t.Fatalf("Run = %v, want the poison word's error", err)
	}
	if !strings.Contains(err.Error(), "operator split") {
		t.Errorf("error %q does not name the failing operator", err)
	}
	if st := j.Status(); st.State != engine.JobFailed || st.Restarts != 0 {
		t.Errorf("state %s after %d restarts, want FAILED after 0", st.State, st.Restarts)
	}
}

// A non-recoverable error fails the job at once, whatever the strategy.
func TestNonRecoverableErrorSkipsRestart(t *testing.T) {
	j := engine.NewJob("nr", engine.Options{Restart: engine.FixedDelay(5, 0)})
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{{1, 2, 3}}})
	bad := engine.Map(src, "decode", func(v int) (int, error) {
		if v == 2 {
			return 0, engine.NonRecoverable(fmt.Errorf("record %d cannot be decoded", v))
		}
		return v, nil
	})
	engine.SinkTo(bad, "sink", 1, &memSink[int]{})
	err := runJob(t, j)
	if err == nil || !engine.IsNonRecoverable(err) || !strings.Contains(err.Error(), "record 2 cannot be decoded") {
		t.Fatalf("Run = %v, want the non-recoverable error", err)
	}
	if r := j.Status().Restarts; r != 0 {
		t.Errorf("%d restarts after a non-recoverable error", r)
	}
}

// KeyBy sends every key to the subtask owning its key group, always the
// same one.
func TestKeyByRoutesByKeyGroup(t *testing.T) {
	parts := textParts(2, 200, 4)
	j := engine.NewJob("route", engine.Options{})
	lines := engine.FromSource(j, "source", 2, &memSource[string]{parts: parts})
	words := engine.FlatMap(lines, "split", func(line string, out func(string)) error {
		for _, w := range strings.Fields(line) {
			out(w)
		}
		return nil
	})
	tagged := engine.Process(engine.KeyBy(words, func(w string) string { return w }, state.StringCodec{}), "tag", 4,
		func() engine.KeyedProcessFunction[string, string, seen] { return tagFunc{} })
	sink := &memSink[seen]{}
	engine.SinkTo(tagged, "sink", 1, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	out := sink.output()
	if len(out) == 0 {
		t.Fatal("no output")
	}
	for _, s := range out {
		kg := state.KeyGroupOf([]byte(s.Word), state.DefaultMaxParallelism)
		if want := state.SubtaskForKeyGroup(kg, 4, state.DefaultMaxParallelism); s.Subtask != want {
			t.Fatalf("word %q (key group %d) processed by subtask %d, want %d", s.Word, kg, s.Subtask, want)
		}
	}
}

type seen struct {
	Word    string
	Subtask int
}

type tagFunc struct{}

func (tagFunc) Open(*engine.KeyedContext) error { return nil }
func (tagFunc) Process(ctx *engine.KeyedContext, key string, _ string, out func(seen)) error {
	out(seen{key, ctx.Subtask()})
	return nil
}
