package statebackend

import (
	"context"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// The state.AsyncSnapshot runs in another goroutine while the owner goroutine
// keeps writing (as the engine does); the snapshot still holds exactly the
// state at the barrier. Run with -race: it also checks that the two
// goroutines share nothing unsynchronized.
func TestAsyncSnapshotRunsWhileProcessing(t *testing.T) {
	for _, f := range []state.KeyedBackendFactory{NewMemoryFactory(), pebbleFactory_(t, false), pebbleFactory_(t, true)} {
		for _, savepoint := range []bool{false, true} {
			st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
			b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op"})
			w := newWorkload(t, b)
			w.apply(t, b, 2000, 0)
			atBarrier := dumpBackend(t, b)
			wr, err := st.Writer(1, "op", 0)
			must(t, err)
			var async state.AsyncSnapshot
			if savepoint {
				async, err = SavepointSnapshot(b, 1, wr)
			} else {
				async, err = b.Snapshot(1, wr)
			}
			must(t, err)
			type result struct {
				h   *checkpoint.Handle
				err error
			}
			done := make(chan result, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			go func() {
				h, err := async(ctx)
				done <- result{h, err}
			}()
			for r := 1; r < 4; r++ {
				w.apply(t, b, 2000, r)
			}
			res := <-done
			cancel()
			must(t, res.err)
			r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{res.h}, Storage: st})
			newWorkload(t, r)
			if d := diffDumps(atBarrier, dumpBackend(t, r)); d != "" {
				t.Fatalf("%s savepoint=%v: snapshot is not the state at the barrier: %s", f.Name(), savepoint, d)
			}
		}
	}
}

// Close waits for a running state.AsyncSnapshot; one started after Close fails
// cleanly instead of touching a closed database.
func TestPebbleCloseAndPendingSnapshots(t *testing.T) {
	f := pebbleFactory_(t, true)
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
	b, err := f.CreateKeyedBackend(context.Background(), state.KeyedBackendOptions{OperatorUID: "op"})
	must(t, err)
	w := newWorkload(t, b)
	w.apply(t, b, 500, 0)
	wr, err := st.Writer(1, "op", 0)
	must(t, err)
	async, err := b.Snapshot(1, wr)
	must(t, err)
	sp, err := SavepointSnapshot(b, 2, wr)
	must(t, err)
	must(t, b.Close())
	_, err = async(context.Background())
	wantErrContains(t, err, "closed")
	_, err = sp(context.Background())
	wantErrContains(t, err, "closed")
}
