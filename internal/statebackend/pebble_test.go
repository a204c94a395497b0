package statebackend

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

func pebbleFactory_(t testing.TB, incremental bool) state.KeyedBackendFactory {
	return NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: incremental, MemTableSize: 4 << 20, CacheSize: 16 << 20})
}

// Every way of snapshotting the same contents restores to the same state:
// memory checkpoint, Pebble full checkpoint, Pebble incremental checkpoint,
// and savepoints of each backend, restored into either backend.
func TestSameStateThroughEverySnapshotKind(t *testing.T) {
	const keys = 2000
	ctx := context.Background()
	mem := NewMemoryFactory()
	full := pebbleFactory_(t, false)
	incr := pebbleFactory_(t, true)
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 10})

	var want []string
	type snap struct {
		name string
		h    *checkpoint.Handle
	}
	var snaps []snap
	id := int64(0)
	for _, f := range []state.KeyedBackendFactory{mem, full, incr} {
		b := newBackend(t, f, state.KeyedBackendOptions{})
		w := newWorkload(t, b)
		for r := 0; r < 4; r++ {
			w.apply(t, b, keys, r)
			if r == 1 && f == incr {
				// An earlier completed checkpoint, so the final one is a
				// real increment.
				id++
				h := runSnapshot(t, b, st, "op", 0, id, false)
				completeOne(t, st, "op", id, false, 1, h)
				b.NotifyCheckpointComplete(id)
			}
		}
		d := dumpBackend(t, b)
		if want == nil {
			want = d
			if len(want) < 4*keys {
				t.Fatalf("workload produced only %d entries", len(want))
			}
		} else if diff := diffDumps(want, d); diff != "" {
			t.Fatalf("%s backend holds different state after the same workload: %s", f.Name(), diff)
		}
		id++
		h := runSnapshot(t, b, st, "op", 0, id, false)
		completeOne(t, st, "op", id, false, 1, h)
		snaps = append(snaps, snap{fmt.Sprintf("%s checkpoint (incremental=%v)", f.Name(), f == incr), h})
		id++
		sp := runSnapshot(t, b, st, "op", 0, id, true)
		completeOne(t, st, "op", id, true, 1, sp)
		snaps = append(snaps, snap{f.Name() + " savepoint", sp})
		// Writes after the snapshots must not show up in the restores.
		w.apply(t, b, keys, 9)
	}
	if !slicesContainsFunc(snaps[4].h.Files, func(f checkpoint.FileRef) bool { return f.Shared }) {
		t.Fatalf("incremental checkpoint stored no shared files: %+v", snaps[4].h.Files)
	}
	for _, s := range snaps {
		targets := []state.KeyedBackendFactory{mem, full, incr}
		if isPebbleHandle(s.h) {
			targets = []state.KeyedBackendFactory{full, incr}
		}
		for _, f := range targets {
			r, err := f.CreateKeyedBackend(ctx, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{s.h}, Storage: st})
			if err != nil {
				t.Fatalf("restore %s into %s: %v", s.name, f.Name(), err)
			}
			newWorkload(t, r)
			if diff := diffDumps(want, dumpBackend(t, r)); diff != "" {
				t.Fatalf("restore %s into %s: %s", s.name, f.Name(), diff)
			}
			// The restored backend keeps working and checkpoints again.
			w := newWorkload(t, r)
			w.apply(t, r, 10, 5)
			must(t, r.Close())
		}
	}
	// A Pebble checkpoint cannot be read by the memory backend: clear error.
	_, err := mem.CreateKeyedBackend(ctx, state.KeyedBackendOptions{Restore: []*checkpoint.Handle{snaps[2].h}, Storage: st})
	wantErrContains(t, err, "pebble", "savepoint")
}

// countingWriter counts the bytes a snapshot writes.
type countingWriter struct {
	checkpoint.SnapshotWriter
	n *atomic.Int64
}

