package engine

import (
	"context"
	"fmt"

	"github.com/onceflow/onceflow/state"
)

// Source is a replayable input, in the terms of one job. NewReader is
// called once per source subtask and attempt.
type Source[T any] interface {
	NewReader(ctx context.Context, s Scope, restored [][]byte) (SourceReader[T], error)
}

// Scope tells a connector which subtask it serves and whether the job was
// restored from a checkpoint. Restored entries are the union of what every
// subtask of the operator stored in the restored checkpoint (union
// redistribution): each subtask picks what is its own, which keeps working
// when the parallelism changes.
type Scope struct {
	Job         string
	UID         string
	Subtask     int
	Parallelism int
	// Restored is true when the attempt starts from a checkpoint or
	// savepoint (restored entries may still be empty).
	Restored bool
	// NewerCheckpoint is set for a sink when the attempt restores a
	// checkpoint older than the job's latest complete one (Options.
	// RestoreFrom, like flink run -s): its id, with NewerEntries, the
	// union of the sink's entries in it. A transactional sink uses them to
	// tell restored transactions committed since (no longer pending in the
	// newer checkpoint) from ones to commit now. Zero otherwise.
	NewerCheckpoint int64
	NewerEntries    [][]byte
	// RestoredCommitted is true when every transaction in the restored
	// entries is known to be committed (checkpoint.Metadata.Committed: the
	// checkpoint was a stop with a savepoint, whose commits the stop
	// drained): a transactional sink must not commit them again, which
	// fails once the broker has expired their transactional ids.
	RestoredCommitted bool
	// RestoredStateFormat is the format version the restored entries were
	// written in (checkpoint.OperatorSnapshot.StateFormat): 0 when the
	// checkpoint recorded none. It is never above the connector's own
	// StateFormatVersion: the engine refuses such a restore.
	RestoredStateFormat int
}

// SourceReader is one source subtask's reader. The subtask's goroutine
// calls every method; none is called concurrently.
type SourceReader[T any] interface {
	// Next returns the next record, or false when ctx ended first: the
	// engine cancels ctx to inject a barrier promptly while no record
	// arrives, and calls Next again. A cancelled ctx therefore means
	// "return soon", never failure: work cut short by it (a fetch, a
	// metadata refresh) must be retried on the next call, not reported as
	// an error, and no record may be lost. io.EOF ends a bounded source: the
	// reader is not called again, and once every source has ended the job
	// takes a final checkpoint, commits it and finishes.
	Next(ctx context.Context) (T, bool, error)
	// SnapshotState returns the reader's position after the last record
	// Next returned; it is stored in checkpoint id. The barrier follows.
	SnapshotState(checkpointID int64) ([][]byte, error)
	// NotifyCheckpointComplete says checkpoint id is durable (for example,
	// commit offsets to a consumer group for monitoring). Notifications can
	// be late or skipped; an error is logged, not fatal.
	NotifyCheckpointComplete(ctx context.Context, checkpointID int64) error
	// Close releases the reader.
	Close() error
}

// Drainer is implemented by a SinkWriter whose NotifyCheckpointComplete
// only starts its commits (they finish on a goroutine of the writer's).
// Before it acknowledges the notification of a stop with a savepoint the
// engine calls Drain, which returns once those commits are confirmed, so
// that the stop leaves nothing pending; an error fails the stop.
type Drainer interface {
	Drain(ctx context.Context) error
}

// AsyncSnapshotWriter is implemented by a SinkWriter whose snapshot can
// finish after the barrier (a two-phase-commit sink whose pre-commit, a
// flush, runs on a goroutine of the writer's while the subtask writes the
// next transaction on another transactional id). The engine calls
// SnapshotStateAsync instead of SnapshotState: the entries go into the
// checkpoint as SnapshotState's would, and wait runs on the snapshot's
// goroutine before the subtask acknowledges the checkpoint, so the
// checkpoint completes only once wait returned nil. An error of
// SnapshotStateAsync fails the job attempt; an error of wait fails the
// checkpoint, and the writer must fail its later calls (the records of a
// transaction whose pre-commit failed are replayed only by a restart).
type AsyncSnapshotWriter interface {
	SnapshotStateAsync(ctx context.Context, checkpointID int64) (entries [][]byte, wait func(context.Context) error, err error)
}

