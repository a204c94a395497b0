package statebackend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// changelogFactory is an incremental Pebble factory with a changelog of
// limit bytes.
func changelogFactory(t testing.TB, limit int64) state.KeyedBackendFactory {
	return NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, MemTableSize: 4 << 20, CacheSize: 16 << 20, ChangelogLimit: limit})
}

// Checkpoints with a changelog restore exactly the state at their barrier,
// whichever way they were taken: a materialization, a chain of segments on
// it, a checkpoint after an aborted one (whose segment the next one must
// store again), after a lost notification, after a chain grew past the
// limit. Every completed checkpoint is restored directly (same key
// groups), into a backend without changelog, and split in two key-group
// halves (the rescale path), and compared with the backend's contents at
// its barrier. Writes include map clears (range deletions) and timers.
func TestChangelogCheckpointsRestoreExactly(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	f := changelogFactory(t, 256<<10)
	plain := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, ChangelogLimit: -1})
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 3})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	w := newWorkload(t, b)
	kinds := map[string]int{}
	for id := int64(1); id <= 40; id++ {
		w.apply(t, b, 400, int(id))
		applyTimerRound(t, b, 40, int(id))
		for i := int(id) % 9; i < 400; i += 9 {
			b.SetCurrentKey(testKey(i))
			must(t, w.m.Clear())
		}
		wr, err := st.Writer(id, "op", 0)
		must(t, err)
		async, err := b.Snapshot(id, wr)
		must(t, err)
		want := dumpBackend(t, b) // the state at the barrier
		if id > 3 {
			// Writes after the barrier, before the upload.
			w.apply(t, b, 50, int(id)+1000)
		}
		h, err := async(ctx)
		must(t, err)
		if !endRandomly(t, rng, st, b, id, h, kinds) {
			continue
		}
		for _, target := range []struct {
			name string
			f    state.KeyedBackendFactory
		}{{"changelog", f}, {"plain", plain}} {
			r := newBackend(t, target.f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
			newWorkload(t, r)
			if d := diffDumps(want, dumpBackend(t, r)); d != "" {
				t.Fatalf("checkpoint %d (%s, %d files) restored into %s: %s", id, h.Backend, len(h.Files), target.name, d)
			}
			must(t, r.Close())
		}
		if id%5 == 0 {
			var halves []string
			for _, kgs := range []checkpoint.KeyGroupRange{{Start: 0, End: 64}, {Start: 64, End: 128}} {
				r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", KeyGroups: kgs, Restore: []*checkpoint.Handle{h}, Storage: st})
				newWorkload(t, r)
				halves = append(halves, dumpBackend(t, r)...)
				must(t, r.Close())
			}
			sortStrings(halves)
			if d := diffDumps(want, halves); d != "" {
				t.Fatalf("checkpoint %d (%s) restored in two halves: %s", id, h.Backend, d)
			}
		}
	}
	t.Logf("checkpoints: %v", kinds)
	if kinds[checkpoint.BackendPebble] < 2 || kinds[checkpoint.BackendPebbleChangelog] < 10 || kinds["aborted"] == 0 {
		t.Fatalf("the run did not take every path: %v", kinds)
	}
}

// A checkpoint that appends writes only its segment: no SST is added to the
// base, and the bytes it stores follow the writes since the last
// checkpoint, not the size of the state.
func TestChangelogCheckpointStoresOnlyTheNewWrites(t *testing.T) {
	f := changelogFactory(t, 0) // the default limit
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 3})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	v, err := state.NewValueState(b, "v", state.BytesCodec{})
	must(t, err)
	putValues(t, b, v, 0, 20000, 1, 100) // about 2 MB of state
	h1, n1 := checkpointCounted(t, b, st, 1)
	completeOne(t, st, "op", 1, false, 1, h1)
	b.NotifyCheckpointComplete(1)
	putValues(t, b, v, 0, 200, 2, 100) // 1% of the keys
	h2, n2 := checkpointCounted(t, b, st, 2)
	completeOne(t, st, "op", 2, false, 1, h2)
	b.NotifyCheckpointComplete(2)
	if h1.Backend != checkpoint.BackendPebble || h2.Backend != checkpoint.BackendPebbleChangelog {
		t.Fatalf("backends %q then %q, want a materialization then a changelog checkpoint", h1.Backend, h2.Backend)
	}
	if n2 > n1/20 || n2 == 0 {
		t.Fatalf("the changelog checkpoint stored %d bytes after 1%% of a state whose materialization stored %d", n2, n1)
	}
	var segs int
	for i, ref := range h2.Files {
		if isSegment(ref) {
			segs++
			continue
		}
		if i >= len(h1.Files) || h1.Files[i].Path != ref.Path {
			t.Fatalf("file %d of the changelog checkpoint, %s, is not the materialization's", i, ref.Path)
		}
	}
	if segs != 1 {
		t.Fatalf("%d segments, want 1: %+v", segs, h2.Files)
	}
	t.Logf("materialization stored %d bytes, the changelog checkpoint after 1%% churn %d", n1, n2)
}