func (c countingWriter) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	f, err := c.SnapshotWriter.Create(name, shared)
	if err != nil {
		return nil, err
	}
	return countingFile{f, c.n}, nil
}

type countingFile struct {
	checkpoint.FileWriter
	n *atomic.Int64
}

func (c countingFile) Write(p []byte) (int, error) {
	n, err := c.FileWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func handleSize(h *checkpoint.Handle) (total int64) {
	for _, f := range h.Files {
		total += f.Size
	}
	return total
}

// checkpointCounted runs checkpoint id of b into st and returns the handle
// and the bytes it wrote.
func checkpointCounted(t testing.TB, b state.KeyedBackend, st checkpoint.Storage, id int64) (*checkpoint.Handle, int64) {
	t.Helper()
	w, err := st.Writer(id, "op", 0)
	must(t, err)
	var n atomic.Int64
	async, err := b.Snapshot(id, countingWriter{w, &n})
	must(t, err)
	h, err := async(context.Background())
	must(t, err)
	return h, n.Load()
}

func putValues(t testing.TB, b state.KeyedBackend, v *state.ValueState[[]byte], from, to int, round byte, size int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(from), uint64(round)))
	val := make([]byte, size)
	for i := from; i < to; i++ {
		b.SetCurrentKey(testKey(i))
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		val[0] = round // incompressible, tagged with the round
		must(t, v.Update(val))
	}
}