// TransactionalSink is implemented by a Sink whose output becomes visible
// through transactions committed after a checkpoint completes (a
// two-phase-commit sink, such as the Kafka sink with exactly_once). It
// changes what a damaged newest checkpoint means: its transactions may have
// committed output that a replay from an older checkpoint writes again, so
// the job refuses to fall back to the older one on its own (Job.Run fails
// with a NonRecoverable error naming both), and only a restore asked for
// with Options.RestoreFrom proceeds. A sink without the method, or
// returning false, keeps the fallback, logged at Error level.
type TransactionalSink interface {
	Transactional() bool
}

// StateFormatVersioner is implemented by a Source or Sink whose operator
// state (the entries its SnapshotState returns) has a versioned format.
// The engine records the version with the operator in every checkpoint
// (checkpoint.OperatorSnapshot.StateFormat) and refuses, before any subtask
// opens, to restore a checkpoint whose recorded version is newer than the
// one the operator declares (ErrIncompatibleCheckpoint, non-recoverable),
// naming the checkpoint, the operator, both versions and the binary that
// wrote it: an older binary must not misread state a newer one wrote.
// Older or unrecorded versions restore, and Scope.RestoredStateFormat
// tells the connector which one it got. Bump the version whenever a
// binary of the previous version could misread the new entries. Without
// the method the version is 0.
type StateFormatVersioner interface {
	StateFormatVersion() int
}

// Sink is an output, in the terms of one job. NewWriter is called once per
// sink subtask and attempt, with the union of every subtask's entries of
// the restored checkpoint; a transactional sink commits what they hold
// before returning (and aborts what failed attempts left).
type Sink[T any] interface {
	NewWriter(ctx context.Context, s Scope, restored [][]byte) (SinkWriter[T], error)
}

// SinkWriter is one sink subtask's writer. The subtask's goroutine calls
// every method.
type SinkWriter[T any] interface {
	Write(ctx context.Context, v T) error
	// SnapshotState runs at the barrier of checkpoint id, before the
	// subtask acknowledges it: a transactional sink pre-commits here and
	// returns what it must commit once the checkpoint completes. An error
	// fails the job attempt.
	SnapshotState(ctx context.Context, checkpointID int64) ([][]byte, error)
	// NotifyCheckpointComplete says checkpoint id is durable: commit every
	// pending transaction of a checkpoint <= id. It may come late, be
	// skipped for some ids, or come twice for the same id, and must succeed
	// each time. An error fails the job attempt; the restore commits again.
	NotifyCheckpointComplete(ctx context.Context, checkpointID int64) error
	// NotifyCheckpointAborted says checkpoint id will never complete.
	NotifyCheckpointAborted(ctx context.Context, checkpointID int64) error
	// Close releases the writer. It must not commit: a cancelled attempt's
	// open transaction is aborted or left for the next restore.
	Close(ctx context.Context) error
}

// Stream is a typed stream of records produced by one operator.
type Stream[T any] struct {
	job  *Job
	node *node
}

// KeyedStream is a stream partitioned by key: every record of a key goes to
// the subtask owning the key's key group, where keyed state is scoped to
// that key.
type KeyedStream[K, T any] struct {
	s     Stream[T]
	key   func(T) K
	codec state.Codec[K]
}

// FromSource adds a source operator with parallelism subtasks (0: 1).
func FromSource[T any](j *Job, uid string, parallelism int, src Source[T]) Stream[T] {
	n := j.addNode(uid, inherit(parallelism, nil), kindSource)
	if v, ok := any(src).(StateFormatVersioner); ok {
		n.stateFormat = v.StateFormatVersion()
	}
	n.newSource = func(ctx context.Context, s Scope, restored [][]byte) (sourceRunner, error) {
		r, err := src.NewReader(ctx, s, restored)
		if err != nil {
			return nil, err
		}
		t := typedSource[T]{r: r}
		t.tr, _ = r.(TimestampedReader[T])
		return t, nil
	}
	return Stream[T]{job: j, node: n}
}

