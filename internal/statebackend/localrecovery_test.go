package statebackend

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// A restore on the same machine (the same PebbleOptions.Dir) takes the
// checkpoint's SST files from the local recovery directory and reads none
// of them from the storage; a local file whose bytes differ from the
// stored one is downloaded instead. The directory keeps only the files of
// the latest completed checkpoint. With and without the changelog.
func TestLocalRecoveryTakesMatchingFilesFromTheLocalDisk(t *testing.T) {
	for _, limit := range []int64{-1, 0} {
		name := "changelog"
		if limit < 0 {
			name = "sst-only"
		}
		t.Run(name, func(t *testing.T) {
			var sstOpens atomic.Int64
			st, err := dirstore.NewFileStorage(t.TempDir(), "job", dirstore.StorageOptions{Retained: 1, FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
				if op.Kind == errorfs.OpOpen && strings.HasSuffix(op.Path, ".sst") {
					sstOpens.Add(1)
				}
				return nil
			}))})
			must(t, err)
			dir := t.TempDir()
			opts := PebbleOptions{Dir: dir, Incremental: true, LocalRecovery: true, ChangelogLimit: limit, MemTableSize: 1 << 20}
			b := newBackend(t, NewPebbleFactory(opts), state.KeyedBackendOptions{OperatorUID: "op/1", Subtask: 0})
			w := newWorkload(t, b)
			var h *checkpoint.Handle
			for id := int64(1); id <= 3; id++ {
				w.apply(t, b, 3000, int(id))
				h = runSnapshot(t, b, st, "op/1", 0, id, false)
				completeOne(t, st, "op/1", id, false, 1, h)
				b.NotifyCheckpointComplete(id)
			}
			want := dumpBackend(t, b)
			var ssts []string
			for _, ref := range h.Files {
				if ref.Shared && !ref.Inline && strings.HasSuffix(ref.Path, ".sst") {
					ssts = append(ssts, filepath.Base(ref.Path))
				}
			}
			if len(ssts) == 0 {
				t.Fatalf("checkpoint 3 stored no SST file: %d files", len(h.Files))
			}
			localDir := NewPebbleFactory(opts).(*pebbleFactory).localRecoveryDir("op/1", 0)
			ents, err := os.ReadDir(localDir)
			must(t, err)
			var local []string
			for _, e := range ents {
				local = append(local, e.Name())
			}
			slices.Sort(ssts)
			if !slices.Equal(local, ssts) {
				t.Fatalf("local recovery directory holds %v, want the SSTs of the latest checkpoint %v", local, ssts)
			}
			must(t, b.Close()) // as after a kill: the links stay

			restore := func() (*pebbleBackend, []string) {
				sstOpens.Store(0)
				r := newBackend(t, NewPebbleFactory(opts), state.KeyedBackendOptions{OperatorUID: "op/1", Subtask: 0, Restore: []*checkpoint.Handle{h}, Storage: st})
				newWorkload(t, r)
				return r.(*pebbleBackend), dumpBackend(t, r)
			}
			r, got := restore()
			if d := diffDumps(want, got); d != "" {
				t.Fatalf("restored from local files: %s", d)
			}
			if r.restoredLocal != len(ssts) || sstOpens.Load() != 0 {
				t.Fatalf("%d of %d SSTs taken from the local disk, %d opened in the storage; want all and none", r.restoredLocal, len(ssts), sstOpens.Load())
			}
			must(t, r.Close())

			// A local file with the right size and other bytes is not used.
			p := filepath.Join(localDir, ssts[0])
			data, err := os.ReadFile(p)
			must(t, err)
			data[len(data)/2] ^= 0xFF
			must(t, os.Remove(p)) // a link: replace it, do not write through it
			must(t, os.WriteFile(p, data, 0o644))
			r, got = restore()
			if d := diffDumps(want, got); d != "" {
				t.Fatalf("restored with one damaged local file: %s", d)
			}
			if r.restoredLocal != len(ssts)-1 || sstOpens.Load() != 1 {
				t.Fatalf("with one damaged local file: %d of %d SSTs taken from the local disk, %d opened in the storage; want all but one, and one", r.restoredLocal, len(ssts), sstOpens.Load())
			}
		})
	}
}