func TestIncrementalCheckpointWritesOnlyNewFilesAndKeepsSharedOnes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 1})
	must(t, err)
	f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, MemTableSize: 8 << 20})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	v, err := state.NewValueState(b, "v", state.BytesCodec{})
	must(t, err)
	const keys, size = 20000, 200 // ~4 MB
	putValues(t, b, v, 0, keys, 'a', size)
	// Settle the LSM first: a compaction of the first flushes still
	// running at checkpoint 2 would rewrite every file between the two.
	pb := b.(*pebbleBackend)
	must(t, pb.flushDirty())
	must(t, pb.db.Compact(ctx, []byte{0}, []byte{0xff, 0xff, 0xff}, false))
	h1, w1 := checkpointCounted(t, b, st, 1)
	completeOne(t, st, "op", 1, false, 1, h1)
	b.NotifyCheckpointComplete(1)
	inline := int64(0)
	for _, f := range h1.Files {
		if f.Inline {
			inline += f.Size
			if f.Size > inlineLimit || f.Shared {
				t.Fatalf("inline file %+v: over the limit or shared", f)
			}
		}
	}
	if total := handleSize(h1); w1 != total-inline || total < keys*size/2 || inline == 0 {
		t.Fatalf("first checkpoint wrote %d bytes of %d, %d inline", w1, total, inline)
	}

	// Change 1% of the keys.
	putValues(t, b, v, 0, keys/100, 'b', size)
	h2, w2 := checkpointCounted(t, b, st, 2)
	total2 := handleSize(h2)
	t.Logf("checkpoint 1: %d bytes; checkpoint 2 after 1%% churn: wrote %d of %d bytes (%.1f%%)", w1, w2, total2, 100*float64(w2)/float64(total2))
	if w2*10 > total2 {
		t.Fatalf("incremental checkpoint after 1%% churn wrote %d of %d bytes", w2, total2)
	}
	reused := 0
	for _, f := range h2.Files {
		for _, g := range h1.Files {
			if reflect.DeepEqual(f, g) && f.Shared {
				reused++
			}
		}
	}
	if reused == 0 {
		t.Fatal("checkpoint 2 shares no file with checkpoint 1")
	}
	completeOne(t, st, "op", 2, false, 1, h2) // retained=1 subsumes checkpoint 1
	b.NotifyCheckpointComplete(2)
	infos, err := st.List(ctx)
	must(t, err)
	if len(infos) != 1 || infos[0].ID != 2 {
		t.Fatalf("after subsumption: %+v", infos)
	}
	// Restore checkpoint 2 (from a fresh storage instance, which rebuilds
	// reference counts from the metadata) after checkpoint 1 is gone.
	st2, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 1})
	must(t, err)
	md, _, err := st2.Latest(ctx)
	must(t, err)
	if md == nil || md.CheckpointID != 2 {
		t.Fatalf("latest = %+v", md)
	}
	r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: checkpoint.KeyedHandlesFor(md.Operator("op"), checkpoint.KeyGroupRange{Start: 0, End: 128}), Storage: st2})
	rv, err := state.NewValueState(r, "v", state.BytesCodec{})
	must(t, err)
	for _, i := range []int{0, keys/100 - 1, keys / 100, keys - 1} {
		r.SetCurrentKey(testKey(i))
		got, ok, err := rv.Value()
		must(t, err)
		want := byte('a')
		if i < keys/100 {
			want = 'b'
		}
		if !ok || len(got) != size || got[0] != want {
			t.Fatalf("key %d restored as %q…", i, got[:min(len(got), 3)])
		}
	}
	if d := diffDumps(dumpBackend(t, b), dumpBackend(t, r)); d != "" {
		t.Fatalf("restored checkpoint 2 differs: %s", d)
	}
	// The restored backend's first checkpoint reuses every restored SST
	// that still exists (a compaction after opening may have replaced some;
	// RocksDB in Flink behaves the same), and the next increment is small.
	stored := map[string]checkpoint.FileRef{}
	for _, f := range h2.Files {
		if f.Shared {
			stored[localFileName(f)] = f
		}
	}
	putValues(t, r, rv, 0, keys/100, 'c', size)
	h3, w3 := checkpointCounted(t, r, st2, 3)
	for _, f := range h3.Files {
		if old, ok := stored[localFileName(f)]; ok && !reflect.DeepEqual(f, old) {
			t.Fatalf("restored file %s uploaded again as %s", old.Path, f.Path)
		}
	}
	completeOne(t, st2, "op", 3, false, 1, h3)
	r.NotifyCheckpointComplete(3)
	// Settle again, so that no compaction of the restored and new files
	// is left to rewrite them all before checkpoint 4.
	rp := r.(*pebbleBackend)
	must(t, rp.db.Compact(ctx, []byte{0}, []byte{0xff, 0xff, 0xff}, false))
	h3c, _ := checkpointCounted(t, r, st2, 4)
	completeOne(t, st2, "op", 4, false, 1, h3c)
	r.NotifyCheckpointComplete(4)
	putValues(t, r, rv, keys/2, keys/2+keys/100, 'd', size)
	h4, w4 := checkpointCounted(t, r, st2, 5)
	t.Logf("after restore: checkpoint 3 wrote %d of %d bytes, checkpoint 5 after 1%% churn %d of %d", w3, handleSize(h3), w4, handleSize(h4))
	if w4*2 > handleSize(h4) {
		t.Fatalf("checkpoint 5 after 1%% churn wrote %d of %d bytes", w4, handleSize(h4))
	}
	completeOne(t, st2, "op", 5, false, 1, h4)
}

