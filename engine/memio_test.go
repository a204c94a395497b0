package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// memSource replays fixed lists of records, one per subtask; a reader's
// state is the index of its next record, so a restore resumes exactly
// there. It is the in-memory stand-in for a Kafka partition.
type memSource[T any] struct {
	parts [][]T
	// pauseEvery and pause slow the reader down (a pause after every
	// pauseEvery records) so that checkpoints happen mid-stream.
	pauseEvery int
	pause      time.Duration
	// unbounded readers wait at the end instead of ending the stream.
	unbounded bool
	// snapshotDelay, when set, delays the barrier of a subtask.
	snapshotDelay func(subtask int, id int64) time.Duration

	mu        sync.Mutex
	positions map[int64]map[int]int // checkpoint -> subtask -> position
	notified  atomic.Int64
}

type memPosition struct {
	Subtask  int `json:"subtask"`
	Position int `json:"position"`
}

func (s *memSource[T]) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[T], error) {
	if sc.Parallelism != len(s.parts) {
		return nil, fmt.Errorf("memSource has %d parts, the operator %d subtasks", len(s.parts), sc.Parallelism)
	}
	r := &memReader[T]{s: s, sub: sc.Subtask}
	for _, raw := range restored {
		var p memPosition
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		if p.Subtask == sc.Subtask {
			r.pos = p.Position
		}
	}
	return r, nil
}

// position returns where subtask's reader stood at checkpoint id.
func (s *memSource[T]) position(id int64, subtask int) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.positions[id][subtask]
	return p, ok
}

type memReader[T any] struct {
	s      *memSource[T]
	sub    int
	pos    int
	count  int
	wakeAt time.Time
}

func (r *memReader[T]) Next(ctx context.Context) (T, bool, error) {
	var zero T
	part := r.s.parts[r.sub]
	if r.pos >= len(part) {
		if !r.s.unbounded {
			return zero, false, io.EOF
		}
		<-ctx.Done()
		return zero, false, nil
	}
	if r.s.pauseEvery > 0 && (r.count+1)%r.s.pauseEvery == 0 {
		// An interrupted pause goes on where it stopped.
		if r.wakeAt.IsZero() {
			r.wakeAt = time.Now().Add(r.s.pause)
		}
		t := time.NewTimer(time.Until(r.wakeAt))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return zero, false, nil
		case <-t.C:
		}
		r.wakeAt = time.Time{}
	}
	r.count++
	v := part[r.pos]
	r.pos++
	return v, true, nil
}

func (r *memReader[T]) SnapshotState(id int64) ([][]byte, error) {
	if r.s.snapshotDelay != nil {
		time.Sleep(r.s.snapshotDelay(r.sub, id))
	}
	r.s.mu.Lock()
	if r.s.positions == nil {
		r.s.positions = map[int64]map[int]int{}
	}
	if r.s.positions[id] == nil {
		r.s.positions[id] = map[int]int{}
	}
	r.s.positions[id][r.sub] = r.pos
	r.s.mu.Unlock()
	b, err := json.Marshal(memPosition{Subtask: r.sub, Position: r.pos})
	return [][]byte{b}, err
}

func (r *memReader[T]) NotifyCheckpointComplete(_ context.Context, id int64) error {
	for {
		old := r.s.notified.Load()
		if id <= old || r.s.notified.CompareAndSwap(old, id) {
			return nil
		}
	}
}

func (r *memReader[T]) Close() error { return nil }

// memSink is an in-memory transactional sink: each subtask buffers its
// records in a transaction per checkpoint, pre-commits it at the barrier
// (it becomes part of the checkpoint) and commits it when notified. A
// restore commits what the checkpoint holds; commits are idempotent (by
// subtask and checkpoint id), and transactions of failed attempts vanish.
type memSink[T any] struct {
	// onWrite, when set, may fail a write (failure injection).
	onWrite func(v T) error
	// snapshotDelay, when set, slows the pre-commit down.
	snapshotDelay func(id int64) time.Duration
	// beforeSnapshot, when set, runs at the start of every pre-commit
	// (it may block until the test's condition holds or ctx ends).
	beforeSnapshot func(ctx context.Context, id int64)
	// onComplete runs when a writer is notified of a completed checkpoint.
	onComplete func(id int64)

	mu        sync.Mutex
	committed []T
	txns      map[string]bool
	// preCommits counts SnapshotState calls by checkpoint id.
	preCommits map[int64]int
	aborted    map[int64]bool
}

