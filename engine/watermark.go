package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/state"
)

// NoTimestamp is the event timestamp of a record whose source supplies
// none (its reader does not implement TimestampedReader).
const NoTimestamp int64 = math.MinInt64

// NoWatermark is the watermark of an operator before any came: nothing is
// known about event time yet (Flink's Long.MIN_VALUE).
const NoWatermark int64 = math.MinInt64

// MaxWatermark is the watermark a source subtask sends when its input is
// exhausted (io.EOF): no record follows, so every event-time timer and
// window may fire.
const MaxWatermark int64 = math.MaxInt64

// DefaultWatermarkInterval is how often a source subtask asks its reader
// for its watermark when Options.WatermarkInterval is not set (Flink's
// autoWatermarkInterval).
const DefaultWatermarkInterval = 200 * time.Millisecond

// TimestampedReader is implemented by a SourceReader whose records carry
// event timestamps. The engine calls NextTimestamped instead of Next (same
// contract) and keeps the timestamp with the record through every
// operator: Map, Filter, FlatMap, Process and the rest emit their output
// with the timestamp of the input they were called for. ts is in
// milliseconds since the Unix epoch.
type TimestampedReader[T any] interface {
	SourceReader[T]
	NextTimestamped(ctx context.Context) (v T, ts int64, ok bool, err error)
}

// WatermarkReader is implemented by a SourceReader that generates
// watermarks. A watermark W is the reader's promise that no record it
// returns later has a timestamp <= W, except late ones (records its
// generator declared late: with bounded out-of-orderness, those more than
// the bound behind the newest). idle says the reader has nothing to read
// for now (a subtask that owns no partition, partitions silent for the
// idle timeout): downstream operators then leave this subtask out of
// their minimum until it reports a watermark again.
//
// The engine calls CurrentWatermark on the subtask's goroutine, between
// records: once before the first record, then every
// Options.WatermarkInterval (interrupting a Next that waits for records),
// and sends the result downstream when the subtask's watermark advanced
// or its idleness changed. A watermark lower than one the subtask already
// sent does not move it back. Once Next returned io.EOF the engine sends
// MaxWatermark and asks no more.
type WatermarkReader interface {
	CurrentWatermark() (wm int64, idle bool)
}

// watermark is what flows on a channel, in band with records and
// barriers, from an upstream subtask: its watermark, or its idleness
// (Flink's Watermark and WatermarkStatus in one element). A watermark
// that is not idle also says the subtask is active.
type watermark struct {
	time int64
	idle bool
}

// valve combines the watermarks of a subtask's input channels into the
// subtask's own, in the manner of Flink's StatusWatermarkValve. It is a
// plain state machine driven by the subtask's goroutine.
//
//   - Every input starts active at NoWatermark.
//   - An input's watermark never goes back: a lower one is ignored (the
//     input stays at its higher one, and a lower one that makes an idle
//     input active again makes it active at its old watermark).
//   - The output is the minimum over the inputs that are not idle, and it
//     never goes back either: an input that becomes active again below
//     the output holds the output where it is until it catches up (it is
//     not left out, as Flink leaves out an unaligned input: its records
//     above the output are not late, so the output must not run past
//     them).
//   - When every input is idle the output is idle (at its last watermark),
//     and it becomes active again with the first input that does.
//
// A valve of one input clamps a single stream (a source's generator, a
// chained operator): monotonic, with its idleness passed on.
type valve struct {
	in  []watermark
	out watermark
}

func newValve(inputs int) *valve {
	v := &valve{in: make([]watermark, inputs), out: watermark{time: NoWatermark}}
	for i := range v.in {
		v.in[i].time = NoWatermark
	}
	return v
}

// current is the output: the subtask's watermark and whether it is idle.
func (v *valve) current() watermark { return v.out }

// onInput handles w from input i and returns the output, and whether it
// changed (so must be sent downstream).
func (v *valve) onInput(i int, w watermark) (watermark, bool) {
	in := &v.in[i]
	if w.idle {
		in.idle = true
	} else {
		in.idle = false
		in.time = max(in.time, w.time)
	}
	low, active := int64(math.MaxInt64), false
	for _, c := range v.in {
		if !c.idle {
			active = true
			low = min(low, c.time)
		}
	}
	next := watermark{time: v.out.time, idle: true}
	if active {
		next = watermark{time: max(v.out.time, low)}
	}
	if next == v.out {
		return v.out, false
	}
	v.out = next
	return v.out, true
}

// initWatermarks gives the subtask a valve over its input channels (one
// for a source or a chained operator, whose single stream it clamps).
func (st *subtask) initWatermarks() {
	st.valve = newValve(max(1, len(st.inputs)))
	st.wmTime.Store(NoWatermark)
}

// onWatermark handles w from input channel in (0 for a chained operator):
// when the subtask's watermark advances or its idleness changes, it is
// recorded for Status and sent on to every downstream subtask.
//
// Event-time timers at or before the new watermark fire here, before it
// is forwarded, so that what they emit precedes it downstream.
func (st *subtask) onWatermark(ctx context.Context, in int, w watermark) error {
	out, changed := st.valve.onInput(in, w)
	if !changed {
		return nil
	}
	if !out.idle {
		if err := st.fireTimers(ctx, state.EventTime, out.time); err != nil {
			return err
		}
	}
	return st.forwardWatermark(ctx, out)
}

