package state

import (
	"container/heap"
	"errors"
	"fmt"
	"math"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// TimeDomain says which clock a timer follows: the watermark (EventTime)
// or the wall clock (ProcessingTime). The zero value is no domain: every
// timer call refuses it.
type TimeDomain uint8

const (
	// EventTime timers fire when the operator's watermark reaches them.
	EventTime TimeDomain = 1
	// ProcessingTime timers fire when the wall clock reaches them.
	ProcessingTime TimeDomain = 2
)

// numTimeDomains is the number of valid TimeDomains; domain d is stored at
// index d-1 of per-domain arrays. The numeric values are part of the
// stored formats (a byte of every Pebble timer key and of every canonical
// timer entry) and must never change.
const numTimeDomains = 2

// String returns "event-time" or "processing-time", or "time domain n"
// for a value that is neither.
func (d TimeDomain) String() string {
	switch d {
	case EventTime:
		return "event-time"
	case ProcessingTime:
		return "processing-time"
	}
	return fmt.Sprintf("time domain %d", uint8(d))
}

// index returns d's position in per-domain arrays, or an error naming d.
func (d TimeDomain) index() (int, error) {
	if d != EventTime && d != ProcessingTime {
		return 0, fmt.Errorf("unknown time domain %d (want EventTime or ProcessingTime)", uint8(d))
	}
	return int(d) - 1, nil
}

// Timers are the keyed timers of one operator subtask, kept by its
// KeyedBackend as keyed state: they belong to the key that was current when
// they were registered, live in that key's key group, are part of every
// checkpoint and savepoint, and are restored and rescaled by key group like
// the other keyed state. Times are epoch milliseconds (any int64, negative
// ones included). Like the rest of a KeyedBackend, Timers are called from
// the subtask's goroutine only.
type Timers interface {
	// RegisterTimer adds a timer at ts in domain d for the backend's current
	// key. There is at most one timer per (domain, key, ts): registering it
	// again is a no-op. It fails, like every state access, when no key is
	// current or the current key is outside the subtask's key groups.
	RegisterTimer(d TimeDomain, ts int64) error
	// DeleteTimer removes the current key's timer at ts in domain d;
	// deleting a timer that does not exist is a no-op.
	DeleteTimer(d TimeDomain, ts int64) error
	// FireTimers removes every timer of domain d with ts <= upTo and calls
	// fn for it, in (ts, key group, key) order (key bytes compared
	// lexicographically), after setting the backend's current key to the
	// timer's key; the key stays current when FireTimers returns. fn may
	// keep key, and may use the backend as during Process: read and write
	// state, and register or delete timers of any key. Timers it registers
	// at or before upTo fire in the same call (a timer re-registering
	// itself at its own time therefore fires forever, as in Flink), and
	// timers it deletes before they fire do not fire. The timer is
	// removed before fn is called; fn's error stops the call and is
	// returned unchanged (the timers not yet fired stay). Calling
	// FireTimers from fn is an error.
	FireTimers(d TimeDomain, upTo int64, fn func(key []byte, ts int64) error) error
	// NextTimer returns the earliest timer of domain d, or ok false when
	// there is none (for scheduling the wake-up of processing-time timers).
	NextTimer(d TimeDomain) (ts int64, ok bool, err error)
}

// timerQueue is what the shared firing loop needs from a backend's storage
// of the timers of one domain during one FireTimers call.
type timerQueue interface {
	// head returns the earliest timer of key group kg with ts <= the
	// call's upTo (ok false when there is none). It reflects every removal
	// and every write it was told of through touch.
	head(kg int) (ts int64, key []byte, ok bool, err error)
	// remove deletes the timer that head(kg) just returned.
	remove(kg int, ts int64, key []byte) error
	// touch tells the queue that fn registered (add true) or deleted
	// timer (ts, key) of key group kg, with ts <= upTo.
	touch(kg int, ts int64, key []byte, add bool)
	// close releases what the queue holds (Pebble iterators).
	close() error
}

// timerFiring is the state of one FireTimers call. The backend keeps it
// while fn runs, so that RegisterTimer and DeleteTimer called from fn can
// report what they changed (touch); the loop then reads those key groups
// again.
type timerFiring struct {
	d       TimeDomain
	upTo    int64
	q       timerQueue
	start   int
	marked  []bool // by key group - start
	touched []int  // key groups to read again after fn returns
}

func newTimerFiring(d TimeDomain, upTo int64, q timerQueue, kgs checkpoint.KeyGroupRange) *timerFiring {
	return &timerFiring{d: d, upTo: upTo, q: q, start: kgs.Start, marked: make([]bool, kgs.Len())}
}

// touch records a change of timer (ts, key) of domain d in key group kg; a
// nil f (no FireTimers running) ignores it, and so does a change that the
// running call cannot see (another domain, or after upTo).
func (f *timerFiring) touch(d TimeDomain, kg int, ts int64, key []byte, add bool) {
	if f == nil || d != f.d || ts > f.upTo {
		return
	}
	f.q.touch(kg, ts, key, add)
	f.mark(kg)
}

func (f *timerFiring) mark(kg int) {
	if !f.marked[kg-f.start] {
		f.marked[kg-f.start] = true
		f.touched = append(f.touched, kg)
	}
}

// run fires the timers: a heap holds the head of every key group that has a
// timer due, ordered by (ts, key group); each step removes the smallest
// head, calls fn with its key current, and reads again the heads of its key
// group and of the key groups fn changed. Cost: one head read per key group
// to start, then O(log key groups) heap work and one head read per fired
// timer.
func (f *timerFiring) run(kgs checkpoint.KeyGroupRange, setKey func([]byte), fn func(key []byte, ts int64) error) error {
	h := &fireHeap{pos: make([]int, kgs.Len()), start: kgs.Start}
	for i := range h.pos {
		h.pos[i] = -1
	}
	refresh := func(kg int) error {
		ts, key, ok, err := f.q.head(kg)
		if err != nil {
			return err
		}
		due := ok && ts <= f.upTo
		switch i := h.pos[kg-kgs.Start]; {
		case due && i >= 0:
			h.items[i] = fireItem{ts: ts, kg: kg, key: key}
			heap.Fix(h, i)
		case due:
			heap.Push(h, fireItem{ts: ts, kg: kg, key: key})
		case i >= 0:
			heap.Remove(h, i)
		}
		return nil
	}
	for kg := kgs.Start; kg < kgs.End; kg++ {
		if err := refresh(kg); err != nil {
			return err
		}
	}
	for h.Len() > 0 {
		next := h.items[0]
		if err := f.q.remove(next.kg, next.ts, next.key); err != nil {
			return err
		}
		f.mark(next.kg)
		setKey(next.key)
		if err := fn(next.key, next.ts); err != nil {
			return err
		}
		for _, kg := range f.touched {
			f.marked[kg-f.start] = false
			if err := refresh(kg); err != nil {
				return err
			}
		}
		f.touched = f.touched[:0]
	}
	return nil
}

// fireItem is the due head of one key group.
type fireItem struct {
	ts  int64
	kg  int
	key []byte
}

// fireHeap is a min-heap of key-group heads by (ts, key group), with the
// position of every key group's item (pos, -1 when absent).
type fireHeap struct {
	items []fireItem
	pos   []int
	start int
}

func (h *fireHeap) Len() int { return len(h.items) }
func (h *fireHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.kg < b.kg
}
func (h *fireHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i].kg-h.start] = i
	h.pos[h.items[j].kg-h.start] = j
}
func (h *fireHeap) Push(x any) {
	it := x.(fireItem)
	h.pos[it.kg-h.start] = len(h.items)
	h.items = append(h.items, it)
}
func (h *fireHeap) Pop() any {
	it := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	h.pos[it.kg-h.start] = -1
	return it
}

