package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/twophase"
)

// SinkOptions configure a Sink.
type SinkOptions struct {
	// ClientOpts connect to the cluster (seed brokers, TLS, SASL). The
	// sink's clients retry after 100ms doubling to at most 1s, as Kafka's
	// Java clients do; a kgo.RetryBackoffFn here replaces that.
	ClientOpts []kgo.Opt
	// Topic receives every record that names no topic of its own.
	Topic string
	// Delivery is the guarantee (default exactly_once).
	Delivery Delivery
	// TransactionalIDPrefix starts every transactional id of the job
	// (exactly_once). Two jobs must never share one.
	TransactionalIDPrefix string
	// AsyncCommit commits on a goroutine of each subtask's own while the
	// subtask writes the next transaction (twophase.Options.AsyncCommit).
	// Off by default: on a 2-core machine it did not raise throughput
	// beyond the noise, and about 2 in 5 paced runs of the word count at
	// 100 ms checkpoints showed a p99 of 400-660 ms instead of 130 ms, for
	// a reason not yet found (see bench/results; 3 later runs did not show
	// it, bench/results/copy-tuning/wc-ac). Without the producer linger it
	// again gained nothing on the copy (copy-tuning/ac-ab4).
	AsyncCommit bool
	// AsyncPreCommit runs the flush of a checkpoint's transaction on a
	// goroutine of the writer's while the subtask goes on with the next
	// transaction on another transactional id, instead of waiting for it
	// at the barrier as Flink's Kafka sink does; the subtask acknowledges
	// the checkpoint once the flush succeeded (twophase.Options.
	// AsyncPreCommit, engine.AsyncSnapshotWriter). The next transaction's
	// records wait in memory (up to MaxBufferedRecords) until the flush
	// ended, so a partition keeps the order of its writes (see the package
	// doc, "Flushes at the barrier"). Off by default: it did not raise the
	// copy's throughput beyond the runs' spread.
	AsyncPreCommit bool
	// Slots is the number of transactional ids per subtask (default
	// MinSlots(MaxConcurrentCheckpoints); exactly_once refuses fewer); see
	// TransactorOptions.Slots for how many a job needs.
	Slots int
	// MaxConcurrentCheckpoints is the job's
	// engine.CheckpointOptions.MaxConcurrent (default 1): it decides how
	// many Slots exactly_once needs (MinSlots).
	MaxConcurrentCheckpoints int
	// TransactionTimeout is the timeout of every transaction (default
	// DefaultTransactionTimeout); check it with CheckTransactionTimeout
	// before running.
	TransactionTimeout time.Duration
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
	// Outage is the job's cluster-outage tracker: every call to the
	// cluster waits through an outage for its tolerance (nil: a tracker
	// of the sink's own with outage.DefaultTolerance).
	Outage *outage.Tracker
	// MaxBufferedRecords is how many records a subtask's producer client
	// holds unacknowledged before a write blocks (kgo.MaxBufferedRecords;
	// default DefaultMaxBufferedRecords). A kgo.MaxBufferedRecords in
	// ClientOpts overrides it.
	MaxBufferedRecords int
	// Compression is the codec of produced batches: none, gzip, snappy,
	// lz4 or zstd (default DefaultCompression). A
	// kgo.ProducerBatchCompression in ClientOpts overrides it.
	Compression string
	// Linger is how long a partition's batch waits for more records
	// before it is sent while the producer has room (kgo.ProducerLinger;
	// default DefaultLinger, none; negative is refused). A
	// kgo.ProducerLinger in ClientOpts overrides it.
	Linger time.Duration
}

// Sink is the Kafka sink of a job (engine.Sink[*kgo.Record]).
//
// With exactly_once every subtask writes through a Transactor driven by
// twophase.Sink: a transaction per checkpoint, pre-committed at the
// barrier, committed when the checkpoint completes. NewWriter first
// commits the transactions of the restored checkpoint and aborts what
// failed attempts left open (twophase.Sink.Restore), so it can take as
// long as those commits; a transaction that can no longer be committed is
// a non-recoverable error saying data may be lost.
//
// With at_least_once every subtask writes through a Writer flushed at the
// barrier (a produce failure fails the checkpoint); with none the barrier
// does not wait. Should a restored checkpoint hold transactions of an
// earlier exactly_once run of the job, NewWriter commits them first under
// every guarantee.
//
// Stats may be called from any goroutine.
type Sink struct {
	opts SinkOptions

	mu   sync.Mutex
	live map[*txnWriter]struct{}
}

// SinkStats describe the transactions of the running subtasks.
type SinkStats struct {
	// PendingTransactions counts pre-committed transactions waiting for
	// their checkpoint to complete (the open transaction is not counted).
	PendingTransactions int
	// OldestPending is the age of the oldest transaction not yet
	// committed, pending or open; zero when there is none.
	OldestPending time.Duration
}

