package statebackend

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/state"
)

// gatedStages holds every staging's first Create until the test opens
// its gate, so that an upload spans as many checkpoints as the test
// likes, and fails the first fail stagings at their first Create.
type gatedStages struct {
	checkpoint.Storage
	fail  atomic.Int32
	mu    sync.Mutex
	gates []chan struct{}
}

func (g *gatedStages) Stage(uid string, subtask int) (checkpoint.Staging, error) {
	sg, err := g.Storage.Stage(uid, subtask)
	if err != nil {
		return nil, err
	}
	gate := make(chan struct{})
	g.mu.Lock()
	g.gates = append(g.gates, gate)
	g.mu.Unlock()
	return gatedStaging{Staging: sg, gate: gate, fail: g.fail.Add(-1) >= 0}, nil
}

// open lets every upload staged so far go on.
func (g *gatedStages) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.gates {
		close(c)
	}
	g.gates = nil
}

type gatedStaging struct {
	checkpoint.Staging
	gate <-chan struct{}
	fail bool
}

var errStage = errors.New("injected staging failure")

func (g gatedStaging) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	if g.fail { // at once, so that a checkpoint sees the failure
		return nil, errStage
	}
	<-g.gate
	return g.Staging.Create(name, shared)
}

// stagedState reports what the backend's staged materialization is: nil
// when there is none (or no changelog), else its cut and adopting
// checkpoints and the channel closed when its upload ended.
func stagedState(b state.KeyedBackend) (s *stagedMat, id, adoptedBy int64) {
	pb := b.(*pebbleBackend)
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.cl == nil { // no changelog
		return nil, 0, 0
	}
	if s = pb.cl.staged; s != nil {
		return s, s.id, s.adoptedBy
	}
	return nil, 0, 0
}

// stagedStep says what checkpoint id did to the backend's staged
// materialization: "cut" it, "adopted" it, or "" (neither).
func stagedStep(b state.KeyedBackend, id int64) string {
	s, cut, adopted := stagedState(b)
	switch {
	case s == nil:
		return ""
	case adopted == id:
		return "adopted"
	case cut == id:
		return "cut"
	}
	return ""
}

// With a storage to stage in, a chain past the limit is materialized
// beside the checkpoints: checkpoints append while the uploads happen
// outside them (a checkpoint materializes only at the start and when an
// upload held back longer let the chain pass twice the limit), later checkpoints adopt them, and every
// completed checkpoint restores exactly the state at its barrier,
// whether it came before, during or after a materialization, after an
// aborted checkpoint or a lost notification, and after a staged upload
// that failed (dropped, then tried again). The staged files outlive the
// storage's orphan collection until a checkpoint names them.
func TestChangelogMaterializesBesideTheCheckpoints(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var logged logbuf.Buffer
	f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, MemTableSize: 4 << 20, CacheSize: 16 << 20, ChangelogLimit: 256 << 10,
		Logger: SlogLogger(slog.New(slog.NewTextHandler(&logged, nil)))})
	st := &gatedStages{Storage: dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 2})}
	st.fail.Store(1)
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	t.Cleanup(st.open) // before the backend's Close, which waits for its upload
	w := newWorkload(t, b)
	kinds := map[string]int{}
	for id := int64(1); id <= 40; id++ {
		w.apply(t, b, 400, int(id))
		applyTimerRound(t, b, 40, int(id))
		// A third of the time the upload of a staged materialization
		// ends before the next barrier; else it runs across it.
		if s, _, adopted := stagedState(b); s != nil && adopted == 0 && rng.IntN(3) == 0 {
			st.open()
			<-s.ended
		}
		wr, err := st.Writer(id, "op", 0)
		must(t, err)
		async, err := b.Snapshot(id, wr)
		must(t, err)
		want := dumpBackend(t, b)
		w.apply(t, b, 50, int(id)+1000) // after the barrier
		h, err := async(ctx)
		must(t, err)
		if step := stagedStep(b, id); step != "" {
			kinds[step]++
		}
		if !endRandomly(t, rng, st, b, id, h, kinds) {
			continue
		}
		r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
		newWorkload(t, r)
		if d := diffDumps(want, dumpBackend(t, r)); d != "" {
			t.Fatalf("checkpoint %d (%s, %d files) restored: %s", id, h.Backend, len(h.Files), d)
		}
		must(t, r.Close())
	}
	t.Logf("checkpoints: %v", kinds)
	// Materializing checkpoints: the first, and any that found the chain
	// past twice the limit while an upload was held back.
	if kinds[checkpoint.BackendPebble] == 0 || kinds[checkpoint.BackendPebble] > kinds["cut"] || kinds["cut"] < 3 || kinds["adopted"] < 2 || kinds["aborted"] == 0 {
		t.Fatalf("want several cuts and adoptions beside the checkpoints, and fewer materializing checkpoints: %v", kinds)
	}
	if st.fail.Load() >= 0 {
		t.Fatal("no staging failed")
	}
	// The failed upload is reported as an error, naming the operator,
	// the subtask and the cause.
	if line := logged.String(); !strings.Contains(line, "level=ERROR") || !strings.Contains(line, "op/0: materialization after checkpoint") || !strings.Contains(line, errStage.Error()) {
		t.Fatalf("the failed staging was not logged as an error: %q", line)
	}
}

