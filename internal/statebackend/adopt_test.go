package statebackend

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// An incremental Pebble checkpoint of another job directory, adopted,
// restores to the same contents, and the restored backend checkpoints on.
func TestAdoptPebbleCheckpointRestores(t *testing.T) {
	ctx := context.Background()
	otherDir := t.TempDir()
	other, err := dirstore.NewFileStorage(otherDir, "old", dirstore.StorageOptions{})
	must(t, err)
	f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, MemTableSize: 1 << 20})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	w := newWorkload(t, b)
	for r := int64(1); r <= 2; r++ {
		w.apply(t, b, 2000, int(r))
		completeOne(t, other, "op", r, false, 1, runSnapshot(t, b, other, "op", 0, r, false))
		b.NotifyCheckpointComplete(r)
	}
	want := dumpBackend(t, b)

	st, err := dirstore.NewFileStorage(t.TempDir(), "job", dirstore.StorageOptions{Retained: 1})
	must(t, err)
	src, err := st.Load(ctx, filepath.Join(otherDir, "old", "chk-2"))
	must(t, err)
	ad, err := st.Adopt(ctx, src, 3)
	must(t, err)
	must(t, os.RemoveAll(otherDir))
	shared := 0
	for _, r := range ad.Operators[0].Subtasks[0].Keyed.Files {
		if r.Shared {
			shared++
		}
	}
	if shared == 0 {
		t.Fatal("the incremental checkpoint has no shared files: the test proves nothing")
	}
	r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: checkpoint.KeyedHandlesFor(ad.Operator("op"), checkpoint.KeyGroupRange{Start: 0, End: 128}), Storage: st})
	wr := newWorkload(t, r)
	if d := diffDumps(want, dumpBackend(t, r)); d != "" {
		t.Fatalf("adopted checkpoint restores differently: %s", d)
	}
	// The job goes on checkpointing from the adopted checkpoint.
	wr.apply(t, r, 2000, 3)
	completeOne(t, st, "op", 4, false, 1, runSnapshot(t, r, st, "op", 0, 4, false))
	latest, _, err := st.Latest(ctx)
	must(t, err)
	r2 := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: checkpoint.KeyedHandlesFor(latest.Operator("op"), checkpoint.KeyGroupRange{Start: 0, End: 128}), Storage: st})
	newWorkload(t, r2)
	if d := diffDumps(dumpBackend(t, r), dumpBackend(t, r2)); d != "" {
		t.Fatalf("checkpoint 4 restores differently: %s", d)
	}
}
