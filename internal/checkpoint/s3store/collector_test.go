package s3store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// heldDeletes holds every Delete of a key hold accepts until the test
// closes gate, and reports each such Delete on held as it starts. Every
// List while the gate is shut is reported on early, when set (without
// blocking): the collector lists nothing while its deletions are held,
// so such a List is someone else's running beside them.
type heldDeletes struct {
	objstore.Store
	hold  func(key string) bool
	held  chan string
	gate  chan struct{}
	early chan string
}

func (h *heldDeletes) List(ctx context.Context, prefix string) ([]objstore.Info, error) {
	select {
	case <-h.gate:
	default:
		select {
		case h.early <- prefix:
		default:
		}
	}
	return h.Store.List(ctx, prefix)
}

func (h *heldDeletes) Delete(ctx context.Context, key string) error {
	if h.hold(key) {
		h.held <- key
		<-h.gate
	}
	return h.Store.Delete(ctx, key)
}

// With CollectInBackground a completion does not wait for the deletions
// it allows: Complete returns while a subsumed checkpoint's objects are
// still being deleted, and so does the next one. Sweep waits for the
// deletions in progress; in the end the subsumed checkpoints and the
// shared objects no retained checkpoint names are gone, and what the
// retained one names stays.
func TestCollectInBackground(t *testing.T) {
	hd := &heldDeletes{Store: objstore.NewMemory(objstore.MemoryOptions{}), held: make(chan string, 64), gate: make(chan struct{}),
		early: make(chan string, 1), hold: func(key string) bool { return strings.Contains(key, "/data/chk-1/") }}
	s, err := s3store.New(ctxT(t), hd, s3store.Options{Prefix: "ckpt", Job: "wc", Epoch: 1, Retained: 1, Logf: t.Logf, CollectInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A", "b": "B"}})
	returns := func(what string, fn func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn()
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s waited for checkpoint 1's deletions", what)
		}
	}
	returns("Complete(2)", func() { complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a"}}) })
	select {
	case <-hd.held: // the collector is deleting checkpoint 1's data
	case <-time.After(20 * time.Second):
		t.Fatal("checkpoint 1's objects were never deleted")
	}
	returns("Complete(3)", func() { complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, reuse: []string{"a"}}) })
	select {
	case <-hd.early: // Complete(3)'s own look at the manifests
	default:
	}
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		// Run alongside the deletions, Sweep would take checkpoint 1's
		// data, whose manifest is gone, for an incomplete checkpoint.
		removed, err := s.Sweep(ctxT(t))
		if err != nil || len(removed) != 0 {
			t.Errorf("Sweep = %v, %v; want nothing to sweep once the deletions ended", removed, err)
		}
	}()
	// A Sweep that did not wait would list the store now. A Sweep that
	// waits lists nothing until the gate opens, however long this
	// select waits: the bound only gives a wrong one the time to show.
	select {
	case prefix := <-hd.early:
		t.Fatalf("Sweep listed %s while checkpoint 1's deletions were still running", prefix)
	case <-swept:
		t.Fatal("Sweep returned while checkpoint 1's deletions were still running")
	case <-time.After(300 * time.Millisecond):
	}
	close(hd.gate)
	<-swept
	s.WaitCollectorForTest()
	got := keys(t, hd, "ckpt/wc/")
	var data, shared, manifests []string
	for _, k := range got {
		switch {
		case strings.Contains(k, "/data/"):
			data = append(data, k)
		case strings.Contains(k, "/shared/"):
			shared = append(shared, k)
		case strings.Contains(k, "/manifest/"):
			manifests = append(manifests, k)
		}
	}
	if len(manifests) != 1 || !strings.HasSuffix(manifests[0], "chk-3") || len(data) != 1 || !strings.Contains(data[0], "/chk-3/") ||
		len(shared) != 1 || !strings.HasSuffix(shared[0], "/a") {
		t.Fatalf("left in the store: %v; want checkpoint 3's manifest and data and the shared object a", got)
	}
	r := open(t, hd, 2, 1, nil)
	if got := restore(t, r, mustLatest(t, r)); got["p"] != "3" || got["a"] != "A" || len(got) != 2 {
		t.Fatalf("checkpoint 3 restores %v", got)
	}
}