type memTxn[T any] struct {
	Subtask    int   `json:"subtask"`
	Checkpoint int64 `json:"checkpoint"`
	Records    []T   `json:"records"`
}

func (s *memSink[T]) NewWriter(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[T], error) {
	w := &memWriter[T]{s: s, sub: sc.Subtask}
	for _, raw := range restored {
		var t memTxn[T]
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, err
		}
		if t.Subtask == sc.Subtask {
			s.commit(t)
		}
	}
	return w, nil
}

func (s *memSink[T]) commit(t memTxn[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.txns == nil {
		s.txns = map[string]bool{}
	}
	k := fmt.Sprintf("%d/%d", t.Subtask, t.Checkpoint)
	if s.txns[k] {
		return
	}
	s.txns[k] = true
	s.committed = append(s.committed, t.Records...)
}

// output returns the committed records.
func (s *memSink[T]) output() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.committed)
}

type memWriter[T any] struct {
	s       *memSink[T]
	sub     int
	cur     []T
	pending []memTxn[T]
}

func (w *memWriter[T]) Write(_ context.Context, v T) error {
	if w.s.onWrite != nil {
		if err := w.s.onWrite(v); err != nil {
			return err
		}
	}
	w.cur = append(w.cur, v)
	return nil
}

func (w *memWriter[T]) SnapshotState(ctx context.Context, id int64) ([][]byte, error) {
	if w.s.beforeSnapshot != nil {
		w.s.beforeSnapshot(ctx, id)
	}
	if w.s.snapshotDelay != nil {
		time.Sleep(w.s.snapshotDelay(id))
	}
	w.s.mu.Lock()
	if w.s.preCommits == nil {
		w.s.preCommits = map[int64]int{}
	}
	w.s.preCommits[id]++
	w.s.mu.Unlock()
	w.pending = append(w.pending, memTxn[T]{Subtask: w.sub, Checkpoint: id, Records: w.cur})
	w.cur = nil
	var out [][]byte
	for _, t := range w.pending {
		b, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (w *memWriter[T]) NotifyCheckpointComplete(_ context.Context, id int64) error {
	kept := w.pending[:0]
	for _, t := range w.pending {
		if t.Checkpoint <= id {
			w.s.commit(t)
		} else {
			kept = append(kept, t)
		}
	}
	w.pending = kept
	if w.s.onComplete != nil {
		w.s.onComplete(id)
	}
	return nil
}

func (w *memWriter[T]) NotifyCheckpointAborted(_ context.Context, id int64) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.aborted == nil {
		w.s.aborted = map[int64]bool{}
	}
	w.s.aborted[id] = true
	return nil
}

func (w *memWriter[T]) Close(context.Context) error { return nil }

// failPlan injects failures at chosen points of a global count that runs
// on across attempts: the nth call of hit fails when n is in the plan.
type failPlan struct {
	n     atomic.Int64
	at    map[int64]bool
	fired atomic.Int64
}

func newFailPlan(at ...int64) *failPlan {
	p := &failPlan{at: map[int64]bool{}}
	for _, n := range at {
		p.at[n] = true
	}
	return p
}

func (p *failPlan) hit(where string) error {
	if n := p.n.Add(1); p.at[n] {
		p.fired.Add(1)
		return fmt.Errorf("injected failure %d in %s", n, where)
	}
	return nil
}

// runJob runs j with a generous deadline and returns Run's error.
func runJob(t *testing.T, j *engine.Job) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := j.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("job did not end in time: %v", err)
	}
	return err
}

// counts returns how often each value occurs.
func counts[T comparable](vs []T) map[T]int {
	m := map[T]int{}
	for _, v := range vs {
		m[v]++
	}
	return m
}

// diffCounts describes how got differs from want, "" when equal.
func diffCounts[T comparable](got, want map[T]int) string {
	var out []string
	for k, w := range want {
		if g := got[k]; g != w {
			out = append(out, fmt.Sprintf("%v: %d, want %d", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%v: %d, want 0", k, g))
		}
	}
	if len(out) == 0 {
		return ""
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... %d more", len(out)-10))
	}
	return fmt.Sprint(out)
}
