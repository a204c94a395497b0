package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// scopeSink is a memSink that records the Scope of every writer it opens.
type scopeSink struct {
	memSink[int]
	mu     sync.Mutex
	scopes []engine.Scope
}

func (s *scopeSink) NewWriter(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[int], error) {
	s.mu.Lock()
	s.scopes = append(s.scopes, sc)
	s.mu.Unlock()
	return s.memSink.NewWriter(ctx, sc, restored)
}

func (s *scopeSink) opened() []engine.Scope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]engine.Scope(nil), s.scopes...)
}

// failMarkStorage fails MarkCommitted.
type failMarkStorage struct{ checkpoint.Storage }

func (failMarkStorage) MarkCommitted(context.Context, int64) error {
	return errors.New("injected: cannot write the committed marker")
}

// stopRun runs a copy job on storage until a stop with a savepoint and
// returns the savepoint's path.
func stopRun(t *testing.T, storage checkpoint.Storage, logger *slog.Logger) string {
	t.Helper()
	opts := engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: storage, Logger: logger}
	j := copyJob("long", opts, &memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}, &memSink[int]{})
	_, wait := startJob(t, j)
	waitFor(t, "a checkpoint", func() bool { return completedCount(j) >= 1 })
	path, err := j.StopWithSavepoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	return path
}

// A stop with a savepoint drains every sink's commits; the savepoint is
// then marked committed in the storage, and a restore from it tells the
// sinks (Scope.RestoredCommitted) so that they do not commit its
// transactions again (which fails once the broker expired their ids). A
// restore from an ordinary checkpoint does not. (Nothing marked the
// savepoint: every restore committed again.)
func TestStopSavepointIsMarkedCommitted(t *testing.T) {
	storage := dirstore.NewMemoryStorage("long", dirstore.StorageOptions{Retained: 2})
	path := stopRun(t, storage, nil)
	md, err := storage.Load(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !md.Committed {
		t.Fatalf("savepoint %s not marked committed after the stop", path)
	}

	sink := &scopeSink{}
	j := copyJob("long", engine.Options{Storage: storage}, &memSource[int]{parts: [][]int{seq(0, 100)}}, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	sc := sink.opened()
	if len(sc) != 1 || !sc[0].Restored || !sc[0].RestoredCommitted {
		t.Fatalf("sink scopes %+v after a restore from the stop's savepoint, want RestoredCommitted", sc)
	}

	// The final checkpoint of that run is a plain one: not committed.
	sink = &scopeSink{}
	j = copyJob("long", engine.Options{Storage: storage}, &memSource[int]{parts: [][]int{seq(0, 100)}}, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	if sc := sink.opened(); len(sc) != 1 || !sc[0].Restored || sc[0].RestoredCommitted {
		t.Fatalf("sink scopes %+v after a restore from a final checkpoint, want not RestoredCommitted", sc)
	}
}

// A failure to write the marker is logged, not fatal: the stop succeeds
// (and a restore commits again, as before).
func TestStopSurvivesAFailedCommittedMarker(t *testing.T) {
	logs := &logbuf.Buffer{}
	storage := failMarkStorage{dirstore.NewMemoryStorage("long", dirstore.StorageOptions{Retained: 2})}
	path := stopRun(t, storage, slog.New(slog.NewTextHandler(logs, nil)))
	if !strings.Contains(logs.String(), "cannot write the committed marker") || !strings.Contains(logs.String(), path) {
		t.Fatalf("the failed marker is not logged with the savepoint's path:\n%s", logs)
	}
}
