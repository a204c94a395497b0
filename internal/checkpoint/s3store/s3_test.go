package s3store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

// s3Store returns a store on the test binary's S3 server and a key prefix
// unique to the test (without the trailing "/").
func s3Store(t *testing.T) (func() objstore.Store, string) {
	t.Helper()
	ep := s3test.Bootstrap(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log ends with:\n%s", s3test.ServerLog(30))
		}
	})
	newStore := func() objstore.Store {
		st, err := objstore.New(ctxT(t), objstore.Options{Bucket: ep.Bucket, Endpoint: ep.URL, Region: ep.Region,
			PathStyle: true, AccessKeyID: ep.AccessKeyID, SecretAccessKey: ep.SecretAccessKey})
		if err != nil {
			t.Fatalf("objstore.New: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	return newStore, strings.TrimSuffix(s3test.Prefix(t), "/")
}

// The Pebble backend's incremental checkpoints through a real server.
func TestS3PebbleRoundTripOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	newStore, prefix := s3Store(t)
	pebbleRoundTrip(t, newStore(), prefix)
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// Markers, Adopt, Sweep and DiscardAll on a real server.
func TestS3LifecycleOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	newStore, prefix := s3Store(t)
	st := newStore()
	s := openPrefix(t, st, prefix, 1, 2, nil)
	root := prefix + "/wc/"
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp"}, reuse: []string{"a"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	write(t, s, chk{id: 3, private: map[string]string{"p": "lost"}}) // never completed
	r := openPrefix(t, newStore(), prefix, 1, 2, nil)
	removed, err := r.Sweep(ctxT(t))
	if err != nil || len(removed) != 1 || removed[0].ID != 3 {
		t.Fatalf("Sweep = %+v, %v; want checkpoint 3", removed, err)
	}
	sp, err := r.Load(ctxT(t), "savepoint-2")
	if err != nil || !sp.Committed {
		t.Fatalf("Load(savepoint-2) = %+v, %v; want committed", sp, err)
	}
	md, err := r.Adopt(ctxT(t), sp, 4)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if l := mustLatest(t, openPrefix(t, newStore(), prefix, 1, 2, nil)); l.CheckpointID != 4 || !l.Committed || l.RestoredFrom != sp.Path {
		t.Fatalf("Latest after Adopt = %+v", l)
	}
	if got := restore(t, r, md); got["p"] != "sp" || got["a"] != "A" {
		t.Fatalf("adopted checkpoint restores %v", got)
	}
	if err := r.DiscardAll(); err != nil {
		t.Fatalf("DiscardAll: %v", err)
	}
	rec, err := openPrefix(t, newStore(), prefix, 1, 2, nil).Discarded(ctxT(t))
	if err != nil || rec.Through != 4 || rec.Newest == nil {
		t.Fatalf("Discarded = %+v, %v", rec, err)
	}
	if got := append(keys(t, st, root+"data/chk-"), keys(t, st, root+"shared/")...); len(got) != 0 {
		t.Fatalf("after DiscardAll: %v", got)
	}
	if l := mustLatest(t, r); l.CheckpointID != 2 || !l.Savepoint {
		t.Fatalf("Latest after DiscardAll = %+v; want savepoint 2", l)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// On a real S3 server (versitygw, or ONCEFLOW_S3_ENDPOINT's): checkpoints
// with shared files are written, subsumed, reopened and restored; a writer
// of a lower epoch is refused by the server's create-only put when the new
// owner published the same id first, and by the listing when its id is
// still free.
func TestS3CheckpointsOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	newStore, prefix := s3Store(t)
	t.Logf("server ready after %s", time.Since(start).Round(time.Millisecond))
	openOn := func(st objstore.Store, epoch int64) *s3store.Storage {
		s, err := s3store.New(ctxT(t), st, s3store.Options{Prefix: prefix, Job: "wc", Epoch: epoch, Retained: 2, Logf: t.Logf})
		if err != nil {
			t.Fatalf("New(epoch %d): %v", epoch, err)
		}
		return s
	}
	root := prefix + "/wc/"
	phase := time.Now()

	st := newStore()
	s := openOn(st, 1)
	complete(t, s, chk{id: 1, private: map[string]string{"MANIFEST": "m1"}, shared: map[string]string{"r-1.sst": "one", "r-2.sst": "two"}})
	complete(t, s, chk{id: 2, private: map[string]string{"MANIFEST": "m2"}, shared: map[string]string{"r-3.sst": "three"}, reuse: []string{"r-1.sst"}})
	complete(t, s, chk{id: 3, private: map[string]string{"MANIFEST": "m3"}, reuse: []string{"r-1.sst", "r-3.sst"}})
	shared := strings.Join(keys(t, st, root+"shared/"), " ")
	if strings.Contains(shared, "r-2.sst") || !strings.Contains(shared, "r-1.sst") || !strings.Contains(shared, "r-3.sst") {
		t.Fatalf("after checkpoint 3, shared objects are %s; want r-1 and r-3 only", shared)
	}
	if got := keys(t, st, root+"data/chk-1/"); len(got) != 0 {
		t.Fatalf("subsumed checkpoint 1 left %v", got)
	}
	t.Logf("3 checkpoints written in %s", time.Since(phase).Round(time.Millisecond))

	// Reopened on a new client, with an old writer (epoch 1) still alive.
	phase = time.Now()
	oldHook := &hookStore{Store: newStore()}
	old := openOn(oldHook, 1)
	oldMD := write(t, old, chk{id: 4, private: map[string]string{"MANIFEST": "zombie"}, reuse: []string{"r-1.sst"}})
	zombieMD := write(t, old, chk{id: 9, private: map[string]string{"MANIFEST": "zombie"}})
	owner := openOn(newStore(), 2)
	md := mustLatest(t, owner)
	got := restore(t, owner, md)
	if md.CheckpointID != 3 || got["MANIFEST"] != "m3" || got["r-1.sst"] != "one" || got["r-3.sst"] != "three" {
		t.Fatalf("reopened: checkpoint %d restores %v", md.CheckpointID, got)
	}
	t.Logf("reopened and restored in %s", time.Since(phase).Round(time.Millisecond))

	// The new owner (epoch 2) publishes checkpoint 4 after the old
	// writer listed the manifests and before it puts its own: the old
	// writer's create-only put of the same id is refused by the server,
	// and the manifest it reads back carries epoch 2.
	phase = time.Now()
	oldHook.before = func(string) {
		oldHook.before = nil
		complete(t, owner, chk{id: 4, private: map[string]string{"MANIFEST": "m4"}, reuse: []string{"r-1.sst", "r-3.sst"}})
	}
	err := old.Complete(ctxT(t), oldMD)
	var fe *s3store.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, objstore.ErrExists) || fe.Epoch != 1 || fe.Newer != 2 || !strings.Contains(err.Error(), root+"manifest/chk-4") {
		t.Fatalf("old writer's Complete of checkpoint 4 = %v; want ErrFenced naming %smanifest/chk-4 and epochs 1 and 2", err, root)
	}
	if err := old.Complete(ctxT(t), zombieMD); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("old writer's Complete of free checkpoint 9 = %v; want ErrFenced", err)
	}
	if got := keys(t, st, root+"manifest/chk-9"); len(got) != 0 {
		t.Fatalf("the fenced writer published %v", got)
	}
	md = mustLatest(t, openOn(newStore(), 2))
	if got := restore(t, owner, md); md.CheckpointID != 4 || got["MANIFEST"] != "m4" || got["r-3.sst"] != "three" {
		t.Fatalf("after the fence: checkpoint %d restores %v; want the new owner's 4", md.CheckpointID, got)
	}
	// A savepoint is self-contained: it outlives the checkpoints whose
	// shared files it copied.
	complete(t, owner, chk{id: 10, savepoint: true, private: map[string]string{"MANIFEST": "sp"}, reuse: []string{"r-1.sst"}})
	complete(t, owner, chk{id: 11, private: map[string]string{"MANIFEST": "m11"}, shared: map[string]string{"r-5.sst": "five"}})
	complete(t, owner, chk{id: 12, private: map[string]string{"MANIFEST": "m12"}, reuse: []string{"r-5.sst"}})
	if shared := strings.Join(keys(t, st, root+"shared/"), " "); strings.Contains(shared, "r-1.sst") || strings.Contains(shared, "r-3.sst") {
		t.Fatalf("shared objects no retained checkpoint names stay: %s", shared)
	}
	md, err = openOn(newStore(), 2).Load(ctxT(t), "savepoint-10")
	if err != nil {
		t.Fatalf("Load(savepoint-10): %v", err)
	}
	if got := restore(t, owner, md); got["MANIFEST"] != "sp" || got["r-1.sst"] != "one" {
		t.Fatalf("savepoint 10 restores %v", got)
	}
	t.Logf("fencing and savepoint shown in %s; whole test %s", time.Since(phase).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// Claim on a real server: the new owner publishes the next id, adopting
// the newest checkpoint, between the old writer's listing and its put;
// the server refuses the old writer's create-only put of that id, and it
// is fenced. A job without checkpoints is claimed empty.
func TestS3ClaimOnARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	newStore, prefix := s3Store(t)
	root := prefix + "/wc/"
	hook := &hookStore{Store: newStore()}
	old := openPrefix(t, hook, prefix, 1, 2, nil)
	complete(t, old, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	if err := old.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	zmd := write(t, old, chk{id: 2, private: map[string]string{"p": "zombie"}, reuse: []string{"a"}})
	probe := openPrefix(t, newStore(), prefix, 1, 2, nil)
	owner := openPrefix(t, newStore(), prefix, probe.NewestEpoch()+1, 2, nil)
	var res *s3store.ClaimResult
	hook.before = func(string) {
		hook.before = nil
		var err error
		if res, err = owner.Claim(ctxT(t)); err != nil {
			t.Fatalf("Claim: %v", err)
		}
	}
	err := old.Complete(ctxT(t), zmd)
	var fe *s3store.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, objstore.ErrExists) || fe.Epoch != 1 || fe.Newer != 2 || !strings.Contains(err.Error(), root+"manifest/chk-2") {
		t.Fatalf("the old writer's Complete of checkpoint 2 after the claim = %v; want ErrFenced by the server's refusal", err)
	}
	if res == nil || res.Empty() || res.From.CheckpointID != 1 || res.Metadata.CheckpointID != 2 || !res.Metadata.Committed {
		t.Fatalf("claim = %+v", res)
	}
	l := mustLatest(t, openPrefix(t, newStore(), prefix, 2, 2, nil))
	if got := restore(t, owner, l); l.CheckpointID != 2 || !l.Committed || got["p"] != "1" || got["a"] != "A" {
		t.Fatalf("Latest after the claim: checkpoint %d (committed %t) restores %v; want checkpoint 1's state as committed 2", l.CheckpointID, l.Committed, got)
	}

	empty := openPrefix(t, newStore(), prefix+"-empty", 1, 2, nil)
	if res, err := empty.Claim(ctxT(t)); err != nil || !res.Empty() || res.Metadata.CheckpointID != 1 {
		t.Fatalf("Claim of a job without checkpoints = %+v, %v", res, err)
	}
	if l := mustLatest(t, openPrefix(t, newStore(), prefix+"-empty", 1, 2, nil)); !l.Claim || l.CheckpointID != 1 {
		t.Fatalf("Latest after an empty claim = %+v", l)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
