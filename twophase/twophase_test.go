package twophase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/state"
)

// memTxn identifies a transaction of the in-memory system.
type memTxn struct {
	ID      int `json:"id"`
	Subtask int `json:"subtask"`
}

// memSystem is an in-memory transactional store standing in for Kafka: an
// open transaction's records are invisible until committed; commits are
// idempotent; an aborted transaction can never be committed.
type memSystem struct {
	mu             sync.Mutex
	next           int
	records        map[int][]string
	owner          map[int]int
	committed      map[int]bool
	aborted        map[int]bool
	visible        []string
	commitCalls    map[int]int
	failNextCommit int
	// outage, when set, is what every Commit returns (the cluster has been
	// away for the whole outage tolerance).
	outage error
	// fenced transactions had their id reused: a commit is refused even
	// when they were committed (as Kafka refuses an old producer epoch).
	fenced map[int]bool
	// gate, when set, holds every Commit until it receives.
	gate chan struct{}
	// preGate, when set, holds every PreCommit until it receives;
	// failPreCommit fails the PreCommit of those transactions, and
	// renumber makes PreCommit return another transaction.
	preGate       chan struct{}
	failPreCommit map[int]bool
	renumber      bool
}

func newMemSystem() *memSystem {
	return &memSystem{records: map[int][]string{}, owner: map[int]int{}, committed: map[int]bool{},
		aborted: map[int]bool{}, commitCalls: map[int]int{}, fenced: map[int]bool{}}
}

func (m *memSystem) snapshotVisible() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.visible)
}

// memTransactor is one subtask's view of memSystem.
type memTransactor struct {
	sys      *memSystem
	subtask  int
	released []int
	kept     []memTxn // what the last AbortLingering was asked to keep
}

func (t *memTransactor) Release(txn memTxn) { t.released = append(t.released, txn.ID) }

func (t *memTransactor) Begin(context.Context) (memTxn, error) {
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	t.sys.next++
	t.sys.owner[t.sys.next] = t.subtask
	return memTxn{ID: t.sys.next, Subtask: t.subtask}, nil
}

func (t *memTransactor) Write(_ context.Context, txn memTxn, rec string) error {
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	if t.sys.aborted[txn.ID] || t.sys.committed[txn.ID] {
		return fmt.Errorf("write into finished transaction %d", txn.ID)
	}
	t.sys.records[txn.ID] = append(t.sys.records[txn.ID], rec)
	return nil
}

func (t *memTransactor) PreCommit(ctx context.Context, txn memTxn) (memTxn, error) {
	if g := t.sys.preGate; g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return memTxn{}, ctx.Err()
		}
	}
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	if t.sys.failPreCommit[txn.ID] {
		return memTxn{}, fmt.Errorf("flushing transaction %d: broker unreachable", txn.ID)
	}
	if t.sys.renumber {
		txn.ID += 1000
	}
	return txn, nil
}

func (t *memTransactor) Commit(ctx context.Context, txn memTxn) error {
	if g := t.sys.gate; g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	t.sys.commitCalls[txn.ID]++
	if t.sys.failNextCommit > 0 {
		t.sys.failNextCommit--
		return errors.New("coordinator not available")
	}
	if t.sys.outage != nil {
		return t.sys.outage
	}
	if t.sys.aborted[txn.ID] || t.sys.fenced[txn.ID] {
		return fmt.Errorf("transaction %d was aborted or fenced: %w", txn.ID, ErrTransactionLost)
	}
	if !t.sys.committed[txn.ID] {
		t.sys.committed[txn.ID] = true
		t.sys.visible = append(t.sys.visible, t.sys.records[txn.ID]...)
	}
	return nil
}

func (t *memTransactor) Abort(_ context.Context, txn memTxn) error {
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	if !t.sys.committed[txn.ID] {
		t.sys.aborted[txn.ID] = true
	}
	return nil
}

func (t *memTransactor) AbortLingering(_ context.Context, scope Scope, keep []memTxn) error {
	t.sys.mu.Lock()
	defer t.sys.mu.Unlock()
	t.kept = slices.Clone(keep)
	for id, owner := range t.sys.owner {
		if owner%scope.Parallelism != scope.Subtask || t.sys.committed[id] {
			continue
		}
		if slices.ContainsFunc(keep, func(k memTxn) bool { return k.ID == id }) {
			continue
		}
		t.sys.aborted[id] = true
	}
	return nil
}

