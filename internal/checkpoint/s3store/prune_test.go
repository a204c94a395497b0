package s3store_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// spIDs are the ids of infos.
func spIDs(infos []checkpoint.SavepointInfo) []int64 {
	var ids []int64
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	return ids
}

// storedSavepoints are the ids of the savepoint manifests under root, and
// of the savepoints with objects under data/ or a committed marker.
func storedSavepoints(t *testing.T, st objstore.Store, root string) (manifests, other []int64) {
	t.Helper()
	for _, k := range keys(t, st, root) {
		rest := strings.TrimPrefix(k, root)
		var id int64
		switch {
		case strings.HasPrefix(rest, "manifest/savepoint-"):
			name := strings.TrimPrefix(rest, "manifest/")
			if base, ok := strings.CutSuffix(name, ".committed"); ok {
				fmt.Sscanf(base, "savepoint-%d", &id)
				other = append(other, id)
				continue
			}
			fmt.Sscanf(name, "savepoint-%d", &id)
			manifests = append(manifests, id)
		case strings.HasPrefix(rest, "data/savepoint-"):
			fmt.Sscanf(strings.TrimPrefix(rest, "data/"), "savepoint-%d", &id)
			other = append(other, id)
		}
	}
	slices.Sort(manifests)
	slices.Sort(other)
	return manifests, slices.Compact(other)
}

func prune(t *testing.T, s *s3store.Storage, opts checkpoint.PruneOptions) checkpoint.PruneResult {
	t.Helper()
	res, err := s.PruneSavepoints(ctxT(t), opts)
	if err != nil {
		t.Fatalf("PruneSavepoints(%+v): %v", opts, err)
	}
	return res
}

