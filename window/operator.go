package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/state"
)

// The window operator (Aggregate) is a keyed process function on the
// engine's public API: each key's windows are kept in keyed state (one
// value per key of every window and its accumulator for sliding and
// session windows, slots.go; a map state from Window to accumulator for
// the others), and each window has a timer at its last timestamp (when it
// fires) and, with allowed lateness, one at its cleanup time (when its
// state goes). It follows Flink's WindowOperator with the default
// triggers:
//
//   - a record is added to every window its timestamp is in that is not
//     late (Window.Late against the operator's watermark); a record for
//     which every such window is late goes to the late output, counted;
//   - a window fires once, when the watermark reaches its last timestamp
//     (or the processing-time clock passes it: a record arriving in a
//     window's last millisecond still joins it);
//   - a record added to a window that has fired already (possible only
//     within the allowed lateness) fires it again at once, with the
//     updated result;
//   - session windows merge: a record's [ts, ts+gap) absorbs every session
//     of its key it intersects, their accumulators merged.
//
// Every emitted result and late record goes through the engine, so a
// transactional sink writes each one exactly once. The watermark a
// restored operator resumes at is its key groups' checkpointed one (the
// engine's choice), so a window that fired and was purged before a crash
// is not reopened by the replay.

// Aggregator folds a window's records into one accumulator, so a window
// keeps one value and not every record.
type Aggregator[T, A, R any] interface {
	// New is an empty accumulator.
	New() A
	// Add folds v into acc and returns the result.
	Add(acc A, v T) (A, error)
	// Merge folds two accumulators (merging session windows).
	Merge(a, b A) (A, error)
	// Result is what a window with accumulator acc emits.
	Result(acc A) (R, error)
}

// TimeKind is the clock windows follow.
type TimeKind uint8

const (
	// EventTime windows follow the records' timestamps and the watermark.
	EventTime TimeKind = iota
	// ProcessingTime windows follow the job's clock: a record is in the
	// windows of its arrival time, and a window fires when the clock
	// reaches its end (is past its last millisecond). Nothing is late.
	ProcessingTime
)

// Spec says how a keyed stream is windowed.
type Spec struct {
	// Assigner puts records in windows (Tumbling, Sliding, Session).
	Assigner Assigner
	// Time is EventTime (the default) or ProcessingTime.
	Time TimeKind
	// AllowedLateness keeps an event-time window's state this long past
	// its end: a record within it updates the window, which fires again.
	AllowedLateness time.Duration
	// Late, when set, counts the records sent to the late output. It is
	// shared by every subtask and safe to read at any time.
	Late *atomic.Int64
}

func (s Spec) validate(uid string) error {
	switch {
	case s.Assigner == nil:
		return fmt.Errorf("window %s: no assigner", uid)
	case s.Time != EventTime && s.Time != ProcessingTime:
		return fmt.Errorf("window %s: time kind %d is neither EventTime nor ProcessingTime", uid, s.Time)
	case s.AllowedLateness < 0:
		return fmt.Errorf("window %s: allowed lateness %s is negative", uid, s.AllowedLateness)
	case s.Time == ProcessingTime && s.AllowedLateness > 0:
		return fmt.Errorf("window %s: allowed lateness %s in processing time, where nothing is late", uid, s.AllowedLateness)
	}
	return nil
}

// Output is one record of the window operator: a window's result, or a
// record too late for any window.
type Output[K, T, R any] struct {
	// Key is the record's key.
	Key K
	// Late marks a late record: Record holds it, and Window and Value are
	// zero.
	Late   bool
	Record T
	// Window and Value are a firing's window and result.
	Window Window
	Value  R
}

// Aggregate windows ks as spec says and folds each window with agg, with
// parallelism p and operator uid uid. accCodec stores accumulators in
// keyed state (and checkpoints). A result carries its window's last
// timestamp as its event time; a late record its own. An invalid spec
// panics, as a graph error does: validate configuration first (the
// assigners' constructors do).
func Aggregate[K, T, A, R any](ks engine.KeyedStream[K, T], uid string, p int, spec Spec, agg Aggregator[T, A, R], accCodec state.Codec[A]) engine.Stream[Output[K, T, R]] {
	if err := spec.validate(uid); err != nil {
		panic(err)
	}
	return engine.Process(ks, uid, p, func() engine.KeyedProcessFunction[K, T, Output[K, T, R]] {
		return &operator[K, T, A, R]{spec: spec, agg: agg, accCodec: accCodec}
	})
}

// operator is one subtask's window function.
type operator[K, T, A, R any] struct {
	spec     Spec
	agg      Aggregator[T, A, R]
	accCodec state.Codec[A]
	accs     *state.MapState[Window, A]
	// slots holds a key's sliding or session windows, all in one value
	// (slots.go); accs is nil then.
	slots *state.ValueState[[]slot[A]]
	buf   []Window
	// OnTimer's, reused: the windows due.
	due []Window
}

// windowCodec stores a Window as 16 big-endian bytes.
type windowCodec struct{}

