package s3store_test

import (
	"fmt"
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