// The oldest complete savepoints beyond the bound go, with their
// committed markers and every object under data/savepoint-<id>/;
// checkpoints stay, the newest point stays restorable; a dry run deletes
// nothing; a second prune has nothing to do. Through the checkpoint
// package's interface, as the engine and the processor call it.
func TestPruneSavepointsKeepsTheNewest(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	root := "ckpt/wc/"
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a.sst": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp2"}, reuse: []string{"a.sst"}})
	complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, shared: map[string]string{"b.sst": "B"}, reuse: []string{"a.sst"}})
	complete(t, s, chk{id: 4, savepoint: true, private: map[string]string{"p": "sp4"}, reuse: []string{"b.sst"}})
	if err := s.MarkCommitted(ctxT(t), 4); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 5, savepoint: true, private: map[string]string{"p": "sp5"}})
	complete(t, s, chk{id: 6, savepoint: true, private: map[string]string{"p": "sp6"}})
	complete(t, s, chk{id: 7, private: map[string]string{"p": "7"}, reuse: []string{"b.sst"}})
	complete(t, s, chk{id: 8, savepoint: true, private: map[string]string{"p": "sp8"}, reuse: []string{"b.sst"}})

	var st checkpoint.Storage = s
	dry, err := checkpoint.PruneSavepoints(ctxT(t), st, checkpoint.PruneOptions{Keep: 2, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := spIDs(dry.Removed); !slices.Equal(got, []int64{2, 4, 5}) {
		t.Fatalf("a dry run would remove %v, want [2 4 5]", got)
	}
	if dry.Removed[0].Bytes == 0 || dry.Removed[0].Taken.IsZero() || !dry.Removed[1].Committed || dry.Removed[0].Path != root+"manifest/savepoint-2" {
		t.Fatalf("savepoints described as %+v", dry.Removed)
	}
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{2, 4, 5, 6, 8}) || !slices.Equal(other, ms) {
		t.Fatalf("after a dry run: manifests %v, objects of %v; want every savepoint's", ms, other)
	}

	res, err := checkpoint.PruneSavepoints(ctxT(t), st, checkpoint.PruneOptions{Keep: 2, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, kept := spIDs(res.Removed), spIDs(res.Kept); !slices.Equal(got, []int64{2, 4, 5}) || !slices.Equal(kept, []int64{6, 8}) {
		t.Fatalf("removed %v kept %v, want [2 4 5] and [6 8]", got, kept)
	}
	if !res.Kept[1].RestorePoint || res.Kept[0].RestorePoint || len(res.Skipped) != 0 {
		t.Fatalf("result %+v; want savepoint 8 the restore point, nothing skipped", res)
	}
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{6, 8}) || !slices.Equal(other, []int64{6, 8}) {
		t.Fatalf("after the prune: manifests %v, objects or markers of %v; want savepoints 6 and 8 only", ms, other)
	}
	for _, r := range []*s3store.Storage{s, open(t, mem, 1, 2, nil)} {
		if md := mustLatest(t, r); md.CheckpointID != 8 {
			t.Fatalf("Latest after the prune = %d, want savepoint 8", md.CheckpointID)
		}
		for name, want := range map[string]string{"chk-7": "7", "savepoint-6": "sp6", "savepoint-8": "sp8"} {
			md, err := r.Load(ctxT(t), name)
			if err != nil {
				t.Fatalf("%s after the prune: %v", name, err)
			}
			if got := restore(t, r, md); got["p"] != want {
				t.Fatalf("%s restores %v", name, got)
			}
		}
		infos, err := r.List(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, in := range infos {
			ids = append(ids, in.ID)
		}
		if !slices.Equal(ids, []int64{3, 6, 7, 8}) {
			t.Fatalf("List after the prune: %v, want [3 6 7 8]", ids)
		}
	}
	// Again: nothing beyond the bound.
	if res := prune(t, s, checkpoint.PruneOptions{Keep: 2}); len(res.Removed) != 0 || len(res.Kept) != 2 {
		t.Fatalf("second prune: %+v", res)
	}
	// Ids stay above the pruned ones.
	if _, err := s.Writer(8, "op/1", 0); err == nil {
		t.Fatal("Writer(8) after the prune succeeded")
	}
}

// The newest restore point stays, whatever the bound: when the newest
// savepoints' objects are corrupt, a verified prune keeps the newest
// intact one (a restore would resume from it). A savepoint whose
// manifest is corrupt, and objects under data/savepoint-<id>/ without a
// manifest, are neither counted nor touched, and are reported.
func TestPruneSavepointsKeepsTheRestorePointAndSkipsWhatItCannotAccountFor(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	root := "ckpt/wc/"
	for id := int64(1); id <= 4; id++ {
		complete(t, s, chk{id: id, savepoint: true, private: map[string]string{"p": fmt.Sprint("sp", id)}})
	}
	for _, id := range []int64{3, 4} {
		md, err := s.Load(ctxT(t), fmt.Sprintf("savepoint-%d", id))
		if err != nil {
			t.Fatal(err)
		}
		ref := md.Operators[0].Subtasks[0].Keyed.Files[0]
		if _, err := mem.Put(ctxT(t), root+ref.Path, strings.NewReader("XXX"), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A Storage opened afresh (s verified the objects before they were
	// corrupted, and trusts what it verified).
	res := prune(t, open(t, mem, 1, 1, nil), checkpoint.PruneOptions{Keep: 2, Verify: true, DryRun: true})
	if got := spIDs(res.Removed); !slices.Equal(got, []int64{1}) {
		t.Fatalf("a verified prune would remove %v, want [1]: savepoint 2 is the newest restore point", got)
	}
	if k := res.Kept[0]; k.ID != 2 || !k.RestorePoint || !strings.Contains(k.Why, "restore point") {
		t.Fatalf("kept %+v, want savepoint 2 as the restore point", res.Kept)
	}

	// Savepoint 5: objects, no manifest (never completed). Savepoint 6: a
	// corrupt manifest over its objects.
	if _, err := mem.Put(ctxT(t), root+"data/savepoint-5/e1-0/op-op/0/p", strings.NewReader("sp5"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 6, savepoint: true, private: map[string]string{"p": "sp6"}})
	if _, err := mem.Put(ctxT(t), root+"manifest/savepoint-6", strings.NewReader("garbage"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := open(t, mem, 1, 1, nil)
	res = prune(t, r, checkpoint.PruneOptions{Keep: 1})
	if got := spIDs(res.Skipped); !slices.Equal(got, []int64{5, 6}) || !strings.Contains(res.Skipped[0].Why, "incomplete") ||
		!strings.Contains(res.Skipped[0].Why, "no manifest "+root+"manifest/savepoint-5") || !strings.Contains(res.Skipped[1].Why, "damaged") ||
		!strings.Contains(res.Skipped[1].Why, "nothing under "+root+"data/savepoint-6/ is deleted") || !res.Skipped[1].Damaged {
		t.Fatalf("skipped %+v, want 5 incomplete and 6 damaged, saying so", res.Skipped)
	}
	if got := spIDs(res.Removed); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("removed %v, want [1 2 3] (4 is the newest complete one)", got)
	}
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{4, 6}) || !slices.Equal(other, []int64{4, 5, 6}) {
		t.Fatalf("left manifests %v and objects of %v; want manifests 4 and 6, objects of 4, 5 and 6", ms, other)
	}
}

// Pruning never deletes an object a retained manifest names. A
// checkpoint adopted from a savepoint (a run --from it, or a new owner's
// Claim) holds copies of the savepoint's objects, so the savepoint can
// go and the checkpoint still loads and restores, even from a Storage
// opened afresh. A checkpoint (or a kept savepoint) that names an object
// of a savepoint keeps that savepoint, and says which.
func TestPruneSavepointsKeepsWhatIsReferenced(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	root := "ckpt/wc/"
	s := open(t, mem, 1, 3, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a.sst": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp2"}, reuse: []string{"a.sst"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 3, savepoint: true, private: map[string]string{"p": "sp3"}})
	sp2, err := s.Load(ctxT(t), "savepoint-2")
	if err != nil {
		t.Fatal(err)
	}
	adopted, err := s.Adopt(ctxT(t), sp2, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range adopted.Operators[0].Subtasks[0].Keyed.Files {
		if strings.HasPrefix(r.Path, "data/savepoint-") {
			t.Fatalf("the adopted checkpoint names the savepoint's object %s", r.Path)
		}
	}
	// A new owner claims the job: the claim copies the newest point,
	// savepoint 5, as checkpoint 6.
	complete(t, s, chk{id: 5, savepoint: true, private: map[string]string{"p": "sp5"}})
	probe := open(t, mem, 1, 3, nil)
	owner := open(t, mem, probe.NewestEpoch()+1, 3, nil)
	claim, err := owner.Claim(ctxT(t))
	if err != nil || claim.From.CheckpointID != 5 || claim.Metadata.CheckpointID != 6 {
		t.Fatalf("Claim = %+v, %v; want savepoint 5 claimed as checkpoint 6", claim, err)
	}
	complete(t, owner, chk{id: 7, savepoint: true, private: map[string]string{"p": "sp7"}})
	res := prune(t, owner, checkpoint.PruneOptions{Keep: 1, Verify: true})
	if got := spIDs(res.Removed); !slices.Equal(got, []int64{2, 3, 5}) {
		t.Fatalf("removed %v, want [2 3 5]: the checkpoints adopted and claimed from them hold copies", got)
	}
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{7}) || !slices.Equal(other, []int64{7}) {
		t.Fatalf("left savepoint manifests %v and objects of %v; want savepoint 7's only", ms, other)
	}
	for _, r := range []*s3store.Storage{owner, open(t, mem, 2, 3, nil)} {
		for name, want := range map[string]string{"chk-4": "sp2", "chk-6": "sp5"} {
			md, err := r.Load(ctxT(t), name)
			if err != nil {
				t.Fatalf("%s after its savepoint was pruned: %v", name, err)
			}
			if got := restore(t, r, md); got["p"] != want || (name == "chk-4" && got["a.sst"] != "A") {
				t.Fatalf("%s restores %v, want p=%s", name, got, want)
			}
			if !md.Committed && name == "chk-4" {
				t.Fatalf("%s lost its committed marker", name)
			}
		}
	}

	// A checkpoint naming an object of savepoint 8 keeps it.
	sp8 := complete(t, owner, chk{id: 8, savepoint: true, private: map[string]string{"p": "sp8"}})
	complete(t, owner, chk{id: 9, savepoint: true, private: map[string]string{"p": "sp9"}})
	ref8 := sp8.Operators[0].Subtasks[0].Keyed.Files[0]
	md := &checkpoint.Metadata{CheckpointID: 10, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1",
		Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref8}}}}}}}
	if err := owner.Complete(ctxT(t), md); err != nil {
		t.Fatalf("Complete(10): %v", err)
	}
	complete(t, owner, chk{id: 11, savepoint: true, private: map[string]string{"p": "sp11"}})
	res = prune(t, owner, checkpoint.PruneOptions{Keep: 1})
	if got := spIDs(res.Removed); !slices.Equal(got, []int64{7, 9}) {
		t.Fatalf("removed %v, want [7 9]", got)
	}
	if len(res.Kept) != 2 || res.Kept[0].ID != 8 || !strings.Contains(res.Kept[0].Why, "chk-10 names its object "+ref8.Path) {
		t.Fatalf("kept %+v, want savepoint 8 kept for chk-10", res.Kept)
	}
	if _, err := open(t, mem, 2, 3, nil).Load(ctxT(t), "chk-10"); err != nil {
		t.Fatalf("chk-10 after the prune: %v", err)
	}
}

