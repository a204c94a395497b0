package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// keyedCountJob is source → map to (k<v%97>, 1) → keyBy.sum "count" →
// sink, with max parallelism maxP (0: the default).
func keyedCountJob(name string, dir string, maxP int, from string, backend state.KeyedBackendFactory, src *memSource[int], sink *memSink[wordCount]) *engine.Job {
	st, err := dirstore.NewFileStorage(dir, name, dirstore.StorageOptions{Retained: 2})
	if err != nil {
		panic(err)
	}
	j := engine.NewJob(name, engine.Options{
		Checkpoint:     engine.CheckpointOptions{Interval: 20 * time.Millisecond},
		Storage:        st,
		Backend:        backend,
		MaxParallelism: maxP,
		RestoreFrom:    from,
	})
	in := engine.FromSource(j, "source", 1, src)
	words := engine.Map(in, "word", func(v int) (wordCount, error) { return wordCount{Word: fmt.Sprint("k", v%97), Count: 1}, nil })
	keyed := engine.KeyBy(words, func(wc wordCount) string { return wc.Word }, state.StringCodec{})
	sums := engine.Sum(keyed, "count", 2, state.JSONCodec[wordCount]{}, func(wc wordCount) int64 { return wc.Count },
		func(wc wordCount, n int64) wordCount { wc.Count = n; return wc })
	engine.SinkTo(sums, "sink", 1, sink)
	return j
}

// A restore whose max parallelism (the number of key groups) differs from
// the checkpoint's is refused before anything runs, in one line naming
// the keyed operator and both values: key groups are fixed by the max
// parallelism, so the restored entries would land in the wrong key group
// or be dropped. (It used to restore silently: about half of the counts
// started over, with no error and no log line.) The refusal is
// non-recoverable and marked ErrIncompatibleCheckpoint, for the latest
// checkpoint as for --from a savepoint, and --from adopts nothing.
func TestChangedMaxParallelismIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend func(t *testing.T) state.KeyedBackendFactory
		maxP    int
	}{
		{"memory-64", func(*testing.T) state.KeyedBackendFactory { return statebackend.NewMemoryFactory() }, 64},
		{"pebble-64", func(t *testing.T) state.KeyedBackendFactory {
			return statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir()})
		}, 64},
		{"pebble-256", func(t *testing.T) state.KeyedBackendFactory {
			return statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir()})
		}, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			input := seq(0, 2000)
			sink := &memSink[wordCount]{}
			// The first run reads half the input and finishes with a final
			// checkpoint, at the default max parallelism (128).
			first := keyedCountJob("mp", dir, 0, "", tc.backend(t), &memSource[int]{parts: [][]int{input[:1000]}}, sink)
			if err := runJob(t, first); err != nil {
				t.Fatal(err)
			}
			st, err := dirstore.NewFileStorage(dir, "mp", dirstore.StorageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			latest, _, err := st.Latest(context.Background())
			if err != nil || latest == nil {
				t.Fatalf("no checkpoint after the first run: %v", err)
			}
			before := len(sink.output())

			second := keyedCountJob("mp", dir, tc.maxP, "", tc.backend(t), &memSource[int]{parts: [][]int{input}}, sink)
			err = runJob(t, second)
			if err == nil {
				want := map[wordCount]int{}
				n := map[string]int64{}
				for _, v := range input {
					k := fmt.Sprint("k", v%97)
					n[k]++
					want[wordCount{k, n[k]}] = 1
				}
				t.Fatalf("the job restored checkpoint %d (max parallelism 128) with max parallelism %d; output: %s",
					latest.CheckpointID, tc.maxP, diffCounts(counts(sink.output()), want))
			}
			checkMaxParallelismRefusal(t, err, latest.Path, tc.maxP)
			if n := len(sink.output()); n != before {
				t.Fatalf("%d records written although the restore was refused", n-before)
			}

			// --from the same checkpoint: refused before it is adopted.
			infos, _ := st.List(context.Background())
			third := keyedCountJob("mp", dir, tc.maxP, latest.Path, tc.backend(t), &memSource[int]{parts: [][]int{input}}, sink)
			checkMaxParallelismRefusal(t, runJob(t, third), latest.Path, tc.maxP)
			if after, _ := st.List(context.Background()); len(after) != len(infos) {
				t.Fatalf("the refused --from left %d checkpoints, had %d: %+v", len(after), len(infos), after)
			}
		})
	}
}

func checkMaxParallelismRefusal(t *testing.T, err error, path string, maxP int) {
	t.Helper()
	if err == nil {
		t.Fatalf("the restore of %s with max parallelism %d was not refused", path, maxP)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "128") || !strings.Contains(msg, fmt.Sprint(maxP)) ||
		!strings.Contains(msg, `"count"`) || !strings.Contains(msg, filepath.Base(path)) {
		t.Fatalf("Run = %q; want one line naming operator \"count\", max parallelism 128 and %d, and %s", msg, maxP, path)
	}
	if !engine.IsNonRecoverable(err) || !errors.Is(err, engine.ErrIncompatibleCheckpoint) {
		t.Errorf("the refusal %q is not non-recoverable and marked ErrIncompatibleCheckpoint", msg)
	}
	t.Logf("refused: %s", msg)
}

// Operators without keyed state (sources, sinks, stateless maps) do not
// depend on the number of key groups: a copy job restores across a
// changed max parallelism, exactly.
func TestChangedMaxParallelismWithoutKeyedStateRestores(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink[int]{}
	run := func(maxP int, input []int) error {
		st, err := dirstore.NewFileStorage(dir, "copy", dirstore.StorageOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return runJob(t, copyJob("copy", engine.Options{Storage: st, MaxParallelism: maxP,
			Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}}, &memSource[int]{parts: [][]int{input}}, sink))
	}
	if err := run(128, seq(0, 300)); err != nil {
		t.Fatal(err)
	}
	if err := run(64, seq(0, 600)); err != nil {
		t.Fatalf("a copy job refused a changed max parallelism: %v", err)
	}
	if d := diffCounts(counts(sink.output()), counts(seq(0, 600))); d != "" {
		t.Fatalf("output after the restore: %s", d)
	}
}
