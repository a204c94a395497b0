package s3store_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/onceflow/onceflow/internal/objstore"
)

// getCounter counts the reads of data objects.
type getCounter struct {
	objstore.Store
	mu   sync.Mutex
	gets map[string]int
}

func (g *getCounter) Get(ctx context.Context, key string, opts objstore.GetOptions) (io.ReadCloser, objstore.Info, error) {
	if strings.Contains(key, "/data/") || strings.Contains(key, "/shared/") {
		g.mu.Lock()
		g.gets[key]++
		g.mu.Unlock()
	}
	return g.Store.Get(ctx, key, opts)
}

// A handover verifies each file once: the claim reads the checkpoint it
// adopts in full (and its copies of the private files), and the Latest
// of the restore that follows (same Storage) reads nothing again.
func TestClaimThenLatestReadsEachFileOnce(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	old := open(t, mem, 1, 2, clk)
	complete(t, old, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A", "b": "B"}})
	complete(t, old, chk{id: 2, private: map[string]string{"p": "2"}, reuse: []string{"a", "b"}})

	counter := &getCounter{Store: mem, gets: map[string]int{}}
	owner := claimer(t, counter, 2, clk)
	mustClaim(t, owner)
	counter.mu.Lock()
	if len(counter.gets) == 0 {
		t.Fatal("the claim read no data object")
	}
	counter.gets = map[string]int{}
	counter.mu.Unlock()
	mustLatest(t, owner)
	mustLatest(t, owner)
	if len(counter.gets) != 0 {
		t.Fatalf("Latest after the claim read %v again; want nothing (the claim verified every file)", counter.gets)
	}
}
