package dirstore

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

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
