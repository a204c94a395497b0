package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// fenceSink models the Kafka sink and its broker closely enough for
// restores from older checkpoints: each checkpoint's records are one
// transaction, kept by the "broker" (the sink value, shared by every run
// of a test) as open, committed or aborted. A writer's restore commits the
// restored transactions, except those a newer checkpoint shows committed
// since (not pending there), and then fences: every other open
// transaction of its subtask is aborted, as a new producer epoch does.
// Committing an aborted transaction is the Kafka sink's DATA MAY BE LOST
// failure. It records every commit it is asked for.
type fenceSink struct {
	mu        sync.Mutex
	txns      map[string]*fenceTxn
	committed []int
	asked     []string // transactions asked to commit, in order
	opened    chan engine.Scope
	// hold, when set, makes the next NotifyCheckpointComplete block until
	// its context ends (a crash between a checkpoint's completion and its
	// commit); held receives that checkpoint's id.
	hold atomic.Bool
	held chan int64
	// reuseIDs makes a commit of a transaction that was committed already
	// fail as Kafka's does once the transactional id served a newer
	// transaction (the sink's ids come from a small pool): PRODUCER_FENCED,
	// reported as DATA MAY BE LOST.
	reuseIDs bool
}

type fenceTxn struct {
	records []int
	state   string // open, committed, aborted
}

func newFenceSink() *fenceSink {
	return &fenceSink{txns: map[string]*fenceTxn{}, opened: make(chan engine.Scope, 16), held: make(chan int64, 1)}
}

func (s *fenceSink) Transactional() bool { return true }

func txnKey(sub int, id int64) string { return fmt.Sprintf("%d/%d", sub, id) }

// commit commits transaction key; s.mu is held.
func (s *fenceSink) commitLocked(key string) error {
	s.asked = append(s.asked, key)
	t := s.txns[key]
	switch {
	case t == nil:
		return fmt.Errorf("transaction %s unknown to the broker", key)
	case t.state == "aborted":
		return engine.NonRecoverable(fmt.Errorf("DATA MAY BE LOST: transaction %s was fenced (aborted) before its commit", key))
	case t.state == "open":
		t.state = "committed"
		s.committed = append(s.committed, t.records...)
	case t.state == "committed" && s.reuseIDs:
		var sub int
		var id int64
		fmt.Sscanf(key, "%d/%d", &sub, &id)
		for k := range s.txns {
			var ks int
			var kid int64
			fmt.Sscanf(k, "%d/%d", &ks, &kid)
			if ks == sub && kid > id {
				return engine.NonRecoverable(fmt.Errorf("DATA MAY BE LOST: transaction %s: its id served transaction %s since (PRODUCER_FENCED)", key, k))
			}
		}
	}
	return nil
}

type fenceEntry struct {
	Subtask    int   `json:"subtask"`
	Checkpoint int64 `json:"checkpoint"`
}

func (s *fenceSink) NewWriter(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[int], error) {
	keys := func(entries [][]byte) (map[string]bool, []string, error) {
		set := map[string]bool{}
		var order []string
		for _, raw := range entries {
			var e fenceEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, nil, err
			}
			if e.Subtask == sc.Subtask {
				set[txnKey(e.Subtask, e.Checkpoint)] = true
				order = append(order, txnKey(e.Subtask, e.Checkpoint))
			}
		}
		return set, order, nil
	}
	mine, order, err := keys(restored)
	if err != nil {
		return nil, err
	}
	newer, _, err := keys(sc.NewerEntries)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range order {
		if sc.RestoredCommitted || (sc.NewerCheckpoint != 0 && !newer[k]) {
			continue // committed since
		}
		if err := s.commitLocked(k); err != nil {
			return nil, err
		}
	}
	for k, t := range s.txns {
		var sub int
		fmt.Sscanf(k, "%d/", &sub)
		if sub == sc.Subtask && t.state == "open" && !mine[k] {
			t.state = "aborted"
		}
	}
	s.opened <- sc
	return &fenceWriter{s: s, sub: sc.Subtask}, nil
}

func (s *fenceSink) output() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.committed...)
}

type fenceWriter struct {
	s       *fenceSink
	sub     int
	cur     []int
	pending []int64
}

func (w *fenceWriter) Write(_ context.Context, v int) error { w.cur = append(w.cur, v); return nil }

func (w *fenceWriter) SnapshotState(_ context.Context, id int64) ([][]byte, error) {
	w.s.mu.Lock()
	w.s.txns[txnKey(w.sub, id)] = &fenceTxn{records: w.cur, state: "open"}
	w.s.mu.Unlock()
	w.cur = nil
	w.pending = append(w.pending, id)
	var out [][]byte
	for _, p := range w.pending {
		b, _ := json.Marshal(fenceEntry{Subtask: w.sub, Checkpoint: p})
		out = append(out, b)
	}
	return out, nil
}

