package statebackend

import (
	"container/heap"
	"errors"
	"fmt"
	"math"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/state"
)

// numTimeDomains is the number of valid state.TimeDomains; domain d is
// stored at index d-1 of per-domain arrays.
const numTimeDomains = 2

// domainIndex returns d's position in per-domain arrays, or an error naming d.
func domainIndex(d state.TimeDomain) (int, error) {
	if d != state.EventTime && d != state.ProcessingTime {
		return 0, fmt.Errorf("unknown time domain %d (want state.EventTime or state.ProcessingTime)", uint8(d))
	}
	return int(d) - 1, nil
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
	d       state.TimeDomain
	upTo    int64
	q       timerQueue
	start   int
	marked  []bool // by key group - start
	touched []int  // key groups to read again after fn returns
}

func newTimerFiring(d state.TimeDomain, upTo int64, q timerQueue, kgs checkpoint.KeyGroupRange) *timerFiring {
	return &timerFiring{d: d, upTo: upTo, q: q, start: kgs.Start, marked: make([]bool, kgs.Len())}
}

// touch records a change of timer (ts, key) of domain d in key group kg; a
// nil f (no FireTimers running) ignores it, and so does a change that the
// running call cannot see (another domain, or after upTo).
func (f *timerFiring) touch(d state.TimeDomain, kg int, ts int64, key []byte, add bool) {
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
