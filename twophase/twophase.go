package twophase

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/internal/failpoint"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/state"
)

// Transactor is the external transactional system a Sink writes into, in
// the terms of Flink's TwoPhaseCommitSinkFunction. Txn is a small value that
// identifies one transaction well enough to commit or abort it from another
// process after a crash (for Kafka: transactional id, producer id and epoch).
//
// The Sink calls a Transactor from one goroutine at a time.
type Transactor[T, Txn any] interface {
	// Begin starts a transaction. The Sink begins one lazily, when the first
	// record after a barrier arrives, so that no empty transaction is ever
	// pre-committed.
	Begin(ctx context.Context) (Txn, error)
	// Write writes rec inside txn.
	Write(ctx context.Context, txn Txn, rec T) error
	// PreCommit makes everything written inside txn durable in the external
	// system without making it visible (for Kafka: flush and check every
	// produce result). It returns the transaction as it must be recorded in
	// the checkpoint; after it returns nil, Commit of that value must be able
	// to succeed from any process, until the external system's transaction
	// timeout passes.
	PreCommit(ctx context.Context, txn Txn) (Txn, error)
	// Commit makes a pre-committed transaction visible. It may be called more
	// than once for the same transaction, also from a process that did not
	// begin it, and must succeed each time. An error wrapping
	// ErrTransactionLost says the transaction can never be committed (it was
	// aborted or fenced): retrying is pointless and records may be lost.
	Commit(ctx context.Context, txn Txn) error
	// Abort discards a transaction that was never pre-committed. It is
	// called when the sink closes with a transaction open.
	Abort(ctx context.Context, txn Txn) error
	// AbortLingering aborts every transaction that failed attempts of this
	// subtask may have left open, other than those in keep (which were just
	// committed by recovery). It runs once per restore, after the recovery
	// commits and before the first Begin.
	AbortLingering(ctx context.Context, scope Scope, keep []Txn) error
}

// Releaser is implemented by a Transactor that reuses what a transaction
// holds (Kafka transactional ids). Release is called once no checkpoint a
// restore would start from holds txn any more: txn was committed and a
// later checkpoint, taken after the commit, completed. Until then a restore
// may commit txn again, which must still succeed, so its resources must not
// be reused or fenced.
type Releaser[Txn any] interface {
	Release(txn Txn)
}

// Scope says which subtask of how many a Sink is.
type Scope struct {
	Subtask     int
	Parallelism int
	// NewerCheckpoint, when not zero, is a complete checkpoint newer than
	// the one restored (a run resumed on purpose from an older checkpoint
	// or savepoint), and NewerEntries the union of the sink's entries in
	// it. A transaction of the restored checkpoint that the newer one no
	// longer holds was committed before it completed (a transaction leaves
	// the pending list only once its commit succeeded), so Restore does
	// not commit it again: its transactional id may have been reused
	// since, and the commit would be refused as if the transaction had
	// been lost.
	NewerCheckpoint int64
	NewerEntries    [][]byte
	// Committed says every transaction of the restored checkpoint is
	// known to be committed: the checkpoint is a stop's savepoint, and the
	// stop confirmed its commits before the process exited. Restore then
	// commits none of them again and does not hold their ids: after a long
	// stop the external system may have forgotten the ids (Kafka's
	// transactional.id.expiration.ms, 7 days by default) and would refuse
	// the commit as if the transaction had been lost.
	Committed bool
}

// ErrTransactionLost marks a transaction that can no longer be committed:
// the external system aborted it (typically because it outlived its
// transaction timeout) or another producer fenced it. For a pre-committed
// transaction of a completed checkpoint this is data loss, and the Sink
// reports it as a non-recoverable error naming the checkpoint and the
// transaction.
var ErrTransactionLost = errors.New("transaction can no longer be committed")