func (w *fenceWriter) NotifyCheckpointComplete(ctx context.Context, id int64) error {
	if w.s.hold.CompareAndSwap(true, false) {
		w.s.held <- id
		<-ctx.Done()
		return ctx.Err()
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	kept := w.pending[:0]
	for _, p := range w.pending {
		if p > id {
			kept = append(kept, p)
			continue
		}
		if err := w.s.commitLocked(txnKey(w.sub, p)); err != nil {
			return err
		}
	}
	w.pending = kept
	return nil
}

func (w *fenceWriter) NotifyCheckpointAborted(context.Context, int64) error { return nil }
func (w *fenceWriter) Close(context.Context) error                          { return nil }

// --from is durable. Run 1 takes savepoint S, then checkpoints, and dies
// between the completion of checkpoint C and its commit. Run 2 resumes
// with --from S (its restore fences C's transaction) and dies right after
// the restore. Run 3, a plain run, must resume S's history — the lineage
// run 2 adopted — and not C's: committing C's fenced transaction is a
// DATA MAY BE LOST failure. Its output is what a replay from S gives:
// what run 1 committed, and every record from S's position on once more.
// (Run 2 left the storage as it was: run 3 restored C and failed.)
func TestRestoreFromIsDurable(t *testing.T) {
	dir := t.TempDir()
	storage := func() checkpoint.Storage {
		st, err := dirstore.NewFileStorage(dir, "from", dirstore.StorageOptions{Retained: 3})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	parts := [][]int{seq(0, 3000)}
	sink := newFenceSink()

	// Run 1.
	src := &memSource[int]{parts: parts, pauseEvery: 1, pause: time.Millisecond, unbounded: true}
	j := copyJob("from", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: storage()}, src, sink)
	cancel, wait := startJob(t, j)
	<-sink.opened
	waitFor(t, "a checkpoint", func() bool { return completedCount(j) >= 1 })
	spPath, err := j.TriggerSavepoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var spID int64
	for _, cs := range j.Status().Checkpoints {
		if cs.Path == spPath {
			spID = cs.ID
		}
	}
	n := completedCount(j)
	waitFor(t, "two checkpoints after the savepoint", func() bool { return completedCount(j) >= n+2 })
	sink.hold.Store(true)
	newerID := <-sink.held
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run 1: %v", err)
	}
	pS, _ := src.position(spID, 0)
	pC, _ := src.position(newerID, 0)
	afterRun1 := sink.output()
	if len(afterRun1) < pS || len(afterRun1) >= pC {
		t.Fatalf("run 1 committed %d records; the savepoint is at %d, the uncommitted checkpoint %d at %d", len(afterRun1), pS, newerID, pC)
	}

	// Run 2: --from the savepoint, killed right after the restore.
	j = copyJob("from", engine.Options{Storage: storage(), RestoreFrom: spPath},
		&memSource[int]{parts: parts, unbounded: true}, sink)
	cancel, wait = startJob(t, j)
	sc := <-sink.opened
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run 2: %v", err)
	}
	if sc.NewerCheckpoint != newerID {
		t.Fatalf("run 2's sink was told of newer checkpoint %d, want %d", sc.NewerCheckpoint, newerID)
	}

	// Run 3: a plain run to the end of the input.
	sink.mu.Lock()
	sink.asked = nil
	sink.mu.Unlock()
	j = copyJob("from", engine.Options{Storage: storage()}, &memSource[int]{parts: parts}, sink)
	if err := runJob(t, j); err != nil {
		t.Fatalf("run 3 after a crash right after the --from restore: %v", err)
	}
	sc = <-sink.opened
	if sc.NewerCheckpoint != newerID || len(sc.NewerEntries) == 0 {
		t.Errorf("run 3's sink: newer checkpoint %d with %d entries, want %d from the adopted checkpoint's Supersedes",
			sc.NewerCheckpoint, len(sc.NewerEntries), newerID)
	}
	want := counts(afterRun1)
	for _, v := range parts[0][pS:] {
		want[v]++
	}
	if d := diffCounts(counts(sink.output()), want); d != "" {
		t.Fatalf("output is not run 1's plus a replay from the savepoint at %d: %s", pS, d)
	}
	md, _, err := storage().Latest(context.Background())
	if err != nil || md == nil {
		t.Fatalf("latest: %v %v", md, err)
	}
	t.Logf("savepoint %d at %d, abandoned checkpoint %d at %d, run 1 committed %d records; run 3 ended at checkpoint %d",
		spID, pS, newerID, pC, len(afterRun1), md.CheckpointID)
}
