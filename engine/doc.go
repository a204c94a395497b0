// Package engine runs onceflow dataflows: typed sources, operators and
// sinks, each with a parallelism and a stable uid, executed as goroutines
// connected by bounded channels, with checkpoints in the manner of Flink's
// asynchronous barrier snapshotting.
//
// # Chaining
//
// As in Flink, an operator whose only input is a forward edge (same
// parallelism, no key) is chained to its upstream: subtask i of both runs
// on one goroutine, and the upstream hands each record and barrier to it
// by a function call. A chain costs no channel hop, no copy and no
// goroutine switch per record; the barrier still reaches the chained
// operator after every record before it, so the snapshots are the same.
// The head of a chain (a source, or an operator fed by a keyed,
// rebalancing or multi-input edge) runs the goroutine and delivers
// checkpoint notifications to every member, before it reads the next
// record or barrier. Options.DisableChaining gives every subtask its own
// goroutine, which lets a CPU-heavy operator run in parallel with its
// upstream.
//
// # Building a job
//
// NewJob, then FromSource, Map, FlatMap, Filter, Union, KeyBy + Process /
// Reduce / Sum, Connect and SinkTo. An operator's uid names its state in
// every checkpoint: keep it when the job changes, or restoring fails
// (unless Options.AllowNonRestoredState drops state of removed operators).
// KeyBy routes each record to the subtask owning its key group
// (state.KeyGroupOf, state.SubtaskForKeyGroup), so keyed state can be
// redistributed when the parallelism changes.
//
// # Parallelism
//
// One rule for every operator: an operator runs with the parallelism of
// its input unless it is given a positive one. The operators that take a
// parallelism (FromSource, WithParallelism, Process, Reduce, Sum, Connect,
// SinkTo) read 0 as "inherit": the input's (Connect: its first input's; a
// source has none and runs 1 subtask). Map, Filter, FlatMap and Union take
// none and always inherit (Union: its first stream's). To change the
// parallelism of a stateless stage, put WithParallelism (a round-robin
// rebalance) before it. A negative parallelism, or one above
// Options.MaxParallelism, makes Run fail naming the operator.
//
// # Why checkpoints are consistent
//
// The coordinator triggers checkpoint n by handing barrier n to every
// source subtask. A source snapshots its position (for Kafka: the next
// offset of each partition) and sends the barrier downstream on every
// output channel, after every record it emitted before. Channels are FIFO,
// so a barrier never overtakes a record.
//
// A trigger reaches every source or none (a source whose queue of
// barriers is full fails the checkpoint before any is sent), so every
// channel carries every barrier that is not given up on its way.
//
// An operator with one input channel snapshots when the barrier arrives
// and forwards it. An operator with several channels in EXACTLY_ONCE mode
// aligns: once barrier n came on a channel it stops reading that channel
// until barrier n came on all of them, then snapshots and forwards it.
// Barriers are matched by id: a newer barrier on one channel while n is
// being aligned means that channel skipped n (an upstream subtask gave it
// up), so n is declined — the coordinator aborts it at once — every
// channel is read again and the newer one is aligned; a barrier older
// than one given up or aborted is dropped (see aligner).
// Its snapshot therefore reflects exactly the records that precede barrier
// n on every path from the sources — the state a run that stopped reading
// at the sources' snapshotted positions would have. Restoring all
// snapshots of n and resuming the sources at their positions replays
// every later record once. In AT_LEAST_ONCE mode nothing is blocked: the
// snapshot is taken when the last barrier arrives and may include records
// that followed the barrier on faster channels; after a restore those are
// processed again (duplicates, never a loss). Blocking costs latency
// while a slow channel's barrier is awaited; it is reported as alignment
// time in CheckpointStats.
//
// A snapshot has a synchronous part, taken on the subtask's goroutine
// before the barrier is forwarded (operator state, a sink's pre-commit,
// the keyed backend's capture), and an asynchronous part (writing the
// keyed state) on a goroutine owned by the subtask, which then
// acknowledges with its state handles. Checkpoint n completes when every
// subtask acknowledged and the metadata naming all handles is durable in
// the checkpoint.Storage; only then are subtasks notified, and a
// transactional sink commits what it pre-committed for n (and for any
// earlier checkpoint whose notification it missed). A checkpoint that
// fails or passes its timeout is aborted and the subtasks are told;
// consecutive failures beyond CheckpointOptions.TolerableFailures fail
// the attempt.
//
// # Event time
//
// Every record carries an event timestamp (milliseconds since the Unix
// epoch): its source's reader sets it (TimestampedReader; NoTimestamp
// otherwise), and Map, Filter, FlatMap, Process and the others emit what
// they produce for a record with that record's timestamp, as Flink does.
// KeyedContext.Timestamp reads it.
//
// Watermarks say how far event time has come: a watermark W promises that
// no record with a timestamp at or below W follows, except late ones. A
// source whose reader generates them (WatermarkReader; the Kafka source
// makes one per partition and takes the minimum) is asked for its
// watermark every Options.WatermarkInterval, 200ms by default, and sends
// it downstream when it advanced. Watermarks are periodic rather than sent
// at every advance because with records in order nearly every record
// advances the watermark: sending each would put a watermark after nearly
// every record on every channel, and a keyed edge broadcasts each to all
// its downstream subtasks, so every record would cost as many extra
// elements and combining steps as the next operator has subtasks.
// Idleness, being a matter of time passing without records, needs a
// periodic look anyway. The price is that event time downstream lags by up
// to the interval, which is small next to window sizes and out-of-order
// bounds; Flink makes the same choice (autoWatermarkInterval).
//
// Watermarks flow in band, on the same channels as records and barriers,
// so one never overtakes a record sent before it; on a chained edge the
// upstream hands it over by a call. A channel that alignment blocks holds
// its watermarks with its records. Keyed and rebalancing edges send every
// watermark to every downstream subtask. Each subtask combines the
// watermarks of its input channels, as Flink's StatusWatermarkValve does:
// its watermark is the minimum over the inputs that are not idle, it
// never goes back, and it is sent on whenever it advances. An upstream subtask can declare itself
// idle (a source subtask that owns no partition does so from the start,
// one whose partitions have been silent for the idle timeout once they
// are): it is then left out of the minimum until it sends a watermark
// again, and a subtask all of whose inputs are idle is idle itself and
// says so downstream. An input that becomes active again below the
// combined watermark holds it where it is until it catches up. A source
// whose input ends sends MaxWatermark before the final checkpoint's
// barrier; a stop with a savepoint sends none (what is still open stays
// open in the savepoint). Status reports each operator's watermark
// (OperatorStats.Watermark).
//
// A keyed process function that implements KeyedTimerFunction may
// register timers for its current key (KeyedContext.RegisterEventTimeTimer
// and friends). They are keyed state (state.Timers): in every checkpoint
// and savepoint, restored and rescaled with their key group. Event-time
// timers fire when the subtask's watermark reaches them, before that
// watermark is forwarded, so that what OnTimer emits (stamped with the
// timer's time) precedes it; processing-time timers fire once the job's
// ProcessingClock (by default its Clock) is past them (t+1 ms), before the
// subtask reads its next input. OnTimer runs on the subtask's goroutine between
// records, never at the same time as Process.
//
// # Watermarks across a restore
//
// Sources and operators without keys start from scratch after a restore,
// at NoWatermark: a source's watermark is derived from what it reads and
// from how long its partitions were silent, which says nothing about the
// replay, where every silent partition may have a backlog, and partitions
// may have moved to other subtasks. Keyed operators, which are where
// lateness is judged (timers, windows), resume instead at the watermark
// they had at the checkpoint's barrier: each keyed subtask stores its
// watermark with its key groups in every checkpoint, and after the restore
// each key group starts at the watermark of the subtask that owned it
// (KeyedContext.CurrentWatermark applies it to the current key; the
// subtask's own watermark starts at the lowest of its key groups' and
// moves on once its inputs pass it). Flink starts every operator from
// Long.MIN_VALUE instead, and that is the subject of long-standing bug
// reports (FLINK-5601; FLINK-24501 and FLINK-36663 store window progress
// in state to work around it): a record that came after a window fired
// was late before the crash, but is on time in the replay, so the window
// that fired and was purged before the checkpoint is opened again and
// fires a second time, which exactly-once output cannot allow. With the
// watermark restored, the replay judges every record exactly as a run
// that had gone on from the barrier could have. Timers stay in state and
// fire once the watermark passes them, as in Flink. Checkpoints that hold
// no watermark (written before this, or an operator new to the job)
// start those key groups at NoWatermark.
//
// # Failures
//
// Any subtask error fails the attempt: every subtask is cancelled
// (restart-all failover), and the RestartStrategy decides whether and
// when a new attempt starts from the latest completed checkpoint. Errors
// marked NonRecoverable (or with a NonRecoverable() bool method returning
// true, such as a record that cannot be decoded) fail the job at once.
//
// When every source is exhausted the job takes a final checkpoint, waits
// until every subtask was notified of it (sinks have committed) and
// finishes. StopWithSavepoint does the same with a savepoint after which
// the sources read nothing, so nothing is left pending.
package engine
