package dirstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// Sweep removes every chk-<n> and savepoint-<id> directory without
// _metadata, whatever its id, and nothing else: complete and damaged
// checkpoints and savepoints stay, and so does a checkpoint this storage
// has in flight (a savepoint being written), which then completes.
func TestSweepRemovesOnlyIncompletePoints(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 10})
	must(t, err)
	root := filepath.Join(dir, "job")
	writeCheckpoint(t, st, 1, "a.sst")
	writeCheckpoint(t, st, 2, "a.sst")
	writeCheckpoint(t, st, 3, "a.sst")
	// Damage 3's metadata: damaged is not incomplete.
	meta := filepath.Join(root, "chk-3", metadataFile)
	b, err := os.ReadFile(meta)
	must(t, err)
	b[len(b)-2] ^= 1
	must(t, os.WriteFile(meta, b, 0o644))
	// Leftovers: an incomplete checkpoint older than the newest complete
	// one, a savepoint whose completion failed after its files moved, one
	// newer than everything, and a removal cut short after its _metadata.
	for _, name := range []string{"chk-0", "savepoint-4", "chk-9", "savepoint-7"} {
		must(t, os.MkdirAll(filepath.Join(root, name, "op-x", "0"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, name, "op-x", "0", "state"), []byte("partial"), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(root, "savepoint-7", committedFile), []byte("committed 7\n"), 0o644))
	// A savepoint of this job being written: its chk-10 has files, no
	// _metadata yet.
	w, err := st.Writer(10, "op/1", 0)
	must(t, err)
	f, err := w.Create("private", false)
	must(t, err)
	io.WriteString(f, "savepoint state")
	priv, err := f.Close()
	must(t, err)

	removed, err := st.Sweep(ctx)
	must(t, err)
	var got []string
	for _, in := range removed {
		got = append(got, fmt.Sprintf("%d/%v/%s", in.ID, in.Savepoint, filepath.Base(in.Path)))
		if in.Complete || in.Err == nil || !strings.Contains(in.Err.Error(), in.Path) {
			t.Errorf("removed %+v: want an incomplete info whose Err names its path", in)
		}
	}
	if want := "0/false/chk-0 4/true/savepoint-4 7/true/savepoint-7 9/false/chk-9"; strings.Join(got, " ") != want {
		t.Fatalf("Sweep removed %v, want %s", got, want)
	}
	if names := strings.Join(dirNames(t, root), " "); names != "chk-1 chk-10 chk-2 chk-3 shared" {
		t.Fatalf("after Sweep the job directory holds %s", names)
	}
	md := &checkpoint.Metadata{CheckpointID: 10, Savepoint: true, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Parallelism: 1, MaxParallelism: 128,
		Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{priv}}}}}}}
	must(t, st.Complete(ctx, md))
	if _, err := st.Load(ctx, "savepoint-10"); err != nil {
		t.Fatalf("the savepoint in flight during Sweep: %v", err)
	}
	if again, err := st.Sweep(ctx); err != nil || len(again) != 0 {
		t.Fatalf("a second Sweep = %+v, %v; want nothing", again, err)
	}
	infos, err := st.List(ctx)
	must(t, err)
	for _, in := range infos {
		if in.ID == 3 && !in.Damaged {
			t.Fatalf("damaged checkpoint 3 lists as %+v", in)
		}
	}
	// A read-only storage refuses.
	ro, err := NewFileStorage(dir, "job", StorageOptions{ReadOnly: true})
	must(t, err)
	if _, err := ro.Sweep(ctx); !errors.Is(err, errReadOnly) {
		t.Fatalf("Sweep on a read-only storage = %v", err)
	}
}

// A power loss at any moment of Sweep leaves the complete checkpoint and
// savepoint whole (it never touches a directory with _metadata); once Sweep
// returned, the leftovers stay gone.
func TestPowerLossSweeping(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rec := newCrashRecorder(seed)
			st := crashStorage(t, rec.fs, 2)
			sp, err := crashCheckpoint(st, 1, true, "x.sst")
			must(t, err)
			md, err := crashCheckpoint(st, 2, false, "x.sst")
			must(t, err)
			// Leftovers: a savepoint whose _metadata never came (its
			// files moved, its shared copies made), and an incomplete
			// checkpoint above every other one.
			for _, name := range []string{"savepoint-3/op-a/0/state", "savepoint-3/shared/a-0-x.sst", "chk-4/op-b/0/state"} {
				p := crashRoot + "/job/" + name
				must(t, rec.fs.MkdirAll(filepath.Dir(p), 0o755))
				writeMem(t, rec.fs, p, []byte(crashBody(name)))
			}
			syncAll(t, rec.fs, crashRoot+"/job")
			points := rec.run(t, func() error {
				removed, err := st.Sweep(context.Background())
				if err == nil && len(removed) != 2 {
					err = fmt.Errorf("Sweep removed %+v, want savepoint-3 and chk-4", removed)
				}
				return err
			})
			checkCrashes(t, points, 2, func(t *testing.T, o observed) bool {
				if o.md.CheckpointID != 2 || operatorsJSON(t, o.md) != operatorsJSON(t, md) {
					t.Fatalf("Latest is %d, not checkpoint 2 as written", o.md.CheckpointID)
				}
				got, err := o.st.Load(context.Background(), "savepoint-1")
				must(t, err)
				if operatorsJSON(t, got) != operatorsJSON(t, sp) {
					t.Fatal("savepoint 1 changed")
				}
				left := 0
				for _, in := range o.infos {
					if !in.Complete {
						left++
					}
				}
				return left == 0
			})
		})
	}
}

// syncAll fsyncs every directory under root, so that what a test put
// there survives the crash clones.
func syncAll(t *testing.T, fs vfs.FS, root string) {
	t.Helper()
	sfs := storageFS{fs}
	var walk func(dir string)
	walk = func(dir string) {
		names, err := sfs.list(dir)
		must(t, err)
		for _, n := range names {
			p := fs.PathJoin(dir, n)
			if sfs.isDir(p) {
				walk(p)
			} else {
				f, err := fs.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
				must(t, err)
				must(t, f.Sync())
				must(t, f.Close())
			}
		}
		must(t, sfs.syncDir(dir))
	}
	walk(root)
	must(t, sfs.syncDir(fs.PathDir(root)))
}