// errNestedFire is returned by FireTimers called from a FireTimers callback.
var errNestedFire = errors.New("FireTimers called from a timer callback")

// flipTime maps ts to a uint64 whose big-endian bytes sort like ts:
// negative times first.
func flipTime(ts int64) uint64 { return uint64(ts) ^ (1 << 63) }

// unflipTime inverts flipTime.
func unflipTime(u uint64) int64 { return int64(u ^ (1 << 63)) }

// timerHint is what a backend knows about the earliest timer of one domain
// without reading storage, so that FireTimers with nothing due and
// NextTimer cost no seek.
type timerHint struct {
	kind hintKind
	ts   int64
}

type hintKind uint8

const (
	hintUnknown hintKind = iota // nothing known (after a restore)
	hintLower                   // no timer is earlier than ts
	hintExact                   // the earliest timer is at ts
	hintNone                    // there is no timer
)

func (h *timerHint) registered(ts int64) {
	switch h.kind {
	case hintLower, hintExact:
		h.ts = min(h.ts, ts)
	case hintNone:
		h.kind, h.ts = hintExact, ts
	}
}

func (h *timerHint) deleted(ts int64) {
	if h.kind == hintExact && ts == h.ts {
		h.kind = hintLower
	}
}

// fired records that no timer at or before upTo is left.
func (h *timerHint) fired(upTo int64) {
	switch {
	case upTo == math.MaxInt64:
		h.kind = hintNone
	case h.kind == hintUnknown || h.kind == hintNone:
		h.kind, h.ts = hintLower, upTo+1
	default:
		h.kind, h.ts = hintLower, max(h.ts, upTo+1)
	}
}

// nothingDue reports whether no timer can be at or before upTo.
func (h *timerHint) nothingDue(upTo int64) bool {
	switch h.kind {
	case hintNone:
		return true
	case hintLower, hintExact:
		return upTo < h.ts
	}
	return false
}

// from is the time from which storage must be searched.
func (h *timerHint) from() int64 {
	if h.kind == hintLower || h.kind == hintExact {
		return h.ts
	}
	return math.MinInt64
}