func newTestSink(t *testing.T, sys *memSystem, subtask, parallelism int, opts Options) *Sink[string, memTxn] {
	t.Helper()
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = time.Millisecond
	}
	return New[string, memTxn](&memTransactor{sys: sys, subtask: subtask}, state.JSONCodec[memTxn]{}, Scope{Subtask: subtask, Parallelism: parallelism}, opts)
}

func write(t *testing.T, s *Sink[string, memTxn], recs ...string) {
	t.Helper()
	for _, r := range recs {
		if err := s.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func snapshot(t *testing.T, s *Sink[string, memTxn], id int64) [][]byte {
	t.Helper()
	st, err := s.SnapshotState(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestNothingVisibleBeforeNotifyAndSkippedNotificationsCommitEverything(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a", "b")
	snapshot(t, s, 1)
	write(t, s, "c")
	snapshot(t, s, 2)
	// No record since the last barrier: no empty transaction is pre-committed.
	if st := snapshot(t, s, 3); len(st) != 2 {
		t.Fatalf("checkpoint 3 holds %d transactions, want the 2 pending ones", len(st))
	}
	if got := sys.snapshotVisible(); len(got) != 0 {
		t.Fatalf("visible before any checkpoint completed: %v", got)
	}
	// Notification of 1 and 2 never came; 3 covers both.
	if err := s.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("visible = %v, want [a b c]", got)
	}
	// A late notification commits nothing twice.
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); len(got) != 3 || len(s.Pending()) != 0 {
		t.Fatalf("late notify changed things: visible %v pending %d", got, len(s.Pending()))
	}
	if sys.next != 2 {
		t.Fatalf("%d transactions begun, want 2 (none for the empty checkpoint)", sys.next)
	}
}

func TestAbortedCheckpointIsCommittedWithTheNextOne(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	if err := s.NotifyCheckpointAborted(ctx, 1); err != nil {
		t.Fatal(err)
	}
	write(t, s, "b")
	if st := snapshot(t, s, 2); len(st) != 2 {
		t.Fatalf("checkpoint 2 must carry the transaction of aborted checkpoint 1 too, holds %d", len(st))
	}
	if err := s.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("visible = %v", got)
	}
}

// A crash after checkpoint 1 completed (its notification lost) and after
// checkpoint 2 was pre-committed but never completed: the restore from
// checkpoint 1 commits checkpoint 1's transaction and aborts the rest.
func TestRestoreCommitsCheckpointedAndAbortsWhatFailedAttemptsLeft(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk1 := snapshot(t, s, 1)
	write(t, s, "b")
	snapshot(t, s, 2)
	write(t, s, "c") // open when the process dies
	// crash: s is dropped without Close.

	s2 := newTestSink(t, sys, 0, 1, Options{})
	if err := s2.Restore(ctx, chk1); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after restore visible = %v, want [a]", got)
	}
	for id := 2; id <= 3; id++ {
		if !sys.aborted[id] {
			t.Fatalf("transaction %d of the failed attempt was not aborted", id)
		}
	}
	// The replayed records go into a new transaction.
	write(t, s2, "b", "c")
	snapshot(t, s2, 2)
	if err := s2.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("visible = %v, want [a b c] exactly once", got)
	}
	// Restoring the same checkpoint again (a second crash) commits nothing twice.
	s3 := newTestSink(t, sys, 0, 1, Options{})
	if err := s3.Restore(ctx, chk1); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); len(got) != 3 {
		t.Fatalf("re-restore changed the output: %v", got)
	}
}

