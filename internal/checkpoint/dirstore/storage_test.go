package dirstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// writeCheckpoint stores a small checkpoint with one private and the given
// shared files for operator "op".
func writeCheckpoint(t *testing.T, st checkpoint.Storage, id int64, shared ...string) *checkpoint.Metadata {
	t.Helper()
	md, err := tryCheckpoint(st, id, shared...)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func tryCheckpoint(st checkpoint.Storage, id int64, shared ...string) (*checkpoint.Metadata, error) {
	w, err := st.Writer(id, "op/1", 0)
	if err != nil {
		return nil, err
	}
	h := &checkpoint.Handle{Backend: "test"}
	write := func(name string, sh bool, body string) error {
		if sh {
			if ref, ok := w.HasShared(name); ok {
				h.Files = append(h.Files, ref)
				return nil
			}
		}
		f, err := w.Create(name, sh)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(f, body); err != nil {
			f.Abort()
			return err
		}
		ref, err := f.Close()
		if err != nil {
			return err
		}
		h.Files = append(h.Files, ref)
		return nil
	}
	if err := write("private", false, strings.Repeat("p", 100)+string(rune('a'+id))); err != nil {
		return nil, err
	}
	for _, s := range shared {
		if err := write(s, true, "shared file "+s); err != nil {
			return nil, err
		}
	}
	md := &checkpoint.Metadata{CheckpointID: id, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Parallelism: 1, MaxParallelism: 128,
		Subtasks: []checkpoint.SubtaskSnapshot{{Subtask: 0, Keyed: h}}}}}
	return md, st.Complete(context.Background(), md)
}

func readAll(t *testing.T, st checkpoint.Storage, ref checkpoint.FileRef) string {
	t.Helper()
	rc, err := st.Open(ref)
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	return string(b)
}

// forBothStorages runs fn on the file storage (open reopens it) and on the
// memory storage (open returns the same one).
func forBothStorages(t *testing.T, fn func(t *testing.T, open func(opts StorageOptions) checkpoint.Storage)) {
	forBothStoragesInjected(t, nil, fn)
}

// forBothStoragesInjected is forBothStorages with the storages' filesystem
// wrapped by errorfs with inj (when not nil).
func forBothStoragesInjected(t *testing.T, inj errorfs.Injector, fn func(t *testing.T, open func(opts StorageOptions) checkpoint.Storage)) {
	wrap := func(fs vfs.FS) vfs.FS {
		if inj == nil {
			return fs
		}
		return errorfs.Wrap(fs, inj)
	}
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		fs := wrap(vfs.Default)
		fn(t, func(opts StorageOptions) checkpoint.Storage {
			opts.FS = fs
			st, err := NewFileStorage(dir, "job", opts)
			must(t, err)
			return st
		})
	})
	t.Run("memory", func(t *testing.T) {
		var st checkpoint.Storage
		fs := wrap(vfs.NewMem())
		fn(t, func(opts StorageOptions) checkpoint.Storage {
			if st == nil {
				opts.FS = fs
				st = NewMemoryStorage("job", opts)
			}
			return st
		})
	})
}

