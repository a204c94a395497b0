package s3store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/onceflow/onceflow/internal/objstore"
)

// List and Latest may be called at any time beside the completions (the
// processor's API lists checkpoints while the job runs): under -race,
// neither reads what the other's refresh of the cache writes.
func TestListAndLatestWhileCompleting(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
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
	for id := int64(1); id <= 20; id++ {
		complete(t, s, chk{id: id, savepoint: id%4 == 0, private: map[string]string{"p": fmt.Sprint(id)}})
		if id%4 == 0 {
			if err := s.MarkCommitted(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		if md := mustLatest(t, s); md.CheckpointID != id || md.Committed != (id%4 == 0) {
			t.Fatalf("Latest after %d: %d (committed %t)", id, md.CheckpointID, md.Committed)
		}
	}
	close(stop)
	wg.Wait()
}

// listHook runs after before every listing of a manifest/ prefix.
type listHook struct {
	objstore.Store
	mu    sync.Mutex
	after func()
}

func (h *listHook) List(ctx context.Context, prefix string) ([]objstore.Info, error) {
	out, err := h.Store.List(ctx, prefix)
	h.mu.Lock()
	after := h.after
	h.mu.Unlock()
	if after != nil && strings.HasSuffix(prefix, "/manifest/") {
		after()
	}
	return out, err
}

// A List whose listing was taken before a checkpoint completed does not
// make the Storage forget that checkpoint when it ends: the checkpoint's
// shared files are still offered (HasShared), and Latest and List
// answer with it. (A List that listed before checkpoint 2 completed and
// ended after it dropped checkpoint 2 from the cache: its shared file was
// no longer offered, and a Latest racing such a List returned the
// checkpoint before.)
func TestAStaleListingDoesNotForgetANewerCheckpoint(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	hook := &listHook{Store: mem}
	s := open(t, hook, 1, 1, nil)
	ctx := ctxT(t)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	listed, release := make(chan struct{}), make(chan struct{})
	hook.mu.Lock()
	hook.after = func() {
		hook.mu.Lock()
		hook.after = nil
		hook.mu.Unlock()
		close(listed)
		<-release
	}
	hook.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := s.List(ctx); err != nil {
			t.Error(err)
		}
	})
	<-listed
	// Checkpoint 2 completes (and subsumes 1) while the List's listing,
	// which holds checkpoint 1 only, is in flight.
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a"}})
	close(release)
	wg.Wait()
	w, err := s.Writer(3, "op/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.HasShared("a"); !ok {
		t.Fatal("after a stale listing, HasShared(a) = false: checkpoint 2, which names it, was forgotten")
	}
	if md := mustLatest(t, s); md.CheckpointID != 2 {
		t.Fatalf("Latest = %d, want 2", md.CheckpointID)
	}
}
