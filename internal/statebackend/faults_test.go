package statebackend

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// Injected I/O errors in Pebble's filesystem (via vfs/errorfs) and in the
// checkpoint storage fail the checkpoint, not the process or the backend,
// and the next checkpoint succeeds and restores.
func TestInjectedIOErrorsFailOnlyTheCheckpoint(t *testing.T) {
	ctx := context.Background()
	// pebbleFault is the errorfs.OpKind to fail on paths in the local
	// checkpoint directory, or -1. (Failed hard links are not an error:
	// Pebble falls back to copying.)
	var pebbleFault atomic.Int32
	pebbleFault.Store(-1)
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if k := errorfs.OpKind(pebbleFault.Load()); op.Kind == k && strings.Contains(op.Path, "/chk-") {
			return errorfs.ErrInjected
		}
		return nil
	})
	var storageFault atomic.Bool
	errDisk := errors.New("injected storage error")
	st, err := dirstore.NewFileStorage(t.TempDir(), "job", dirstore.StorageOptions{Retained: 1, FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if storageFault.Load() && op.Kind == errorfs.OpFileWrite && strings.Contains(op.Path, "shared") {
			return errDisk
		}
		return nil
	}))})
	must(t, err)
	// Every checkpoint materializes (no changelog): the faults are in the
	// Pebble checkpoint's files. TestChangelogSegmentStoreFailureFailsOnlyTheCheckpoint
	// fails a segment.
	f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, FS: errorfs.Wrap(vfs.Default, inj), MemTableSize: 1 << 20, ChangelogLimit: -1})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
	w := newWorkload(t, b)

	id := int64(0)
	attempt := func(round int) (*checkpoint.Handle, error) {
		w.apply(t, b, 1000, round)
		id++
		wr, err := st.Writer(id, "op", 0)
		must(t, err)
		async, err := b.Snapshot(id, wr)
		if err != nil {
			must(t, st.Abort(id))
			b.NotifyCheckpointAborted(id)
			return nil, err
		}
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
	if _, err := attempt(0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		arm    func()
		target error
	}{
		{"pebble checkpoint: create directory", func() { pebbleFault.Store(int32(errorfs.OpMkdirAll)) }, errorfs.ErrInjected},
		{"pebble checkpoint: manifest copy", func() { pebbleFault.Store(int32(errorfs.OpCreate)) }, errorfs.ErrInjected},
		{"upload: read local file", func() { pebbleFault.Store(int32(errorfs.OpFileRead)) }, errorfs.ErrInjected},
		{"upload: storage write", func() { storageFault.Store(true) }, errDisk},
	}
	for i, c := range cases {
		c.arm()
		_, err := attempt(i + 1)
		pebbleFault.Store(-1)
		storageFault.Store(false)
		if !errors.Is(err, c.target) {
			t.Fatalf("%s: checkpoint error = %v, want the injected one", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
		h, err := attempt(i + 1)
		if err != nil {
			t.Fatalf("%s: next checkpoint failed: %v", c.name, err)
		}
		// The good checkpoint restores to the backend's current contents.
		r := newBackend(t, NewPebbleFactory(PebbleOptions{Dir: t.TempDir()}), state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
		newWorkload(t, r)
		if d := diffDumps(dumpBackend(t, b), dumpBackend(t, r)); d != "" {
			t.Fatalf("%s: restore of the next checkpoint differs: %s", c.name, d)
		}
		must(t, r.Close())
	}
	md, _, err := st.Latest(ctx)
	must(t, err)
	if md.CheckpointID != id {
		t.Fatalf("latest %d, want %d", md.CheckpointID, id)
	}
}