func TestStorageRetainsAndRefcountsSharedFiles(t *testing.T) {
	forBothStorages(t, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		ctx := context.Background()
		st := open(StorageOptions{Retained: 2})
		writeCheckpoint(t, st, 1, "a.sst", "b.sst")
		writeCheckpoint(t, st, 2, "b.sst", "c.sst")
		md3 := writeCheckpoint(t, st, 3, "c.sst", "d.sst") // subsumes 1: a.sst goes, b.sst stays for 2
		infos, err := st.List(ctx)
		must(t, err)
		if len(infos) != 2 || infos[0].ID != 2 || infos[1].ID != 3 {
			t.Fatalf("retained %+v, want 2 and 3", infos)
		}
		w, _ := st.Writer(4, "op/1", 0)
		if _, ok := w.HasShared("a.sst"); ok {
			t.Fatal("a.sst still shared after its only checkpoint was subsumed")
		}
		if _, ok := w.HasShared("b.sst"); !ok {
			t.Fatal("b.sst gone though checkpoint 2 uses it")
		}
		must(t, st.Abort(4))
		md, _, err := st.Latest(ctx)
		must(t, err)
		if md == nil || md.CheckpointID != 3 {
			t.Fatalf("latest = %+v", md)
		}
		for _, ref := range md3.Operators[0].Subtasks[0].Keyed.Files {
			readAll(t, st, ref)
		}
		// Reopen (file storage): counts are rebuilt from metadata.
		st = open(StorageOptions{Retained: 2})
		writeCheckpoint(t, st, 5, "d.sst", "e.sst") // subsumes 2: b goes
		writeCheckpoint(t, st, 6, "e.sst")          // subsumes 3: c goes, d stays for 5
		w, _ = st.Writer(7, "op/1", 0)
		for name, want := range map[string]bool{"b.sst": false, "c.sst": false, "d.sst": true, "e.sst": true} {
			if _, ok := w.HasShared(name); ok != want {
				t.Fatalf("after reopen HasShared(%s) = %v, want %v", name, ok, want)
			}
		}
		must(t, st.Abort(7))
		md, infos, err = st.Latest(ctx)
		must(t, err)
		if md.CheckpointID != 6 || len(infos) != 1 {
			t.Fatalf("latest %d, infos %+v", md.CheckpointID, infos)
		}
		for _, ref := range md.Operators[0].Subtasks[0].Keyed.Files {
			if got := readAll(t, st, ref); !strings.Contains(got, "shared file") && !strings.HasPrefix(got, "ppp") {
				t.Fatalf("content of %s = %q", ref.Path, got)
			}
		}
		// Savepoints are self-contained and survive DiscardAll: the
		// savepoint is all Latest finds after it.
		sp := writeSavepoint(t, st, 8, "d.sst")
		must(t, st.DiscardAll())
		if md, _, _ := st.Latest(ctx); md == nil || md.CheckpointID != 8 || !md.Savepoint {
			t.Fatalf("after DiscardAll Latest = %+v, want savepoint 8 only", md)
		}
		if infos, _ := st.List(ctx); len(infos) != 1 || !infos[0].Savepoint {
			t.Fatalf("after DiscardAll List = %+v, want savepoint 8 only", infos)
		}
		loaded, err := st.Load(ctx, sp.Path)
		must(t, err)
		for _, ref := range loaded.Operators[0].Subtasks[0].Keyed.Files {
			if ref.Shared || !strings.HasPrefix(ref.Path, "savepoint-8") {
				t.Fatalf("savepoint file %+v not private to the savepoint", ref)
			}
			readAll(t, st, ref)
		}
	})
}

func writeSavepoint(t *testing.T, st checkpoint.Storage, id int64, shared ...string) *checkpoint.Metadata {
	t.Helper()
	w, err := st.Writer(id, "op/1", 0)
	must(t, err)
	h := &checkpoint.Handle{Backend: "test"}
	for _, s := range shared {
		ref, ok := w.HasShared(s)
		if !ok {
			t.Fatalf("%s not shared", s)
		}
		h.Files = append(h.Files, ref)
	}
	f, err := w.Create("state", false)
	must(t, err)
	io.WriteString(f, "savepoint state")
	ref, err := f.Close()
	must(t, err)
	h.Files = append(h.Files, ref)
	md := &checkpoint.Metadata{CheckpointID: id, Savepoint: true, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: h}}}}}
	must(t, st.Complete(context.Background(), md))
	return md
}

