package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// savepointsOnDisk lists the savepoint directories of job under dir.
func savepointsOnDisk(t *testing.T, dir, job string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, job))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "savepoint-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Savepoints taken one after another do not pile up: with
// RetainSavepoints 3, the oldest beyond three are removed as each new one
// completes, before it is answered, and each removal is logged. The newest
// savepoint is always the job's restore point, intact, and a plain run
// resumes from it with every record exactly once. (Savepoints were never
// removed: eight savepoints left eight directories.)
func TestSavepointsBeyondTheRetainedCountAreRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	input := seq(0, 4000)
	sink := &txnSink{transactional: true}
	logs := &logbuf.Buffer{}
	opts := engine.Options{Storage: newFileStorage(t, dir, "sr"), Logger: slog.New(slog.NewTextHandler(logs, nil)),
		// Savepoints only: the newest is the restore point.
		Checkpoint: engine.CheckpointOptions{RetainSavepoints: 3}}
	src := &memSource[int]{parts: [][]int{input}, pauseEvery: 1, pause: 200 * time.Microsecond, unbounded: true}
	j := copyJob("sr", opts, src, sink)
	cancel, wait := startJob(t, j)
	var last string
	for i := 1; i <= 8; i++ {
		path, err := j.TriggerSavepoint(ctx)
		if err != nil {
			t.Fatalf("savepoint %d: %v", i, err)
		}
		last = path
		on := savepointsOnDisk(t, dir, "sr")
		if len(on) > 3 {
			t.Fatalf("after savepoint %d: %d savepoints on disk %v, want at most 3", i, len(on), on)
		}
		// The newest point, seen by another instance (a restart's), is
		// the savepoint just answered, every file intact.
		md, _, err := newFileStorage(t, dir, "sr").Latest(ctx)
		if err != nil || md == nil || md.Path != path {
			t.Fatalf("after savepoint %d the restore point is %+v (%v), want %s", i, md, err, path)
		}
	}
	if n := strings.Count(logs.String(), "removed an old savepoint beyond the retained count"); n != 5 {
		t.Fatalf("%d removals logged, want 5:\n%s", n, logs.String())
	}
	cancel()
	_ = wait()

	// A plain run resumes from the newest savepoint; the same sink
	// instance dedupes transactions it committed already.
	logs2 := &logbuf.Buffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs2, nil))
	opts.Storage = newFileStorage(t, dir, "sr")
	if err := runJob(t, copyJob("sr", opts, &memSource[int]{parts: [][]int{input}}, sink)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs2.String(), fmt.Sprintf("path=%s", last)) {
		t.Fatalf("the run did not restore %s:\n%s", last, logs2.String())
	}
	got := counts(sink.output())
	for _, v := range input {
		if got[v] != 1 {
			t.Fatalf("record %d written %d times", v, got[v])
		}
	}
	if len(got) != len(input) {
		t.Fatalf("%d distinct records, want %d", len(got), len(input))
	}
	if infos, err := dirstore.ListSavepoints(ctx, opts.Storage); err != nil || len(infos) > 3 {
		t.Fatalf("savepoints at the end: %+v (%v)", infos, err)
	}
}

// noPruneStorage hides its storage's PruneSavepoints.
type noPruneStorage struct{ checkpoint.Storage }

// A storage that cannot prune savepoints keeps them all, and the job
// says so once, naming the storage, instead of failing or warning at
// every savepoint.
func TestRetainSavepointsWithAStorageThatCannotPrune(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	logs := &logbuf.Buffer{}
	opts := engine.Options{Storage: noPruneStorage{newFileStorage(t, dir, "np")}, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Checkpoint: engine.CheckpointOptions{RetainSavepoints: 1}}
	src := &memSource[int]{parts: [][]int{seq(0, 4000)}, pauseEvery: 1, pause: 200 * time.Microsecond, unbounded: true}
	j := copyJob("np", opts, src, &txnSink{transactional: true})
	cancel, wait := startJob(t, j)
	for i := 1; i <= 3; i++ {
		if _, err := j.TriggerSavepoint(ctx); err != nil {
			t.Fatalf("savepoint %d: %v", i, err)
		}
	}
	cancel()
	_ = wait()
	if got := savepointsOnDisk(t, dir, "np"); len(got) != 3 {
		t.Fatalf("savepoints on disk %v, want all 3", got)
	}
	if n := strings.Count(logs.String(), "the checkpoint storage cannot remove savepoints"); n != 1 || !strings.Contains(logs.String(), "noPruneStorage") {
		t.Fatalf("%d warnings naming the storage, want 1:\n%s", n, logs.String())
	}
}