// A segment that the storage fails to store fails that checkpoint only;
// the next checkpoint stores it again and restores exactly.
func TestChangelogSegmentStoreFailureFailsOnlyTheCheckpoint(t *testing.T) {
	ctx := context.Background()
	var fault atomic.Bool
	errDisk := errors.New("injected storage error")
	st, err := dirstore.NewFileStorage(t.TempDir(), "job", dirstore.StorageOptions{Retained: 1, FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if fault.Load() && op.Kind == errorfs.OpFileWrite && strings.Contains(op.Path, segmentPrefix) {
			return errDisk
		}
		return nil
	}))})
	must(t, err)
	b := newBackend(t, changelogFactory(t, 0), state.KeyedBackendOptions{OperatorUID: "op"})
	w := newWorkload(t, b)
	take := func(id int64) (*checkpoint.Handle, error) {
		wr, err := st.Writer(id, "op", 0)
		must(t, err)
		async, err := b.Snapshot(id, wr)
		must(t, err)
		h, err := async(ctx)
		if err != nil {
			must(t, st.Abort(id))
			b.NotifyCheckpointAborted(id)
			return nil, err
		}
		completeOne(t, st, "op", id, false, 1, h)
		b.NotifyCheckpointComplete(id)
		return h, nil
	}
	w.apply(t, b, 1000, 1)
	_, err = take(1)
	must(t, err)
	w.apply(t, b, 1000, 2)
	fault.Store(true)
	if _, err := take(2); !errors.Is(err, errDisk) {
		t.Fatalf("checkpoint 2 with a failing segment store: %v, want the injected error", err)
	}
	fault.Store(false)
	w.apply(t, b, 1000, 3)
	h, err := take(3)
	must(t, err)
	segs := 0
	for _, ref := range h.Files {
		if isSegment(ref) {
			segs++
		}
	}
	if h.Backend != checkpoint.BackendPebbleChangelog || segs != 2 {
		t.Fatalf("checkpoint 3: %s with %d segments, want the failed checkpoint's segment and its own", h.Backend, segs)
	}
	r := newBackend(t, changelogFactory(t, 0), state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
	newWorkload(t, r)
	if d := diffDumps(dumpBackend(t, b), dumpBackend(t, r)); d != "" {
		t.Fatalf("restore of checkpoint 3: %s", d)
	}
}

// A damaged segment fails the restore, naming it; it is never skipped.
func TestChangelogDamagedSegmentFailsTheRestore(t *testing.T) {
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 3})
	b := newBackend(t, changelogFactory(t, 0), state.KeyedBackendOptions{OperatorUID: "op"})
	w := newWorkload(t, b)
	for id := int64(1); id <= 2; id++ {
		w.apply(t, b, 3, int(id)) // a segment small enough to be inline
		h := runSnapshot(t, b, st, "op", 0, id, false)
		completeOne(t, st, "op", id, false, 1, h)
		b.NotifyCheckpointComplete(id)
		if id < 2 {
			continue
		}
		for i, ref := range h.Files {
			if isSegment(ref) && ref.Inline {
				h.Files[i].Data = append([]byte(nil), ref.Data...)
				h.Files[i].Data[len(ref.Data)-1] ^= 0xFF
				_, err := changelogFactory(t, 0).CreateKeyedBackend(context.Background(), state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
				wantErrContains(t, err, fmt.Sprint("changelog segment ", ref.Path), "checksum")
				return
			}
		}
		var paths []string
		for _, ref := range h.Files {
			paths = append(paths, fmt.Sprintf("%s (%d bytes, inline %v)", ref.Path, ref.Size, ref.Inline))
		}
		t.Fatalf("checkpoint 2 has no inline segment: %s", strings.Join(paths, ", "))
	}
}