func TestLatestSkipsCorruptCheckpoints(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, chkDir string, md *checkpoint.Metadata)
		wantErr string
		// damaged: Latest reports it as damaged (not incomplete);
		// listDamaged: so does List, which reads only the metadata.
		damaged, listDamaged bool
	}{
		{"no metadata", func(t *testing.T, dir string, _ *checkpoint.Metadata) {
			must(t, os.Remove(filepath.Join(dir, "_metadata")))
		}, "incomplete", false, false},
		{"metadata bit flip", func(t *testing.T, dir string, _ *checkpoint.Metadata) {
			flipByte(t, filepath.Join(dir, "_metadata"), -5)
		}, "checksum", true, true},
		{"metadata truncated", func(t *testing.T, dir string, _ *checkpoint.Metadata) {
			truncate(t, filepath.Join(dir, "_metadata"))
		}, "truncated", true, true},
		{"metadata unreadable", func(t *testing.T, dir string, _ *checkpoint.Metadata) {
			// A directory where the file should be: it exists, and reading
			// it fails.
			p := filepath.Join(dir, "_metadata")
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o755))
		}, "unreadable", true, true},
		{"state file bit flip", func(t *testing.T, dir string, md *checkpoint.Metadata) {
			flipByte(t, filepath.Join(filepath.Dir(dir), md.Operators[0].Subtasks[0].Keyed.Files[0].Path), 3)
		}, "corrupt", true, false},
		{"state file truncated", func(t *testing.T, dir string, md *checkpoint.Metadata) {
			truncate(t, filepath.Join(filepath.Dir(dir), md.Operators[0].Subtasks[0].Keyed.Files[0].Path))
		}, "private", true, false},
		{"shared file missing", func(t *testing.T, dir string, md *checkpoint.Metadata) {
			must(t, os.Remove(filepath.Join(filepath.Dir(dir), "shared", "b.sst")))
		}, "b.sst", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
			must(t, err)
			writeCheckpoint(t, st, 1, "a.sst")
			md2 := writeCheckpoint(t, st, 2, "a.sst", "b.sst")
			chk2 := filepath.Join(dir, "job", "chk-2")
			tc.corrupt(t, chk2, md2)
			for _, s := range []checkpoint.Storage{st, reopen(t, dir)} {
				md, infos, err := s.Latest(ctx)
				must(t, err)
				if md == nil || md.CheckpointID != 1 {
					t.Fatalf("latest = %+v, want checkpoint 1", md)
				}
				if len(infos) != 2 || infos[0].ID != 2 || infos[1].ID != 1 {
					t.Fatalf("infos %+v", infos)
				}
				if infos[0].Damaged != tc.damaged || infos[1].Damaged || infos[1].Err != nil {
					t.Fatalf("Latest infos %+v, want checkpoint 2 damaged=%v and checkpoint 1 intact", infos, tc.damaged)
				}
				wantErrContains(t, infos[0].Err, chk2, tc.wantErr)
				_, err = s.Load(ctx, chk2)
				wantErrContains(t, err, chk2, tc.wantErr)
				list, err := s.List(ctx)
				must(t, err)
				if len(list) != 2 || list[1].ID != 2 || list[1].Damaged != tc.listDamaged || list[0].Damaged {
					t.Fatalf("List %+v, want checkpoint 2 damaged=%v", list, tc.listDamaged)
				}
				if wantComplete := !tc.listDamaged && tc.name != "no metadata"; list[1].Complete != wantComplete {
					t.Fatalf("List reports checkpoint 2 complete=%v, want %v", list[1].Complete, wantComplete)
				}
			}
		})
	}
}

func TestLoadNamesMissingCheckpoint(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{})
	must(t, err)
	writeCheckpoint(t, st, 1)
	_, err = st.Load(context.Background(), "chk-7")
	wantErrContains(t, err, filepath.Join(dir, "job", "chk-7"), "does not exist")
	md, err := st.Load(context.Background(), filepath.Join(dir, "job", "chk-1", "_metadata"))
	must(t, err)
	if md.CheckpointID != 1 || md.Path != filepath.Join(dir, "job", "chk-1") {
		t.Fatalf("loaded %d from %s", md.CheckpointID, md.Path)
	}
	// A checkpoint of another directory (e.g. --from another job) is
	// readable through this storage.
	other, err := NewFileStorage(t.TempDir(), "job", StorageOptions{})
	must(t, err)
	md, err = other.Load(context.Background(), filepath.Join(dir, "job", "chk-1"))
	must(t, err)
	readAll(t, other, md.Operators[0].Subtasks[0].Keyed.Files[0])
}

func reopen(t *testing.T, dir string) checkpoint.Storage {
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	return st
}