func TestFailedCommitIsRetriedAndKeptUntilItSucceeds(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{CommitAttempts: 3})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	sys.failNextCommit = 2
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatalf("two transient failures within three attempts: %v", err)
	}
	if sys.commitCalls[1] != 3 {
		t.Fatalf("commit called %d times, want 3", sys.commitCalls[1])
	}

	write(t, s, "b")
	snapshot(t, s, 2)
	sys.failNextCommit = 3
	if err := s.NotifyCheckpointComplete(ctx, 2); err == nil {
		t.Fatal("three failures in three attempts must be reported")
	}
	if p := s.Pending(); len(p) != 1 || p[0].CheckpointID != 2 {
		t.Fatalf("the failed transaction must stay pending, got %+v", p)
	}
	if st := snapshot(t, s, 3); len(st) != 1 {
		t.Fatalf("checkpoint 3 must carry the uncommitted transaction, holds %d", len(st))
	}
	if err := s.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("visible = %v", got)
	}
}

// A commit that waited out a whole outage of the external system is not
// tried again (each try would fail at once) and is an ordinary failure:
// the transaction stays pending, nothing is reported lost.
func TestACommitPastTheOutageToleranceIsNotRetried(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{CommitAttempts: 5})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk := snapshot(t, s, 1)
	sys.outage = fmt.Errorf("committing: %w", &outage.Error{What: "EndTxn", For: time.Minute, Tolerance: time.Minute, Err: errors.New("unable to dial")})
	err := s.NotifyCheckpointComplete(ctx, 1)
	var oe *outage.Error
	var lost *LostError
	if !errors.As(err, &oe) || errors.As(err, &lost) {
		t.Fatalf("err = %v, want the outage error and no lost transaction", err)
	}
	if sys.commitCalls[1] != 1 {
		t.Fatalf("commit called %d times, want once", sys.commitCalls[1])
	}
	if p := s.Pending(); len(p) != 1 {
		t.Fatalf("the transaction must stay pending, got %+v", p)
	}
	s2 := newTestSink(t, sys, 0, 1, Options{CommitAttempts: 5})
	err = s2.Restore(ctx, chk)
	var nr interface{ NonRecoverable() bool }
	if !errors.As(err, &oe) || (errors.As(err, &nr) && nr.NonRecoverable()) {
		t.Fatalf("restore = %v, want a recoverable outage error", err)
	}
	if sys.commitCalls[1] != 2 {
		t.Fatalf("commit called %d times in all, want twice", sys.commitCalls[1])
	}
}

func TestLostTransactionOnRecoveryIsNonRecoverableAndNamed(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk := snapshot(t, s, 7)
	// The external system timed the transaction out while the job was down.
	sys.aborted[1] = true

	s2 := newTestSink(t, sys, 0, 1, Options{})
	err := s2.Restore(ctx, chk)
	var lost *LostError
	if !errors.As(err, &lost) {
		t.Fatalf("restore error = %v, want a *LostError", err)
	}
	var nr interface{ NonRecoverable() bool }
	if !errors.As(err, &nr) || !nr.NonRecoverable() {
		t.Fatal("a lost transaction must be non-recoverable")
	}
	msg := err.Error()
	for _, want := range []string{"DATA MAY BE LOST", "checkpoint 7", "ID:1"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
}

// A stop with a savepoint committed the savepoint's transactions before
// the process exited, and the engine knows it (Scope.Committed). After a
// long stop the external system may have forgotten their ids (Kafka's
// transactional.id.expiration.ms) and refuse a commit as if they were
// lost: the restore commits nothing again and holds none of them.
func TestRestoreOfACommittedSavepointCommitsNothingAgain(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	write(t, s, "b")
	stop := snapshot(t, s, 2) // the stop's savepoint: holds txn 2 (and 1, if not yet committed)
	if err := s.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	calls := sys.commitCalls[2]
	sys.fenced[2] = true // the id expired: a commit is refused

	plain := newTestSink(t, sys, 0, 1, Options{})
	if err := plain.Restore(ctx, stop); !errors.As(err, new(*LostError)) {
		t.Fatalf("without the committed mark, restore = %v; want the refused commit reported as lost", err)
	}
	calls = sys.commitCalls[2]

	s2 := newTestSink(t, sys, 0, 1, Options{})
	s2.scope.Committed = true
	if err := s2.Restore(ctx, stop); err != nil {
		t.Fatalf("restoring a committed savepoint whose ids expired: %v", err)
	}
	if sys.commitCalls[2] != calls {
		t.Fatalf("transaction 2 committed %d more times on the restore, want none", sys.commitCalls[2]-calls)
	}
	if kept := s2.tx.(*memTransactor).kept; len(kept) != 0 {
		t.Fatalf("the restore holds %v; a committed savepoint's ids need not be held", kept)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("visible %v, want [a b] once", got)
	}
	write(t, s2, "c")
	snapshot(t, s2, 3)
	if err := s2.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("visible %v, want [a b c]", got)
	}
}