// Job is the job s belongs to.
func (s Stream[T]) Job() *Job { return s.job }

// Parallelism is the parallelism of the operator that produces s: the
// parallelism the next operator built on s inherits when it is given none
// (see "Parallelism" in the package documentation).
func (s Stream[T]) Parallelism() int { return s.node.parallelism }

// Map applies fn to every record, with s's parallelism.
func Map[T, U any](s Stream[T], uid string, fn func(T) (U, error)) Stream[U] {
	return FlatMap(s, uid, func(v T, out func(U)) error {
		u, err := fn(v)
		if err != nil {
			return err
		}
		out(u)
		return nil
	})
}

// Filter keeps the records for which fn is true, with s's parallelism.
func Filter[T any](s Stream[T], uid string, fn func(T) bool) Stream[T] {
	return FlatMap(s, uid, func(v T, out func(T)) error {
		if fn(v) {
			out(v)
		}
		return nil
	})
}

// FlatMap emits zero or more records per record, with s's parallelism.
// fn is called from every subtask of the operator at once: it must not
// keep unsynchronized state (use Process or Connect for state).
func FlatMap[T, U any](s Stream[T], uid string, fn func(T, func(U)) error) Stream[U] {
	n := s.job.addNode(uid, s.node.parallelism, kindOperator)
	s.job.connect(s.node, n, 0, nil)
	n.newOperator = func(*subtask) (operator, error) {
		return &funcOperator{process: func(_ int, e element, out func(any)) error {
			return fn(e.value.(T), func(u U) { out(u) })
		}}, nil
	}
	return Stream[U]{job: s.job, node: n}
}

// WithParallelism returns s re-partitioned round-robin to an operator of
// p subtasks (0: s's, which only rebalances): the operators built on the
// result inherit p.
func WithParallelism[T any](s Stream[T], uid string, p int) Stream[T] {
	n := s.job.addNode(uid, inherit(p, s.node), kindOperator)
	s.job.connect(s.node, n, 0, nil)
	n.newOperator = func(*subtask) (operator, error) {
		return &funcOperator{process: func(_ int, e element, out func(any)) error { out(e.value); return nil }}, nil
	}
	return Stream[T]{job: s.job, node: n}
}

// Union merges streams of the same type, with the first stream's
// parallelism.
func Union[T any](uid string, streams ...Stream[T]) Stream[T] {
	j := streams[0].job
	n := j.addNode(uid, streams[0].node.parallelism, kindOperator)
	for _, s := range streams {
		j.connect(s.node, n, 0, nil)
	}
	n.newOperator = func(*subtask) (operator, error) {
		return &funcOperator{process: func(_ int, e element, out func(any)) error { out(e.value); return nil }}, nil
	}
	return Stream[T]{job: j, node: n}
}

// KeyBy partitions s by key. codec serializes keys: the bytes decide the
// key group and scope keyed state.
func KeyBy[K, T any](s Stream[T], key func(T) K, codec state.Codec[K]) KeyedStream[K, T] {
	return KeyedStream[K, T]{s: s, key: key, codec: codec}
}

// KeyedContext gives a keyed function its state and current key.
type KeyedContext struct {
	st *subtask
}

// Backend is the keyed state backend; typed states are created on it
// (state.NewValueState and friends) in Open.
func (c *KeyedContext) Backend() state.KeyedBackend { return c.st.backend }

// Subtask is the index of the subtask running the function.
func (c *KeyedContext) Subtask() int { return c.st.index }

// Timestamp is the event timestamp of the record being processed, in
// milliseconds since the Unix epoch (NoTimestamp when its source supplies
// none), or in OnTimer the timer's time. What Process emits carries the
// record's timestamp, what OnTimer emits for an event-time timer the
// timer's time, and for a processing-time timer NoTimestamp.
func (c *KeyedContext) Timestamp() int64 { return c.st.ts }

