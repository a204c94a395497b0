package s3store_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// claimer opens the storage of a new owner as the processor does: a
// probe reads the newest epoch, and the owner takes the next one.
func claimer(t *testing.T, st objstore.Store, retained int, clk *fakeClock) *s3store.Storage {
	t.Helper()
	probe := open(t, st, 1, retained, nil)
	return open(t, st, probe.NewestEpoch()+1, retained, clk)
}

func mustClaim(t *testing.T, s *s3store.Storage) *s3store.ClaimResult {
	t.Helper()
	res, err := s.Claim(ctxT(t))
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return res
}

func inlineOperatorState(t *testing.T, md *checkpoint.Metadata) string {
	t.Helper()
	if len(md.Operators) != 1 || md.Operators[0].Subtasks[0].Operator == nil {
		t.Fatalf("checkpoint %d has operators %+v", md.CheckpointID, md.Operators)
	}
	return string(md.Operators[0].Subtasks[0].Operator.Inline)
}

// The new owner of a job with checkpoints claims the newest one at the
// next id under its epoch: the claim restores the same state and is
// committed as its source was. A zombie of the old epoch, opened before
// the claim, that lists the manifests before the claim and puts its own
// after it, is refused by the create-only put and fenced; its objects
// are named by no manifest and go after the grace period.
func TestClaimAdoptsTheNewestCheckpointAndFencesAZombie(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	hook := &hookStore{Store: mem}
	old := open(t, hook, 1, 2, clk)
	complete(t, old, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, old, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a"}})
	if err := old.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	zmd := write(t, old, chk{id: 3, private: map[string]string{"p": "zombie"}, shared: map[string]string{"z": "Z"}})

	owner := claimer(t, mem, 2, clk)
	var res *s3store.ClaimResult
	hook.before = func(string) {
		hook.before = nil
		res = mustClaim(t, owner)
	}
	err := old.Complete(ctxT(t), zmd)
	var fe *s3store.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, objstore.ErrExists) || fe.Epoch != 1 || fe.Newer != 2 || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-3") {
		t.Fatalf("the zombie's Complete of checkpoint 3 after the claim = %v; want ErrFenced naming manifest/chk-3 and epochs 1 and 2", err)
	}
	if res == nil {
		t.Fatal("the claim did not run")
	}
	md := res.Metadata
	if res.Empty() || res.Lost != 0 || res.From == nil || res.From.CheckpointID != 2 || md.CheckpointID != 3 || md.Claim ||
		md.RestoredFrom != "ckpt/wc/manifest/chk-2" || !md.Committed || md.Path != "ckpt/wc/manifest/chk-3" {
		t.Fatalf("claimed %+v from %+v (lost %d); want checkpoint 2 claimed as committed checkpoint 3", md, res.From, res.Lost)
	}

	r := open(t, mem, 2, 2, clk)
	if e := r.NewestEpoch(); e != 2 {
		t.Fatalf("newest epoch after the claim = %d, want 2", e)
	}
	latest := mustLatest(t, r)
	if latest.CheckpointID != 3 || !latest.Committed || latest.Claim || inlineOperatorState(t, latest) != "offsets" {
		t.Fatalf("Latest after the claim = %+v", latest)
	}
	if got := restore(t, r, latest); len(got) != 2 || got["p"] != "2" || got["a"] != "A" {
		t.Fatalf("the claim restores %v; want checkpoint 2's state", got)
	}
	// The zombie is fenced for good and publishes nothing.
	if _, err := old.Writer(4, "op/1", 0); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("the zombie's Writer after the fence = %v", err)
	}
	// Checkpoint 1, beyond the 2 retained, goes at the owner's first
	// completion (a claim deletes nothing).
	if got := keys(t, mem, "ckpt/wc/manifest/"); strings.Join(got, " ") != "ckpt/wc/manifest/chk-1 ckpt/wc/manifest/chk-2 ckpt/wc/manifest/chk-2.committed ckpt/wc/manifest/chk-3 ckpt/wc/manifest/chk-3.committed" {
		t.Fatalf("manifests: %v", got)
	}
	_ = latest.MapFileRefs(func(f checkpoint.FileRef) (checkpoint.FileRef, error) {
		if strings.HasPrefix(f.Path, "data/chk-3/e1-") || strings.HasPrefix(f.Path, "shared/e1-") && strings.HasSuffix(f.Path, "-3/z") {
			t.Errorf("the claim names the zombie's %s", f.Path)
		}
		return f, nil
	})
	// Its uploads are orphans: gone after the grace period.
	clk.Advance(s3store.DefaultOrphanGrace + 1)
	complete(t, owner, chk{id: 4, private: map[string]string{"p": "4"}, reuse: []string{"a"}})
	if got := keys(t, mem, "ckpt/wc/manifest/"); strings.Join(got, " ") != "ckpt/wc/manifest/chk-3 ckpt/wc/manifest/chk-3.committed ckpt/wc/manifest/chk-4" {
		t.Fatalf("manifests after the owner's first completion: %v", got)
	}
	for _, k := range append(keys(t, mem, "ckpt/wc/data/"), keys(t, mem, "ckpt/wc/shared/")...) {
		if strings.Contains(k, "/e1-") && (strings.Contains(k, "data/chk-3/") || strings.HasSuffix(k, "/z")) {
			t.Errorf("the zombie's %s stays after the grace period", k)
		}
	}
	if got := restore(t, owner, mustLatest(t, owner)); got["p"] != "4" || got["a"] != "A" {
		t.Fatalf("checkpoint 4 restores %v", got)
	}
}

