package statebackend

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/onceflow/onceflow/state"
)

// The memory backend keeps, per domain and key group, a min-heap of timers
// by (ts, key) and a set of them for de-duplication (memTimerGroup). Groups
// are copy-on-write like the maps of the keyed states: a snapshot captures
// the groups as they are and starts a new generation, and the first change
// of a group in the new generation copies it (O(timers of that group)), so
// a captured group is never modified.

// timerID identifies a timer within its domain.
type timerID struct {
	ts  int64
	key string
}

type memTimer struct {
	id  timerID
	pos int // index in memTimerGroup.heap
}

// memTimerGroup is the timers of one domain and key group. It is modified
// only while gen is the backend's generation.
type memTimerGroup struct {
	gen  uint64
	heap []*memTimer
	set  map[timerID]*memTimer
}

func newMemTimerGroup(gen uint64) *memTimerGroup {
	return &memTimerGroup{gen: gen, set: map[timerID]*memTimer{}}
}

func (g *memTimerGroup) clone(gen uint64) *memTimerGroup {
	c := &memTimerGroup{gen: gen, heap: make([]*memTimer, len(g.heap)), set: make(map[timerID]*memTimer, len(g.set))}
	for i, t := range g.heap {
		nt := &memTimer{id: t.id, pos: i}
		c.heap[i] = nt
		c.set[t.id] = nt
	}
	return c
}

func (g *memTimerGroup) less(i, j int) bool {
	a, b := g.heap[i].id, g.heap[j].id
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.key < b.key
}

func (g *memTimerGroup) swap(i, j int) {
	g.heap[i], g.heap[j] = g.heap[j], g.heap[i]
	g.heap[i].pos = i
	g.heap[j].pos = j
}

func (g *memTimerGroup) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !g.less(i, p) {
			return
		}
		g.swap(i, p)
		i = p
	}
}

func (g *memTimerGroup) down(i int) {
	n := len(g.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && g.less(r, l) {
			m = r
		}
		if !g.less(m, i) {
			return
		}
		g.swap(i, m)
		i = m
	}
}

// add inserts id unless present; it reports whether it did.
func (g *memTimerGroup) add(id timerID) bool {
	if _, ok := g.set[id]; ok {
		return false
	}
	t := &memTimer{id: id, pos: len(g.heap)}
	g.heap = append(g.heap, t)
	g.set[id] = t
	g.up(t.pos)
	return true
}

// remove deletes id if present.
func (g *memTimerGroup) remove(id timerID) {
	t, ok := g.set[id]
	if !ok {
		return
	}
	delete(g.set, id)
	i, last := t.pos, len(g.heap)-1
	if i != last {
		g.swap(i, last)
	}
	g.heap[last] = nil
	g.heap = g.heap[:last]
	if i != last {
		g.down(i)
		g.up(i)
	}
}