// forwardWatermark records w as the subtask's watermark and sends it on
// every output: to every channel (keyed and rebalancing edges broadcast
// it: each downstream subtask combines all its upstreams), or by a call to
// a chained operator. Records sent before it stay before it.
func (st *subtask) forwardWatermark(ctx context.Context, w watermark) error {
	st.wmTime.Store(w.time)
	st.wmIdle.Store(w.idle)
	if len(st.outputs) == 0 {
		return nil
	}
	return st.sendToAll(ctx, element{wm: &w}, func(d *subtask) error { return d.onWatermark(ctx, 0, w) })
}

// sourceWatermark asks the source's reader for its watermark and sends it
// on when it advanced or its idleness changed.
func (st *subtask) sourceWatermark(ctx context.Context) error {
	if st.wmr == nil {
		return nil
	}
	t, idle := st.wmr.CurrentWatermark()
	return st.onWatermark(ctx, 0, watermark{time: t, idle: idle})
}

// tickWatermarks asks the source loop for a watermark every interval of
// the job's clock, until ctx ends: it marks one due and cuts a Next that
// waits for records short. It runs on a goroutine owned by the source
// subtask (counted in async).
func (st *subtask) tickWatermarks(ctx context.Context, interval time.Duration) {
	defer st.async.Done()
	for {
		select {
		case <-st.j.opts.Clock.After(interval):
		case <-ctx.Done():
			return
		}
		st.wmDue.Store(true)
		st.pollMu.Lock()
		if st.pollStop != nil {
			st.pollStop()
		}
		st.pollMu.Unlock()
	}
}

// watermarkState names the union list of operator state in which a keyed
// operator subtask stores, at every barrier, its watermark with the key
// groups it owns (one watermarkEntry).
const watermarkState = "watermark"

// watermarkEntry is a keyed operator subtask's watermark at a barrier,
// with its key groups [Start, End).
type watermarkEntry struct {
	Start     int   `json:"start"`
	End       int   `json:"end"`
	Watermark int64 `json:"watermark"`
}

// snapshotWatermark stores the keyed operator subtask's watermark in its
// operator state for the checkpoint being taken.
func (st *subtask) snapshotWatermark() error {
	l, err := st.opStore.ListState(watermarkState, state.Union)
	if err != nil {
		return fmt.Errorf("snapshotting the watermark: %w", err)
	}
	kgs := st.backend.KeyGroups()
	b, err := json.Marshal(watermarkEntry{Start: kgs.Start, End: kgs.End, Watermark: st.valve.current().time})
	if err != nil {
		return fmt.Errorf("snapshotting the watermark: %w", err)
	}
	l.Update([][]byte{b})
	return nil
}

// restoreWatermark starts a keyed operator subtask at the watermarks the
// restored checkpoint holds for its key groups (see the package
// documentation, "Event time"): its own watermark at the lowest of them,
// and, when they differ (a rescale merged key groups of subtasks that were
// at different watermarks), each key group's kept in floors, which
// KeyedContext.CurrentWatermark applies to the current key. A key group
// the checkpoint holds none for (an older checkpoint, a new operator)
// starts at NoWatermark.
func (st *subtask) restoreWatermark(kgs checkpoint.KeyGroupRange) error {
	l, err := st.opStore.ListState(watermarkState, state.Union)
	if err != nil {
		return fmt.Errorf("restoring the watermark: %w", err)
	}
	low, floors, err := watermarkFloors(l.Get(), kgs)
	if err != nil {
		return fmt.Errorf("restoring the watermark: %w", err)
	}
	st.valve.out.time = low
	st.wmTime.Store(low)
	st.floors, st.floorsStart = floors, kgs.Start
	return nil
}

// watermarkFloors returns the watermark each key group of kgs had in the
// entries of a checkpoint: the lowest, and all of them (indexed from
// kgs.Start) when they differ, nil when they are all the lowest.
func watermarkFloors(entries [][]byte, kgs checkpoint.KeyGroupRange) (int64, []int64, error) {
	floors := make([]int64, kgs.Len())
	for i := range floors {
		floors[i] = NoWatermark
	}
	for i, raw := range entries {
		var e watermarkEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, nil, fmt.Errorf("entry %d is malformed: %w", i, err)
		}
		r := kgs.Intersect(checkpoint.KeyGroupRange{Start: e.Start, End: e.End})
		for kg := r.Start; kg < r.End; kg++ {
			floors[kg-kgs.Start] = max(floors[kg-kgs.Start], e.Watermark)
		}
	}
	low := int64(math.MaxInt64)
	for _, f := range floors {
		low = min(low, f)
	}
	if len(floors) == 0 {
		low = NoWatermark
	}
	for _, f := range floors {
		if f != low {
			return low, floors, nil
		}
	}
	return low, nil, nil
}

// keyedWatermark is KeyedContext.CurrentWatermark: the subtask's watermark,
// or the restored one of the current key's group when that is higher.
func (st *subtask) keyedWatermark() int64 {
	w := st.valve.current().time
	if st.floors == nil {
		return w
	}
	key := st.backend.CurrentKey()
	if key == nil {
		return w
	}
	kg := state.KeyGroupOf(key, st.j.opts.MaxParallelism) - st.floorsStart
	if kg < 0 || kg >= len(st.floors) {
		return w
	}
	return max(w, st.floors[kg])
}