// RegisterEventTimeTimer sets a timer for the current key at ts (epoch
// ms): OnTimer is called with it once the operator's watermark reaches
// ts (at once at the next watermark when it already has). A key has at
// most one timer per time and domain: registering it again does nothing.
// Timers are keyed state, kept in checkpoints and savepoints. It fails
// when the function has no OnTimer method (KeyedTimerFunction) or no key
// is current (in Open).
func (c *KeyedContext) RegisterEventTimeTimer(ts int64) error {
	return c.st.registerTimer(state.EventTime, ts)
}

// DeleteEventTimeTimer removes the current key's event-time timer at ts,
// if it has one.
func (c *KeyedContext) DeleteEventTimeTimer(ts int64) error {
	return c.st.deleteTimer(state.EventTime, ts)
}

// RegisterProcessingTimeTimer sets a timer for the current key at ts
// (epoch ms on the job's Options.ProcessingClock): OnTimer is called with it once
// the clock reaches ts, between records. See RegisterEventTimeTimer.
func (c *KeyedContext) RegisterProcessingTimeTimer(ts int64) error {
	return c.st.registerTimer(state.ProcessingTime, ts)
}

// DeleteProcessingTimeTimer removes the current key's processing-time
// timer at ts, if it has one.
func (c *KeyedContext) DeleteProcessingTimeTimer(ts int64) error {
	return c.st.deleteTimer(state.ProcessingTime, ts)
}

// CurrentProcessingTime is the job's processing time
// (Options.ProcessingClock) in epoch ms.
func (c *KeyedContext) CurrentProcessingTime() int64 {
	return c.st.j.opts.ProcessingClock.Now().UnixMilli()
}

// TimeDomain is, in OnTimer, the domain of the timer being fired
// (state.EventTime or state.ProcessingTime); 0 in Process.
func (c *KeyedContext) TimeDomain() state.TimeDomain { return c.st.timerDomain }

// CurrentWatermark is the operator subtask's watermark: the minimum of
// its upstream subtasks' watermarks, leaving out idle ones, never going
// back; NoWatermark before any came. After a restore it starts where the
// checkpoint left it for the current key's key group (see the package
// documentation, "Event time"). A record whose timestamp is at or below it
// is late.
func (c *KeyedContext) CurrentWatermark() int64 { return c.st.keyedWatermark() }

// KeyedProcessFunction processes the records of a keyed stream with keyed
// state.
type KeyedProcessFunction[K, T, U any] interface {
	// Open runs once per subtask and attempt, before any record: create
	// the states here.
	Open(ctx *KeyedContext) error
	// Process handles one record; state accesses are scoped to key.
	Process(ctx *KeyedContext, key K, v T, out func(U)) error
}

// KeyedTimerFunction is implemented by a KeyedProcessFunction that
// receives the timers it registers (KeyedContext.RegisterEventTimeTimer
// and friends).
type KeyedTimerFunction[K, U any] interface {
	// OnTimer handles the timer of key at ts: state accesses are scoped to
	// key, ctx.TimeDomain says which clock reached it, and it may emit,
	// register and delete timers as Process does. It is called on the
	// subtask's goroutine between records, never while Process runs; an
	// error fails the job attempt like one of Process.
	OnTimer(ctx *KeyedContext, key K, ts int64, out func(U)) error
}

// Process runs a keyed process function with parallelism p (0: the
// input's). newFn is
// called once per subtask and attempt: every subtask has its own function
// value and states. A function that also implements KeyedTimerFunction
// gets its timers.
func Process[K, T, U any](ks KeyedStream[K, T], uid string, p int, newFn func() KeyedProcessFunction[K, T, U]) Stream[U] {
	j := ks.s.job
	n := j.addNode(uid, inherit(p, ks.s.node), kindOperator)
	n.keyed = true
	j.connect(ks.s.node, n, 0, func(v any) (any, []byte, error) {
		k := ks.key(v.(T))
		b, err := ks.codec.Encode(k)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding the key of a record for %s: %w", uid, err)
		}
		return k, b, nil
	})
	n.newOperator = func(st *subtask) (operator, error) {
		kc := &KeyedContext{st: st}
		fn := newFn()
		if err := fn.Open(kc); err != nil {
			return nil, err
		}
		op := &funcOperator{process: func(_ int, e element, out func(any)) error {
			return fn.Process(kc, e.key.(K), e.value.(T), func(u U) { out(u) })
		}}
		if tf, ok := fn.(KeyedTimerFunction[K, U]); ok {
			op.onTimer = func(key []byte, ts int64, out func(any)) error {
				k, err := ks.codec.Decode(key)
				if err != nil {
					return fmt.Errorf("decoding the key of a timer of %s: %w", uid, err)
				}
				return tf.OnTimer(kc, k, ts, func(u U) { out(u) })
			}
		}
		return op, nil
	}
	return Stream[U]{job: j, node: n}
}