// Rescaling 2 -> 3 -> 1 through savepoints keeps every key's state, on the
// subtask that owns its key group, for both backends; and so does rescaling
// from Pebble's own (incremental) checkpoints, which restores several
// handles by reading the entries of the owned key groups.
func TestRescaleThroughSavepoints(t *testing.T) {
	const keys = 3000
	for _, tc := range []struct {
		f         state.KeyedBackendFactory
		savepoint bool
	}{{NewMemoryFactory(), true}, {pebbleFactory_(t, true), true}, {pebbleFactory_(t, true), false}} {
		f, savepoint := tc.f, tc.savepoint
		t.Run(fmt.Sprintf("%s/savepoint=%v", f.Name(), savepoint), func(t *testing.T) {
			st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 3})
			ref := newBackend(t, NewMemoryFactory(), state.KeyedBackendOptions{})
			rw := newWorkload(t, ref)
			var handles []*checkpoint.Handle
			for s := 0; s < 2; s++ {
				b := newBackend(t, f, state.KeyedBackendOptions{Subtask: s, Parallelism: 2})
				w := newWorkload(t, b)
				for r := 0; r < 3; r++ {
					w.apply(t, b, keys, r)
				}
				handles = append(handles, runSnapshot(t, b, st, "op", s, 1, savepoint))
			}
			for r := 0; r < 3; r++ {
				rw.apply(t, ref, keys, r)
			}
			want := dumpBackend(t, ref)
			md := completeOne(t, st, "op", 1, savepoint, 2, handles...)
			id := int64(1)
			for _, p := range []int{3, 1} {
				id++
				op := md.Operator("op")
				var next []*checkpoint.Handle
				var got []string
				for s := 0; s < p; s++ {
					kgs := state.KeyGroupRangeForSubtask(s, p, state.DefaultMaxParallelism)
					b := newBackend(t, f, state.KeyedBackendOptions{Subtask: s, Parallelism: p, Restore: checkpoint.KeyedHandlesFor(op, kgs), Storage: st})
					newWorkload(t, b)
					h := runSnapshot(t, b, st, "op", s, id, savepoint)
					got = append(got, dumpBackend(t, b)...)
					// Every key in this subtask's dump belongs to it.
					for _, line := range dumpBackend(t, b) {
						key := strings.Split(line, "|")[1]
						var k string
						fmt.Sscanf(key, "%q", &k)
						if !kgs.Contains(state.KeyGroupOf([]byte(k), state.DefaultMaxParallelism)) {
							t.Fatalf("parallelism %d: subtask %d holds key %s of another subtask", p, s, k)
						}
					}
					next = append(next, h)
				}
				md = completeOne(t, st, "op", id, savepoint, p, next...)
				sortStrings(got)
				if d := diffDumps(want, got); d != "" {
					t.Fatalf("after rescale to %d: %s", p, d)
				}
			}
		})
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func slicesContainsFunc[T any](s []T, f func(T) bool) bool {
	for _, v := range s {
		if f(v) {
			return true
		}
	}
	return false
}

func TestPebbleCodecMismatchOnRestoreNamesTheState(t *testing.T) {
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
	f := pebbleFactory_(t, false)
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	v, err := state.NewValueState(b, "clicks", state.Int64Codec{})
	must(t, err)
	b.SetCurrentKey([]byte("k"))
	must(t, v.Update(3))
	for _, savepoint := range []bool{false, true} {
		h := runSnapshot(t, b, st, "op", 0, map[bool]int64{false: 1, true: 2}[savepoint], savepoint)
		r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
		_, err = state.NewValueState(r, "clicks", state.JSONCodec[int64]{})
		wantErrContains(t, err, `"clicks"`, "codec")
		_, err = state.NewListState(r, "clicks", state.Int64Codec{})
		wantErrContains(t, err, `"clicks"`, "list")
		rv, err := state.NewValueState(r, "clicks", state.Int64Codec{})
		must(t, err)
		r.SetCurrentKey([]byte("k"))
		if got, ok, err := rv.Value(); err != nil || !ok || got != 3 {
			t.Fatalf("restored value %v %v %v", got, ok, err)
		}
	}
}