// A backend restored directly from a changelog checkpoint goes on with
// its chain: its first checkpoint appends one segment to the restored
// handle's files instead of materializing, and restores exactly.
func TestRestoredBackendContinuesTheChain(t *testing.T) {
	ctx := context.Background()
	f := changelogFactory(t, 0)
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 2})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	w := newWorkload(t, b)
	take := func(b state.KeyedBackend, id int64) *checkpoint.Handle {
		t.Helper()
		wr, err := st.Writer(id, "op", 0)
		must(t, err)
		async, err := b.Snapshot(id, wr)
		must(t, err)
		h, err := async(ctx)
		must(t, err)
		completeOne(t, st, "op", id, false, 1, h)
		b.NotifyCheckpointComplete(id)
		return h
	}
	for id := int64(1); id <= 3; id++ {
		w.apply(t, b, 300, int(id))
		take(b, id)
	}
	h := take(b, 4)
	if h.Backend != checkpoint.BackendPebbleChangelog {
		t.Fatalf("checkpoint 4 is %s, want a chain", h.Backend)
	}
	r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
	rw := newWorkload(t, r)
	rw.apply(t, r, 300, 5)
	want := dumpBackend(t, r)
	h5 := take(r, 5)
	if h5.Backend != checkpoint.BackendPebbleChangelog || len(h5.Files) != len(h.Files)+1 {
		t.Fatalf("the restored backend's first checkpoint: %s with %d files; want the restored chain's %d files and one segment", h5.Backend, len(h5.Files), len(h.Files))
	}
	for i, ref := range h.Files {
		if h5.Files[i].Path != ref.Path {
			t.Fatalf("file %d: %s, want the restored chain's %s", i, h5.Files[i].Path, ref.Path)
		}
	}
	r2 := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h5}, Storage: st})
	newWorkload(t, r2)
	if d := diffDumps(want, dumpBackend(t, r2)); d != "" {
		t.Fatalf("the continued chain restored: %s", d)
	}
}

// A staged materialization whose adopting checkpoint is aborted still
// becomes the incremental base and keeps its local recovery links once a
// later checkpoint of its chain completes: a materialization after it
// uploads only the table files it lacks, and a restore on this machine
// finds its files on the local disk.
func TestAbortedAdopterLeavesTheBaseToTheChain(t *testing.T) {
	f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir(), Incremental: true, LocalRecovery: true, MemTableSize: 4 << 20, CacheSize: 16 << 20, ChangelogLimit: 256 << 10})
	st := &gatedStages{Storage: dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 2})}
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	t.Cleanup(st.open)
	w := newWorkload(t, b)
	var staged *stagedMat
	id := int64(0)
	for staged == nil || staged.adoptedBy == 0 {
		if id++; id > 40 {
			t.Fatal("no staged materialization was adopted in 40 checkpoints")
		}
		w.apply(t, b, 400, int(id))
		h := runSnapshot(t, b, st, "op", 0, id, false)
		if s, _, adopted := stagedState(b); s != nil && adopted == id {
			staged = s
			must(t, st.Abort(id))
			b.NotifyCheckpointAborted(id)
			break
		}
		if s, cut, _ := stagedState(b); s != nil && cut == id {
			// The upload ends, and its local recovery links are made,
			// before the checkpoint that cut it completes: they must
			// outlive that completion's pruning.
			st.open()
			<-s.ended
		}
		completeOne(t, st, "op", id, false, 1, h)
		b.NotifyCheckpointComplete(id)
	}
	id++
	w.apply(t, b, 10, int(id))
	h := runSnapshot(t, b, st, "op", 0, id, false)
	if h.Backend != checkpoint.BackendPebbleChangelog {
		t.Fatalf("checkpoint %d after the aborted adopter is %s; want it to append", id, h.Backend)
	}
	completeOne(t, st, "op", id, false, 1, h)
	b.NotifyCheckpointComplete(id)

	pb := b.(*pebbleBackend)
	pb.mu.Lock()
	base := pb.base
	pb.mu.Unlock()
	for name, ref := range staged.ssts {
		if got, ok := base[name]; !ok || got.Path != ref.Path {
			t.Fatalf("the base lacks the staged materialization's %s (%s): %v", name, ref.Path, base)
		}
	}
	pf := f.(*pebbleFactory)
	local, err := pf.opts.FS.List(pf.localRecoveryDir("op", 0))
	must(t, err)
	for name := range staged.links {
		if !slices.Contains(local, name) {
			t.Fatalf("local recovery dropped the staged materialization's %s: %v", name, local)
		}
	}
}