func (windowCodec) Name() string { return "window-v1" }
func (windowCodec) Encode(w Window) ([]byte, error) {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(w.Start))
	binary.BigEndian.PutUint64(b[8:], uint64(w.End))
	return b, nil
}
func (windowCodec) Decode(b []byte) (Window, error) {
	if len(b) != 16 {
		return Window{}, fmt.Errorf("a window is 16 bytes, got %d", len(b))
	}
	return Window{Start: int64(binary.BigEndian.Uint64(b)), End: int64(binary.BigEndian.Uint64(b[8:]))}, nil
}

// Open creates the key's windows' state: one value of every window for
// sliding and merging assigners (slots.go), a map from window to
// accumulator for the others.
func (o *operator[K, T, A, R]) Open(ctx *engine.KeyedContext) error {
	var err error
	if o.oneValue() {
		o.slots, err = state.NewValueState(ctx.Backend(), "windows", slotsCodec[A]{o.accCodec})
		if err != nil {
			return fmt.Errorf("sliding and session windows keep each key's windows in one value; a checkpoint of an older onceflow, with one entry per window, cannot be restored: %w", err)
		}
		return nil
	}
	o.accs, err = state.NewMapState(ctx.Backend(), "windows", windowCodec{}, o.accCodec)
	return err
}

// oneValue reports whether the key's windows are kept in one value:
// those of sliding and merging assigners.
func (o *operator[K, T, A, R]) oneValue() bool {
	_, sliding := o.spec.Assigner.(Sliding)
	return sliding || o.spec.Assigner.Merging()
}

func (o *operator[K, T, A, R]) eventTime() bool { return o.spec.Time == EventTime }

// now is the record's time in the spec's clock.
func (o *operator[K, T, A, R]) now(ctx *engine.KeyedContext) (int64, error) {
	if !o.eventTime() {
		return ctx.CurrentProcessingTime(), nil
	}
	ts := ctx.Timestamp()
	if ts == engine.NoTimestamp {
		return 0, errors.New("an event-time window got a record without a timestamp (its source supplies none)")
	}
	return ts, nil
}

// late reports whether w is past its cleanup time.
func (o *operator[K, T, A, R]) late(ctx *engine.KeyedContext, w Window) bool {
	return o.eventTime() && w.Late(ctx.CurrentWatermark(), o.spec.AllowedLateness)
}

// fired reports whether the watermark passed w's end already: an
// event-time window within its allowed lateness. A processing-time window
// always waits for its timer, which the engine fires at its next look at
// the clock, past or not.
func (o *operator[K, T, A, R]) fired(ctx *engine.KeyedContext, w Window) bool {
	return o.eventTime() && w.MaxTimestamp() <= ctx.CurrentWatermark()
}

// register sets w's timers: the firing one unless w has fired already
// (the caller fires it at once; a timer at or below the watermark would
// fire it a second time), and with allowed lateness the cleanup one.
func (o *operator[K, T, A, R]) register(ctx *engine.KeyedContext, w Window) error {
	if !o.eventTime() {
		return ctx.RegisterProcessingTimeTimer(w.MaxTimestamp())
	}
	if !o.fired(ctx, w) {
		if err := ctx.RegisterEventTimeTimer(w.MaxTimestamp()); err != nil {
			return err
		}
	}
	if o.spec.AllowedLateness > 0 {
		return ctx.RegisterEventTimeTimer(w.CleanupTime(o.spec.AllowedLateness))
	}
	return nil
}

func (o *operator[K, T, A, R]) unregister(ctx *engine.KeyedContext, w Window) error {
	if !o.eventTime() {
		return ctx.DeleteProcessingTimeTimer(w.MaxTimestamp())
	}
	if err := ctx.DeleteEventTimeTimer(w.MaxTimestamp()); err != nil {
		return err
	}
	if o.spec.AllowedLateness > 0 {
		return ctx.DeleteEventTimeTimer(w.CleanupTime(o.spec.AllowedLateness))
	}
	return nil
}

// emit sends w's result.
func (o *operator[K, T, A, R]) emit(key K, w Window, acc A, out func(Output[K, T, R])) error {
	r, err := o.agg.Result(acc)
	if err != nil {
		return fmt.Errorf("the result of window %v of key %v: %w", w, key, err)
	}
	out(Output[K, T, R]{Key: key, Window: w, Value: r})
	return nil
}

// Process adds v to its windows (see the comment at the top of this file).
func (o *operator[K, T, A, R]) Process(ctx *engine.KeyedContext, key K, v T, out func(Output[K, T, R])) error {
	ts, err := o.now(ctx)
	if err != nil {
		return err
	}
	o.buf = o.spec.Assigner.Assign(o.buf[:0], ts)
	if o.spec.Assigner.Merging() {
		return o.processSession(ctx, key, v, o.buf[0], out)
	}
	if o.slots != nil {
		return o.processSliding(ctx, key, v, out)
	}
	added := false
	for _, w := range o.buf {
		if o.late(ctx, w) {
			continue
		}
		added = true
		acc, ok, err := o.accs.Get(w)
		if err != nil {
			return err
		}
		if !ok {
			acc = o.agg.New()
		}
		if acc, err = o.agg.Add(acc, v); err != nil {
			return fmt.Errorf("adding a record of key %v to window %v: %w", key, w, err)
		}
		if err := o.accs.Put(w, acc); err != nil {
			return err
		}
		// A window in state has its timers since it was created (timers
		// and state are checkpointed together), so only a new one
		// registers them.
		if !ok {
			if err := o.register(ctx, w); err != nil {
				return err
			}
		}
		if o.fired(ctx, w) {
			if err := o.emit(key, w, acc, out); err != nil {
				return err
			}
		}
	}
	if !added {
		o.lateRecord(key, v, out)
	}
	return nil
}

