package dirstore

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// stageFile writes one shared file through a staging.
func stageFile(t *testing.T, sg checkpoint.Staging, name, body string) checkpoint.FileRef {
	t.Helper()
	f, err := sg.Create(name, true)
	must(t, err)
	_, err = io.WriteString(f, body)
	must(t, err)
	ref, err := f.Close()
	must(t, err)
	return ref
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// A staged file survives the completions that take unnamed shared files
// for orphans until a checkpoint names it or the staging is released;
// then the named one stays with its checkpoint and the unnamed one goes.
// After a crash (a new storage on the same directory, nothing staged in
// it) an unnamed staged file goes at the next completion.
func TestStagedFilesAreKeptUntilReleased(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	shared := filepath.Join(dir, "job", sharedDir)
	sg, err := st.Stage("op/1", 0)
	must(t, err)
	if _, err := sg.Create("private", false); err == nil {
		t.Fatal("a staging created a private file")
	}
	named := stageFile(t, sg, "named.sst", "named")
	unnamed := stageFile(t, sg, "unnamed.sst", "unnamed")
	writeCheckpoint(t, st, 1, "other.sst")
	writeCheckpoint(t, st, 2, "other2.sst")
	for _, p := range []string{named.Path, unnamed.Path} {
		if !exists(t, filepath.Join(dir, "job", p)) {
			t.Fatalf("staged %s was removed while the staging was held", p)
		}
	}
	completeOne(t, st, "op/1", 3, false, 1, &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{named}})
	sg.Release()
	sg.Release() // twice is harmless
	if _, err := sg.Create("late.sst", true); err == nil {
		t.Fatal("a released staging created a file")
	} else {
		wantErrContains(t, err, "staging of op/1/0 was released")
	}
	writeCheckpoint(t, st, 4, "other3.sst")
	if exists(t, filepath.Join(shared, "unnamed.sst")) {
		t.Fatal("an unnamed staged file outlived its released staging")
	}
	// Checkpoint 3 is subsumed by 4 (one retained): its file goes too.
	if exists(t, filepath.Join(shared, "named.sst")) {
		t.Fatal("a staged file outlived the only checkpoint that named it")
	}

	// A crash: the staging is gone with the process.
	sg, err = st.Stage("op/1", 0)
	must(t, err)
	stageFile(t, sg, "left.sst", "left by a crash")
	st2, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	if _, err := st2.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	writeCheckpoint(t, st2, 5, "other4.sst")
	if exists(t, filepath.Join(shared, "left.sst")) {
		t.Fatal("a staged file of a crashed process outlived the next completion")
	}
}

// A file still being written when the staging is released is not kept:
// its Close fails naming the staging, and nothing of it is left.
func TestStagingReleasedMidFile(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	sg, err := st.Stage("op/1", 0)
	must(t, err)
	f, err := sg.Create("mid.sst", true)
	must(t, err)
	_, err = io.WriteString(f, "half")
	must(t, err)
	sg.Release()
	_, err = f.Close()
	wantErrContains(t, err, "staging of op/1/0 was released", "mid.sst")
	names, err := os.ReadDir(filepath.Join(dir, "job", sharedDir))
	must(t, err)
	if len(names) != 0 {
		t.Fatalf("shared/ holds %v after a released staging's Close", names)
	}
}

// With RemoveInBackground, Complete returns while the files of the
// checkpoint it subsumed are still being removed (here a removal is held
// back), and the sweep of orphans leaves a queued file to the remover; a
// shared file a new checkpoint names again before its turn stays. Sweep
// waits for the queue.
func TestRemovalsInTheBackground(t *testing.T) {
	dir := t.TempDir()
	hold := make(chan struct{})
	var held atomic.Bool
	fsys := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpRemove && strings.HasSuffix(op.Path, "a.sst") && held.CompareAndSwap(false, true) {
			<-hold
		}
		return nil
	}))
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1, FS: fsys, RemoveInBackground: true})
	must(t, err)
	shared := filepath.Join(dir, "job", sharedDir)
	writeCheckpoint(t, st, 1, "a.sst", "b.sst")
	writeCheckpoint(t, st, 2, "c.sst") // subsumes 1: a.sst and b.sst queued, a.sst held
	// Returns though a.sst's removal is held, and names b.sst (queued
	// behind it) again.
	writeCheckpoint(t, st, 3, "c.sst", "b.sst")
	if !exists(t, filepath.Join(shared, "a.sst")) {
		t.Fatal("a.sst went before its held removal")
	}
	close(hold)
	if _, err := st.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(shared, "a.sst")) {
		t.Fatal("a.sst of subsumed checkpoint 1 is still there after Sweep waited for the removals")
	}
	for _, name := range []string{"b.sst", "c.sst"} {
		if !exists(t, filepath.Join(shared, name)) {
			t.Fatalf("%s, named by the retained checkpoint, was removed", name)
		}
	}
	if exists(t, filepath.Join(dir, "job", "chk-1")) || exists(t, filepath.Join(dir, "job", "chk-2")) {
		t.Fatal("a subsumed checkpoint's directory is still there")
	}
}