// Reduce keeps, per key, the reduction of every record so far and emits
// the updated value for each record (Flink's keyBy(...).reduce), with
// parallelism p (0: the input's).
func Reduce[K, T any](ks KeyedStream[K, T], uid string, p int, codec state.Codec[T], fn func(acc, v T) (T, error)) Stream[T] {
	return Process(ks, uid, p, func() KeyedProcessFunction[K, T, T] { return &reduceFunc[K, T]{codec: codec, fn: fn} })
}

type reduceFunc[K, T any] struct {
	codec state.Codec[T]
	fn    func(acc, v T) (T, error)
	acc   *state.ValueState[T]
}

func (r *reduceFunc[K, T]) Open(ctx *KeyedContext) error {
	var err error
	r.acc, err = state.NewValueState(ctx.Backend(), "reduce", r.codec)
	return err
}

func (r *reduceFunc[K, T]) Process(_ *KeyedContext, _ K, v T, out func(T)) error {
	cur, ok, err := r.acc.Value()
	if err != nil {
		return err
	}
	if ok {
		if v, err = r.fn(cur, v); err != nil {
			return err
		}
	}
	if err := r.acc.Update(v); err != nil {
		return err
	}
	out(v)
	return nil
}

// Number is what Sum adds.
type Number interface {
	~int | ~int32 | ~int64 | ~uint32 | ~uint64 | ~float64
}

// Sum emits, per record, the running sum of field over the record's key
// (Flink's keyBy(...).sum(field)): set writes the sum into a copy of the
// record. Its parallelism is p (0: the input's).
func Sum[K, T any, N Number](ks KeyedStream[K, T], uid string, p int, codec state.Codec[T], field func(T) N, set func(T, N) T) Stream[T] {
	return Reduce(ks, uid, p, codec, func(acc, v T) (T, error) { return set(v, field(acc)+field(v)), nil })
}

// CoProcessFunction processes two inputs of different types.
type CoProcessFunction[A, B, U any] interface {
	Process1(v A, out func(U)) error
	Process2(v B, out func(U)) error
}

// Connect joins two streams into a two-input operator with parallelism p
// (0: the first input's, a's).
// Records reach the subtasks round-robin (forward when parallelisms are
// equal). newFn is called once per subtask and attempt; when the function
// also implements Stateful, its state is checkpointed.
func Connect[A, B, U any](a Stream[A], b Stream[B], uid string, p int, newFn func() CoProcessFunction[A, B, U]) Stream[U] {
	j := a.job
	n := j.addNode(uid, inherit(p, a.node), kindOperator)
	j.connect(a.node, n, 0, nil)
	j.connect(b.node, n, 1, nil)
	n.newOperator = func(st *subtask) (operator, error) {
		fn := newFn()
		op := &funcOperator{process: func(input int, e element, out func(any)) error {
			if input == 0 {
				return fn.Process1(e.value.(A), func(u U) { out(u) })
			}
			return fn.Process2(e.value.(B), func(u U) { out(u) })
		}}
		if s, ok := fn.(Stateful); ok {
			op.stateful = s
		}
		return op, nil
	}
	return Stream[U]{job: j, node: n}
}

