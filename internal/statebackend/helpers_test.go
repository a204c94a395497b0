package statebackend

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/savepoint"
	"github.com/onceflow/onceflow/internal/testerr"
	"github.com/onceflow/onceflow/state"
)

// runSnapshot snapshots b as checkpoint id into st and returns the handle.
func runSnapshot(t testing.TB, b state.KeyedBackend, st checkpoint.Storage, uid string, subtask int, id int64, savepoint bool) *checkpoint.Handle {
	t.Helper()
	w, err := st.Writer(id, uid, subtask)
	if err != nil {
		t.Fatal(err)
	}
	var async state.AsyncSnapshot
	if savepoint {
		async, err = SavepointSnapshot(b, id, w)
	} else {
		async, err = b.Snapshot(id, w)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := async(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// completeOne completes a checkpoint holding the given keyed handles of one
// operator.
func completeOne(t testing.TB, st checkpoint.Storage, uid string, id int64, savepoint bool, parallelism int, handles ...*checkpoint.Handle) *checkpoint.Metadata {
	t.Helper()
	md := &checkpoint.Metadata{CheckpointID: id, Savepoint: savepoint, Timestamp: time.Unix(id, 0).UTC()}
	op := checkpoint.OperatorSnapshot{UID: uid, Parallelism: parallelism, MaxParallelism: state.DefaultMaxParallelism}
	for i, h := range handles {
		op.Subtasks = append(op.Subtasks, checkpoint.SubtaskSnapshot{Subtask: i, Keyed: h})
	}
	md.Operators = append(md.Operators, op)
	if err := st.Complete(context.Background(), md); err != nil {
		t.Fatal(err)
	}
	return md
}

// dumpBackend lists every entry of b (through a canonical snapshot into a
// scratch storage) as sorted "state|key|userKey=value" lines, and every
// timer as a "timer domain|key|ts" line.
func dumpBackend(t testing.TB, b state.KeyedBackend) []string {
	t.Helper()
	st := dirstore.NewMemoryStorage("dump", dirstore.StorageOptions{})
	h := runSnapshot(t, b, st, "dump", 0, 1, true)
	return dumpHandles(t, st, h)
}

func dumpHandles(t testing.TB, st checkpoint.Storage, hs ...*checkpoint.Handle) []string {
	t.Helper()
	var out []string
	for _, h := range hs {
		err := openHandleData(h, st, func(name string, r io.Reader) error {
			return savepoint.Read(r, name, savepoint.Sink{
				State: func(kg, si int, key, uk, val []byte) error {
					if want := state.KeyGroupOf(key, state.DefaultMaxParallelism); want != kg {
						return fmt.Errorf("key %q stored in key group %d, belongs to %d", key, kg, want)
					}
					out = append(out, fmt.Sprintf("%s|%q|%q=%x", h.States[si].Name, key, uk, val))
					return nil
				},
				Timer: func(kg int, d state.TimeDomain, ts int64, key []byte) error {
					if want := state.KeyGroupOf(key, state.DefaultMaxParallelism); want != kg {
						return fmt.Errorf("timer of key %q stored in key group %d, belongs to %d", key, kg, want)
					}
					out = append(out, fmt.Sprintf("timer %s|%q|%d", d, key, ts))
					return nil
				},
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}

func diffDumps(a, b []string) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d entries vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("entry %d: %s vs %s", i, a[i], b[i])
		}
	}
	return ""
}

func newBackend(t testing.TB, f state.KeyedBackendFactory, opts state.KeyedBackendOptions) state.KeyedBackend {
	t.Helper()
	if opts.OperatorUID == "" {
		opts.OperatorUID = "op"
	}
	b, err := f.CreateKeyedBackend(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// workload registers one state of every kind on b and writes a
// deterministic mix of updates for keys 0..n-1 (owned ones only) in round.
type workload struct {
	value  *state.ValueState[int64]
	list   *state.ListState[string]
	m      *state.MapState[string, int64]
	reduce *state.ReducingState[int64]
	agg    *state.AggregatingState[int64, avgAcc, float64]
}

type avgAcc struct {
	Sum, N int64
}

func newWorkload(t testing.TB, b state.KeyedBackend) *workload {
	t.Helper()
	var w workload
	var err error
	if w.value, err = state.NewValueState(b, "value", state.Int64Codec{}); err != nil {
		t.Fatal(err)
	}
	if w.list, err = state.NewListState(b, "list", state.StringCodec{}); err != nil {
		t.Fatal(err)
	}
	if w.m, err = state.NewMapState(b, "map", state.StringCodec{}, state.Int64Codec{}); err != nil {
		t.Fatal(err)
	}
	if w.reduce, err = state.NewReducingState(b, "sum", state.Int64Codec{}, func(a, v int64) (int64, error) { return a + v, nil }); err != nil {
		t.Fatal(err)
	}
	if w.agg, err = state.NewAggregatingState(b, "avg", state.JSONCodec[avgAcc]{}, state.AggregateFunc[int64, avgAcc, float64]{
		Create: func() avgAcc { return avgAcc{} },
		Add:    func(a avgAcc, v int64) (avgAcc, error) { return avgAcc{a.Sum + v, a.N + 1}, nil },
		Result: func(a avgAcc) (float64, error) { return float64(a.Sum) / float64(a.N), nil },
	}); err != nil {
		t.Fatal(err)
	}
	return &w
}

func testKey(i int) []byte { return []byte(fmt.Sprintf("key-%06d", i)) }

func (w *workload) apply(t testing.TB, b state.KeyedBackend, n, round int) {
	t.Helper()
	for i := 0; i < n; i++ {
		k := testKey(i)
		if !b.KeyGroups().Contains(state.KeyGroupOf(k, state.DefaultMaxParallelism)) {
			continue
		}
		b.SetCurrentKey(k)
		v := int64(i*31 + round)
		must(t, w.value.Update(v))
		must(t, w.reduce.Add(v))
		must(t, w.agg.Add(v))
		if i%3 == 0 {
			must(t, w.list.Add(fmt.Sprintf("r%d", round)))
		}
		if i%5 == round%5 {
			must(t, w.list.Clear())
		}
		must(t, w.m.Put(fmt.Sprintf("u%d", round%4), v))
		if round%2 == 1 {
			must(t, w.m.Remove(fmt.Sprintf("u%d", (round+2)%4)))
		}
		if i%97 == round {
			must(t, w.value.Clear())
		}
	}
}

func must(t testing.TB, err error) { t.Helper(); testerr.Must(t, err) }

func wantErrContains(t testing.TB, err error, parts ...string) {
	t.Helper()
	testerr.Contains(t, err, parts...)
}

// endRandomly ends checkpoint id of b (handle h, written to st) as a real
// run might, past the first two: one in ten is aborted, one in ten
// completes without its notification reaching b, the rest complete and
// are notified. It counts the fate in kinds ("aborted", "notification
// lost", or h's backend for a completed one) and reports whether the
// checkpoint completed.
func endRandomly(t testing.TB, rng *rand.Rand, st checkpoint.Storage, b state.KeyedBackend, id int64, h *checkpoint.Handle, kinds map[string]int) bool {
	t.Helper()
	switch fate := rng.IntN(10); {
	case id > 2 && fate == 0:
		must(t, st.Abort(id))
		b.NotifyCheckpointAborted(id)
		kinds["aborted"]++
		return false
	case id > 2 && fate == 1:
		completeOne(t, st, "op", id, false, 1, h)
		kinds["notification lost"]++
	default:
		completeOne(t, st, "op", id, false, 1, h)
		b.NotifyCheckpointComplete(id)
	}
	kinds[h.Backend]++
	return true
}
