package dirstore

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// writeRecorder wraps a filesystem and records, while armed, every call
// that would change it (a file's Close excepted: closing a file opened to
// read changes nothing).
type writeRecorder struct {
	fs     vfs.FS
	mu     sync.Mutex
	armed  bool
	writes []string
}

func newWriteRecorder(under vfs.FS) *writeRecorder {
	r := &writeRecorder{}
	r.fs = errorfs.Wrap(under, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && op.Kind != errorfs.OpFileClose {
			r.mu.Lock()
			if r.armed {
				r.writes = append(r.writes, opName(op.Kind)+" "+op.Path)
			}
			r.mu.Unlock()
		}
		return nil
	}))
	return r
}

func (r *writeRecorder) arm(on bool) {
	r.mu.Lock()
	r.armed = on
	r.mu.Unlock()
}

func (r *writeRecorder) recorded() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

// A read-only storage reads every kind of checkpoint a job directory holds
// (complete, committed, incomplete, damaged, a savepoint without
// _metadata, no shared/) without a single mutating filesystem call, and
// refuses every writing method naming the directory.
func TestReadOnlyStorageNeverWrites(t *testing.T) {
	ctx := context.Background()
	rec := newWriteRecorder(vfs.NewMem())
	rw, err := NewFileStorage("/data", "job", StorageOptions{Retained: 10, FS: rec.fs})
	must(t, err)
	_, err = crashCheckpoint(rw, 1, false)
	must(t, err)
	_, err = crashCheckpoint(rw, 2, true)
	must(t, err)
	must(t, rw.MarkCommitted(ctx, 2))
	_, err = crashCheckpoint(rw, 3, false)
	must(t, err)
	_, err = crashCheckpoint(rw, 4, false)
	must(t, err)
	w, err := rw.Writer(5, "a", 0)
	must(t, err)
	f, err := w.Create("state", false)
	must(t, err)
	_, err = f.Close()
	must(t, err)
	must(t, rec.fs.MkdirAll("/data/job/savepoint-6/op-a/0", 0o755))
	// Damage chk-4's metadata; remove the (empty) shared/.
	b, err := readMem(rec.fs, "/data/job/chk-4/_metadata")
	must(t, err)
	b[len(b)-3] ^= 1
	writeMem(t, rec.fs, "/data/job/chk-4/_metadata", b)
	must(t, rec.fs.RemoveAll("/data/job/shared"))

	rec.arm(true)
	ro, err := NewFileStorage("/data", "job", StorageOptions{ReadOnly: true, FS: rec.fs})
	must(t, err)
	infos, err := ro.List(ctx)
	must(t, err)
	if len(infos) != 6 {
		t.Fatalf("List found %d checkpoints, want 6: %+v", len(infos), infos)
	}
	md, _, err := ro.Latest(ctx)
	must(t, err)
	if md == nil || md.CheckpointID != 3 {
		t.Fatalf("Latest = %+v, want checkpoint 3 (4 is damaged, 5 and 6 incomplete)", md)
	}
	for _, in := range infos {
		md, err := ro.Load(ctx, in.Path)
		if in.Complete && !in.Damaged {
			must(t, err)
			forEachRef(md, func(r checkpoint.FileRef) { readAll(t, ro, r) })
		} else if err == nil {
			t.Errorf("Load of %s (incomplete or damaged) succeeded", in.Path)
		}
	}
	if _, err := ro.Discarded(ctx); err != nil {
		t.Fatal(err)
	}

	// Every writing method is refused, up front, naming the directory.
	refusals := map[string]error{}
	_, refusals["Writer"] = ro.Writer(7, "a", 0)
	refusals["Complete"] = ro.Complete(ctx, &checkpoint.Metadata{CheckpointID: 7})
	refusals["Abort"] = ro.Abort(5)
	refusals["DiscardAll"] = ro.DiscardAll()
	refusals["MarkCommitted"] = ro.MarkCommitted(ctx, 3)
	_, refusals["Adopt"] = ro.Adopt(ctx, md, 8)
	_, refusals["Sweep"] = ro.Sweep(ctx)
	for name, err := range refusals {
		if !errors.Is(err, errReadOnly) || !strings.Contains(err.Error(), "/data/job") {
			t.Errorf("%s on a read-only storage: %v, want a refusal naming /data/job", name, err)
		}
	}
	rec.arm(false)
	if w := rec.recorded(); len(w) > 0 {
		t.Fatalf("the read-only storage changed the filesystem:\n%s", strings.Join(w, "\n"))
	}
	if _, err := rec.fs.Stat("/data/job/shared"); !os.IsNotExist(err) {
		t.Fatalf("shared/ exists after read-only use: %v", err)
	}
}

// Opening a missing job directory read-only fails naming it, and creates
// nothing.
func TestReadOnlyStorageNeedsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := NewFileStorage(dir, "job", StorageOptions{ReadOnly: true})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "job")) {
		t.Fatalf("opening a missing directory read-only: %v, want an error naming it", err)
	}
	if names, _ := os.ReadDir(dir); len(names) > 0 {
		t.Fatalf("opening read-only created %v", names)
	}
}

func readMem(fs vfs.FS, p string) ([]byte, error) {
	f, err := fs.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func writeMem(t *testing.T, fs vfs.FS, p string, b []byte) {
	t.Helper()
	f, err := fs.Create(p, vfs.WriteCategoryUnspecified)
	must(t, err)
	_, err = f.Write(b)
	must(t, err)
	must(t, f.Close())
}
