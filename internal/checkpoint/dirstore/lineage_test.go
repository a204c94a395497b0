package dirstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// committedFlags returns, by id, the Committed flag List reports.
func committedFlags(t *testing.T, st checkpoint.Storage) map[int64]bool {
	t.Helper()
	infos, err := st.List(context.Background())
	must(t, err)
	out := map[int64]bool{}
	for _, in := range infos {
		out[in.ID] = in.Committed
	}
	return out
}

// MarkCommitted leaves a durable marker that Load, Latest and List report,
// on checkpoints and savepoints, across a reopen; it refuses ids that are
// not a completed checkpoint or savepoint, naming the id.
func TestMarkCommitted(t *testing.T) {
	forBothStorages(t, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		ctx := context.Background()
		st := open(StorageOptions{Retained: 2})
		writeCheckpoint(t, st, 1, "a.sst")
		sp := writeSavepoint(t, st, 2, "a.sst")
		writeCheckpoint(t, st, 3, "a.sst")
		if got := committedFlags(t, st); got[1] || got[2] || got[3] {
			t.Fatalf("committed before any mark: %v", got)
		}

		must(t, st.MarkCommitted(ctx, 2))
		md, err := st.Load(ctx, sp.Path)
		must(t, err)
		if !md.Committed {
			t.Fatal("Load of the marked savepoint: Committed = false")
		}
		latest, _, err := st.Latest(ctx)
		must(t, err)
		if latest.CheckpointID != 3 || latest.Committed {
			t.Fatalf("Latest = %d committed=%v, want 3 not committed", latest.CheckpointID, latest.Committed)
		}
		must(t, st.MarkCommitted(ctx, 3))
		must(t, st.MarkCommitted(ctx, 3)) // twice is harmless
		latest, infos, err := st.Latest(ctx)
		must(t, err)
		if latest.CheckpointID != 3 || !latest.Committed || !infos[0].Committed {
			t.Fatalf("Latest = %d committed=%v (info %+v), want 3 committed", latest.CheckpointID, latest.Committed, infos[0])
		}
		if got := committedFlags(t, open(StorageOptions{Retained: 2})); got[1] || !got[2] || !got[3] {
			t.Fatalf("List after reopening: committed %v, want 2 and 3", got)
		}

		wantErrContains(t, st.MarkCommitted(ctx, 9), "no checkpoint or savepoint 9")
		// In flight (written, not completed): not a checkpoint yet.
		w, err := st.Writer(4, "op", 0)
		must(t, err)
		f, err := w.Create("x", false)
		must(t, err)
		f.Write([]byte("x"))
		_, err = f.Close()
		must(t, err)
		wantErrContains(t, st.MarkCommitted(ctx, 4), "checkpoint 4", "incomplete")
		must(t, st.Abort(4))
		// A later checkpoint subsumes 1; its marker-less directory goes,
		// and a marked one goes with its marker.
		writeCheckpoint(t, st, 5)
		writeCheckpoint(t, st, 6)
		if got := committedFlags(t, st); len(got) != 3 || !got[2] || got[5] || got[6] {
			t.Fatalf("after subsumption: %v, want savepoint 2 committed and 5, 6 not", got)
		}
	})
}

// A damaged checkpoint cannot be marked.
func TestMarkCommittedRefusesDamaged(t *testing.T) {
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	writeCheckpoint(t, st, 1)
	flipByte(t, filepath.Join(dir, "job", "chk-1", "_metadata"), -3)
	wantErrContains(t, st.MarkCommitted(context.Background(), 1), "chk-1", "checksum")
	if _, err := os.Stat(filepath.Join(dir, "job", "chk-1", "_committed")); err == nil {
		t.Fatal("a damaged checkpoint got the committed marker")
	}
}

// fileContents reads every stored file of md through st.
func fileContents(t *testing.T, st checkpoint.Storage, md *checkpoint.Metadata) []string {
	t.Helper()
	var out []string
	forEachRef(md, func(r checkpoint.FileRef) { out = append(out, readAll(t, st, r)) })
	return out
}

