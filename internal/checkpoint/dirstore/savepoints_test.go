package dirstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// savepointIDs are the ids of infos.
func savepointIDs(infos []checkpoint.SavepointInfo) []int64 {
	var ids []int64
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	return ids
}

// savepointDirs are the ids of the savepoint directories of job "job"
// under dir, ascending.
func savepointDirs(t *testing.T, dir string) []int64 {
	t.Helper()
	names, err := os.ReadDir(filepath.Join(dir, "job"))
	must(t, err)
	var ids []int64
	for _, e := range names {
		if id, ok := parseDirID(e.Name(), savepointPref); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// The oldest complete savepoints beyond the bound go, checkpoints stay,
// the newest point stays restorable; a dry run removes nothing.
func TestPruneSavepointsKeepsTheNewest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	writeSavepoint(t, st, 2, "a.sst")
	writeCheckpoint(t, st, 3, "a.sst", "b.sst")
	writeSavepoint(t, st, 4, "b.sst")
	writeSavepoint(t, st, 5)
	writeSavepoint(t, st, 6)
	writeCheckpoint(t, st, 7, "b.sst")
	writeSavepoint(t, st, 8, "b.sst")

	list, err := ListSavepoints(ctx, st)
	must(t, err)
	if got := savepointIDs(list); !slices.Equal(got, []int64{2, 4, 5, 6, 8}) || !list[4].RestorePoint || list[3].RestorePoint {
		t.Fatalf("ListSavepoints = %+v", list)
	}
	if list[0].Bytes == 0 || !list[0].Complete {
		t.Fatalf("savepoint 2 listed without size: %+v", list[0])
	}

	dry, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 2, DryRun: true})
	must(t, err)
	if got := savepointIDs(dry.Removed); !slices.Equal(got, []int64{2, 4, 5}) {
		t.Fatalf("dry run would remove %v, want [2 4 5]", got)
	}
	if got := savepointDirs(t, dir); !slices.Equal(got, []int64{2, 4, 5, 6, 8}) {
		t.Fatalf("a dry run removed savepoints: %v left", got)
	}

	res, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 2, Verify: true})
	must(t, err)
	if got, kept := savepointIDs(res.Removed), savepointIDs(res.Kept); !slices.Equal(got, []int64{2, 4, 5}) || !slices.Equal(kept, []int64{6, 8}) {
		t.Fatalf("removed %v kept %v, want [2 4 5] and [6 8]", got, kept)
	}
	if got := savepointDirs(t, dir); !slices.Equal(got, []int64{6, 8}) {
		t.Fatalf("savepoints left on disk: %v, want [6 8]", got)
	}
	md, _, err := st.Latest(ctx)
	must(t, err)
	if md == nil || md.CheckpointID != 8 {
		t.Fatalf("latest after the prune: %+v, want savepoint 8", md)
	}
	for _, p := range []string{"chk-7", "savepoint-6", "savepoint-8"} {
		if _, err := st.Load(ctx, p); err != nil {
			t.Fatalf("%s after the prune: %v", p, err)
		}
	}
	// Again: nothing beyond the bound.
	res, err = checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 2})
	must(t, err)
	if len(res.Removed) != 0 || len(res.Kept) != 2 {
		t.Fatalf("second prune: %+v", res)
	}
}

// The newest restore point stays, whatever the bound: when the newest
// savepoints' files are damaged, a verified prune keeps the newest intact
// one (a restore would resume from it). Incomplete and damaged savepoints
// are neither counted nor removed.
func TestPruneSavepointsKeepsTheRestorePoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 1})
	must(t, err)
	for id := int64(1); id <= 4; id++ {
		writeSavepoint(t, st, id)
	}
	// Savepoints 3 and 4: a state file corrupt (only reading it tells).
	for _, id := range []int64{3, 4} {
		md, err := st.Load(ctx, fmt.Sprintf("savepoint-%d", id))
		must(t, err)
		flipByte(t, filepath.Join(dir, "job", md.Operators[0].Subtasks[0].Keyed.Files[0].Path), 2)
	}
	res, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 2, Verify: true, DryRun: true})
	must(t, err)
	if got := savepointIDs(res.Removed); !slices.Equal(got, []int64{1}) {
		t.Fatalf("a verified prune would remove %v, want [1]: savepoint 2 is the newest restore point", got)
	}
	if k := res.Kept[0]; k.ID != 2 || !k.RestorePoint || !strings.Contains(k.Why, "restore point") {
		t.Fatalf("kept %+v, want savepoint 2 as the restore point", res.Kept)
	}

	// Savepoint 5 without _metadata, 6 with a corrupt one: skipped.
	writeSavepoint(t, st, 5)
	writeSavepoint(t, st, 6)
	must(t, os.Remove(filepath.Join(dir, "job", "savepoint-5", "_metadata")))
	flipByte(t, filepath.Join(dir, "job", "savepoint-6", "_metadata"), -5)
	res, err = checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 1})
	must(t, err)
	if got := savepointIDs(res.Skipped); !slices.Equal(got, []int64{5, 6}) || !strings.Contains(res.Skipped[0].Why, "incomplete") ||
		!strings.Contains(res.Skipped[1].Why, "damaged") {
		t.Fatalf("skipped %+v, want 5 incomplete and 6 damaged", res.Skipped)
	}
	if got := savepointIDs(res.Removed); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("removed %v, want [1 2 3] (4 is the newest complete one)", got)
	}
	if got := savepointDirs(t, dir); !slices.Equal(got, []int64{4, 5, 6}) {
		t.Fatalf("left %v, want [4 5 6]", got)
	}
}