// NewSink checks opts (SinkOptions.Validate: every refusal names the
// option) and returns the sink. Nothing connects to the cluster until a
// subtask's writer is created.
func NewSink(opts SinkOptions) (*Sink, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Delivery == "" {
		opts.Delivery = DeliveryExactlyOnce
	}
	if opts.Slots == 0 && opts.Delivery == DeliveryExactlyOnce {
		opts.Slots = MinSlots(opts.MaxConcurrentCheckpoints)
	}
	if opts.TransactionTimeout == 0 {
		opts.TransactionTimeout = DefaultTransactionTimeout
	}
	if opts.MaxBufferedRecords == 0 {
		opts.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Outage == nil {
		tr, err := outage.NewTracker(outage.Options{Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("kafka sink: %w", err)
		}
		opts.Outage = tr
	}
	return &Sink{opts: opts, live: map[*txnWriter]struct{}{}}, nil
}

// Transactional reports whether the sink writes inside transactions that
// its checkpoints hold (exactly_once): a restore from an older checkpoint
// than the newest could then duplicate what the newer one committed
// (engine.TransactionalSink).
func (s *Sink) Transactional() bool { return s.opts.Delivery == DeliveryExactlyOnce }

// NewWriter opens the writer of one subtask. restored holds every
// subtask's entries of the restored checkpoint (union redistribution).
func (s *Sink) NewWriter(ctx context.Context, scope engine.Scope, restored [][]byte) (engine.SinkWriter[*kgo.Record], error) {
	if s.opts.Delivery != DeliveryExactlyOnce {
		if len(restored) > 0 {
			if err := s.recoverOnly(ctx, scope, restored); err != nil {
				return nil, err
			}
		}
		copts := append(producerOpts(s.opts.MaxBufferedRecords, s.opts.Compression, s.opts.Linger), s.opts.ClientOpts...)
		w, err := NewWriter(s.opts.Delivery, s.opts.Topic, copts, s.opts.Outage)
		if err != nil {
			return nil, err
		}
		return plainWriter{w}, nil
	}
	start := time.Now()
	tp, tr, err := s.restore(ctx, scope, restored, s.opts.AsyncCommit)
	if err != nil {
		return nil, err
	}
	s.opts.Logger.Debug("kafka sink: subtask recovered", "job", scope.Job, "subtask", scope.Subtask,
		"prefix", s.opts.TransactionalIDPrefix, "restored_entries", len(restored), "took", time.Since(start).Round(time.Millisecond))
	w := &txnWriter{sink: s, tp: tp, tr: tr}
	w.publish()
	s.mu.Lock()
	s.live[w] = struct{}{}
	s.mu.Unlock()
	return w, nil
}

// restore creates the subtask's Transactor and twophase.Sink and runs the
// recovery: commit what restored holds (nothing when the engine says the
// restored checkpoint is committed, scope.RestoredCommitted), abort what
// failed attempts left.
func (s *Sink) restore(ctx context.Context, scope engine.Scope, restored [][]byte, async bool) (*twophase.Sink[*kgo.Record, Txn], *Transactor, error) {
	tr, err := NewTransactor(ctx, scope.Subtask, TransactorOptions{
		ClientOpts: s.opts.ClientOpts, Topic: s.opts.Topic, Prefix: s.opts.TransactionalIDPrefix,
		Slots: s.opts.Slots, TransactionTimeout: s.opts.TransactionTimeout, Logger: s.opts.Logger,
		Outage: s.opts.Outage, MaxBufferedRecords: s.opts.MaxBufferedRecords, Compression: s.opts.Compression,
		Linger: s.opts.Linger,
	})
	if err != nil {
		return nil, nil, err
	}
	tp := twophase.New[*kgo.Record, Txn](tr, state.JSONCodec[Txn]{},
		twophase.Scope{Subtask: scope.Subtask, Parallelism: scope.Parallelism,
			NewerCheckpoint: scope.NewerCheckpoint, NewerEntries: scope.NewerEntries, Committed: scope.RestoredCommitted},
		twophase.Options{TransactionTimeout: s.opts.TransactionTimeout, Logger: s.opts.Logger, AsyncCommit: async,
			AsyncPreCommit: s.opts.AsyncPreCommit})
	if err := tp.Restore(ctx, restored); err != nil {
		tr.Close()
		return nil, nil, fmt.Errorf("kafka sink: recovering subtask %d of prefix %s: %w", scope.Subtask, s.opts.TransactionalIDPrefix, err)
	}
	return tp, tr, nil
}

// recoverOnly commits the transactions an earlier exactly_once run left in
// the restored checkpoint, for a job that now runs another guarantee.
func (s *Sink) recoverOnly(ctx context.Context, scope engine.Scope, restored [][]byte) error {
	if s.opts.TransactionalIDPrefix == "" {
		return errors.New("kafka sink: the restored checkpoint holds transactions of an exactly_once run; committing them needs the transactional id prefix it used")
	}
	s.opts.Logger.Info("kafka sink: committing the transactions an exactly_once run left in the restored checkpoint",
		"subtask", scope.Subtask, "delivery", s.opts.Delivery, "prefix", s.opts.TransactionalIDPrefix)
	_, tr, err := s.restore(ctx, scope, restored, false)
	if err != nil {
		return err
	}
	tr.Close()
	return nil
}

// Stats returns the transactions of the running subtasks; safe for
// concurrent use.
func (s *Sink) Stats() SinkStats {
	now := time.Now().UnixNano()
	var st SinkStats
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.live {
		st.PendingTransactions += int(w.pending.Load())
		if start := w.oldest.Load(); start != 0 {
			st.OldestPending = max(st.OldestPending, time.Duration(now-start))
		}
	}
	return st
}

// plainWriter is a subtask's writer for none and at_least_once.
type plainWriter struct{ w *Writer }

func (p plainWriter) Write(ctx context.Context, rec *kgo.Record) error { return p.w.Write(ctx, rec) }

// SnapshotState flushes (at_least_once) and stores nothing.
func (p plainWriter) SnapshotState(ctx context.Context, checkpointID int64) ([][]byte, error) {
	if err := p.w.Flush(ctx); err != nil {
		return nil, fmt.Errorf("checkpoint %d: %w", checkpointID, err)
	}
	return nil, nil
}

func (p plainWriter) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (p plainWriter) NotifyCheckpointAborted(context.Context, int64) error  { return nil }

// Close flushes what it can within ctx and closes the producer.
func (p plainWriter) Close(ctx context.Context) error { return p.w.Close(ctx) }

// txnWriter is a subtask's exactly_once writer. Its methods run on the
// subtask's goroutine; pending and oldest are published for Stats after
// every step that changes them.
type txnWriter struct {
	sink *Sink
	tp   *twophase.Sink[*kgo.Record, Txn]
	tr   *Transactor
	// open is set once a record went into the transaction since the last
	// barrier (Stats already knows the open transaction's start).
	open   bool
	closed bool

	pending atomic.Int64
	// oldest is the start, in Unix nanoseconds, of the oldest uncommitted
	// transaction; 0 when there is none.
	oldest atomic.Int64
}

func (w *txnWriter) publish() {
	w.pending.Store(int64(len(w.tp.Pending())))
	if age := w.tp.OldestPendingAge(); age > 0 {
		w.oldest.Store(time.Now().Add(-age).UnixNano())
	} else {
		w.oldest.Store(0)
	}
}

// Write writes rec into the subtask's open transaction.
func (w *txnWriter) Write(ctx context.Context, rec *kgo.Record) error {
	if err := w.tp.Write(ctx, rec); err != nil {
		return err
	}
	if !w.open {
		w.open = true
		w.publish()
	}
	return nil
}

// SnapshotState pre-commits the open transaction and returns every
// pending one for the checkpoint.
func (w *txnWriter) SnapshotState(ctx context.Context, checkpointID int64) ([][]byte, error) {
	entries, err := w.tp.SnapshotState(ctx, checkpointID)
	w.open = false
	w.publish()
	return entries, err
}

// SnapshotStateAsync hands the open transaction's flush to a goroutine
// and returns every pending transaction, that one included, for the
// checkpoint (engine.AsyncSnapshotWriter; with SinkOptions.AsyncPreCommit,
// else the flush runs here, at the barrier).
func (w *txnWriter) SnapshotStateAsync(ctx context.Context, checkpointID int64) ([][]byte, func(context.Context) error, error) {
	entries, wait, err := w.tp.SnapshotStateAsync(ctx, checkpointID)
	w.open = false
	w.publish()
	return entries, wait, err
}

// NotifyCheckpointComplete commits every pending transaction of a
// checkpoint <= checkpointID.
func (w *txnWriter) NotifyCheckpointComplete(ctx context.Context, checkpointID int64) error {
	err := w.tp.NotifyCheckpointComplete(ctx, checkpointID)
	w.publish()
	return err
}

// Drain waits for the commits NotifyCheckpointComplete started
// (engine.Drainer: a stop with a savepoint leaves nothing pending).
func (w *txnWriter) Drain(ctx context.Context) error {
	err := w.tp.Drain(ctx)
	w.publish()
	return err
}

// NotifyCheckpointAborted keeps the pending transactions for the next
// checkpoint.
func (w *txnWriter) NotifyCheckpointAborted(ctx context.Context, checkpointID int64) error {
	return w.tp.NotifyCheckpointAborted(ctx, checkpointID)
}

// Close aborts the open transaction (no checkpoint holds it), leaves
// pending ones for the next restore, and closes the clients.
func (w *txnWriter) Close(ctx context.Context) error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.tp.Close(ctx)
	w.tr.Close()
	w.sink.mu.Lock()
	delete(w.sink.live, w)
	w.sink.mu.Unlock()
	return err
}