// Resuming on purpose from an older checkpoint (--from) while a newer one
// exists: a restored transaction the newer checkpoint no longer holds was
// committed and is not committed again (its id may have been reused, and
// the commit would be refused as a loss); one the newer checkpoint still
// holds is committed now.
func TestRestoreOfAnOlderCheckpointSkipsWhatANewerOneNoLongerHolds(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk3 := snapshot(t, s, 3) // txn 1 pending
	write(t, s, "b")
	chk4 := snapshot(t, s, 4) // txns 1 and 2 pending
	if err := s.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	write(t, s, "c")
	chk5 := snapshot(t, s, 5) // txn 2 and 3 pending; 1 committed
	sys.fenced[1] = true      // its id was reused since

	s2 := newTestSink(t, sys, 0, 1, Options{})
	s2.scope.NewerCheckpoint, s2.scope.NewerEntries = 5, chk5
	if err := s2.Restore(ctx, chk3); err != nil {
		t.Fatalf("restoring checkpoint 3 with checkpoint 5 newer: %v", err)
	}
	if sys.commitCalls[1] != 1 {
		t.Fatalf("transaction 1 committed %d times, want once (not again on the restore)", sys.commitCalls[1])
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("visible %v, want [a] (b and c after the restored checkpoint are aborted)", got)
	}

	// Checkpoint 4 still holds transaction 2 in the newer checkpoint 5:
	// it was never committed, so restoring 4 commits it (and 1 is skipped).
	sys2 := newMemSystem()
	s = newTestSink(t, sys2, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 3)
	write(t, s, "b")
	chk4 = snapshot(t, s, 4)
	if err := s.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	chk5 = snapshot(t, s, 5)
	sys2.fenced[1] = true
	s3 := newTestSink(t, sys2, 0, 1, Options{})
	s3.scope.NewerCheckpoint, s3.scope.NewerEntries = 5, chk5
	if err := s3.Restore(ctx, chk4); err != nil {
		t.Fatalf("restoring checkpoint 4 with checkpoint 5 newer: %v", err)
	}
	if got := sys2.snapshotVisible(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("visible %v, want [a b]", got)
	}

	// Without a newer checkpoint the fenced transaction is a loss.
	s4 := newTestSink(t, sys2, 0, 1, Options{})
	var lost *LostError
	if err := s4.Restore(ctx, chk4); !errors.As(err, &lost) {
		t.Fatalf("restore without a newer checkpoint: %v, want a *LostError", err)
	}
}

// Three subtasks pre-commit in checkpoint 1; the job comes back with two.
// With union redistribution every new subtask sees all entries; each
// transaction is committed by exactly one of them.
func TestRescaledRestoreCommitsEveryTransactionOnce(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	var union [][]byte
	for sub := 0; sub < 3; sub++ {
		s := newTestSink(t, sys, sub, 3, Options{})
		if err := s.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		write(t, s, fmt.Sprintf("r%d", sub))
		union = append(union, snapshot(t, s, 1)...)
	}
	for sub := 0; sub < 2; sub++ {
		s := newTestSink(t, sys, sub, 2, Options{})
		if err := s.Restore(ctx, union); err != nil {
			t.Fatal(err)
		}
	}
	got := sys.snapshotVisible()
	slices.Sort(got)
	if !slices.Equal(got, []string{"r0", "r1", "r2"}) {
		t.Fatalf("visible = %v", got)
	}
	for id := 1; id <= 3; id++ {
		if sys.commitCalls[id] != 1 {
			t.Fatalf("transaction %d committed %d times on restore, want once", id, sys.commitCalls[id])
		}
	}
}

type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) warnings() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level == slog.LevelWarn {
			out = append(out, r.Message)
		}
	}
	return out
}

