package dirstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// dirNames lists the names in dir (none if it is missing).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// An upload still running when its checkpoint is aborted (a timeout, a
// failed subtask) finishes into nothing: its files are refused and removed,
// its directory does not come back, and later writers of that id fail
// naming the checkpoint.
func TestAbortedUploadLeavesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	jobDir := filepath.Join(dir, "job")

	w, err := st.Writer(2, "op", 0)
	must(t, err)
	private, err := w.Create("private", false)
	must(t, err)
	shared, err := w.Create("s.sst", true)
	must(t, err)
	io.WriteString(private, "first half ")
	io.WriteString(shared, "first half ")

	must(t, st.Abort(2))

	// The upload goes on and finishes.
	io.WriteString(private, "second half")
	io.WriteString(shared, "second half")
	_, err = private.Close()
	wantErrContains(t, err, "checkpoint 2", "aborted")
	_, err = shared.Close()
	wantErrContains(t, err, "checkpoint 2", "aborted")
	for _, sh := range []bool{false, true} {
		_, err := w.Create(fmt.Sprintf("late-%v", sh), sh)
		wantErrContains(t, err, "checkpoint 2", "aborted")
	}
	_, err = st.Writer(2, "op", 1)
	wantErrContains(t, err, "checkpoint 2", "aborted")
	wantErrContains(t, st.Complete(ctx, &checkpoint.Metadata{CheckpointID: 2}), "checkpoint 2", "aborted")

	if got := dirNames(t, jobDir); strings.Join(got, " ") != "chk-1 shared" {
		t.Fatalf("job directory holds %v after the aborted upload finished, want chk-1 and shared", got)
	}
	if got := dirNames(t, filepath.Join(jobDir, "shared")); strings.Join(got, " ") != "a.sst" {
		t.Fatalf("shared/ holds %v after the aborted upload finished, want a.sst only", got)
	}
	// The next checkpoint is unaffected.
	writeCheckpoint(t, st, 3, "a.sst", "s.sst")
	md, _, err := st.Latest(ctx)
	must(t, err)
	if md.CheckpointID != 3 {
		t.Fatalf("latest %d, want 3", md.CheckpointID)
	}
}

// Aborts racing with uploads (four subtasks writing private and shared
// files, some shared with the next checkpoint) never leave a directory or
// an unreferenced shared file behind, and never break the checkpoint that
// completes.
func TestAbortRacingUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	jobDir := filepath.Join(dir, "job")
	body := strings.Repeat("0123456789", 1000)
	upload := func(id int64, sub int, refs chan<- checkpoint.FileRef) {
		w, err := st.Writer(id, "op", sub)
		if err != nil {
			return
		}
		for i, sh := range []bool{false, true, true} {
			name := fmt.Sprintf("f%d-%d", sub, i)
			if i == 2 {
				name = fmt.Sprintf("common-%d.sst", id/2) // written by two checkpoints in a row
			}
			f, err := w.Create(name, sh)
			if err != nil {
				return
			}
			for j := 0; j < 10; j++ {
				if _, err := io.WriteString(f, body[:1000]); err != nil {
					f.Abort()
					return
				}
			}
			ref, err := f.Close()
			if err != nil {
				return
			}
			refs <- ref
		}
	}
	for round := int64(1); round <= 15; round++ {
		aborted, completed := 2*round, 2*round+1
		var wg sync.WaitGroup
		refs := make(chan checkpoint.FileRef, 100)
		okRefs := make(chan checkpoint.FileRef, 100)
		for sub := 0; sub < 4; sub++ {
			wg.Add(2)
			go func() { defer wg.Done(); upload(aborted, sub, refs) }()
			go func() { defer wg.Done(); upload(completed, sub, okRefs) }()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.Abort(aborted); err != nil {
				t.Errorf("abort %d: %v", aborted, err)
			}
		}()
		wg.Wait()
		close(okRefs)
		h := &checkpoint.Handle{Backend: "test"}
		for r := range okRefs {
			h.Files = append(h.Files, r)
		}
		must(t, st.Complete(ctx, &checkpoint.Metadata{CheckpointID: completed, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: h}}}}}))
		if _, err := os.Stat(filepath.Join(jobDir, chkDirName(aborted))); err == nil {
			t.Fatalf("round %d: aborted %s exists after its uploads finished", round, chkDirName(aborted))
		}
		used := map[string]bool{}
		for _, r := range h.Files {
			if r.Shared {
				used[filepath.Base(r.Path)] = true
			}
		}
		for _, name := range dirNames(t, filepath.Join(jobDir, "shared")) {
			if !used[name] {
				t.Fatalf("round %d: shared/%s is left though checkpoint %d does not use it (aborted %d wrote it)", round, name, completed, aborted)
			}
		}
		latest, _, err := st.Latest(ctx)
		must(t, err)
		if latest.CheckpointID != completed || len(latest.Operators[0].Subtasks[0].Keyed.Files) != 12 {
			t.Fatalf("round %d: latest %d with %d files", round, latest.CheckpointID, len(latest.Operators[0].Subtasks[0].Keyed.Files))
		}
	}
}

// A savepoint whose Complete failed after its files moved to
// savepoint-<id> (here: copying a shared file in) is removed by Abort:
// no incomplete savepoint directory stays behind.
func TestAbortAfterAFailedSavepointCompletion(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var failCopy atomic.Bool
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1, FS: errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failCopy.Load() && op.Kind == errorfs.OpCreate && strings.Contains(op.Path, filepath.Join("savepoint-2", "shared")) {
			return errorfs.ErrInjected
		}
		return nil
	}))})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	failCopy.Store(true)
	w, err := st.Writer(2, "op/1", 0)
	must(t, err)
	ref, ok := w.HasShared("a.sst")
	if !ok {
		t.Fatal("a.sst not shared")
	}
	f, err := w.Create("state", false)
	must(t, err)
	io.WriteString(f, "savepoint state")
	priv, err := f.Close()
	must(t, err)
	md := &checkpoint.Metadata{CheckpointID: 2, Savepoint: true, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{priv, ref}}}}}}}
	if err := st.Complete(ctx, md); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Complete = %v, want the injected error", err)
	}
	must(t, st.Abort(2))
	if got := dirNames(t, filepath.Join(dir, "job")); strings.Join(got, " ") != "chk-1 shared" {
		t.Fatalf("after the failed savepoint was aborted the job directory holds %v", got)
	}
}