// A kept savepoint naming another's object keeps it too, transitively.
func TestPruneSavepointsKeepsWhatKeptSavepointsName(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	sp1 := complete(t, s, chk{id: 1, savepoint: true, private: map[string]string{"p": "sp1"}})
	sp2 := complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp2"}})
	// Savepoints 3 and 4 written by hand: 3 names 1's object, 4 names
	// 3's and 2's (a format that shares objects between savepoints).
	put := func(id int64, refs ...checkpoint.FileRef) {
		md := &checkpoint.Metadata{Version: 1, Job: "wc", CheckpointID: id, Savepoint: true, Operators: []checkpoint.OperatorSnapshot{{UID: "op/1",
			Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: refs}}}}}}
		b, err := s3store.EncodeManifestForTest(md, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.Put(ctxT(t), fmt.Sprintf("ckpt/wc/manifest/savepoint-%d", id), strings.NewReader(string(b)), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := func(md *checkpoint.Metadata) checkpoint.FileRef { return md.Operators[0].Subtasks[0].Keyed.Files[0] }
	put(3, f(sp1))
	put(4, checkpoint.FileRef{Path: "data/savepoint-3/e1-0/op-x/0/q", Size: 1}, f(sp2))
	r := open(t, mem, 1, 1, nil)
	res := prune(t, r, checkpoint.PruneOptions{Keep: 1, DryRun: true})
	if len(res.Removed) != 0 || len(res.Kept) != 4 {
		t.Fatalf("dry run: %+v; want every savepoint kept", res)
	}
	for _, k := range res.Kept[:3] {
		if !strings.Contains(k.Why, "names its object") {
			t.Fatalf("kept %+v without saying which manifest names it", k)
		}
	}
}

// A Storage fenced by a newer owner prunes nothing (ErrFenced); a dry
// run still answers. A keep below 1 is refused. A deletion that fails
// ends the prune naming what is left: a manifest that could not be
// deleted leaves the savepoint whole; objects left after their manifest
// went are removed by a later Sweep.
func TestPruneSavepointsRefusalsAndFailures(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	root := "ckpt/wc/"
	s := open(t, f, 1, 1, nil)
	for id := int64(1); id <= 4; id++ {
		complete(t, s, chk{id: id, savepoint: true, private: map[string]string{"p": fmt.Sprint("sp", id), "q": "q"}})
	}
	if _, err := s.PruneSavepoints(ctxT(t), checkpoint.PruneOptions{Keep: 0}); err == nil || !strings.Contains(err.Error(), "keep 0") ||
		!strings.Contains(err.Error(), "at least 1") || !strings.Contains(err.Error(), root) {
		t.Fatalf("keep 0: %v", err)
	}

	// The manifest's deletion fails: nothing is removed.
	f.Inject(objstore.Fault{Op: objstore.OpDelete, Key: root + "manifest/savepoint-1", Nth: 1})
	res, err := s.PruneSavepoints(ctxT(t), checkpoint.PruneOptions{Keep: 2})
	if err == nil || !strings.Contains(err.Error(), "removing savepoint 1") || !errors.Is(err, objstore.ErrInjected) || len(res.Removed) != 0 {
		t.Fatalf("prune with the manifest's deletion failing = %+v, %v", res, err)
	}
	if _, err := s.Load(ctxT(t), "savepoint-1"); err != nil {
		t.Fatalf("savepoint 1 after a failed removal: %v", err)
	}
	// An object's deletion fails: the savepoint is removed, the object
	// named; a Sweep deletes it.
	sp1, err := s.Load(ctxT(t), "savepoint-1")
	if err != nil {
		t.Fatal(err)
	}
	obj := root + sp1.Operators[0].Subtasks[0].Keyed.Files[1].Path
	f.Inject(objstore.Fault{Op: objstore.OpDelete, Key: obj, Nth: 1})
	res, err = s.PruneSavepoints(ctxT(t), checkpoint.PruneOptions{Keep: 2})
	if err == nil || !strings.Contains(err.Error(), "savepoint 1 is removed") || !strings.Contains(err.Error(), obj) || !slices.Equal(spIDs(res.Removed), []int64{1}) {
		t.Fatalf("prune with an object's deletion failing = %+v, %v", res, err)
	}
	if got := keys(t, mem, obj); len(got) != 1 {
		t.Fatalf("the object whose deletion failed: %v", got)
	}
	res = prune(t, s, checkpoint.PruneOptions{Keep: 2})
	if !slices.Equal(spIDs(res.Removed), []int64{2}) || !slices.Equal(spIDs(res.Skipped), []int64{1}) || !strings.Contains(res.Skipped[0].Why, "incomplete") {
		t.Fatalf("the next prune: %+v; want 2 removed, 1's leftover reported", res)
	}
	if removed, err := open(t, mem, 1, 1, nil).Sweep(ctxT(t)); err != nil || len(removed) != 1 || removed[0].ID != 1 {
		t.Fatalf("Sweep = %+v, %v; want savepoint 1's leftover", removed, err)
	}
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{3, 4}) || !slices.Equal(other, []int64{3, 4}) {
		t.Fatalf("left manifests %v and objects of %v; want savepoints 3 and 4", ms, other)
	}

	// A new owner takes the job: the old writer is fenced.
	complete(t, s, chk{id: 5, savepoint: true, private: map[string]string{"p": "sp5"}})
	owner := open(t, mem, 2, 1, nil)
	if _, err := owner.Claim(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	res, err = s.PruneSavepoints(ctxT(t), checkpoint.PruneOptions{Keep: 1})
	var fe *s3store.FencedError
	if !errors.Is(err, s3store.ErrFenced) || !errors.As(err, &fe) || fe.Newer != 2 || len(res.Removed) != 0 {
		t.Fatalf("a fenced writer's prune = %+v, %v; want ErrFenced", res, err)
	}
	if ms, _ := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{3, 4, 5}) {
		t.Fatalf("a fenced writer removed savepoints: %v left", ms)
	}
	if res := prune(t, s, checkpoint.PruneOptions{Keep: 1, DryRun: true}); !slices.Equal(spIDs(res.Removed), []int64{3, 4}) {
		t.Fatalf("a fenced writer's dry run = %+v", res)
	}
	if res := prune(t, owner, checkpoint.PruneOptions{Keep: 1}); !slices.Equal(spIDs(res.Removed), []int64{3, 4}) {
		t.Fatalf("the new owner's prune = %+v", res)
	}
}