// sorted returns the timers in (ts, key) order.
func (g *memTimerGroup) sorted() []timerID {
	out := slices.Collect(maps.Keys(g.set))
	slices.SortFunc(out, func(a, b timerID) int {
		if c := cmp.Compare(a.ts, b.ts); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	return out
}

// newMemTimers returns empty per-domain group slices for n key groups.
func newMemTimers(n int) [numTimeDomains][]*memTimerGroup {
	var t [numTimeDomains][]*memTimerGroup
	for i := range t {
		t[i] = make([]*memTimerGroup, n)
	}
	return t
}

// writableTimers returns the group of domain index di and key group index
// gi for writing, creating it or copying it first if a snapshot may still
// read it.
func (b *memBackend) writableTimers(di, gi int) *memTimerGroup {
	g := b.timers[di][gi]
	switch {
	case g == nil:
		g = newMemTimerGroup(b.gen)
		b.timers[di][gi] = g
	case g.gen != b.gen:
		g = g.clone(b.gen)
		b.timers[di][gi] = g
	}
	return g
}

// timerTarget checks d and the current key for a timer call.
func (b *memBackend) timerTarget(what string, d state.TimeDomain) (int, error) {
	di, err := domainIndex(d)
	if err != nil {
		return 0, fmt.Errorf("%s timer of %s/%d: %w", what, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	if b.keyErr != nil {
		return 0, fmt.Errorf("%s %s timer of %s/%d: %w", what, d, b.opts.OperatorUID, b.opts.Subtask, b.keyErr)
	}
	if b.key == nil {
		return 0, fmt.Errorf("%s %s timer of %s/%d: no current key", what, d, b.opts.OperatorUID, b.opts.Subtask)
	}
	return di, nil
}

func (b *memBackend) RegisterTimer(d state.TimeDomain, ts int64) error {
	di, err := b.timerTarget("register", d)
	if err != nil {
		return err
	}
	id := timerID{ts: ts, key: string(b.key)}
	if g := b.timers[di][b.kg]; g != nil {
		if _, ok := g.set[id]; ok {
			return nil
		}
	}
	b.writableTimers(di, b.kg).add(id)
	b.firing.touch(d, b.kg+b.opts.KeyGroups.Start, ts, b.key, true)
	return nil
}

func (b *memBackend) DeleteTimer(d state.TimeDomain, ts int64) error {
	di, err := b.timerTarget("delete", d)
	if err != nil {
		return err
	}
	id := timerID{ts: ts, key: string(b.key)}
	g := b.timers[di][b.kg]
	if g == nil {
		return nil
	}
	if _, ok := g.set[id]; !ok {
		return nil
	}
	b.writableTimers(di, b.kg).remove(id)
	b.firing.touch(d, b.kg+b.opts.KeyGroups.Start, ts, b.key, false)
	return nil
}

func (b *memBackend) NextTimer(d state.TimeDomain) (int64, bool, error) {
	di, err := domainIndex(d)
	if err != nil {
		return 0, false, fmt.Errorf("next timer of %s/%d: %w", b.opts.OperatorUID, b.opts.Subtask, err)
	}
	var next int64
	found := false
	for _, g := range b.timers[di] {
		if g != nil && len(g.heap) > 0 && (!found || g.heap[0].id.ts < next) {
			next, found = g.heap[0].id.ts, true
		}
	}
	return next, found, nil
}

func (b *memBackend) FireTimers(d state.TimeDomain, upTo int64, fn func(key []byte, ts int64) error) error {
	di, err := domainIndex(d)
	if err != nil {
		return fmt.Errorf("fire timers of %s/%d: %w", b.opts.OperatorUID, b.opts.Subtask, err)
	}
	if b.firing != nil {
		return fmt.Errorf("fire %s timers of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, errNestedFire)
	}
	if next, ok, _ := b.NextTimer(d); !ok || next > upTo {
		return nil
	}
	f := newTimerFiring(d, upTo, memTimerQueue{b: b, di: di}, b.opts.KeyGroups)
	b.firing = f
	defer func() { b.firing = nil }()
	return f.run(b.opts.KeyGroups, b.SetCurrentKey, fn)
}

// memTimerQueue reads the live heaps, so it needs no notice of changes.
type memTimerQueue struct {
	b  *memBackend
	di int
}

func (q memTimerQueue) head(kg int) (int64, []byte, bool, error) {
	g := q.b.timers[q.di][kg-q.b.opts.KeyGroups.Start]
	if g == nil || len(g.heap) == 0 {
		return 0, nil, false, nil
	}
	id := g.heap[0].id
	return id.ts, []byte(id.key), true, nil
}

func (q memTimerQueue) remove(kg int, ts int64, key []byte) error {
	q.b.writableTimers(q.di, kg-q.b.opts.KeyGroups.Start).remove(timerID{ts: ts, key: string(key)})
	return nil
}

func (memTimerQueue) touch(int, int64, []byte, bool) {}
func (memTimerQueue) close() error                   { return nil }

// restoreTimer adds a restored timer of key group kg (in range).
func (b *memBackend) restoreTimer(kg int, d state.TimeDomain, ts int64, key []byte) error {
	di, err := domainIndex(d)
	if err != nil {
		return err
	}
	b.writableTimers(di, kg-b.opts.KeyGroups.Start).add(timerID{ts: ts, key: string(key)})
	return nil
}
