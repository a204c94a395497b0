package s3store_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// A moved partition group runs nothing before its new owner opened the
// group's storage (twice: a probe for the epoch, then the owner's),
// claimed it, and the engine read its restore point; every round trip to
// the store on that path delays the takeover (issue 16). These tests pin
// the round trips down.

// gatedStore holds every read of a manifest until want of them are in
// flight at once (or holdAtMost passed, when they never are), and
// records the most it saw at once.
type gatedStore struct {
	objstore.Store
	want int

	mu             sync.Mutex
	inFlight, most int
	once           sync.Once
	all            chan struct{}
}

const holdAtMost = 2 * time.Second

func (g *gatedStore) Get(ctx context.Context, key string, opts objstore.GetOptions) (io.ReadCloser, objstore.Info, error) {
	if strings.Contains(key, "/manifest/") {
		g.mu.Lock()
		g.inFlight++
		g.most = max(g.most, g.inFlight)
		if g.inFlight == g.want {
			g.once.Do(func() { close(g.all) })
		}
		g.mu.Unlock()
		select {
		case <-g.all:
		case <-time.After(holdAtMost):
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
	}
	return g.Store.Get(ctx, key, opts)
}

// Opening a job's storage reads its manifests side by side: the store
// holds each read until all four are in flight (one at a time they never
// are, and each waits holdAtMost).
func TestOpenReadsTheManifestsSideBySide(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 3, nil)
	for id := int64(1); id <= 4; id++ {
		complete(t, s, chk{id: id, private: map[string]string{"p": "x"}})
	}
	complete(t, s, chk{id: 5, savepoint: true, private: map[string]string{"p": "sp"}})
	// chk-2, chk-3, chk-4 (three retained) and savepoint-5.
	gated := &gatedStore{Store: mem, want: 4, all: make(chan struct{})}
	start := time.Now()
	r := open(t, gated, 2, 3, nil)
	took := time.Since(start)
	gated.mu.Lock()
	most := gated.most
	gated.mu.Unlock()
	if most != 4 {
		t.Fatalf("opening read its 4 manifests at most %d at a time (took %s), want all 4 at once", most, took.Round(time.Millisecond))
	}
	if md := mustLatest(t, r); md.CheckpointID != 5 || !md.Savepoint {
		t.Fatalf("Latest after opening = %d (savepoint %t), want savepoint 5", md.CheckpointID, md.Savepoint)
	}
}

// A claim lists the job's manifests once and deletes nothing: what it
// supersedes goes at the owner's first completion, whose collection
// would list and delete anyway. The claim itself is whole: Latest
// returns it, and the next completion leaves only the retained.
func TestClaimListsOnceAndDeletesNothing(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	old := open(t, mem, 1, 1, clk)
	complete(t, old, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, old, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a"}})

	faulty := objstore.NewFaulty(mem)
	owner := claimer(t, faulty, 1, clk)
	lists, deletes := faulty.Calls(objstore.OpList), faulty.Calls(objstore.OpDelete)
	res := mustClaim(t, owner)
	if n, d := faulty.Calls(objstore.OpList)-lists, faulty.Calls(objstore.OpDelete)-deletes; n != 1 || d != 0 {
		t.Fatalf("the claim listed %d times and deleted %d objects, want one listing and no deletion", n, d)
	}
	if res.Metadata.CheckpointID != 3 || res.From == nil || res.From.CheckpointID != 2 {
		t.Fatalf("claimed %d from %+v, want checkpoint 2 as 3", res.Metadata.CheckpointID, res.From)
	}
	if got := restore(t, owner, mustLatest(t, owner)); got["p"] != "2" || got["a"] != "A" {
		t.Fatalf("the claim restores %v", got)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/"); strings.Join(got, " ") != "ckpt/wc/manifest/chk-2 ckpt/wc/manifest/chk-3" {
		t.Fatalf("manifests after the claim: %v, want chk-2 (superseded, not deleted yet) and chk-3", got)
	}
	complete(t, owner, chk{id: 4, private: map[string]string{"p": "4"}, reuse: []string{"a"}})
	if got := keys(t, mem, "ckpt/wc/manifest/"); strings.Join(got, " ") != "ckpt/wc/manifest/chk-4" {
		t.Fatalf("manifests after the owner's first completion: %v, want chk-4 only (1 retained)", got)
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-2/"); len(got) != 0 {
		t.Fatalf("checkpoint 2's objects after the owner's first completion: %v, want none", got)
	}
}

// A completion lists the manifests twice (before its put, and before its
// deletions); the data listings that find orphans (objects no manifest
// names, deleted once older than the grace period) run at most once per
// quarter of the grace period, and not at the completions right after
// the Storage opened: the first checkpoint of a group taken over is on
// the takeover's path, and a scan for objects an hour old at every
// checkpoint (every 250 ms in the distributed tests) mostly finds none.
func TestCompletionsScanForOrphansOncePerQuarterGrace(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	faulty := objstore.NewFaulty(mem)
	s := open(t, faulty, 1, 1, clk)
	lists := func(what string, want int, do func()) {
		t.Helper()
		before := faulty.Calls(objstore.OpList)
		do()
		if got := faulty.Calls(objstore.OpList) - before; got != want {
			t.Fatalf("%s listed %d times, want %d", what, got, want)
		}
	}
	lists("the first completion after opening", 2, func() { complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}}) })
	clk.Advance(s3store.DefaultOrphanGrace/4 - time.Second)
	lists("a completion within a quarter of the grace period", 2, func() { complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}}) })
	clk.Advance(time.Second)
	lists("the completion a quarter of the grace period after opening", 4, func() { complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}}) })
	lists("the next completion", 2, func() { complete(t, s, chk{id: 4, private: map[string]string{"p": "4"}}) })
}