// A job without a checkpoint is claimed with an empty checkpoint at id 1:
// Latest returns it (Claim set, no operators). The next owner claims the
// group again before any checkpoint: an empty claim again, above, and the
// first owner, now a zombie, is fenced at its first Complete. The claims
// are retained and removed like any checkpoint once real ones follow.
func TestClaimOfAJobWithoutCheckpoints(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	first := claimer(t, mem, 1, nil)
	res := mustClaim(t, first)
	md := res.Metadata
	if !res.Empty() || res.From != nil || md.CheckpointID != 1 || !md.Claim || len(md.Operators) != 0 || md.Committed || md.Job != "wc" {
		t.Fatalf("claim of an empty job = %+v from %+v", md, res.From)
	}
	latest := mustLatest(t, open(t, mem, 1, 1, nil))
	if latest.CheckpointID != 1 || !latest.Claim || len(latest.Operators) != 0 || latest.Path != "ckpt/wc/manifest/chk-1" {
		t.Fatalf("Latest after an empty claim = %+v", latest)
	}
	zmd := write(t, first, chk{id: 2, private: map[string]string{"p": "zombie"}})

	second := claimer(t, mem, 1, nil)
	again := mustClaim(t, second)
	if !again.Empty() || again.From != nil || again.Metadata.CheckpointID != 2 || again.Metadata.RestoredFrom != "" {
		t.Fatalf("second claim = %+v from %+v; want empty checkpoint 2", again.Metadata, again.From)
	}
	if err := first.Complete(ctxT(t), zmd); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("the first owner's Complete of checkpoint 2 = %v; want ErrFenced", err)
	}
	if l := mustLatest(t, open(t, mem, 2, 1, nil)); l.CheckpointID != 2 || !l.Claim {
		t.Fatalf("Latest after the second claim = %+v", l)
	}
	complete(t, second, chk{id: 3, private: map[string]string{"p": "3"}})
	infos, err := second.List(ctxT(t))
	if err != nil || len(infos) != 1 || infos[0].ID != 3 {
		t.Fatalf("after checkpoint 3 (1 retained) the storage lists %+v, %v", infos, err)
	}
}

// Two processes that read the same newest epoch claim with the same
// epoch: one publishes the id, the other's claim fails naming it and
// saying how to claim again.
func TestClaimOfTheSameEpochTwiceAdmitsOne(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	complete(t, open(t, mem, 1, 2, nil), chk{id: 1, private: map[string]string{"p": "1"}})
	hook := &hookStore{Store: mem}
	a, b := claimer(t, mem, 2, nil), claimer(t, hook, 2, nil)
	hook.before = func(key string) {
		if key == "ckpt/wc/manifest/chk-2" {
			hook.before = nil
			mustClaim(t, a)
		}
	}
	_, err := b.Claim(ctxT(t))
	if err == nil || !errors.Is(err, objstore.ErrExists) || !strings.Contains(err.Error(), "another writer of this epoch, 2, claimed ckpt/wc/manifest/chk-2 first") {
		t.Fatalf("the second claim of epoch 2 = %v; want a refusal naming the first", err)
	}
	if l := mustLatest(t, open(t, mem, 2, 2, nil)); l.CheckpointID != 2 || l.RestoredFrom != "ckpt/wc/manifest/chk-1" {
		t.Fatalf("Latest = %+v; want the first claim", l)
	}
}