// Adopt makes an older checkpoint the newest, with its own copies of the
// private files and references on the shared ones: removing the original
// and retention never break it, and the next checkpoints go on from it.
func TestAdoptOlderCheckpoint(t *testing.T) {
	forBothStorages(t, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		ctx := context.Background()
		st := open(StorageOptions{Retained: 2})
		writeCheckpoint(t, st, 1, "a.sst", "b.sst")
		md2 := writeCheckpoint(t, st, 2, "b.sst", "c.sst")
		writeCheckpoint(t, st, 3, "c.sst", "d.sst")
		want := fileContents(t, st, md2)

		src, err := st.Load(ctx, md2.Path)
		must(t, err)
		for _, id := range []int64{2, 3} {
			_, err := st.Adopt(ctx, src, id)
			wantErrContains(t, err, "not above checkpoint 3")
		}
		sup := &checkpoint.Superseded{CheckpointID: 3, Path: "/somewhere/chk-3", Operators: []checkpoint.OperatorSnapshot{{UID: "sink"}}}
		src.Supersedes = sup
		ad, err := st.Adopt(ctx, src, 4)
		must(t, err)
		if ad.CheckpointID != 4 || ad.Savepoint || ad.RestoredFrom != md2.Path || ad.Committed ||
			ad.Supersedes == nil || ad.Supersedes.CheckpointID != 3 || !strings.HasSuffix(ad.Path, "chk-4") {
			t.Fatalf("adopted %+v", ad)
		}
		for _, r := range ad.Operators[0].Subtasks[0].Keyed.Files {
			if r.Shared != strings.HasPrefix(r.Path, "shared"+string(filepath.Separator)) || !r.Shared && !strings.HasPrefix(r.Path, "chk-4") {
				t.Fatalf("adopted file %+v: private files belong to chk-4, shared ones stay shared", r)
			}
		}
		// The source's metadata is untouched.
		if src.Operators[0].Subtasks[0].Keyed.Files[0].Path != md2.Operators[0].Subtasks[0].Keyed.Files[0].Path {
			t.Fatal("Adopt changed the metadata it was given")
		}

		// Retention (2) removed 2 (the original) at the adoption; remove
		// what else is old and check 4 after every step.
		check := func(st checkpoint.Storage, what string) {
			t.Helper()
			latest, infos, err := st.Latest(ctx)
			must(t, err)
			if latest == nil || latest.CheckpointID != 4 || latest.RestoredFrom != md2.Path || latest.Supersedes == nil ||
				latest.Supersedes.Path != sup.Path || latest.Supersedes.Operators[0].UID != "sink" {
				t.Fatalf("%s: Latest %+v (infos %+v), want adopted checkpoint 4", what, latest, infos)
			}
			if got := fileContents(t, st, latest); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("%s: adopted files hold %q, want %q", what, got, want)
			}
		}
		check(st, "after Adopt")
		infos, err := st.List(ctx)
		must(t, err)
		if len(infos) != 2 || infos[0].ID != 3 || infos[1].ID != 4 {
			t.Fatalf("retained %+v, want 3 and 4", infos)
		}
		check(open(StorageOptions{Retained: 2}), "reopened")
		// Checkpoint 5 subsumes 3 (c.sst stays: 4 uses it); 6 must follow.
		w, _ := st.Writer(5, "op/1", 0)
		for name, want := range map[string]bool{"a.sst": false, "b.sst": true, "c.sst": true, "d.sst": true} {
			if _, ok := w.HasShared(name); ok != want {
				t.Fatalf("HasShared(%s) = %v, want %v", name, ok, want)
			}
		}
		must(t, st.Abort(5))
		writeCheckpoint(t, st, 6, "c.sst")
		md, err := st.Load(ctx, filepath.Join(filepath.Dir(md2.Path), "chk-4"))
		must(t, err)
		fileContents(t, st, md)
		wantErrContains(t, st.Complete(ctx, &checkpoint.Metadata{CheckpointID: 5}), "not newer")
	})
}

// A committed savepoint adopted stays committed; its files are copies.
func TestAdoptCommittedSavepoint(t *testing.T) {
	forBothStorages(t, func(t *testing.T, open func(StorageOptions) checkpoint.Storage) {
		ctx := context.Background()
		st := open(StorageOptions{Retained: 1})
		writeCheckpoint(t, st, 1, "a.sst")
		sp := writeSavepoint(t, st, 2, "a.sst")
		must(t, st.MarkCommitted(ctx, 2))
		writeCheckpoint(t, st, 3, "b.sst")
		src, err := st.Load(ctx, sp.Path)
		must(t, err)
		want := fileContents(t, st, src)
		ad, err := st.Adopt(ctx, src, 4)
		must(t, err)
		if !ad.Committed || ad.Savepoint || ad.RestoredFrom != sp.Path {
			t.Fatalf("adopted %+v, want a committed checkpoint restored from %s", ad, sp.Path)
		}
		for _, r := range ad.Operators[0].Subtasks[0].Keyed.Files {
			if r.Shared || !strings.HasPrefix(r.Path, "chk-4") {
				t.Fatalf("adopted savepoint file %+v not a private copy", r)
			}
		}
		st = open(StorageOptions{Retained: 1})
		latest, _, err := st.Latest(ctx)
		must(t, err)
		if latest.CheckpointID != 4 || !latest.Committed {
			t.Fatalf("Latest %d committed=%v, want adopted 4 committed", latest.CheckpointID, latest.Committed)
		}
		if got := fileContents(t, st, latest); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("adopted files %q, want %q", got, want)
		}
		// The retention of 1 removed checkpoint 3; savepoint 2 stays.
		infos, err := st.List(ctx)
		must(t, err)
		if len(infos) != 2 || infos[0].ID != 2 || !infos[0].Savepoint || infos[1].ID != 4 || !infos[1].Committed {
			t.Fatalf("List %+v", infos)
		}
	})
}