func (o *operator[K, T, A, R]) lateRecord(key K, v T, out func(Output[K, T, R])) {
	if o.spec.Late != nil {
		o.spec.Late.Add(1)
	}
	out(Output[K, T, R]{Key: key, Late: true, Record: v})
}

// OnTimer fires the key's windows whose last timestamp is ts, and drops
// the state of those whose cleanup time is ts. Windows of a fixed size
// (tumbling, sliding) are found from ts directly, sessions in the key's
// list of sessions, and those of any other Assigner by a look at the
// key's windows.
func (o *operator[K, T, A, R]) OnTimer(ctx *engine.KeyedContext, key K, ts int64, out func(Output[K, T, R])) error {
	if o.slots != nil {
		return o.timerSlots(ctx, key, ts, out)
	}
	due, err := o.dueWindows(ts)
	if err != nil {
		return err
	}
	for _, w := range due {
		acc, ok, err := o.accs.Get(w)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if w.MaxTimestamp() == ts {
			if err := o.emit(key, w, acc, out); err != nil {
				return err
			}
		}
		if !o.eventTime() || w.CleanupTime(o.spec.AllowedLateness) == ts {
			if err := o.accs.Remove(w); err != nil {
				return err
			}
		}
	}
	return nil
}

// dueWindows returns the current key's windows with a timer at ts: those
// it fires (last timestamp ts) and those it cleans up (cleanup time ts).
func (o *operator[K, T, A, R]) dueWindows(ts int64) ([]Window, error) {
	isDue := func(w Window) bool {
		return w.MaxTimestamp() == ts || (o.eventTime() && w.CleanupTime(o.spec.AllowedLateness) == ts)
	}
	o.due = o.due[:0]
	if size, ok := o.spec.Assigner.(fixedSize); ok && ts < math.MaxInt64 {
		// Every window of the assigner is Size long, so the one ending at
		// ts+1 and the one whose cleanup time is ts are all there can be.
		n := size.size()
		o.due = append(o.due, Window{Start: ts + 1 - n, End: ts + 1})
		if l := o.spec.AllowedLateness.Milliseconds(); o.eventTime() && l > 0 {
			o.due = append(o.due, Window{Start: ts - l + 1 - n, End: ts - l + 1})
		}
		return o.due, nil
	}
	// Any other assigner, or a timer at the end of time: a look at every
	// window of the key.
	err := o.accs.Keys(func(w Window) bool {
		if isDue(w) {
			o.due = append(o.due, w)
		}
		return true
	})
	return o.due, err
}

// Apply windows ks as Aggregate does, but hands fn every record of a
// window when it fires, in arrival order, for computations no accumulator
// can fold (a median, the records themselves): the window keeps all its
// records in keyed state, encoded by codec, so its state grows with them.
// An error of fn fails the job attempt like one of Process.
func Apply[K, T, R any](ks engine.KeyedStream[K, T], uid string, p int, spec Spec, codec state.Codec[T], fn func(records []T) (R, error)) engine.Stream[Output[K, T, R]] {
	return Aggregate(ks, uid, p, spec, allRecords[T, R]{fn: fn}, listCodec[T]{codec})
}

// allRecords is the Aggregator of Apply: its accumulator is the records.
type allRecords[T, R any] struct{ fn func([]T) (R, error) }

func (allRecords[T, R]) New() []T                      { return nil }
func (allRecords[T, R]) Add(acc []T, v T) ([]T, error) { return append(acc, v), nil }
func (allRecords[T, R]) Merge(a, b []T) ([]T, error) {
	return append(append([]T(nil), a...), b...), nil
}
func (a allRecords[T, R]) Result(acc []T) (R, error) { return a.fn(acc) }

// listCodec stores a list of T as each element's encoding behind its
// length (uvarint).
type listCodec[T any] struct{ c state.Codec[T] }

func (l listCodec[T]) Name() string { return "list(" + l.c.Name() + ")" }

func (l listCodec[T]) Encode(vs []T) ([]byte, error) {
	var out []byte
	for _, v := range vs {
		b, err := l.c.Encode(v)
		if err != nil {
			return nil, err
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out, nil
}

func (l listCodec[T]) Decode(b []byte) ([]T, error) {
	var out []T
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("a list of %s is cut short", l.c.Name())
		}
		v, err := l.c.Decode(b[k : k+int(n)])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		b = b[k+int(n):]
	}
	return out, nil
}