// Map user keys cannot collide with other keys: the serialized key is
// length-prefixed, so key "a" with user key suffix+"z" differs from key
// "a"+suffix (in the same key group) with user key "z", and clearing one
// key's map leaves the other alone.
func TestPebbleMapKeysAreSelfDelimiting(t *testing.T) {
	kg := state.KeyGroupOf([]byte("a"), state.DefaultMaxParallelism)
	suffix := ""
	for i := 0; ; i++ {
		if state.KeyGroupOf([]byte("a"+strconv.Itoa(i)), state.DefaultMaxParallelism) == kg {
			suffix = strconv.Itoa(i)
			break
		}
	}
	b := newBackend(t, pebbleFactory_(t, false), state.KeyedBackendOptions{})
	m, err := state.NewMapState(b, "m", state.StringCodec{}, state.StringCodec{})
	must(t, err)
	b.SetCurrentKey([]byte("a"))
	must(t, m.Put(suffix+"z", "1"))
	b.SetCurrentKey([]byte("a" + suffix))
	if _, ok, _ := m.Get("z"); ok {
		t.Fatal("entry of key a visible under key a" + suffix)
	}
	must(t, m.Put("z", "2"))
	must(t, m.Clear())
	b.SetCurrentKey([]byte("a"))
	if v, ok, err := m.Get(suffix + "z"); err != nil || !ok || v != "1" {
		t.Fatalf("a/%sz = %q %v %v", suffix, v, ok, err)
	}
	n := 0
	must(t, m.All(func(k, v string) bool { n++; return true }))
	if n != 1 {
		t.Fatalf("key a has %d entries", n)
	}
}

func TestCleanPebbleDirRemovesOnlyDeadInstances(t *testing.T) {
	dir := t.TempDir()
	f := NewPebbleFactory(PebbleOptions{Dir: dir})
	live := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "live"})
	// A dead instance: a database directory nobody holds (as after kill -9).
	dead := filepath.Join(dir, "dead-0-0123456789abcdef")
	db, err := pebble.Open(filepath.Join(dead, "db"), &pebble.Options{Logger: quietLogger{}})
	must(t, err)
	must(t, db.Close())
	other := filepath.Join(dir, "not-an-instance")
	must(t, os.MkdirAll(other, 0o755))

	must(t, CleanPebbleDir(nil, dir))
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("dead instance survives: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("unrelated directory removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(live.(*pebbleBackend).dir, "db", "LOCK")); err != nil {
		t.Fatalf("live instance removed: %v", err)
	}
}