// A checkpoint of another job directory is copied in whole: its shared
// files land in this storage's shared/ (still shared, so incremental
// checkpoints reuse them), and the other directory can go.
func TestAdoptFromAnotherStorage(t *testing.T) {
	ctx := context.Background()
	otherDir, dir := t.TempDir(), t.TempDir()
	other, err := NewFileStorage(otherDir, "old", StorageOptions{})
	must(t, err)
	writeCheckpoint(t, other, 7, "x.sst", "y.sst")
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	// A shared file of the same name with other content: refused.
	w, err := st.Writer(1, "op", 0)
	must(t, err)
	f, err := w.Create("y.sst", true)
	must(t, err)
	f.Write([]byte("other content"))
	ref, err := f.Close()
	must(t, err)
	must(t, st.Complete(ctx, &checkpoint.Metadata{CheckpointID: 1, Operators: []checkpoint.OperatorSnapshot{{UID: "op",
		Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref}}}}}}}))
	src, err := st.Load(ctx, filepath.Join(otherDir, "old", "chk-7"))
	must(t, err)
	want := fileContents(t, st, src)
	_, err = st.Adopt(ctx, src, 2)
	wantErrContains(t, err, "y.sst", "differs")
	if latest, _, _ := st.Latest(ctx); latest.CheckpointID != 1 {
		t.Fatalf("a failed Adopt changed the latest checkpoint to %d", latest.CheckpointID)
	}
	if _, err := os.Stat(filepath.Join(dir, "job", "chk-2")); err == nil {
		t.Fatal("a failed Adopt left chk-2 behind")
	}
	if _, err := os.Stat(filepath.Join(dir, "job", "shared", "x.sst")); err == nil {
		t.Fatal("a failed Adopt left its copy of x.sst behind")
	}

	st2dir := t.TempDir()
	st2, err := NewFileStorage(st2dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	ad, err := st2.Adopt(ctx, src, 8)
	must(t, err)
	must(t, os.RemoveAll(otherDir))
	st2, err = NewFileStorage(st2dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	latest, _, err := st2.Latest(ctx)
	must(t, err)
	if latest.CheckpointID != 8 || latest.Job != "job" || latest.RestoredFrom != src.Path {
		t.Fatalf("Latest %+v, want adopted 8 of job", latest)
	}
	if got := fileContents(t, st2, latest); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("adopted files %q, want %q", got, want)
	}
	for _, r := range ad.Operators[0].Subtasks[0].Keyed.Files {
		if r.Shared && !strings.HasPrefix(r.Path, "shared"+string(filepath.Separator)) {
			t.Fatalf("shared file %+v not in this storage's shared/", r)
		}
	}
	w, err = st2.Writer(9, "op/1", 0)
	must(t, err)
	if _, ok := w.HasShared("x.sst"); !ok {
		t.Fatal("the adopted shared file x.sst is not offered for reuse")
	}
	must(t, st2.Abort(9))
}

// Adopt needs the metadata Load returned (with its path), and an id above
// every directory present, incomplete ones too.
func TestAdoptRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	st := NewMemoryStorage("job", StorageOptions{})
	md := writeCheckpoint(t, st, 1)
	if _, err := st.Adopt(ctx, &checkpoint.Metadata{CheckpointID: 1}, 5); err == nil || !strings.Contains(err.Error(), "path") {
		t.Fatalf("Adopt of metadata without a path = %v", err)
	}
	w, err := st.Writer(6, "op", 0)
	must(t, err)
	f, err := w.Create("f", false)
	must(t, err)
	_, err = f.Close()
	must(t, err)
	_, err = st.Adopt(ctx, md, 6)
	wantErrContains(t, err, "not above checkpoint 6")
}