func TestWarnsWhenAPendingTransactionPassesEightyPercentOfItsTimeout(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	now := time.Unix(1000, 0)
	h := &captureHandler{}
	s := newTestSink(t, sys, 0, 1, Options{TransactionTimeout: 10 * time.Second, Now: func() time.Time { return now }, Logger: slog.New(h)})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	now = now.Add(7 * time.Second)
	snapshot(t, s, 1)
	if w := h.warnings(); len(w) != 0 {
		t.Fatalf("warned at 70%% of the timeout: %v", w)
	}
	if age := s.OldestPendingAge(); age != 7*time.Second {
		t.Fatalf("oldest pending age %v, want 7s", age)
	}
	now = now.Add(2 * time.Second)
	snapshot(t, s, 2)
	w := h.warnings()
	if len(w) != 1 || !strings.Contains(w[0], "transaction timeout") {
		t.Fatalf("want one timeout warning at 90%%, got %v", w)
	}
}

func TestRestoreRefusesAnotherCodec(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk := snapshot(t, s, 1)
	other := New[string, memTxn](&memTransactor{sys: sys}, renamedCodec{}, Scope{Subtask: 0, Parallelism: 1}, Options{})
	err := other.Restore(ctx, chk)
	if err == nil || !strings.Contains(err.Error(), "codec") {
		t.Fatalf("restore with another codec: %v", err)
	}
	if len(sys.snapshotVisible()) != 0 {
		t.Fatal("a refused restore committed something")
	}
}

type renamedCodec struct{ state.JSONCodec[memTxn] }

func (renamedCodec) Name() string { return "other" }

func TestCloseAbortsTheOpenTransactionButNotPendingOnes(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk := snapshot(t, s, 1)
	write(t, s, "b")
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if sys.aborted[1] || !sys.aborted[2] {
		t.Fatalf("close must abort only the open transaction: aborted=%v", sys.aborted)
	}
	// Checkpoint 1 completed but its notification was lost before the close.
	s2 := newTestSink(t, sys, 0, 1, Options{})
	if err := s2.Restore(ctx, chk); err != nil {
		t.Fatal(err)
	}
	if got := sys.snapshotVisible(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("visible = %v", got)
	}
}

// A committed transaction is released for reuse only when a checkpoint
// taken after its commit completed: until then the latest checkpoint still
// holds it and a restore would commit it again.
func TestCommittedTransactionIsReleasedOnlyWhenNoCompletedCheckpointHoldsIt(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	tr := &memTransactor{sys: sys}
	s := New[string, memTxn](tr, state.JSONCodec[memTxn]{}, Scope{Subtask: 0, Parallelism: 1}, Options{})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	write(t, s, "b")
	snapshot(t, s, 2) // holds txn 1 (still pending) and txn 2
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if len(tr.released) != 0 {
		t.Fatalf("released %v while checkpoint 2, the latest, holds them", tr.released)
	}
	snapshot(t, s, 3) // taken after both commits: holds neither
	if len(tr.released) != 0 {
		t.Fatalf("released %v before checkpoint 3 completed", tr.released)
	}
	if err := s.NotifyCheckpointComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tr.released, []int{1, 2}) {
		t.Fatalf("released %v, want [1 2]", tr.released)
	}

	// After a restore the recovered transactions are held the same way.
	chk := func() [][]byte {
		write(t, s, "c")
		return snapshot(t, s, 4)
	}()
	tr2 := &memTransactor{sys: sys}
	s2 := New[string, memTxn](tr2, state.JSONCodec[memTxn]{}, Scope{Subtask: 0, Parallelism: 1}, Options{})
	if err := s2.Restore(ctx, chk); err != nil {
		t.Fatal(err)
	}
	snapshot(t, s2, 5)
	if len(tr2.released) != 0 {
		t.Fatal("released before the first checkpoint after the restore completed")
	}
	if err := s2.NotifyCheckpointComplete(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tr2.released, []int{3}) {
		t.Fatalf("released %v after restore, want [3]", tr2.released)
	}
}