// Writes are buffered between snapshots: reads see them at once, a
// buffered delete hides a stored value, iteration and the write buffer's
// limit flush them, and a snapshot holds every write made before it.
func TestPebbleWriteBufferIsInvisibleToReaders(t *testing.T) {
	ctx := context.Background()
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
	f := pebbleFactory_(t, true)
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	v, err := state.NewValueState(b, "v", state.Int64Codec{})
	must(t, err)
	m, err := state.NewMapState(b, "m", state.StringCodec{}, state.Int64Codec{})
	must(t, err)
	pb := b.(*pebbleBackend)
	b.SetCurrentKey([]byte("k"))
	must(t, v.Update(1))
	must(t, pb.flushDirty()) // stored in Pebble
	must(t, v.Update(2))
	if got, ok, err := v.Value(); err != nil || !ok || got != 2 {
		t.Fatalf("buffered update: %d %v %v", got, ok, err)
	}
	must(t, v.Clear())
	if _, ok, err := v.Value(); err != nil || ok {
		t.Fatalf("buffered delete of a stored value: found %v (%v)", ok, err)
	}
	must(t, m.Put("x", 7))
	must(t, m.Put("y", 8))
	n := 0
	must(t, m.All(func(string, int64) bool { n++; return true }))
	if n != 2 {
		t.Fatalf("iteration sees %d buffered map entries, want 2", n)
	}
	// Past the limit the buffer is written out and stays readable.
	big := make([]byte, 64<<10)
	bv, err := state.NewValueState(b, "big", state.BytesCodec{})
	must(t, err)
	for i := range 100 { // 6.4 MB > dirtyLimit
		b.SetCurrentKey([]byte("big" + strconv.Itoa(i)))
		big[0] = byte(i)
		must(t, bv.Update(big))
	}
	if pb.dirtyBytes > dirtyLimit {
		t.Fatalf("write buffer holds %d bytes, over its limit %d", pb.dirtyBytes, dirtyLimit)
	}
	for i := range 100 {
		b.SetCurrentKey([]byte("big" + strconv.Itoa(i)))
		if got, ok, err := bv.Value(); err != nil || !ok || got[0] != byte(i) || len(got) != len(big) {
			t.Fatalf("big%d after the buffer spilled: ok %v err %v", i, ok, err)
		}
	}
	// A snapshot holds the buffered writes; the restore sees them.
	b.SetCurrentKey([]byte("k"))
	must(t, v.Update(42))
	h, _ := checkpointCounted(t, b, st, 1)
	r, err := f.CreateKeyedBackend(ctx, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
	must(t, err)
	defer r.Close()
	rv, err := state.NewValueState(r, "v", state.Int64Codec{})
	must(t, err)
	r.SetCurrentKey([]byte("k"))
	if got, ok, err := rv.Value(); err != nil || !ok || got != 42 {
		t.Fatalf("restored value %d %v %v, want 42", got, ok, err)
	}
}

// The read cache (values flushed or read since) always answers what Pebble
// holds: after a map state's Clear, after writes to a key cached as
// absent, and across a snapshot and restore; and it stays within its bound.
func TestPebbleReadCacheFollowsPebble(t *testing.T) {
	ctx := context.Background()
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
	f := pebbleFactory_(t, true)
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	pb := b.(*pebbleBackend)
	v, err := state.NewValueState(b, "v", state.Int64Codec{})
	must(t, err)
	m, err := state.NewMapState(b, "m", state.StringCodec{}, state.Int64Codec{})
	must(t, err)
	b.SetCurrentKey([]byte("k"))
	must(t, m.Put("x", 1))
	must(t, m.Put("y", 2))
	must(t, v.Update(5))
	must(t, pb.flushDirty())
	if len(pb.clean) == 0 {
		t.Fatal("a flush left nothing in the read cache")
	}
	if got, ok, err := m.Get("x"); err != nil || !ok || got != 1 {
		t.Fatalf("cached map entry: %d %v %v", got, ok, err)
	}
	must(t, m.Clear())
	for _, k := range []string{"x", "y"} {
		if _, ok, err := m.Get(k); err != nil || ok {
			t.Fatalf("map entry %s still found after Clear (%v)", k, err)
		}
	}
	must(t, m.Put("x", 3))
	b.SetCurrentKey([]byte("other"))
	if _, ok, err := v.Value(); err != nil || ok {
		t.Fatalf("value of a new key found (%v)", err)
	}
	must(t, v.Update(9)) // the key was cached as absent
	must(t, pb.flushDirty())
	if got, ok, err := v.Value(); err != nil || !ok || got != 9 {
		t.Fatalf("value written over a cached absence: %d %v %v", got, ok, err)
	}
	h, _ := checkpointCounted(t, b, st, 1)
	r, err := f.CreateKeyedBackend(ctx, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
	must(t, err)
	defer r.Close()
	if d := diffDumps(dumpBackend(t, b), dumpBackend(t, r)); d != "" {
		t.Fatalf("restore differs from the cached backend: %s", d)
	}
	// Reading many big values keeps the cache within its bound.
	bv, err := state.NewValueState(b, "big", state.BytesCodec{})
	must(t, err)
	big := make([]byte, 64<<10)
	for i := range 100 {
		b.SetCurrentKey([]byte("big" + strconv.Itoa(i)))
		must(t, bv.Update(big))
	}
	must(t, pb.flushDirty())
	for i := range 100 {
		b.SetCurrentKey([]byte("big" + strconv.Itoa(i)))
		if _, ok, err := bv.Value(); err != nil || !ok {
			t.Fatalf("big%d: %v %v", i, ok, err)
		}
	}
	if pb.cleanBytes > dirtyLimit {
		t.Fatalf("read cache holds %d bytes, over its bound %d", pb.cleanBytes, dirtyLimit)
	}
}