// A zombie of a lower epoch publishes the claimed id between the claim's
// listing and its put (after the claim put the committed marker of its
// source): the claim's put is refused, it deletes the marker it left
// beside the zombie's manifest and its copies, and claims the zombie's
// checkpoint, complete and not committed, at the next id.
func TestClaimLosesAnIdToAZombieAndClaimsItsCheckpoint(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	zombie := open(t, mem, 1, 2, nil)
	complete(t, zombie, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	if err := zombie.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	zmd := write(t, zombie, chk{id: 2, private: map[string]string{"p": "zombie"}, reuse: []string{"a"}})
	hook := &hookStore{Store: mem}
	owner := claimer(t, hook, 2, nil)
	var puts []string
	hook.before = func(key string) {
		puts = append(puts, key)
		if key == "ckpt/wc/manifest/chk-2" {
			hook.before = nil
			if err := zombie.Complete(ctxT(t), zmd); err != nil {
				t.Fatalf("the zombie's Complete: %v", err)
			}
		}
	}
	res := mustClaim(t, owner)
	if strings.Join(puts, " ") != "ckpt/wc/manifest/chk-2.committed ckpt/wc/manifest/chk-2" {
		t.Fatalf("the claim put %v before the hook; want the marker, then the manifest", puts)
	}
	md := res.Metadata
	if res.Lost != 1 || res.Empty() || res.From == nil || res.From.CheckpointID != 2 || md.CheckpointID != 3 ||
		md.RestoredFrom != "ckpt/wc/manifest/chk-2" || md.Committed {
		t.Fatalf("claimed %+v from %+v, lost %d; want the zombie's checkpoint 2 as uncommitted 3, one id lost", md, res.From, res.Lost)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/chk-2.committed"); len(got) != 0 {
		t.Fatalf("the claim's marker stays beside the zombie's checkpoint: %v", got)
	}
	for _, k := range keys(t, mem, "ckpt/wc/data/chk-2/") {
		if strings.HasPrefix(k, "ckpt/wc/data/chk-2/e2-") {
			t.Errorf("the lost claim's copy %s stays", k)
		}
	}
	r := open(t, mem, 2, 2, nil)
	latest := mustLatest(t, r)
	if latest.CheckpointID != 3 || latest.Committed {
		t.Fatalf("Latest = %+v; want uncommitted 3", latest)
	}
	if got := restore(t, r, latest); got["p"] != "zombie" || got["a"] != "A" {
		t.Fatalf("the claim restores %v; want the zombie's checkpoint 2", got)
	}
	if _, err := zombie.Writer(4, "op/1", 0); err != nil {
		t.Fatal(err) // not fenced yet: it has seen nothing
	}
	if err := zombie.Complete(ctxT(t), write(t, zombie, chk{id: 4, private: map[string]string{"p": "z4"}})); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("the zombie's next Complete = %v; want ErrFenced", err)
	}
}

// A committed marker that a claim which lost its id to another writer
// left behind (it crashed before deleting it) says "adopted" under an
// epoch other than its manifest's: the next claim deletes it and claims
// the checkpoint as not committed, so that its transactions get
// committed.
func TestClaimDropsAStrayMarker(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	old := open(t, mem, 1, 2, nil)
	complete(t, old, chk{id: 1, private: map[string]string{"p": "1"}})
	if err := old.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	complete(t, old, chk{id: 2, private: map[string]string{"p": "2"}})
	stray := "committed 2 (adopted from ckpt/wc/manifest/chk-1) epoch=2\n"
	if _, err := mem.Put(ctxT(t), "ckpt/wc/manifest/chk-2.committed", strings.NewReader(stray), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	res := mustClaim(t, claimer(t, mem, 2, nil))
	if res.Metadata.CheckpointID != 3 || res.Metadata.Committed || res.From.CheckpointID != 2 || res.From.Committed {
		t.Fatalf("claimed %+v from %+v; want checkpoint 2, not committed, as 3", res.Metadata, res.From)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/chk-2.committed"); len(got) != 0 {
		t.Fatalf("the stray marker stays: %v", got)
	}
	// A marker MarkCommitted wrote, or Adopt under the manifest's own
	// epoch, is believed.
	mem2 := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem2, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	if err := s.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	c1, err := s.Load(ctxT(t), "chk-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Adopt(ctxT(t), c1, 2); err != nil {
		t.Fatal(err)
	}
	res = mustClaim(t, claimer(t, mem2, 2, nil))
	if !res.Metadata.Committed || res.From.CheckpointID != 2 {
		t.Fatalf("claim of an adopted committed checkpoint = %+v from %+v; want committed", res.Metadata, res.From)
	}
}

// A manifest of a higher epoch fences the claim: found by listing, or
// published at the claimed id between the claim's listing and its put.
func TestClaimMeetsAHigherEpoch(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	complete(t, open(t, mem, 1, 2, nil), chk{id: 1, private: map[string]string{"p": "1"}})
	slow := open(t, mem, 2, 2, nil)
	complete(t, open(t, mem, 3, 2, nil), chk{id: 2, private: map[string]string{"p": "2"}})
	_, err := slow.Claim(ctxT(t))
	var fe *s3store.FencedError
	if !errors.As(err, &fe) || fe.Epoch != 2 || fe.Newer != 3 || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-2") {
		t.Fatalf("Claim of epoch 2 after epoch 3 published = %v; want ErrFenced naming chk-2", err)
	}

	if err := open(t, mem, 3, 2, nil).MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	hook := &hookStore{Store: mem}
	racer := open(t, hook, 4, 2, nil)
	hook.before = func(key string) {
		if key == "ckpt/wc/manifest/chk-3" {
			hook.before = nil
			complete(t, open(t, mem, 5, 2, nil), chk{id: 3, private: map[string]string{"p": "3"}})
		}
	}
	_, err = racer.Claim(ctxT(t))
	if !errors.As(err, &fe) || !errors.Is(err, objstore.ErrExists) || fe.Epoch != 4 || fe.Newer != 5 || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-3") {
		t.Fatalf("Claim that lost its id to epoch 5 = %v; want ErrFenced by the refused put of chk-3", err)
	}
	if _, err := racer.Claim(ctxT(t)); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("a fenced Storage claims again: %v", err)
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-3/"); len(got) != 1 {
		t.Fatalf("data of checkpoint 3: %v; want the epoch-5 writer's only", got)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/chk-3.committed"); len(got) != 0 {
		t.Fatalf("the fenced claim's marker stays beside the epoch-5 checkpoint: %v", got)
	}
}