// Stateful is implemented by functions with operator (non-keyed) state.
// The entries are redistributed round-robin over the subtasks when the
// parallelism changes (each subtask gets its own back when it does not).
type Stateful interface {
	SnapshotState(checkpointID int64) ([][]byte, error)
	RestoreState(entries [][]byte) error
}

// SinkTo adds a sink with parallelism p (0: s's).
func SinkTo[T any](s Stream[T], uid string, p int, sink Sink[T]) {
	j := s.job
	n := j.addNode(uid, inherit(p, s.node), kindSink)
	j.connect(s.node, n, 0, nil)
	if ts, ok := any(sink).(TransactionalSink); ok {
		n.transactional = ts.Transactional()
	}
	if v, ok := any(sink).(StateFormatVersioner); ok {
		n.stateFormat = v.StateFormatVersion()
	}
	n.newSink = func(ctx context.Context, sc Scope, restored [][]byte) (sinkRunner, error) {
		w, err := sink.NewWriter(ctx, sc, restored)
		if err != nil {
			return nil, err
		}
		return typedSink[T]{w}, nil
	}
}

// sourceRunner and sinkRunner erase the record type for the runtime.
type sourceRunner interface {
	// next returns a record and its timestamp (NoTimestamp when the
	// reader supplies none).
	next(ctx context.Context) (any, int64, bool, error)
	// watermarks is the reader when it generates watermarks, else nil.
	watermarks() WatermarkReader
	SnapshotState(int64) ([][]byte, error)
	NotifyCheckpointComplete(context.Context, int64) error
	Close() error
}

type typedSource[T any] struct {
	r SourceReader[T]
	// tr is r when it supplies timestamps.
	tr TimestampedReader[T]
}

func (t typedSource[T]) next(ctx context.Context) (any, int64, bool, error) {
	if t.tr != nil {
		return t.tr.NextTimestamped(ctx)
	}
	v, ok, err := t.r.Next(ctx)
	return v, NoTimestamp, ok, err
}

func (t typedSource[T]) watermarks() WatermarkReader {
	w, _ := t.r.(WatermarkReader)
	return w
}

func (t typedSource[T]) SnapshotState(id int64) ([][]byte, error) { return t.r.SnapshotState(id) }
func (t typedSource[T]) NotifyCheckpointComplete(ctx context.Context, id int64) error {
	return t.r.NotifyCheckpointComplete(ctx, id)
}
func (t typedSource[T]) Close() error { return t.r.Close() }

type sinkRunner interface {
	write(ctx context.Context, v any) error
	drain(ctx context.Context) error
	SnapshotState(context.Context, int64) ([][]byte, error)
	NotifyCheckpointComplete(context.Context, int64) error
	NotifyCheckpointAborted(context.Context, int64) error
	Close(context.Context) error
}

type typedSink[T any] struct{ SinkWriter[T] }

func (t typedSink[T]) drain(ctx context.Context) error {
	if d, ok := t.SinkWriter.(Drainer); ok {
		return d.Drain(ctx)
	}
	return nil
}

func (t typedSink[T]) write(ctx context.Context, v any) error { return t.Write(ctx, v.(T)) }

// asyncSnapshotter is a sinkRunner that may snapshot asynchronously.
type asyncSnapshotter interface {
	snapshotAsync(ctx context.Context, checkpointID int64) ([][]byte, func(context.Context) error, error)
}

// snapshotAsync is SnapshotStateAsync of an AsyncSnapshotWriter, else
// SnapshotState with nothing to wait for.
func (t typedSink[T]) snapshotAsync(ctx context.Context, id int64) ([][]byte, func(context.Context) error, error) {
	if a, ok := t.SinkWriter.(AsyncSnapshotWriter); ok {
		return a.SnapshotStateAsync(ctx, id)
	}
	entries, err := t.SnapshotState(ctx, id)
	return entries, nil, err
}

// funcOperator is every non-source, non-sink operator.
type funcOperator struct {
	process  func(input int, e element, out func(any)) error
	stateful Stateful
	// onTimer, set for a keyed function with timers, handles the timer
	// of key (serialized) at ts.
	onTimer func(key []byte, ts int64, out func(any)) error
}