// Options configure a Sink.
type Options struct {
	// TransactionTimeout is the external system's timeout for one
	// transaction; zero disables the age warning.
	TransactionTimeout time.Duration
	// WarningRatio is the fraction of TransactionTimeout after which a
	// pending transaction's age is logged as a warning (default 0.8).
	WarningRatio float64
	// CommitAttempts bounds how often a failing commit is tried within one
	// notification before the error is returned (default 5). Commits are
	// retried across restarts anyway: the pending transaction stays in the
	// checkpoint until its commit succeeds. A commit that already waited
	// out a whole outage of the external system (an *outage.Error) is not
	// tried again: the next tries would only fail at once.
	CommitAttempts int
	// RetryBackoff is the first pause between commit attempts; it doubles
	// each time (default 100ms).
	RetryBackoff time.Duration
	// AsyncCommit commits on a goroutine of the Sink's own, so that the
	// subtask goes on writing the next transaction (on another
	// transactional id) while the commit's round trip runs; the commit
	// round trip otherwise stalls the subtask at every checkpoint. A
	// transaction stays in the pending list, and so in every checkpoint
	// taken meanwhile, until its commit is confirmed; a failed commit is
	// returned by the next call of the subtask (Write, SnapshotState, a
	// notification, Drain or Close). The Transactor's Commit then runs
	// concurrently with its other methods and must be safe for that. One
	// batch of commits runs at a time: a notification arriving while the
	// previous batch still commits waits for it.
	AsyncCommit bool
	// AsyncPreCommit lets SnapshotStateAsync pre-commit on a goroutine of
	// the Sink's own, so that the subtask writes the next transaction
	// (on another transactional id) while the last one flushes, instead
	// of stalling at every barrier for the flush. It needs a Transactor
	// whose PreCommit returns the transaction it is given (the checkpoint
	// records it before the pre-commit ends; a different value fails the
	// pre-commit) and is safe to run concurrently with Begin, Write and
	// Commit of other transactions. The Sink itself does not order the
	// records of the flushing transaction before the next one's: a
	// Transactor for which that order matters keeps it (the Kafka sink
	// holds the next transaction's records until the flush ended). See
	// SnapshotStateAsync.
	AsyncPreCommit bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) fill() {
	if o.WarningRatio <= 0 || o.WarningRatio >= 1 {
		o.WarningRatio = 0.8
	}
	if o.CommitAttempts <= 0 {
		o.CommitAttempts = 5
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 100 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Pending is a pre-committed transaction waiting for its checkpoint to
// complete.
type Pending[Txn any] struct {
	CheckpointID int64
	Txn          Txn
	// Started is when the transaction began, for the timeout warning.
	Started time.Time
	// Owner is the subtask that pre-committed it.
	Owner int
}

// held is a committed transaction that the latest completed checkpoint may
// still hold; releaseAt is the first checkpoint taken after the commit.
type held[Txn any] struct {
	txn       Txn
	releaseAt int64
}

// entry is how a Pending is stored in the checkpoint.
type entry struct {
	CheckpointID int64     `json:"checkpoint_id"`
	Owner        int       `json:"owner"`
	Started      time.Time `json:"started"`
	Codec        string    `json:"codec"`
	Txn          []byte    `json:"txn"`
}

// Sink drives a Transactor through the two-phase-commit protocol of one
// subtask:
//
//   - records are written into the open transaction (begun lazily);
//   - at the barrier of checkpoint n, SnapshotState pre-commits the open
//     transaction and returns every pending (pre-committed, uncommitted)
//     transaction as operator state, before the subtask acks;
//   - NotifyCheckpointComplete(n) commits every pending transaction of a
//     checkpoint <= n, oldest first: notifications may come late, twice or
//     not at all for some checkpoints, and a transaction of an aborted
//     checkpoint is carried in the next checkpoint's state and committed
//     with it;
//   - Restore, after a crash, commits every pending transaction the restored
//     checkpoint holds (the checkpoint completed, so its transactions must
//     become visible, even if the notification never arrived), then asks
//     the Transactor to abort whatever failed attempts left open.
//
// Store the state with union redistribution: on restore every subtask sees
// all entries and commits those whose owner o satisfies o % parallelism ==
// subtask, so a rescaled job still commits each transaction (Commit is
// idempotent, so overlap would be harmless too).
//
// A Sink is used from the subtask's goroutine only.
type Sink[T, Txn any] struct {
	tx    Transactor[T, Txn]
	codec state.Codec[Txn]
	opts  Options
	scope Scope

	open        bool
	current     Txn
	started     time.Time
	pending     []Pending[Txn]
	held        []held[Txn]
	lastWarned  int64
	restoreDone bool

	// With AsyncCommit: the first queued entries of pending have been
	// handed to the committer (queued or committed, not yet collected).
	async  *committer[Txn]
	queued int

	// With AsyncPreCommit: the pre-commits running or finished and not
	// yet checked, oldest first, on goroutines owned by the Sink (Close
	// cancels pcCtx and waits for them); pcErr is the first that failed,
	// returned by every later call; pcFinished is set when one finished.
	preCommits []*preCommit
	pcErr      error
	pcFinished atomic.Bool
	pcCtx      context.Context
	pcCancel   context.CancelFunc
}

// preCommit is one pre-commit running on its own goroutine: err is set
// before done is closed.
type preCommit struct {
	checkpointID int64
	done         chan struct{}
	err          error
}

// committer commits batches of pending transactions in order on its own
// goroutine, owned by the Sink: started by the first batch, stopped by
// Close.
type committer[Txn any] struct {
	mu      sync.Mutex
	batches [][]Pending[Txn] // to commit, oldest first
	busy    bool             // a batch is being committed
	done    int              // committed and not yet collected
	err     error            // the first failure; nothing is committed after it
	ready   atomic.Bool      // done > 0 || err != nil
	wake    chan struct{}    // a batch was queued
	idle    chan struct{}    // closed and replaced when the queue empties
	ctx     context.Context
	cancel  context.CancelFunc
	started bool          // the goroutine runs (from the first batch)
	exited  chan struct{} // closed when it returned
}

// New returns a Sink for subtask scope.Subtask that stores transactions with
// codec.
func New[T, Txn any](tx Transactor[T, Txn], codec state.Codec[Txn], scope Scope, opts Options) *Sink[T, Txn] {
	opts.fill()
	s := &Sink[T, Txn]{tx: tx, codec: codec, opts: opts, scope: scope, lastWarned: -1}
	if opts.AsyncCommit {
		ctx, cancel := context.WithCancel(context.Background())
		s.async = &committer[Txn]{wake: make(chan struct{}, 1), idle: make(chan struct{}), ctx: ctx, cancel: cancel,
			exited: make(chan struct{})}
	}
	return s
}

// runCommitter is the committer's goroutine: it commits each queued batch,
// oldest first, hitting the before-commit failpoint before a batch's first
// commit and between-commits before the others.
func (s *Sink[T, Txn]) runCommitter() {
	c := s.async
	defer close(c.exited)
	for {
		c.mu.Lock()
		for len(c.batches) == 0 || c.err != nil {
			if len(c.batches) > 0 { // after a failure nothing more is committed
				c.batches = nil
			}
			c.busy = false
			close(c.idle)
			c.idle = make(chan struct{})
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.ctx.Done():
				return
			}
			c.mu.Lock()
		}
		batch := c.batches[0]
		c.batches = c.batches[1:]
		c.busy = true
		c.mu.Unlock()
		for i, p := range batch {
			if i == 0 {
				failpoint.Hit(failpoint.BeforeCommit)
			} else {
				failpoint.Hit(failpoint.BetweenCommits)
			}
			err := s.commit(c.ctx, p)
			c.mu.Lock()
			if err != nil {
				c.err = err
			} else {
				c.done++
			}
			c.ready.Store(true)
			c.mu.Unlock()
			if err != nil {
				break
			}
		}
	}
}

// collect takes the committer's confirmed commits off the pending list
// (they are held until a later checkpoint completes) and returns its
// failure, if any: a failed commit fails the subtask, and the transaction
// stays in the checkpoint for the restore to commit.
func (s *Sink[T, Txn]) collect() error {
	c := s.async
	if c == nil || !c.ready.Load() {
		return nil
	}
	c.mu.Lock()
	done, err := c.done, c.err
	c.done = 0
	c.ready.Store(err != nil)
	c.mu.Unlock()
	for range done {
		p := s.pending[0]
		s.pending = s.pending[1:]
		s.queued--
		s.held = append(s.held, held[Txn]{txn: p.Txn})
	}
	return err
}

// Drain waits until every commit started by NotifyCheckpointComplete is
// confirmed (at once without AsyncCommit) and returns the first failure.
// A stop with a savepoint drains, so that it leaves nothing pending.
func (s *Sink[T, Txn]) Drain(ctx context.Context) error {
	c := s.async
	if c == nil {
		return nil
	}
	if !c.started {
		return s.collect()
	}
	for {
		c.mu.Lock()
		idle := !c.busy && len(c.batches) == 0
		wait := c.idle
		c.mu.Unlock()
		if idle {
			return s.collect()
		}
		select {
		case <-wait:
		case <-ctx.Done():
			if err := s.collect(); err != nil {
				return err
			}
			return fmt.Errorf("twophase: waiting for the commits of subtask %d: %w", s.scope.Subtask, ctx.Err())
		}
	}
}

// Restore commits the pending transactions that entries (the union of
// every subtask's state from the restored checkpoint) assign to this
// subtask, then aborts lingering ones. It must be called once before the
// first Write, with nil entries for a job without a checkpoint (lingering
// transactions of an earlier run are aborted then too). With
// Scope.Committed it commits nothing: the transactions were committed
// before the checkpoint was marked so.
//
// A commit that fails with ErrTransactionLost is returned as a
// non-recoverable error: the checkpoint already advanced past these
// records, so they are lost, and restarting cannot change that.
func (s *Sink[T, Txn]) Restore(ctx context.Context, entries [][]byte) error {
	if s.restoreDone {
		return errors.New("twophase: Restore called twice")
	}
	var mine []Pending[Txn]
	for i, raw := range entries {
		p, err := s.decode(raw)
		if err != nil {
			return fmt.Errorf("twophase: restoring entry %d of the checkpoint's sink state: %w", i, err)
		}
		if p.Owner%s.scope.Parallelism == s.scope.Subtask {
			mine = append(mine, p)
		}
	}
	slices.SortStableFunc(mine, func(a, b Pending[Txn]) int { return int(a.CheckpointID - b.CheckpointID) })
	stillPending := map[string]bool{}
	for i, raw := range s.scope.NewerEntries {
		p, err := s.decode(raw)
		if err != nil {
			return fmt.Errorf("twophase: reading entry %d of the sink state of newer checkpoint %d: %w", i, s.scope.NewerCheckpoint, err)
		}
		k, err := s.key(p)
		if err != nil {
			return err
		}
		stillPending[k] = true
	}
	keep := make([]Txn, 0, len(mine))
	if s.scope.Committed && len(mine) > 0 {
		s.opts.Logger.Info("twophase: not committing the restored transactions again: the restored checkpoint is marked committed (a stop's savepoint)",
			"subtask", s.scope.Subtask, "transactions", len(mine))
		mine = nil
	}
	for _, p := range mine {
		if s.scope.NewerCheckpoint != 0 {
			k, err := s.key(p)
			if err != nil {
				return err
			}
			if !stillPending[k] {
				s.opts.Logger.Info("twophase: not committing a restored transaction again: the newer checkpoint no longer holds it, so it was committed before that one completed",
					"checkpoint", p.CheckpointID, "txn", fmt.Sprintf("%+v", p.Txn), "newer_checkpoint", s.scope.NewerCheckpoint)
				continue
			}
		}
		s.warnIfOld(p, "recovering")
		failpoint.Hit(failpoint.RestoreBeforeCommit)
		if err := s.commit(ctx, p); err != nil {
			return err
		}
		failpoint.Hit(failpoint.RestoreAfterCommit)
		keep = append(keep, p.Txn)
		s.held = append(s.held, held[Txn]{txn: p.Txn})
	}
	if err := s.tx.AbortLingering(ctx, s.scope, keep); err != nil {
		return fmt.Errorf("twophase: aborting transactions left open by failed attempts of subtask %d: %w", s.scope.Subtask, err)
	}
	s.restoreDone = true
	return nil
}

// Write writes rec into the open transaction, beginning one if needed.
func (s *Sink[T, Txn]) Write(ctx context.Context, rec T) error {
	if !s.restoreDone {
		return errors.New("twophase: Write before Restore")
	}
	if s.async != nil && s.async.ready.Load() {
		if err := s.collect(); err != nil {
			return err
		}
	}
	if s.pcErr != nil || s.pcFinished.Load() {
		if err := s.checkPreCommits(); err != nil {
			return err
		}
	}
	if !s.open {
		txn, err := s.tx.Begin(ctx)
		if err != nil {
			return fmt.Errorf("twophase: beginning a transaction: %w", err)
		}
		s.current, s.open, s.started = txn, true, s.opts.Now()
	}
	return s.tx.Write(ctx, s.current, rec)
}

// SnapshotState pre-commits the open transaction (if any record was written
// since the last barrier) under checkpointID and returns the entries to
// store as this subtask's operator state. An error fails the checkpoint;
// the open transaction is then unusable and the job must restart.
func (s *Sink[T, Txn]) SnapshotState(ctx context.Context, checkpointID int64) ([][]byte, error) {
	if err := s.beforeSnapshot(ctx, checkpointID, true); err != nil {
		return nil, err
	}
	if s.open {
		txn, err := s.tx.PreCommit(ctx, s.current)
		if err != nil {
			return nil, fmt.Errorf("twophase: pre-committing the transaction of checkpoint %d: %w", checkpointID, err)
		}
		s.addPending(checkpointID, txn)
		failpoint.Hit(failpoint.AfterPreCommit)
	}
	return s.entries()
}

// addPending records the open transaction, as txn, as pending under
// checkpointID; the next Write begins another.
func (s *Sink[T, Txn]) addPending(checkpointID int64, txn Txn) {
	s.pending = append(s.pending, Pending[Txn]{CheckpointID: checkpointID, Txn: txn, Started: s.started, Owner: s.scope.Subtask})
	s.open = false
	var zero Txn
	s.current = zero
}

// beforeSnapshot is the start of both snapshots: it takes in confirmed
// commits and finished pre-commits, returning a failure of either (with
// waitAll it first waits for every pre-commit still running, for
// SnapshotState), and marks the held transactions releasable by this
// checkpoint.
func (s *Sink[T, Txn]) beforeSnapshot(ctx context.Context, checkpointID int64, waitAll bool) error {
	if err := s.collect(); err != nil {
		return err
	}
	check := s.checkPreCommits
	if waitAll {
		check = func() error { return s.waitPreCommits(ctx, checkpointID) } // checks too
	}
	if err := check(); err != nil {
		return err
	}
	for i := range s.held {
		if s.held[i].releaseAt == 0 {
			s.held[i].releaseAt = checkpointID
		}
	}
	return nil
}

// SnapshotStateAsync is SnapshotState with the pre-commit left running
// (Options.AsyncPreCommit; without it, it is SnapshotState and a wait that
// returns nil). It hands the open transaction to a goroutine that
// pre-commits it, records it as pending at once and returns the entries,
// which hold it: the subtask may then write the next transaction while
// the flush runs. wait returns once that pre-commit and every earlier
// one still running finished, with the first failure, or when ctx ends;
// the engine calls it before it acknowledges the checkpoint, so a
// checkpoint completes only after its transactions are durable, and
// NotifyCheckpointComplete never commits a transaction whose pre-commit
// has not succeeded (it waits for those of checkpoints up to its id).
//
// A failed pre-commit also fails every later call of the Sink (Write,
// the snapshots, the notifications, Drain): its records are lost unless
// the job restarts from the last completed checkpoint, which does not
// hold the transaction, and replays them.
func (s *Sink[T, Txn]) SnapshotStateAsync(ctx context.Context, checkpointID int64) (entries [][]byte, wait func(context.Context) error, err error) {
	if !s.opts.AsyncPreCommit {
		entries, err = s.SnapshotState(ctx, checkpointID)
		return entries, func(context.Context) error { return nil }, err
	}
	if err := s.beforeSnapshot(ctx, checkpointID, false); err != nil {
		return nil, nil, err
	}
	if s.open {
		if s.pcCtx == nil {
			s.pcCtx, s.pcCancel = context.WithCancel(context.Background())
		}
		pc := &preCommit{checkpointID: checkpointID, done: make(chan struct{})}
		txn := s.current
		go func() { // owned by the Sink: Close cancels pcCtx and waits
			defer s.pcFinished.Store(true) // after done is closed
			defer close(pc.done)
			got, err := s.tx.PreCommit(s.pcCtx, txn)
			switch {
			case err != nil:
				pc.err = fmt.Errorf("twophase: pre-committing the transaction of checkpoint %d: %w", checkpointID, err)
			case !reflect.DeepEqual(got, txn):
				pc.err = fmt.Errorf("twophase: the pre-commit of checkpoint %d returned %+v for transaction %+v; AsyncPreCommit needs a Transactor whose PreCommit returns the transaction it is given", checkpointID, got, txn)
			default:
				failpoint.Hit(failpoint.AfterPreCommit)
			}
		}()
		s.preCommits = append(s.preCommits, pc)
		s.addPending(checkpointID, txn)
	}
	entries, err = s.entries()
	if err != nil {
		return nil, nil, err
	}
	running := slices.Clone(s.preCommits)
	return entries, func(ctx context.Context) error { return awaitPreCommits(ctx, running) }, nil
}

// awaitPreCommits waits for every pre-commit of pcs and returns the first
// failure.
func awaitPreCommits(ctx context.Context, pcs []*preCommit) error {
	for _, pc := range pcs {
		select {
		case <-pc.done:
			if pc.err != nil {
				return pc.err
			}
		case <-ctx.Done():
			return fmt.Errorf("twophase: waiting for the pre-commit of checkpoint %d: %w", pc.checkpointID, ctx.Err())
		}
	}
	return nil
}

// waitPreCommits waits for the running pre-commits of checkpoints up to
// id.
func (s *Sink[T, Txn]) waitPreCommits(ctx context.Context, id int64) error {
	var due []*preCommit
	for _, pc := range s.preCommits {
		if pc.checkpointID <= id {
			due = append(due, pc)
		}
	}
	if err := awaitPreCommits(ctx, due); err != nil {
		return err
	}
	return s.checkPreCommits()
}

// checkPreCommits drops the finished pre-commits and returns the first
// failure, which every later call returns too.
func (s *Sink[T, Txn]) checkPreCommits() error {
	if s.pcErr != nil {
		return s.pcErr
	}
	s.pcFinished.Store(false)
	kept := s.preCommits[:0]
	for _, pc := range s.preCommits {
		select {
		case <-pc.done:
			if pc.err != nil && s.pcErr == nil {
				s.pcErr = pc.err
			}
		default:
			kept = append(kept, pc)
		}
	}
	clear(s.preCommits[len(kept):])
	s.preCommits = kept
	return s.pcErr
}

// entries encodes the pending transactions for the checkpoint.
func (s *Sink[T, Txn]) entries() ([][]byte, error) {
	out := make([][]byte, 0, len(s.pending))
	for _, p := range s.pending {
		b, err := s.encode(p)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(s.pending) > 0 {
		s.warnIfOld(s.pending[0], "pending")
	}
	return out, nil
}

// NotifyCheckpointComplete commits every pending transaction of a checkpoint
// <= checkpointID, oldest first. A transaction leaves the pending list only
// once its commit succeeded, so a failure here loses nothing: the next
// checkpoint carries it again and a restore commits it.
func (s *Sink[T, Txn]) NotifyCheckpointComplete(ctx context.Context, checkpointID int64) error {
	if err := s.collect(); err != nil {
		return err
	}
	if err := s.waitPreCommits(ctx, checkpointID); err != nil {
		return err
	}
	if r, ok := s.tx.(Releaser[Txn]); ok {
		s.held = slices.DeleteFunc(s.held, func(h held[Txn]) bool {
			if h.releaseAt != 0 && h.releaseAt <= checkpointID {
				r.Release(h.txn)
				return true
			}
			return false
		})
	} else {
		s.held = nil
	}
	if c := s.async; c != nil {
		// One batch at a time: while the previous one still commits, the
		// subtask waits (backpressure), so that commits slower than the
		// checkpoints do not pile up transactions without bound.
		if err := s.Drain(ctx); err != nil {
			return err
		}
		var batch []Pending[Txn]
		for s.queued < len(s.pending) && s.pending[s.queued].CheckpointID <= checkpointID {
			batch = append(batch, s.pending[s.queued])
			s.queued++
		}
		if len(batch) > 0 {
			c.mu.Lock()
			c.batches = append(c.batches, batch)
			c.mu.Unlock()
			if !c.started {
				c.started = true
				go s.runCommitter()
			}
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return nil
	}
	for i := 0; len(s.pending) > 0 && s.pending[0].CheckpointID <= checkpointID; i++ {
		if i == 0 {
			failpoint.Hit(failpoint.BeforeCommit)
		} else {
			failpoint.Hit(failpoint.BetweenCommits)
		}
		p := s.pending[0]
		if err := s.commit(ctx, p); err != nil {
			return err
		}
		s.pending = s.pending[1:]
		s.held = append(s.held, held[Txn]{txn: p.Txn})
	}
	return nil
}

// NotifyCheckpointAborted keeps the pending transactions: they are carried
// in the next checkpoint and committed when it completes.
func (s *Sink[T, Txn]) NotifyCheckpointAborted(ctx context.Context, checkpointID int64) error {
	if err := s.collect(); err != nil {
		return err
	}
	return s.checkPreCommits()
}

// Close aborts the open transaction, which no checkpoint holds. Pending
// transactions are left alone: a completed checkpoint may hold them even if
// its notification has not arrived, and only a restore may decide.
func (s *Sink[T, Txn]) Close(ctx context.Context) error {
	var errs []error
	if s.pcCancel != nil {
		// A running pre-commit's transaction is pending, not committed:
		// stop it, and leave it to the restore like the other pending
		// ones (its checkpoint cannot have completed).
		s.pcCancel()
		for _, pc := range s.preCommits {
			<-pc.done
		}
		s.preCommits, s.pcCancel = nil, nil
	}
	if s.async != nil {
		// Let queued commits finish within ctx, then stop the committer:
		// what is not committed stays in the checkpoint for the restore.
		if err := s.Drain(ctx); err != nil {
			errs = append(errs, err)
		}
		s.async.cancel()
		if s.async.started {
			<-s.async.exited
		}
		s.async = nil
	}
	if s.open {
		s.open = false
		if err := s.tx.Abort(ctx, s.current); err != nil {
			errs = append(errs, fmt.Errorf("twophase: aborting the open transaction on close: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Pending returns the pre-committed transactions not yet committed, oldest
// first.
func (s *Sink[T, Txn]) Pending() []Pending[Txn] { return slices.Clone(s.pending) }

// OldestPendingAge is the age of the oldest uncommitted transaction, open or
// pending, or zero when there is none.
func (s *Sink[T, Txn]) OldestPendingAge() time.Duration {
	var oldest time.Time
	if len(s.pending) > 0 {
		oldest = s.pending[0].Started
	} else if s.open {
		oldest = s.started
	} else {
		return 0
	}
	return s.opts.Now().Sub(oldest)
}

// commit commits p, retrying transient failures with doubling pauses.
func (s *Sink[T, Txn]) commit(ctx context.Context, p Pending[Txn]) error {
	backoff := s.opts.RetryBackoff
	var err error
	for attempt := 1; attempt <= s.opts.CommitAttempts; attempt++ {
		start := time.Now()
		err = s.tx.Commit(ctx, p.Txn)
		if err == nil {
			if took := time.Since(start); took > 250*time.Millisecond {
				s.opts.Logger.Info("twophase: a slow commit", "checkpoint", p.CheckpointID, "took", took.Round(time.Millisecond))
			}
			return nil
		}
		if errors.Is(err, ErrTransactionLost) {
			return &LostError{CheckpointID: p.CheckpointID, Txn: fmt.Sprintf("%+v", p.Txn), Age: s.opts.Now().Sub(p.Started), Err: err}
		}
		if oe := (*outage.Error)(nil); errors.As(err, &oe) {
			return fmt.Errorf("twophase: committing transaction %+v of checkpoint %d: %w", p.Txn, p.CheckpointID, err)
		}
		if attempt == s.opts.CommitAttempts {
			break
		}
		s.opts.Logger.Warn("twophase: commit failed, retrying", "checkpoint", p.CheckpointID, "txn", fmt.Sprintf("%+v", p.Txn), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("twophase: committing transaction %+v of checkpoint %d: %w", p.Txn, p.CheckpointID, ctx.Err())
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return fmt.Errorf("twophase: committing transaction %+v of checkpoint %d failed %d times: %w", p.Txn, p.CheckpointID, s.opts.CommitAttempts, err)
}

func (s *Sink[T, Txn]) warnIfOld(p Pending[Txn], what string) {
	if s.opts.TransactionTimeout <= 0 || p.CheckpointID == s.lastWarned {
		return
	}
	age := s.opts.Now().Sub(p.Started)
	if float64(age) < s.opts.WarningRatio*float64(s.opts.TransactionTimeout) {
		return
	}
	s.lastWarned = p.CheckpointID
	s.opts.Logger.Warn("twophase: a pre-committed transaction is close to its transaction timeout; if it passes the timeout before it commits, its records are lost",
		"state", what, "checkpoint", p.CheckpointID, "txn", fmt.Sprintf("%+v", p.Txn),
		"age", age.Round(time.Millisecond), "timeout", s.opts.TransactionTimeout)
}

func (s *Sink[T, Txn]) encode(p Pending[Txn]) ([]byte, error) {
	txn, err := s.codec.Encode(p.Txn)
	if err != nil {
		return nil, fmt.Errorf("twophase: encoding transaction %+v of checkpoint %d: %w", p.Txn, p.CheckpointID, err)
	}
	return json.Marshal(entry{CheckpointID: p.CheckpointID, Owner: p.Owner, Started: p.Started, Codec: s.codec.Name(), Txn: txn})
}

// key identifies a pending transaction across checkpoints.
func (s *Sink[T, Txn]) key(p Pending[Txn]) (string, error) {
	txn, err := s.codec.Encode(p.Txn)
	if err != nil {
		return "", fmt.Errorf("twophase: encoding transaction %+v of checkpoint %d: %w", p.Txn, p.CheckpointID, err)
	}
	return fmt.Sprintf("%d/%d/%s", p.CheckpointID, p.Owner, txn), nil
}

func (s *Sink[T, Txn]) decode(raw []byte) (Pending[Txn], error) {
	var e entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return Pending[Txn]{}, fmt.Errorf("malformed entry: %w", err)
	}
	if e.Codec != s.codec.Name() {
		return Pending[Txn]{}, fmt.Errorf("transaction of checkpoint %d was stored with codec %q, the sink uses %q", e.CheckpointID, e.Codec, s.codec.Name())
	}
	txn, err := s.codec.Decode(e.Txn)
	if err != nil {
		return Pending[Txn]{}, fmt.Errorf("decoding transaction of checkpoint %d: %w", e.CheckpointID, err)
	}
	return Pending[Txn]{CheckpointID: e.CheckpointID, Txn: txn, Started: e.Started, Owner: e.Owner}, nil
}

// LostError reports a pre-committed transaction of a completed checkpoint
// that can no longer be committed. It is non-recoverable: restarting the
// job cannot bring the records back.
type LostError struct {
	CheckpointID int64
	Txn          string
	Age          time.Duration
	Err          error
}

// Error says DATA MAY BE LOST and names the transaction, its checkpoint,
// its age and why it can no longer be committed.
func (e *LostError) Error() string {
	return fmt.Sprintf("twophase: DATA MAY BE LOST: transaction %s of completed checkpoint %d (age %s) can no longer be committed: %v",
		e.Txn, e.CheckpointID, e.Age.Round(time.Millisecond), e.Err)
}

// Unwrap returns the error that refused the commit.
func (e *LostError) Unwrap() error { return e.Err }

// NonRecoverable marks the error so that the engine fails the job instead of
// restarting it.
func (e *LostError) NonRecoverable() bool { return true }