func flipByte(t *testing.T, path string, at int) {
	b, err := os.ReadFile(path)
	must(t, err)
	if at < 0 {
		at += len(b)
	}
	b[at] ^= 0x10
	must(t, os.WriteFile(path, b, 0o644))
}

func truncate(t *testing.T, path string) {
	fi, err := os.Stat(path)
	must(t, err)
	must(t, os.Truncate(path, fi.Size()/2))
}

func TestStorageFaultsFailTheCheckpointNotTheProcess(t *testing.T) {
	type fault struct {
		kind errorfs.OpKind
		path string // a substring of the operation's path
	}
	var failOp atomic.Pointer[fault]
	injected := errors.New("injected I/O error")
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if f := failOp.Load(); f != nil && f.kind == op.Kind && strings.Contains(op.Path, f.path) {
			return injected
		}
		return nil
	})
	forBothStoragesInjected(t, inj, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		st := open(StorageOptions{})
		writeCheckpoint(t, st, 1, "a.sst")
		id := int64(2)
		for _, f := range []fault{
			{errorfs.OpFileWrite, "private"}, {errorfs.OpCreate, "private"}, {errorfs.OpMkdirAll, "chk-"},
			{errorfs.OpFileSync, "op-op"}, // the sync of a new directory in its parent
			{errorfs.OpFileSync, "b.sst"}, {errorfs.OpRename, "b.sst"},
			{errorfs.OpCreate, "_metadata"}, {errorfs.OpFileSync, "_metadata"}, {errorfs.OpRename, "_metadata"}, {errorfs.OpFileWrite, "_metadata"},
		} {
			failOp.Store(&f)
			_, err := tryCheckpoint(st, id, "b.sst")
			if !errors.Is(err, injected) {
				t.Fatalf("fault %v on %s: checkpoint %d error = %v, want the injected error", f.kind, f.path, id, err)
			}
			failOp.Store(nil)
			must(t, st.Abort(id))
			md, _, err := st.Latest(context.Background())
			must(t, err)
			if md.CheckpointID != 1 {
				t.Fatalf("fault %v on %s: latest is %d", f.kind, f.path, md.CheckpointID)
			}
			id++
		}
		// The storage still works, and b.sst is written afresh.
		md := writeCheckpoint(t, st, id, "a.sst", "b.sst")
		for _, ref := range md.Operators[0].Subtasks[0].Keyed.Files {
			readAll(t, st, ref)
		}
	})
}

// Two checkpoints in flight write the same shared file; aborting one keeps
// the file for the other. Complete refuses metadata naming a missing or
// different file, and an id that is not newer than the newest completed.
func TestConcurrentCheckpointsShareFilesSafely(t *testing.T) {
	forBothStorages(t, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		ctx := context.Background()
		st := open(StorageOptions{})
		write := func(id int64, name string, shared bool) checkpoint.FileRef {
			w, err := st.Writer(id, "op", 0)
			must(t, err)
			f, err := w.Create(name, shared)
			must(t, err)
			io.WriteString(f, "same content")
			ref, err := f.Close()
			must(t, err)
			return ref
		}
		md := func(id int64, refs ...checkpoint.FileRef) *checkpoint.Metadata {
			return &checkpoint.Metadata{CheckpointID: id, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: refs}}}}}}
		}
		a := write(2, "x.sst", true)
		b := write(3, "x.sst", true)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("same shared file, different refs: %+v %+v", a, b)
		}
		must(t, st.Abort(2))
		readAll(t, st, b)
		must(t, st.Complete(ctx, md(3, b)))
		readAll(t, st, b)

		missing := checkpoint.FileRef{Path: "shared/nope.sst", Size: 3, Shared: true}
		wantErrContains(t, st.Complete(ctx, md(4, missing)), "nope.sst")
		wrongSize := b
		wrongSize.Size++
		wantErrContains(t, st.Complete(ctx, md(5, wrongSize)), "x.sst", "bytes")
		wantErrContains(t, st.Complete(ctx, md(3, b)), "not newer")
		escaping := checkpoint.FileRef{Path: "../other/x", Size: 1}
		wantErrContains(t, st.Complete(ctx, md(6, escaping)), "escapes")
		got, _, err := st.Latest(ctx)
		must(t, err)
		if got.CheckpointID != 3 {
			t.Fatalf("latest %d after refused completions", got.CheckpointID)
		}
	})
}