// A lineage started from a savepoint (Adopt) does not depend on it: once
// the savepoint is pruned, the adopted checkpoint still loads, every file
// verified. A savepoint whose files a kept checkpoint names stays.
func TestPruneSavepointsKeepsWhatIsReferenced(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 3})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	sp2 := writeSavepoint(t, st, 2, "a.sst")
	writeSavepoint(t, st, 3)
	loaded, err := st.Load(ctx, sp2.Path)
	must(t, err)
	adopted, err := st.Adopt(ctx, loaded, 4)
	must(t, err)
	writeSavepoint(t, st, 5)
	res, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 1})
	must(t, err)
	if got := savepointIDs(res.Removed); !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("removed %v, want [2 3]", got)
	}
	if md, err := st.Load(ctx, adopted.Path); err != nil || md.RestoredFrom != sp2.Path {
		t.Fatalf("the checkpoint adopted from pruned savepoint 2: %v (%+v)", err, md)
	}
	if _, err := reopen(t, dir).Load(ctx, adopted.Path); err != nil {
		t.Fatalf("reopened: the checkpoint adopted from pruned savepoint 2: %v", err)
	}

	// A checkpoint naming a file of savepoint 6 keeps it.
	sp6 := writeSavepoint(t, st, 6)
	writeSavepoint(t, st, 7)
	ref := sp6.Operators[0].Subtasks[0].Keyed.Files[0]
	chk := &checkpoint.Metadata{CheckpointID: 8, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref}}}}}}}
	must(t, st.Complete(ctx, chk))
	writeSavepoint(t, st, 9)
	res, err = checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 1})
	must(t, err)
	if got := savepointIDs(res.Removed); !slices.Equal(got, []int64{5, 7}) {
		t.Fatalf("removed %v, want [5 7]", got)
	}
	var kept6 *checkpoint.SavepointInfo
	for i := range res.Kept {
		if res.Kept[i].ID == 6 {
			kept6 = &res.Kept[i]
		}
	}
	if kept6 == nil || !strings.Contains(kept6.Why, "chk-8 names its file") {
		t.Fatalf("kept %+v, want savepoint 6 kept for chk-8", res.Kept)
	}
	if _, err := st.Load(ctx, "chk-8"); err != nil {
		t.Fatal(err)
	}
}

func TestPruneSavepointsRefusals(t *testing.T) {
	ctx := context.Background()
	st := NewMemoryStorage("job", StorageOptions{})
	writeSavepoint(t, st, 1)
	_, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 0})
	wantErrContains(t, err, "keep 0", "at least 1")
	_, err = checkpoint.PruneSavepoints(ctx, &failedStorage{}, checkpoint.PruneOptions{Keep: 1})
	wantErrContains(t, err, "failedStorage")
	if !errors.Is(err, checkpoint.ErrPruneNotSupported) {
		t.Fatalf("prune of a storage without PruneSavepoints: %v; want ErrPruneNotSupported", err)
	}
	_, err = ListSavepoints(ctx, &failedStorage{})
	wantErrContains(t, err, "failedStorage")

	// A read-only storage lists and dry-runs, and refuses to remove.
	dir := t.TempDir()
	rw, err := NewFileStorage(dir, "job", StorageOptions{})
	must(t, err)
	writeSavepoint(t, rw, 1)
	writeSavepoint(t, rw, 2)
	ro, err := NewFileStorage(dir, "job", StorageOptions{ReadOnly: true})
	must(t, err)
	if list, err := ListSavepoints(ctx, ro); err != nil || len(list) != 2 {
		t.Fatalf("read-only list: %+v %v", list, err)
	}
	if res, err := checkpoint.PruneSavepoints(ctx, ro, checkpoint.PruneOptions{Keep: 1, DryRun: true, Verify: true}); err != nil || len(res.Removed) != 1 {
		t.Fatalf("read-only dry run: %+v %v", res, err)
	}
	_, err = checkpoint.PruneSavepoints(ctx, ro, checkpoint.PruneOptions{Keep: 1})
	wantErrContains(t, err, "prune savepoints", "read-only")
	if got := savepointDirs(t, dir); len(got) != 2 {
		t.Fatalf("a read-only storage removed savepoints: %v left", got)
	}
}

// Pruning runs while checkpoints and savepoints complete (as it does
// after each savepoint of a running job): the newest savepoint is always
// loadable and the bound holds once the last prune ran.
func TestPruneSavepointsWhileCheckpointing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 2})
	must(t, err)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := ListSavepoints(ctx, st); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for id := int64(1); id <= 30; id++ {
		if id%3 == 0 {
			writeSavepoint(t, st, id)
			if _, err := checkpoint.PruneSavepoints(ctx, st, checkpoint.PruneOptions{Keep: 2}); err != nil {
				t.Fatal(err)
			}
			md, _, err := st.Latest(ctx)
			must(t, err)
			if md == nil || md.CheckpointID != id {
				t.Fatalf("latest after savepoint %d: %+v", id, md)
			}
		} else {
			writeCheckpoint(t, st, id, fmt.Sprintf("s%d.sst", id))
		}
	}
	close(stop)
	wg.Wait()
	if got := savepointDirs(t, dir); !slices.Equal(got, []int64{27, 30}) {
		t.Fatalf("left %v, want [27 30]", got)
	}
}