// A writer of a lower epoch that publishes every id the claim tries makes
// it give up after a bounded number of tries, naming the last id lost; it
// publishes nothing of its own.
func TestClaimGivesUpAfterLosingEveryTry(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	zombie := open(t, mem, 1, 10, nil)
	complete(t, zombie, chk{id: 1, private: map[string]string{"p": "1"}})
	hook := &hookStore{Store: mem}
	owner := claimer(t, hook, 10, nil)
	next := int64(2)
	hook.before = func(key string) {
		if key == "ckpt/wc/manifest/chk-"+strconv.FormatInt(next, 10) {
			complete(t, zombie, chk{id: next, private: map[string]string{"p": "z"}})
			next++
		}
	}
	_, err := owner.Claim(ctxT(t))
	if err == nil || errors.Is(err, s3store.ErrFenced) || !strings.Contains(err.Error(), "gave up after 5 tries") || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-6") {
		t.Fatalf("Claim losing every id = %v; want it to give up naming chk-6", err)
	}
	for _, k := range append(keys(t, mem, "ckpt/wc/data/"), keys(t, mem, "ckpt/wc/manifest/")...) {
		if strings.Contains(k, "/e2-") {
			t.Errorf("the failed claim left %s", k)
		}
	}
	if e := open(t, mem, 1, 10, nil).NewestEpoch(); e != 1 {
		t.Fatalf("newest epoch after the failed claim = %d", e)
	}
}

// A damaged newest checkpoint, or checkpoints DiscardAll deleted above the
// newest one left, are not claimed over: ErrNotClaimable, nothing
// published. Resuming on purpose (Adopt above them) makes the job
// claimable again.
func TestClaimRefusesADamagedNewestOrDiscardedCheckpoints(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 3, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	if _, err := mem.Put(ctxT(t), "ckpt/wc/manifest/chk-2", strings.NewReader("garbage"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := claimer(t, mem, 3, nil).Claim(ctxT(t))
	if !errors.Is(err, s3store.ErrNotClaimable) || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-2") || !strings.Contains(err.Error(), "ckpt/wc/manifest/chk-1") {
		t.Fatalf("Claim over a damaged newest checkpoint = %v; want ErrNotClaimable naming chk-2 and chk-1", err)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/"); len(got) != 2 {
		t.Fatalf("manifests after the refusal: %v", got)
	}

	mem = objstore.NewMemory(objstore.MemoryOptions{})
	s = open(t, mem, 1, 3, nil)
	complete(t, s, chk{id: 1, savepoint: true, private: map[string]string{"p": "sp"}})
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}})
	if err := s.DiscardAll(); err != nil {
		t.Fatal(err)
	}
	owner := claimer(t, mem, 3, nil)
	_, err = owner.Claim(ctxT(t))
	if !errors.Is(err, s3store.ErrNotClaimable) || !strings.Contains(err.Error(), "up to 2") || !strings.Contains(err.Error(), "ckpt/wc/discarded") {
		t.Fatalf("Claim after DiscardAll = %v; want ErrNotClaimable naming what was deleted", err)
	}
	sp, err := owner.Load(ctxT(t), "savepoint-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Adopt(ctxT(t), sp, 3); err != nil {
		t.Fatal(err)
	}
	if res := mustClaim(t, owner); res.Metadata.CheckpointID != 4 || res.From.CheckpointID != 3 {
		t.Fatalf("claim after resuming on purpose = %+v from %+v", res.Metadata, res.From)
	}
}