// Latest returns the newer of the latest checkpoint and the latest
// savepoint.
func TestLatestConsidersSavepoints(t *testing.T) {
	ctx := context.Background()
	inner := NewMemoryStorage("j", StorageOptions{Retained: 3})
	s := inner
	if md, _, err := s.Latest(ctx); err != nil || md != nil {
		t.Fatalf("empty storage: %v %v", md, err)
	}
	complete := func(id int64, savepoint bool) {
		t.Helper()
		md := &checkpoint.Metadata{Version: checkpoint.MetadataVersion, Job: "j", CheckpointID: id, Savepoint: savepoint, Timestamp: time.Now()}
		if err := inner.Complete(ctx, md); err != nil {
			t.Fatal(err)
		}
	}
	latest := func() string {
		t.Helper()
		md, _, err := s.Latest(ctx)
		if err != nil || md == nil {
			t.Fatalf("Latest: %v %v", md, err)
		}
		return fmt.Sprintf("%d/%v", md.CheckpointID, md.Savepoint)
	}
	complete(1, false)
	complete(2, true)
	if got := latest(); got != "2/true" {
		t.Fatalf("latest %s, want savepoint 2", got)
	}
	complete(3, false)
	if got := latest(); got != "3/false" {
		t.Fatalf("latest %s, want checkpoint 3", got)
	}
	complete(4, true)
	complete(5, true)
	if got := latest(); got != "5/true" {
		t.Fatalf("latest %s, want savepoint 5", got)
	}
}

// A corrupt newest savepoint is skipped and reported like a corrupt
// checkpoint.
func TestLatestSkipsCorruptSavepoint(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	writeSavepoint(t, st, 2, "a.sst")
	sp3 := writeSavepoint(t, st, 3)
	flipByte(t, filepath.Join(dir, "job", sp3.Operators[0].Subtasks[0].Keyed.Files[0].Path), 2)
	md, infos, err := reopen(t, dir).Latest(context.Background())
	must(t, err)
	if md == nil || md.CheckpointID != 2 || !md.Savepoint {
		t.Fatalf("latest = %+v, want savepoint 2", md)
	}
	if len(infos) != 2 || infos[0].ID != 3 || !infos[0].Savepoint {
		t.Fatalf("infos %+v, want savepoint 3 reported first", infos)
	}
	wantErrContains(t, infos[0].Err, filepath.Join(dir, "job", "savepoint-3"), "corrupt")
}

// Inline files travel in the metadata: a restarted storage reads them back
// byte for byte (the empty one too), and a damaged one is refused with its
// name.
func TestInlineFilesRoundTripAndAreChecked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	files := map[string][]byte{"MANIFEST-000001": []byte("manifest \x00\xff bytes"), "marker": {}}
	var refs []checkpoint.FileRef
	for _, name := range []string{"MANIFEST-000001", "marker"} {
		data := files[name]
		refs = append(refs, checkpoint.FileRef{Path: name, Size: int64(len(data)), CRC32C: crc32.Checksum(data, castagnoli), Inline: true, Data: data})
	}
	completeOne(t, st, "op", 1, false, 1, &checkpoint.Handle{Backend: "test", Files: refs})
	st2, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	md, _, err := st2.Latest(ctx)
	must(t, err)
	for _, r := range md.Operators[0].Subtasks[0].Keyed.Files {
		rc, err := st2.Open(r)
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		if !r.Inline || !bytes.Equal(got, files[r.Path]) {
			t.Fatalf("inline file %s read back as %q (inline %v)", r.Path, got, r.Inline)
		}
	}
	bad := refs[0]
	bad.Data = append([]byte("X"), bad.Data[1:]...)
	if _, err := st2.Open(bad); err == nil || !strings.Contains(err.Error(), "MANIFEST-000001") {
		t.Fatalf("Open of a damaged inline file = %v, want an error naming it", err)
	}
}
