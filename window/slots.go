package window

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/state"
)

// Sliding and session windows keep all of a key's windows in one value
// (state "windows", a list of slots: window and accumulator) instead of
// one map entry per window.
//
//   - A record is in Size/Slide sliding windows: with one entry each it
//     cost that many reads and writes of keyed state, with one value one
//     read and one write.
//   - A record extends or merges the key's sessions: with a map it read
//     the list of sessions, read and removed each absorbed session's
//     entry, wrote the merged one and wrote the list again; with one value
//     it reads and writes the value once.
//   - A firing reads and writes (or clears) the value once.
//
// The value stays small: a key has at most Size/Slide+1 sliding windows
// open, or the sessions that have not fired, plus those kept for the
// allowed lateness.
//
// The format differs from the map of other assigners, and the state's
// kind says so: a checkpoint whose sliding or session windows are one
// entry per window (written before this format) is refused on restore,
// naming the state, rather than read as empty.

// slot is one of a key's sliding windows and its accumulator.
type slot[A any] struct {
	w   Window
	acc A
}

// slotsCodec stores a key's slots, each as its window (16 bytes, as
// windowCodec) and its accumulator's encoding behind its length
// (uvarint).
type slotsCodec[A any] struct {
	acc state.Codec[A]
}

func (c slotsCodec[A]) Name() string { return "sliding-windows-v1(" + c.acc.Name() + ")" }

func (c slotsCodec[A]) Encode(ss []slot[A]) ([]byte, error) {
	var out []byte
	for i, s := range ss {
		b, err := c.acc.Encode(s.acc)
		if err != nil {
			return nil, fmt.Errorf("the accumulator of window %v: %w", s.w, err)
		}
		if i == 0 {
			// One allocation for the value when the accumulators are of
			// one size, as they mostly are.
			out = make([]byte, 0, len(ss)*(16+binary.MaxVarintLen64+len(b)))
		}
		out = binary.BigEndian.AppendUint64(out, uint64(s.w.Start))
		out = binary.BigEndian.AppendUint64(out, uint64(s.w.End))
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out, nil
}

func (c slotsCodec[A]) Decode(b []byte) ([]slot[A], error) {
	n, err := countSlots(b)
	if err != nil {
		return nil, err
	}
	out := make([]slot[A], 0, n)
	for len(b) > 0 {
		w := Window{Start: int64(binary.BigEndian.Uint64(b)), End: int64(binary.BigEndian.Uint64(b[8:]))}
		n, k := binary.Uvarint(b[16:])
		b = b[16+k:]
		acc, err := c.acc.Decode(b[:n])
		if err != nil {
			return nil, fmt.Errorf("sliding windows: the accumulator of window %v: %w", w, err)
		}
		out = append(out, slot[A]{w: w, acc: acc})
		b = b[n:]
	}
	return out, nil
}

// countSlots checks the framing of an encoded list of slots and returns
// how many it holds.
func countSlots(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if len(b) < 16 {
			return 0, fmt.Errorf("sliding windows: %d bytes left where a window takes 16", len(b))
		}
		l, k := binary.Uvarint(b[16:])
		if k <= 0 || uint64(len(b)-16-k) < l {
			return 0, fmt.Errorf("sliding windows: the accumulator of window %d is cut short", n)
		}
		b = b[16+k+int(l):]
		n++
	}
	return n, nil
}

// processSliding adds v to its windows (o.buf) in the key's one value of
// windows.
func (o *operator[K, T, A, R]) processSliding(ctx *engine.KeyedContext, key K, v T, out func(Output[K, T, R])) error {
	slots, _, err := o.slots.Value()
	if err != nil {
		return err
	}
	added := false
	for _, w := range o.buf {
		if o.late(ctx, w) {
			continue
		}
		added = true
		i := slotOf(slots, w)
		if i < 0 {
			slots = append(slots, slot[A]{w: w, acc: o.agg.New()})
			i = len(slots) - 1
			// A window in state has its timers since it was created
			// (timers and state are checkpointed together), so only a new
			// one registers them.
			if err := o.register(ctx, w); err != nil {
				return err
			}
		}
		if slots[i].acc, err = o.agg.Add(slots[i].acc, v); err != nil {
			return fmt.Errorf("adding a record of key %v to window %v: %w", key, w, err)
		}
		if o.fired(ctx, w) {
			if err := o.emit(key, w, slots[i].acc, out); err != nil {
				return err
			}
		}
	}
	if !added {
		o.lateRecord(key, v, out)
		return nil
	}
	return o.slots.Update(slots)
}

// processSession merges v's session w with the key's sessions it
// intersects (MergeSessions), their accumulators merged, in one read and
// one write of the key's windows.
func (o *operator[K, T, A, R]) processSession(ctx *engine.KeyedContext, key K, v T, w Window, out func(Output[K, T, R])) error {
	slots, _, err := o.slots.Value()
	if err != nil {
		return err
	}
	o.due = o.due[:0]
	for _, s := range slots {
		o.due = append(o.due, s.w)
	}
	merged, absorbed := MergeSessions(o.due, w)
	if o.late(ctx, merged) {
		o.lateRecord(key, v, out)
		return nil
	}
	// The absorbed sessions merge in MergeSessions' order (by start).
	acc := o.agg.New()
	for _, w := range absorbed {
		s := slots[slotOf(slots, w)]
		if acc, err = o.agg.Merge(acc, s.acc); err != nil {
			return fmt.Errorf("merging session %v of key %v: %w", s.w, key, err)
		}
		if err := o.unregister(ctx, s.w); err != nil {
			return err
		}
	}
	kept := slots[:0]
	for _, s := range slots {
		if !slices.Contains(absorbed, s.w) {
			kept = append(kept, s)
		}
	}
	if acc, err = o.agg.Add(acc, v); err != nil {
		return fmt.Errorf("adding a record of key %v to session %v: %w", key, merged, err)
	}
	if err := o.slots.Update(append(kept, slot[A]{w: merged, acc: acc})); err != nil {
		return err
	}
	if err := o.register(ctx, merged); err != nil {
		return err
	}
	if o.fired(ctx, merged) {
		return o.emit(key, merged, acc, out)
	}
	return nil
}

// timerSlots fires the key's windows whose last timestamp is ts and drops
// those whose cleanup time is ts, in one read and one write.
func (o *operator[K, T, A, R]) timerSlots(ctx *engine.KeyedContext, key K, ts int64, out func(Output[K, T, R])) error {
	slots, ok, err := o.slots.Value()
	if err != nil || !ok {
		return err
	}
	kept := slots[:0]
	for _, s := range slots {
		if s.w.MaxTimestamp() == ts {
			if err := o.emit(key, s.w, s.acc, out); err != nil {
				return err
			}
		}
		// A processing-time window goes when it fires; an event-time one
		// at its cleanup time, past the allowed lateness.
		gone := s.w.MaxTimestamp() == ts
		if o.eventTime() {
			gone = s.w.CleanupTime(o.spec.AllowedLateness) == ts
		}
		if !gone {
			kept = append(kept, s)
		}
	}
	switch {
	case len(kept) == len(slots):
		return nil
	case len(kept) == 0:
		return o.slots.Clear()
	}
	return o.slots.Update(kept)
}

// slotOf is the index of w in slots, or -1.
func slotOf[A any](slots []slot[A], w Window) int {
	for i := range slots {
		if slots[i].w == w {
			return i
		}
	}
	return -1
}
