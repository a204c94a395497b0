package testdriver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/testdriver"
	"github.com/onceflow/onceflow/twophase"
)

// rowStore stands for a user's own external system, a database say: a job
// writes rows into it through a sink of the user's, and it outlives the
// job's crashes. Rows written in a transaction become visible when the
// transaction commits.
type rowStore struct {
	mu        sync.Mutex
	rows      []string            // visible
	staged    map[string][]string // open and pre-committed transactions, by id
	owner     map[string]int      // the subtask that began each staged one
	committed map[string]bool
	next      int
}

func newRowStore() *rowStore {
	return &rowStore{staged: map[string][]string{}, owner: map[string]int{}, committed: map[string]bool{}}
}

func (s *rowStore) visible() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.rows))
}

// appendSink is a deliberately naive sink of the user's: each record is a
// row at once, outside any transaction. A crash replays the records after
// the last checkpoint, and the store gets them twice.
type appendSink struct{ s *rowStore }

func (a appendSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[string], error) {
	return a, nil
}
func (a appendSink) Write(_ context.Context, row string) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	a.s.rows = append(a.s.rows, row)
	return nil
}
func (appendSink) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (appendSink) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (appendSink) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (appendSink) Close(context.Context) error                            { return nil }

// storeTxn names a transaction of the store.
type storeTxn struct {
	ID      string `json:"id"`
	Subtask int    `json:"subtask"`
}

// storeTransactor is the store's side of twophase.Transactor: what a
// user writes to make their own system a two-phase-commit sink.
type storeTransactor struct {
	s       *rowStore
	subtask int
}

func (t storeTransactor) Begin(context.Context) (storeTxn, error) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.next++
	txn := storeTxn{ID: fmt.Sprintf("%d-%d", t.subtask, t.s.next), Subtask: t.subtask}
	t.s.staged[txn.ID], t.s.owner[txn.ID] = []string{}, t.subtask
	return txn, nil
}

func (t storeTransactor) Write(_ context.Context, txn storeTxn, row string) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.staged[txn.ID] = append(t.s.staged[txn.ID], row)
	return nil
}

func (storeTransactor) PreCommit(_ context.Context, txn storeTxn) (storeTxn, error) { return txn, nil }

// Commit is idempotent: a restore commits the checkpoint's transactions
// again.
func (t storeTransactor) Commit(_ context.Context, txn storeTxn) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.s.committed[txn.ID] {
		return nil
	}
	rows, ok := t.s.staged[txn.ID]
	if !ok {
		return fmt.Errorf("transaction %s: %w", txn.ID, twophase.ErrTransactionLost)
	}
	t.s.rows = append(t.s.rows, rows...)
	t.s.committed[txn.ID] = true
	delete(t.s.staged, txn.ID)
	return nil
}

func (t storeTransactor) Abort(_ context.Context, txn storeTxn) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	delete(t.s.staged, txn.ID)
	return nil
}

func (t storeTransactor) AbortLingering(_ context.Context, _ twophase.Scope, keep []storeTxn) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	for id := range t.s.staged {
		if t.s.owner[id] == t.subtask && !slices.ContainsFunc(keep, func(k storeTxn) bool { return k.ID == id }) {
			delete(t.s.staged, id)
		}
	}
	return nil
}

// txnSink is the same store behind package twophase: rows are staged in a
// transaction per checkpoint and committed once the checkpoint completes.
type txnSink struct{ s *rowStore }

func (t txnSink) NewWriter(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[string], error) {
	w := twophase.New[string, storeTxn](storeTransactor{s: t.s, subtask: sc.Subtask}, state.JSONCodec[storeTxn]{},
		twophase.Scope{Subtask: sc.Subtask, Parallelism: sc.Parallelism, NewerCheckpoint: sc.NewerCheckpoint,
			NewerEntries: sc.NewerEntries, Committed: sc.RestoredCommitted}, twophase.Options{})
	if err := w.Restore(ctx, restored); err != nil {
		return nil, err
	}
	return w, nil
}

// rows is a Dataflow that writes each input line as a row into sink.
func rows(sink engine.Sink[string]) jobs.Dataflow {
	return func(b *jobs.Builder) error {
		in := jobs.Source(b, "source", func(r *kgo.Record) (string, error) { return string(r.Value), nil })
		jobs.SinkTo(b, in, "rows", sink)
		return nil
	}
}

// writeAndCrash pipes 30 lines with a checkpoint after the first 10 and
// crashes before the last 10 are checkpointed (the crash loses the
// records in flight and replays everything after the checkpoint), then
// checkpoints what follows. It returns what the store shows against the
// input, sorted.
func writeAndCrash(t *testing.T, d *testdriver.Driver, s *rowStore) (got, want []string) {
	t.Helper()
	for i := range 30 {
		line := fmt.Sprintf("row-%02d", i)
		want = append(want, line)
		d.Pipe(&kgo.Record{Value: []byte(line)})
		switch i {
		case 9:
			d.Checkpoint()
		case 19:
			d.Crash()
		}
	}
	d.Checkpoint()
	sort.Strings(want)
	return s.visible(), want
}

// A sink of the user's that writes outside transactions passes a run
// without crashes but not the driver's crash: the replay writes rows
// twice. The same store behind package twophase holds every row once.
func TestCrashCatchesANonIdempotentSink(t *testing.T) {
	bad := newRowStore()
	got, want := writeAndCrash(t, testdriver.New(t, rows(appendSink{bad}), testdriver.Options{Partitions: 2, Parallelism: 2}), bad)
	if slices.Equal(got, want) {
		t.Fatal("the naive sink's rows are exactly the input across a crash: the crash replayed nothing")
	}
	if err := sameRows(got, want); err == nil || !errors.Is(err, errDuplicate) {
		t.Fatalf("the naive sink: %v, want duplicated rows", err)
	} else {
		t.Log("the naive sink:", err)
	}

	good := newRowStore()
	got, want = writeAndCrash(t, testdriver.New(t, rows(txnSink{good}), testdriver.Options{Partitions: 2, Parallelism: 2}), good)
	if err := sameRows(got, want); err != nil {
		t.Fatalf("the two-phase sink: %v", err)
	}
}

var errDuplicate = errors.New("duplicated rows")

// sameRows compares two sorted lists of rows.
func sameRows(got, want []string) error {
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			return fmt.Errorf("%w: %q and others (%d rows for %d inputs)", errDuplicate, got[i], len(got), len(want))
		}
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("rows %v, want %v", got, want)
	}
	return nil
}
