package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// The Pebble backend's incremental checkpoints through the S3 storage: the
// second checkpoint shares SSTs with the first, the first is subsumed, and
// a backend restored from a reopened storage holds every value.
func TestPebbleIncrementalCheckpointsRoundTrip(t *testing.T) {
	pebbleRoundTrip(t, objstore.NewMemory(objstore.MemoryOptions{}), "ckpt")
}

// pebbleRoundTrip runs the test on store under prefix.
func pebbleRoundTrip(t *testing.T, mem objstore.Store, prefix string) {
	ctx := ctxT(t)
	open := func(t *testing.T, st objstore.Store, epoch int64, retained int, _ *fakeClock) *s3store.Storage {
		return openPrefix(t, st, prefix, epoch, retained, nil)
	}
	st := open(t, mem, 1, 1, nil)
	f := statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir(), Incremental: true, MemTableSize: 4 << 20, CacheSize: 16 << 20})
	b, err := f.CreateKeyedBackend(ctx, state.KeyedBackendOptions{OperatorUID: "op", MaxParallelism: state.DefaultMaxParallelism,
		Parallelism: 1, KeyGroups: checkpoint.KeyGroupRange{Start: 0, End: state.DefaultMaxParallelism}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	v, err := state.NewValueState(b, "v", state.BytesCodec{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	key := func(i int) []byte { return []byte(fmt.Sprintf("key-%06d", i)) }
	val := func(i int, round byte) []byte { return bytes.Repeat([]byte{round, byte(i)}, 50) }
	put := func(from, to int, round byte) {
		for i := from; i < to; i++ {
			b.SetCurrentKey(key(i))
			if err := v.Update(val(i, round)); err != nil {
				t.Fatal(err)
			}
		}
	}
	takeCheckpoint := func(id int64) *checkpoint.Metadata {
		w, err := st.Writer(id, "op", 0)
		if err != nil {
			t.Fatal(err)
		}
		async, err := b.Snapshot(id, w)
		if err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		h, err := async(actx)
		if err != nil {
			t.Fatalf("snapshot %d: %v", id, err)
		}
		md := &checkpoint.Metadata{CheckpointID: id, Timestamp: time.Unix(id, 0).UTC(), Operators: []checkpoint.OperatorSnapshot{{
			UID: "op", Parallelism: 1, MaxParallelism: state.DefaultMaxParallelism,
			Subtasks: []checkpoint.SubtaskSnapshot{{Subtask: 0, Keyed: h}}}}}
		if err := st.Complete(ctx, md); err != nil {
			t.Fatalf("Complete(%d): %v", id, err)
		}
		b.NotifyCheckpointComplete(id)
		return md
	}
	put(0, n, 'a')
	md1 := takeCheckpoint(1)
	put(0, n/100, 'b')
	md2 := takeCheckpoint(2)
	shared1 := map[string]bool{}
	for _, r := range md1.Operators[0].Subtasks[0].Keyed.Files {
		if r.Shared {
			shared1[r.Path] = true
		}
	}
	reused := 0
	for _, r := range md2.Operators[0].Subtasks[0].Keyed.Files {
		if shared1[r.Path] {
			reused++
		}
	}
	if len(shared1) == 0 || reused == 0 {
		t.Fatalf("checkpoint 1 stored %d shared files, checkpoint 2 reuses %d; want sharing", len(shared1), reused)
	}

	re := open(t, mem, 1, 1, nil)
	md, _, err := re.Latest(ctx)
	if err != nil || md == nil || md.CheckpointID != 2 {
		t.Fatalf("Latest = %v, %v", md, err)
	}
	kgs := checkpoint.KeyGroupRange{Start: 0, End: state.DefaultMaxParallelism}
	r, err := f.CreateKeyedBackend(ctx, state.KeyedBackendOptions{OperatorUID: "op", MaxParallelism: state.DefaultMaxParallelism,
		Parallelism: 1, KeyGroups: kgs, Restore: checkpoint.KeyedHandlesFor(md.Operator("op"), kgs), Storage: re})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	rv, err := state.NewValueState(r, "v", state.BytesCodec{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r.SetCurrentKey(key(i))
		got, ok, err := rv.Value()
		round := byte('a')
		if i < n/100 {
			round = 'b'
		}
		if err != nil || !ok || !bytes.Equal(got, val(i, round)) {
			t.Fatalf("key %d restored as %q, %t, %v", i, got, ok, err)
		}
	}
	t.Logf("checkpoint 2 reused %d of checkpoint 1's %d shared files", reused, len(shared1))
}
