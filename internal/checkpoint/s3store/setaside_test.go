package s3store_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// contents returns key -> bytes of every object under prefix, keyed
// relative to it.
func contents(t *testing.T, st objstore.Store, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keys(t, st, prefix) {
		rc, _, err := st.Get(ctxT(t), k, objstore.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(k, prefix)] = string(b)
	}
	return out
}

func putRaw(t *testing.T, st objstore.Store, key, body string) {
	t.Helper()
	if _, err := st.Put(ctxT(t), key, strings.NewReader(body), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A job with checkpoints, a committed marker and a savepoint: SetAside
// moves all of it, and only it, to the new root, where it is still a whole
// job's checkpoints; the old root is then a job without checkpoints.
func TestSetAsideMovesEveryObjectOfTheJob(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 3, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a.sst": "A"}})
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}, shared: map[string]string{"b.sst": "B"}, reuse: []string{"a.sst"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 3, savepoint: true, private: map[string]string{"p": "3"}, reuse: []string{"a.sst", "b.sst"}})
	// Neighbours: a job whose name extends "wc", an earlier set-aside.
	putRaw(t, mem, "ckpt/wc2/manifest/chk-1", "other job")
	putRaw(t, mem, "ckpt/wc.set-aside-1/manifest/chk-1", "earlier")
	before := contents(t, mem, "ckpt/wc/")
	neighbours := map[string]string{"wc2/manifest/chk-1": "other job", "wc.set-aside-1/manifest/chk-1": "earlier"}

	res, err := s3store.SetAside(ctxT(t), mem, "ckpt/wc", "ckpt/wc.set-aside-2")
	if err != nil {
		t.Fatalf("SetAside: %v", err)
	}
	if want := []string{"chk-1", "chk-2", "savepoint-3"}; !slices.Equal(res.Checkpoints, want) {
		t.Fatalf("SetAside names %v as moved, want %v", res.Checkpoints, want)
	}
	if want := sortedKeys(before); !slices.Equal(res.Keys, want) {
		t.Fatalf("SetAside says it moved %v, want %v", res.Keys, want)
	}
	if left := keys(t, mem, "ckpt/wc/"); len(left) != 0 {
		t.Fatalf("left under the job's root: %v", left)
	}
	if got := contents(t, mem, "ckpt/wc.set-aside-2/"); !maps(got, before) {
		t.Fatalf("set aside %v, want the job's objects %v", got, before)
	}
	for k, v := range neighbours {
		if got := contents(t, mem, "ckpt/"+k); got[""] != v {
			t.Fatalf("%s changed: %v", k, got)
		}
	}

	// The set-aside root is a whole job: its savepoint restores.
	aside, err := s3store.New(ctxT(t), mem, s3store.Options{Prefix: "ckpt", Job: "wc.set-aside-2", Epoch: 4})
	if err != nil {
		t.Fatal(err)
	}
	md := mustLatest(t, aside)
	if !md.Savepoint || md.CheckpointID != 3 {
		t.Fatalf("the set-aside root's latest is %d (savepoint %t), want savepoint 3", md.CheckpointID, md.Savepoint)
	}
	if got := restore(t, aside, md); got["a.sst"] != "A" || got["b.sst"] != "B" || got["p"] != "3" {
		t.Fatalf("the set-aside savepoint restores %v", got)
	}
	// The job's own root starts over: no epoch, no checkpoint, id 1 free.
	fresh := open(t, mem, 1, 2, nil)
	if e, id := fresh.NewestEpoch(), latestID(t, fresh); e != 0 || id != 0 {
		t.Fatalf("after SetAside the job's newest epoch is %d and latest checkpoint %d, want none", e, id)
	}
	complete(t, fresh, chk{id: 1, private: map[string]string{"p": "new"}})

	// A second SetAside moves only what is there now; of an empty root, nothing.
	if res, err := s3store.SetAside(ctxT(t), mem, "ckpt/wc", "ckpt/wc.set-aside-3"); err != nil || !slices.Equal(res.Checkpoints, []string{"chk-1"}) {
		t.Fatalf("SetAside again = %+v, %v; want chk-1 moved", res, err)
	}
	if res, err := s3store.SetAside(ctxT(t), mem, "ckpt/wc", "ckpt/wc.set-aside-4"); err != nil || len(res.Keys) != 0 || len(res.Checkpoints) != 0 {
		t.Fatalf("SetAside of an empty root = %+v, %v; want nothing moved", res, err)
	}
	if got := keys(t, mem, "ckpt/wc.set-aside-4/"); len(got) != 0 {
		t.Fatalf("SetAside of an empty root wrote %v", got)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A job stored under the root (a partition group's pg-<g>/) is moved with
// it and named by its sub-root.
func TestSetAsideNamesTheCheckpointsOfJobsUnderTheRoot(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	for _, k := range []string{"manifest/chk-10", "manifest/chk-9", "manifest/chk-9.committed", "manifest/savepoint-9",
		"pg-1/manifest/chk-2", "pg-0/manifest/savepoint-4", "pg-0/data/chk-4/e1-00/op/0/f", "discarded", "data/manifest/x"} {
		putRaw(t, mem, "p/job/"+k, k)
	}
	res, err := s3store.SetAside(ctxT(t), mem, "p/job", "p/job.set-aside-1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"chk-9", "savepoint-9", "chk-10", "pg-0/savepoint-4", "pg-1/chk-2"}
	if !slices.Equal(res.Checkpoints, want) {
		t.Fatalf("Checkpoints = %v, want %v", res.Checkpoints, want)
	}
	if got := keys(t, mem, "p/job.set-aside-1/"); len(got) != 9 {
		t.Fatalf("set aside %v, want 9 objects", got)
	}
}

// A copy that fails (a get or a put refused) deletes nothing, and the
// error names the object; the next SetAside, to a new root, moves all of
// it. A deletion that fails leaves every object copied and no manifest
// behind, and the next SetAside moves the rest.
func TestSetAsideFailures(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a.sst": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "2"}, reuse: []string{"a.sst"}})
	putRaw(t, mem, "ckpt/wc/discarded", "what a DiscardAll discarded")
	before := contents(t, mem, "ckpt/wc/")
	// The failing object is the last listed: the copies of the others are
	// done or under way when it fails.
	data := sortedKeys(before)[len(before)-1]
	if !strings.HasPrefix(data, "shared/") {
		t.Fatalf("the last object is %s, want a shared file", data)
	}
	ft := objstore.NewFaulty(mem)
	for _, tc := range []struct {
		name  string
		fault objstore.Fault
	}{
		{"put", objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc.set-aside-1/" + data, Err: errors.New("slow down")}},
		{"get", objstore.Fault{Op: objstore.OpGet, Key: "ckpt/wc/" + data, Err: errors.New("slow down")}},
		{"lost put", objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc.set-aside-1/" + data, Applied: true}},
	} {
		ft.Clear()
		ft.Inject(tc.fault)
		deletes := ft.Calls(objstore.OpDelete)
		dest := "ckpt/wc.set-aside-" + strings.ReplaceAll(tc.name, " ", "-")
		if tc.fault.Op == objstore.OpPut {
			dest = "ckpt/wc.set-aside-1"
			// The destination must be new: clear what a former case copied.
			for _, k := range keys(t, mem, dest+"/") {
				_ = mem.Delete(ctxT(t), k)
			}
		}
		_, err := s3store.SetAside(ctxT(t), ft, "ckpt/wc", dest)
		if err == nil || !strings.Contains(err.Error(), "ckpt/wc/"+data) || !strings.Contains(err.Error(), "nothing was deleted") {
			t.Fatalf("%s fault: SetAside = %v; want an error naming %s and saying nothing was deleted", tc.name, err, data)
		}
		if n := ft.Calls(objstore.OpDelete); n != deletes {
			t.Fatalf("%s fault: %d deletions after a failed copy", tc.name, n-deletes)
		}
		if got := contents(t, mem, "ckpt/wc/"); !maps(got, before) {
			t.Fatalf("%s fault: the job's objects changed: %v", tc.name, got)
		}
	}

	// A destination that holds objects is refused before any copy.
	ft.Clear()
	puts := ft.Calls(objstore.OpPut)
	if _, err := s3store.SetAside(ctxT(t), ft, "ckpt/wc", "ckpt/wc.set-aside-1"); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("SetAside to a destination holding objects = %v; want a refusal", err)
	}
	if ft.Calls(objstore.OpPut) != puts {
		t.Fatal("SetAside to a destination holding objects copied")
	}

	// The deletion of a data object fails: the manifests are gone, the
	// data is copied, and the next SetAside moves what is left.
	ft.Inject(objstore.Fault{Op: objstore.OpDelete, Key: "ckpt/wc/" + data, Err: errors.New("slow down")})
	_, err := s3store.SetAside(ctxT(t), ft, "ckpt/wc", "ckpt/wc.set-aside-del")
	if err == nil || !strings.Contains(err.Error(), "every object is copied") || !strings.Contains(err.Error(), data) {
		t.Fatalf("SetAside with a failing deletion = %v; want it to say the copies are whole and name %s", err, data)
	}
	if got := contents(t, mem, "ckpt/wc.set-aside-del/"); !maps(got, before) {
		t.Fatalf("after a failed deletion the copies are %v, want %v", got, before)
	}
	left := keys(t, mem, "ckpt/wc/")
	for _, k := range left {
		if strings.Contains(k, "/manifest/") {
			t.Fatalf("manifest %s is left after a failed deletion of data", k)
		}
	}
	if !slices.Contains(left, "ckpt/wc/discarded") {
		t.Fatalf("the DiscardAll record is deleted before the data (left: %v)", left)
	}
	ft.Clear()
	res, err := s3store.SetAside(ctxT(t), ft, "ckpt/wc", "ckpt/wc.set-aside-rest")
	if err != nil || len(res.Keys) == 0 || len(res.Checkpoints) != 0 {
		t.Fatalf("SetAside of what a failed deletion left = %+v, %v; want the data moved, no checkpoint named", res, err)
	}
	if left := keys(t, mem, "ckpt/wc/"); len(left) != 0 {
		t.Fatalf("left under the job's root: %v", left)
	}
}

func TestSetAsideRefusesOverlappingRoots(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	putRaw(t, mem, "p/job/manifest/chk-1", "x")
	for _, tc := range [][2]string{{"p/job", "p/job"}, {"p/job", "p/job/aside"}, {"p/job", "p"}, {"p/job/", "p/x"}, {"", "p/x"}, {"p/job", "p//x"}} {
		if _, err := s3store.SetAside(context.Background(), mem, tc[0], tc[1]); err == nil {
			t.Errorf("SetAside(%q, %q) succeeded", tc[0], tc[1])
		}
	}
	if got := keys(t, mem, ""); !slices.Equal(got, []string{"p/job/manifest/chk-1"}) {
		t.Fatalf("the store holds %v after refusals", got)
	}
}

// A deletion of manifests that fails midway leaves the newest checkpoints,
// each with its committed marker: the job resumes from its newest, as
// without SetAside, and nothing it names is gone.
func TestSetAsideDeletesTheOldestManifestsFirst(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 3, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a.sst": "A"}})
	if err := s.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a.sst"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 10, savepoint: true, private: map[string]string{"p": "10"}, reuse: []string{"a.sst"}})
	if err := s.MarkCommitted(ctxT(t), 10); err != nil {
		t.Fatal(err)
	}
	ft := objstore.NewFaulty(mem)
	ft.Inject(objstore.Fault{Op: objstore.OpDelete, Key: "ckpt/wc/manifest/chk-2", Err: errors.New("slow down")})
	if _, err := s3store.SetAside(ctxT(t), ft, "ckpt/wc", "ckpt/wc.set-aside-1"); err == nil || !strings.Contains(err.Error(), "manifest/chk-2") {
		t.Fatalf("SetAside = %v; want the failed deletion of manifest/chk-2", err)
	}
	var left []string
	for _, k := range keys(t, mem, "ckpt/wc/manifest/") {
		left = append(left, strings.TrimPrefix(k, "ckpt/wc/manifest/"))
	}
	if want := []string{"chk-2", "chk-2.committed", "savepoint-10", "savepoint-10.committed"}; !slices.Equal(left, want) {
		t.Fatalf("manifests left %v, want %v", left, want)
	}
	md := mustLatest(t, open(t, mem, 2, 3, nil))
	if md.CheckpointID != 10 || !md.Savepoint || !md.Committed {
		t.Fatalf("the job left resumes from %d (savepoint %t, committed %t), want committed savepoint 10", md.CheckpointID, md.Savepoint, md.Committed)
	}
}