// Pruning runs while checkpoints and savepoints complete (as it does
// after each savepoint of a running job), with List and Latest read
// beside it: the newest savepoint is always the restore point, loadable,
// and the bound holds once the last prune ran.
func TestPruneSavepointsWhileCheckpointing(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	root := "ckpt/wc/"
	s := open(t, mem, 1, 2, nil)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.List(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for id := int64(1); id <= 30; id++ {
		if id%3 == 0 {
			complete(t, s, chk{id: id, savepoint: true, private: map[string]string{"p": fmt.Sprint(id)}, reuse: []string{"s.sst"}})
			if _, err := s.PruneSavepoints(ctxT(t), checkpoint.PruneOptions{Keep: 2}); err != nil {
				t.Fatal(err)
			}
			if md := mustLatest(t, s); md.CheckpointID != id {
				t.Fatalf("latest after savepoint %d: %d", id, md.CheckpointID)
			}
		} else {
			shared := map[string]string{}
			var reuse []string
			if id == 1 {
				shared["s.sst"] = "S"
			} else {
				reuse = []string{"s.sst"}
			}
			complete(t, s, chk{id: id, private: map[string]string{"p": fmt.Sprint(id)}, shared: shared, reuse: reuse})
		}
	}
	close(stop)
	wg.Wait()
	if ms, other := storedSavepoints(t, mem, root); !slices.Equal(ms, []int64{27, 30}) || !slices.Equal(other, []int64{27, 30}) {
		t.Fatalf("left manifests %v and objects of %v; want savepoints 27 and 30", ms, other)
	}
}

// Pruning on a real server (versitygw, or ONCEFLOW_S3_ENDPOINT's): the
// oldest savepoints beyond the bound go with their markers and objects,
// a checkpoint adopted from one of them still loads from a new client,
// and a dry run deletes nothing.
func TestS3PruneSavepointsOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	newStore, prefix := s3Store(t)
	st := newStore()
	root := prefix + "/wc/"
	s := openPrefix(t, st, prefix, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp2"}, reuse: []string{"a"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 3, savepoint: true, private: map[string]string{"p": "sp3"}, reuse: []string{"a"}})
	sp2, err := s.Load(ctxT(t), "savepoint-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Adopt(ctxT(t), sp2, 4); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 5, savepoint: true, private: map[string]string{"p": "sp5"}})
	complete(t, s, chk{id: 6, savepoint: true, private: map[string]string{"p": "sp6"}})

	if res := prune(t, s, checkpoint.PruneOptions{Keep: 2, DryRun: true, Verify: true}); !slices.Equal(spIDs(res.Removed), []int64{2, 3}) {
		t.Fatalf("dry run: %+v; want savepoints 2 and 3 to go", res)
	}
	if ms, other := storedSavepoints(t, st, root); !slices.Equal(ms, []int64{2, 3, 5, 6}) || !slices.Equal(other, ms) {
		t.Fatalf("after a dry run: manifests %v, objects of %v", ms, other)
	}
	r := openPrefix(t, newStore(), prefix, 1, 2, nil)
	res := prune(t, r, checkpoint.PruneOptions{Keep: 2, Verify: true})
	if !slices.Equal(spIDs(res.Removed), []int64{2, 3}) || !slices.Equal(spIDs(res.Kept), []int64{5, 6}) || !res.Kept[1].RestorePoint {
		t.Fatalf("prune: %+v; want 2 and 3 removed, 5 and 6 kept, 6 the restore point", res)
	}
	if ms, other := storedSavepoints(t, st, root); !slices.Equal(ms, []int64{5, 6}) || !slices.Equal(other, ms) {
		t.Fatalf("after the prune: manifests %v, objects or markers of %v; want savepoints 5 and 6", ms, other)
	}
	c := openPrefix(t, newStore(), prefix, 1, 2, nil)
	md, err := c.Load(ctxT(t), "chk-4")
	if err != nil {
		t.Fatalf("the checkpoint adopted from pruned savepoint 2: %v", err)
	}
	if got := restore(t, c, md); got["p"] != "sp2" || got["a"] != "A" || !md.Committed {
		t.Fatalf("chk-4 restores %v (committed %t)", got, md.Committed)
	}
	if l := mustLatest(t, c); l.CheckpointID != 6 {
		t.Fatalf("Latest = %d, want savepoint 6", l.CheckpointID)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
