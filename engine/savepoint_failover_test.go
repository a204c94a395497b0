package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// counterSource emits 0, 1, 2, ... from one subtask, one every
// millisecond, with its position as state. fail makes the next Next
// return an error, once.
type counterSource struct {
	fail    atomic.Bool
	emitted atomic.Int64
}

func (s *counterSource) NewReader(_ context.Context, _ engine.Scope, restored [][]byte) (engine.SourceReader[int], error) {
	r := &counterReader{s: s}
	for _, raw := range restored {
		if err := json.Unmarshal(raw, &r.next); err != nil {
			return nil, err
		}
	}
	return r, nil
}

type counterReader struct {
	s    *counterSource
	next int
}

func (r *counterReader) Next(ctx context.Context) (int, bool, error) {
	if r.s.fail.CompareAndSwap(true, false) {
		return 0, false, errors.New("injected failure")
	}
	select {
	case <-ctx.Done():
		return 0, false, nil
	case <-time.After(time.Millisecond):
	}
	v := r.next
	r.next++
	r.s.emitted.Add(1)
	return v, true, nil
}

func (r *counterReader) SnapshotState(int64) ([][]byte, error) {
	b, err := json.Marshal(r.next)
	return [][]byte{b}, err
}
func (r *counterReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *counterReader) Close() error                                          { return nil }

// commitSink is a two-phase-commit sink in memory: what a subtask writes
// between barriers becomes visible when the checkpoint completes. A
// transaction pending at a failure is dropped (aborted).
type commitSink struct {
	mu        sync.Mutex
	committed []int
}

func (s *commitSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[int], error) {
	return &commitWriter{s: s, pending: map[int64][]int{}}, nil
}

func (s *commitSink) visible() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.committed)
}

type commitWriter struct {
	s       *commitSink
	open    []int
	pending map[int64][]int
}

func (w *commitWriter) Write(_ context.Context, v int) error { w.open = append(w.open, v); return nil }
func (w *commitWriter) SnapshotState(_ context.Context, id int64) ([][]byte, error) {
	w.pending[id], w.open = w.open, nil
	return nil, nil
}
func (w *commitWriter) NotifyCheckpointComplete(_ context.Context, id int64) error {
	ids := slices.Sorted(func(yield func(int64) bool) {
		for k := range w.pending {
			if k <= id && !yield(k) {
				return
			}
		}
	})
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	for _, k := range ids {
		w.s.committed = append(w.s.committed, w.pending[k]...)
		delete(w.pending, k)
	}
	return nil
}
func (w *commitWriter) NotifyCheckpointAborted(context.Context, int64) error { return nil }
func (w *commitWriter) Close(context.Context) error                          { return nil }

// A savepoint taken while the job runs commits the sink's transactions.
// When an attempt then fails before any later checkpoint, the restart
// must start from the savepoint: restarting from the latest checkpoint
// before it (here none) would commit the records before the savepoint a
// second time.
func TestFailoverAfterASavepointResumesFromIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	storage := dirstore.NewMemoryStorage("sp", dirstore.StorageOptions{Retained: 2})
	j := engine.NewJob("sp", engine.Options{Storage: storage, Restart: engine.FixedDelay(1, time.Millisecond),
		Checkpoint: engine.CheckpointOptions{Interval: time.Hour}})
	src, sink := &counterSource{}, &commitSink{}
	engine.SinkTo(engine.FromSource(j, "source", 1, src), "sink", 1, sink)
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()

	waitFor(t, "20 records", func() bool { return src.emitted.Load() >= 20 })
	if _, err := j.TriggerSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the savepoint's commit", func() bool { return len(sink.visible()) >= 20 })
	src.fail.Store(true)
	waitFor(t, "the restart", func() bool { return j.Status().Restarts == 1 })
	waitFor(t, "more records after the restart", func() bool { return src.emitted.Load() >= 60 })
	if _, err := j.StopWithSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run: %v", err)
	}
	got := sink.visible()
	if len(got) < 40 {
		t.Fatalf("only %d records committed", len(got))
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("committed output is not 0, 1, 2, ... once each: at %d found %d (%v)", i, v, got)
		}
	}
}