// With AsyncCommit a notification only starts the commits: the subtask
// goes on writing while they run, every checkpoint taken meanwhile still
// holds the transactions, and Drain waits for them, in order.
func TestAsyncCommitLetsTheSubtaskWriteOnAndKeepsTransactionsUntilConfirmed(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	sys.gate = make(chan struct{})
	s := newTestSink(t, sys, 0, 1, Options{AsyncCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	write(t, s, "b")
	snapshot(t, s, 2)
	if err := s.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	write(t, s, "c") // not blocked by the held commits
	if got := len(snapshot(t, s, 3)); got != 3 {
		t.Fatalf("checkpoint 3 holds %d transactions while the commits of 1 and 2 run, want 3", got)
	}
	if v := sys.snapshotVisible(); len(v) != 0 {
		t.Fatalf("visible %v before any commit was let through", v)
	}
	sys.gate <- struct{}{} // transaction 1
	sys.gate <- struct{}{} // transaction 2
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sys.snapshotVisible(); !slices.Equal(v, []string{"a", "b"}) {
		t.Fatalf("visible %v, want [a b]", v)
	}
	if p := s.Pending(); len(p) != 1 || p[0].CheckpointID != 3 {
		t.Fatalf("pending %+v, want checkpoint 3 only", p)
	}
	if got := len(snapshot(t, s, 4)); got != 1 {
		t.Fatalf("checkpoint 4 holds %d transactions, want 1 (3)", got)
	}
	if err := s.NotifyCheckpointComplete(ctx, 4); err != nil {
		t.Fatal(err)
	}
	sys.gate <- struct{}{}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sys.snapshotVisible(); !slices.Equal(v, []string{"a", "b", "c"}) {
		t.Fatalf("visible %v after Close drained, want [a b c]", v)
	}
}

// A commit that fails on the committer goroutine fails the subtask's next
// call; the transaction stays in the checkpoint state for the restore.
func TestAsyncCommitFailureFailsTheNextCall(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	s := newTestSink(t, sys, 0, 1, Options{AsyncCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	chk := snapshot(t, s, 1)
	sys.mu.Lock()
	sys.fenced[1] = true
	sys.mu.Unlock()
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var lost *LostError
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		err = s.Write(ctx, "b")
		time.Sleep(time.Millisecond)
	}
	if !errors.As(err, &lost) || lost.CheckpointID != 1 {
		t.Fatalf("Write after the failed commit: %v, want the *LostError of checkpoint 1", err)
	}
	if p := s.Pending(); len(p) != 1 || len(chk) != 1 {
		t.Fatalf("pending %+v: the failed transaction must stay pending", p)
	}
	if err := s.Close(ctx); !errors.As(err, &lost) {
		t.Fatalf("Close: %v, want the failure again", err)
	}
}

// Close gives queued commits until its context ends, then stops the
// committer; what did not commit stays for the restore.
func TestAsyncCloseIsBoundedByItsContext(t *testing.T) {
	sys := newMemSystem()
	sys.gate = make(chan struct{}) // never let through
	s := newTestSink(t, sys, 0, 1, Options{AsyncCommit: true})
	ctx := context.Background()
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	snapshot(t, s, 1)
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Close(cctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a stuck commit: %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if v := sys.snapshotVisible(); len(v) != 0 {
		t.Fatalf("visible %v", v)
	}
}

// snapshotAsync is SnapshotStateAsync, failing the test on an error.
func snapshotAsync(t *testing.T, s *Sink[string, memTxn], id int64) ([][]byte, func(context.Context) error) {
	t.Helper()
	entries, wait, err := s.SnapshotStateAsync(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return entries, wait
}

// With AsyncPreCommit the barrier does not wait for the flush: the
// checkpoint's entries hold the transaction at once, the subtask writes
// the next one meanwhile, and wait (the engine's ack) returns only once
// the pre-commit finished. The commit follows the pre-commit.
func TestAsyncPreCommitLetsTheSubtaskWriteOnAndTheAckWaitsForIt(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	sys.preGate = make(chan struct{})
	s := newTestSink(t, sys, 0, 1, Options{AsyncPreCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	entries, wait := snapshotAsync(t, s, 1) // the pre-commit is held by the gate
	if len(entries) != 1 {
		t.Fatalf("checkpoint 1 holds %d transactions, want 1", len(entries))
	}
	write(t, s, "b") // not blocked by the flush of transaction 1
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	err := wait(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait while the pre-commit is held: %v, want the deadline", err)
	}
	sys.preGate <- struct{}{}
	if err := wait(ctx); err != nil {
		t.Fatalf("wait after the pre-commit: %v", err)
	}
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v := sys.snapshotVisible(); !slices.Equal(v, []string{"a"}) {
		t.Fatalf("visible %v after checkpoint 1, want [a]", v)
	}
	entries, wait = snapshotAsync(t, s, 2)
	if len(entries) != 1 {
		t.Fatalf("checkpoint 2 holds %d transactions, want 1 (b)", len(entries))
	}
	// A notification of checkpoint 2 waits for its pre-commit itself.
	done := make(chan error, 1)
	go func() { done <- s.NotifyCheckpointComplete(ctx, 2) }()
	select {
	case err := <-done:
		t.Fatalf("NotifyCheckpointComplete(2) returned %v before the pre-commit of 2 finished", err)
	case <-time.After(20 * time.Millisecond):
	}
	sys.preGate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := wait(ctx); err != nil {
		t.Fatal(err)
	}
	if v := sys.snapshotVisible(); !slices.Equal(v, []string{"a", "b"}) {
		t.Fatalf("visible %v after checkpoint 2, want [a b]", v)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A failed asynchronous pre-commit fails the checkpoint's wait and every
// later call: the transaction is pending in no completed checkpoint, so
// only a restart replays its records.
func TestAsyncPreCommitFailureFailsTheAckAndEveryLaterCall(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	sys.failPreCommit = map[int]bool{1: true}
	s := newTestSink(t, sys, 0, 1, Options{AsyncPreCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	_, wait := snapshotAsync(t, s, 1)
	if err := wait(ctx); err == nil || !strings.Contains(err.Error(), "checkpoint 1") || !strings.Contains(err.Error(), "broker unreachable") {
		t.Fatalf("wait: %v, want the pre-commit's failure naming checkpoint 1", err)
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		err = s.Write(ctx, "b")
		time.Sleep(time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "broker unreachable") {
		t.Fatalf("Write after the failed pre-commit: %v, want its failure", err)
	}
	if err := s.NotifyCheckpointAborted(ctx, 1); err == nil {
		t.Fatal("NotifyCheckpointAborted after the failed pre-commit succeeded")
	}
	if _, _, err := s.SnapshotStateAsync(ctx, 2); err == nil {
		t.Fatal("the next snapshot succeeded after the failed pre-commit")
	}
	if err := s.NotifyCheckpointComplete(ctx, 2); err == nil {
		t.Fatal("a notification succeeded after the failed pre-commit")
	}
	if v := sys.snapshotVisible(); len(v) != 0 {
		t.Fatalf("visible %v: nothing of the failed transaction may be committed", v)
	}
	_ = s.Close(ctx)
}

// AsyncPreCommit records the transaction before its pre-commit returns,
// so a Transactor whose PreCommit returns another value is refused.
func TestAsyncPreCommitRefusesAChangedTransaction(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	sys.renumber = true
	s := newTestSink(t, sys, 0, 1, Options{AsyncPreCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	_, wait := snapshotAsync(t, s, 1)
	if err := wait(ctx); err == nil || !strings.Contains(err.Error(), "AsyncPreCommit") {
		t.Fatalf("wait: %v, want the refusal naming AsyncPreCommit", err)
	}
	_ = s.Close(ctx)
}

// Close stops a pre-commit still running and returns; its transaction
// stays pending (no completed checkpoint can hold it) for the restore.
func TestCloseStopsARunningPreCommit(t *testing.T) {
	ctx := context.Background()
	sys := newMemSystem()
	sys.preGate = make(chan struct{}) // never let through
	s := newTestSink(t, sys, 0, 1, Options{AsyncPreCommit: true})
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, "a")
	_, wait := snapshotAsync(t, s, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a pre-commit running")
	}
	if err := wait(ctx); err == nil {
		t.Fatal("the stopped pre-commit's wait succeeded")
	}
	if p := s.Pending(); len(p) != 1 || p[0].CheckpointID != 1 {
		t.Fatalf("pending %+v, want checkpoint 1's transaction", p)
	}
}
