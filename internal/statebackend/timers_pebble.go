package statebackend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"github.com/onceflow/onceflow/state"
)

// Pebble timer layout: every timer is one Pebble key with an empty value,
//
//	[key group, uint16 BE][0x0000][domain, 1 byte][ts XOR 1<<63, uint64 BE][serialized key]
//
// State id 0 is never given to a state (ids start at 1), so timers are a
// key space of their own inside each key group: a timer's key group is its
// first two bytes, and the key-group range restore and rescale machinery
// keeps or drops timers as it does state entries. Within a key group and
// domain, keys sort by time (the sign-flipped big-endian timestamp sorts
// negative times first), then by key bytes, so the due timers of a key
// group are one contiguous range at its start and FireTimers reads them
// with one seek and one step per timer, never touching state entries.
//
// Timer writes bypass the state write buffer (b.dirty), so that FireTimers
// needs no flush of unrelated state: they collect in a batch of their own
// (timerWrites), committed before a timer iterator is opened, with the
// state buffer, and past timerBatchLimit bytes; a session window that
// moves its timer with every record then costs one commit per watermark
// step instead of two per record. A set of timers known to be stored
// (timerKnown) spares repeated registrations of the same timer (a window's
// end, once per record) their write.
// timerHints remember a lower bound or the exact time of the earliest
// timer per domain, so that FireTimers with nothing due returns without a
// seek, and seeks start at that bound, past the deletions of timers fired
// earlier.

// timerStateID is the state id reserved for timers.
const timerStateID = 0

// timerKnownLimit bounds timerKnown; it is dropped whole when full.
const timerKnownLimit = 1 << 16

// timerIterCounts counts what the timer iterators of a backend did (for
// tests: firing must not visit state entries).
type timerIterCounts struct {
	iterators, seeks, steps int
	points                  uint64 // internal points visited, tombstones included
}

func (c *timerIterCounts) add(it *pebble.Iterator) {
	s := it.Stats()
	c.iterators++
	c.seeks += s.ForwardSeekCount[pebble.InterfaceCall]
	c.steps += s.ForwardStepCount[pebble.InterfaceCall]
	c.points += s.InternalStats.PointCount
}

// timerPrefix appends the prefix of the timers of domain d in key group kg.
func timerPrefix(dst []byte, kg int, d state.TimeDomain) []byte {
	return append(dst, byte(kg>>8), byte(kg), 0, 0, byte(d))
}

// encodeTimerKey appends the Pebble key of timer (d, ts, key) of key group kg.
func encodeTimerKey(dst []byte, kg int, d state.TimeDomain, ts int64, key []byte) []byte {
	dst = timerPrefix(dst, kg, d)
	dst = binary.BigEndian.AppendUint64(dst, flipTime(ts))
	return append(dst, key...)
}

// timerKeyLen is the length of a timer key without the serialized key.
const timerKeyLen = 5 + 8

// isTimerKey reports whether Pebble key k is a timer's.
func isTimerKey(k []byte) bool {
	return len(k) >= 4 && k[2] == 0 && k[3] == 0
}

// decodeTimerKey splits a timer key; key aliases k.
func decodeTimerKey(k []byte) (kg int, d state.TimeDomain, ts int64, key []byte, err error) {
	if len(k) < timerKeyLen || !isTimerKey(k) {
		return 0, 0, 0, nil, fmt.Errorf("malformed timer key %x", k)
	}
	d = state.TimeDomain(k[4])
	if _, err := domainIndex(d); err != nil {
		return 0, 0, 0, nil, fmt.Errorf("timer key %x: %w", k, err)
	}
	return int(binary.BigEndian.Uint16(k)), d, unflipTime(binary.BigEndian.Uint64(k[5:])), k[timerKeyLen:], nil
}

// timerUpper is the exclusive upper bound of the timers of domain d in key
// group kg with ts <= upTo.
func timerUpper(kg int, d state.TimeDomain, upTo int64) []byte {
	if upTo == math.MaxInt64 {
		return timerPrefix(nil, kg, d+1)
	}
	return binary.BigEndian.AppendUint64(timerPrefix(nil, kg, d), flipTime(upTo+1))
}

// timerKey returns the Pebble key of the current key's timer, checking d
// and the current key.
func (b *pebbleBackend) timerKey(what string, d state.TimeDomain, ts int64) ([]byte, int, error) {
	di, err := domainIndex(d)
	if err != nil {
		return nil, 0, fmt.Errorf("%s timer of %s/%d: %w", what, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	if b.keyErr != nil {
		return nil, 0, fmt.Errorf("%s %s timer of %s/%d: %w", what, d, b.opts.OperatorUID, b.opts.Subtask, b.keyErr)
	}
	if b.key == nil {
		return nil, 0, fmt.Errorf("%s %s timer of %s/%d: no current key", what, d, b.opts.OperatorUID, b.opts.Subtask)
	}
	kg := int(binary.BigEndian.Uint16(b.kg[:]))
	return encodeTimerKey(nil, kg, d, ts, b.key), di, nil
}

func (b *pebbleBackend) RegisterTimer(d state.TimeDomain, ts int64) error {
	k, di, err := b.timerKey("register", d, ts)
	if err != nil {
		return err
	}
	if _, ok := b.timerKnown[string(k)]; ok {
		return nil
	}
	if err := b.timerWrite(k, false); err != nil {
		return fmt.Errorf("register %s timer of %s/%d at %d for key %q: %w", d, b.opts.OperatorUID, b.opts.Subtask, ts, b.key, err)
	}
	if len(b.timerKnown) >= timerKnownLimit {
		clear(b.timerKnown)
	}
	b.timerKnown[string(k)] = struct{}{}
	b.timerHints[di].registered(ts)
	b.firing.touch(d, int(binary.BigEndian.Uint16(b.kg[:])), ts, b.key, true)
	return nil
}

func (b *pebbleBackend) DeleteTimer(d state.TimeDomain, ts int64) error {
	k, di, err := b.timerKey("delete", d, ts)
	if err != nil {
		return err
	}
	delete(b.timerKnown, string(k))
	if err := b.timerWrite(k, true); err != nil {
		return fmt.Errorf("delete %s timer of %s/%d at %d for key %q: %w", d, b.opts.OperatorUID, b.opts.Subtask, ts, b.key, err)
	}
	b.timerHints[di].deleted(ts)
	b.firing.touch(d, int(binary.BigEndian.Uint16(b.kg[:])), ts, b.key, false)
	return nil
}

// timerBatchLimit bounds the timer writes buffered in timerWrites.
const timerBatchLimit = 4 << 20

// timerWrite buffers the write or deletion of timer key k (and records it
// in the changelog).
func (b *pebbleBackend) timerWrite(k []byte, del bool) error {
	if b.timerWrites == nil {
		b.timerWrites = b.db.NewBatch()
	}
	var err error
	if del {
		err = b.timerWrites.Delete(k, nil)
	} else {
		err = b.timerWrites.Set(k, nil, nil)
	}
	if err != nil {
		return err
	}
	if b.cl != nil {
		b.cl.record(entryKind(del), k, nil)
	}
	if b.timerWrites.Len() > timerBatchLimit {
		return b.flushTimers()
	}
	return nil
}

// flushTimers commits the buffered timer writes.
func (b *pebbleBackend) flushTimers() error {
	if b.timerWrites == nil || b.timerWrites.Empty() {
		return nil
	}
	if err := b.timerWrites.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("writing buffered timers: %w", err)
	}
	b.timerWrites.Reset()
	return nil
}

// newTimerIter opens an iterator over [lower, upper) of the database,
// after the buffered timer writes.
func (b *pebbleBackend) newTimerIter(lower, upper []byte) (*pebble.Iterator, error) {
	if err := b.flushTimers(); err != nil {
		return nil, err
	}
	return b.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
}

func (b *pebbleBackend) closeTimerIter(it *pebble.Iterator) error {
	b.timerIters.add(it)
	return it.Close()
}

// NextTimer answers from the hint when it is exact; otherwise it seeks
// once per key group from the hint's lower bound and makes the hint exact.
func (b *pebbleBackend) NextTimer(d state.TimeDomain) (int64, bool, error) {
	di, err := domainIndex(d)
	if err != nil {
		return 0, false, fmt.Errorf("next timer of %s/%d: %w", b.opts.OperatorUID, b.opts.Subtask, err)
	}
	h := &b.timerHints[di]
	switch h.kind {
	case hintNone:
		return 0, false, nil
	case hintExact:
		return h.ts, true, nil
	}
	kgs := b.opts.KeyGroups
	it, err := b.newTimerIter(kgBytes(kgs.Start), kgBytes(kgs.End))
	if err != nil {
		return 0, false, fmt.Errorf("next %s timer of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	from := h.from()
	var next int64
	found := false
	for kg := kgs.Start; kg < kgs.End; kg++ {
		if !it.SeekGE(encodeTimerKey(nil, kg, d, from, nil)) || !bytes.HasPrefix(it.Key(), timerPrefix(nil, kg, d)) {
			continue
		}
		_, _, ts, _, err := decodeTimerKey(it.Key())
		if err != nil {
			_ = b.closeTimerIter(it)
			return 0, false, fmt.Errorf("next %s timer of %s/%d, key group %d: %w", d, b.opts.OperatorUID, b.opts.Subtask, kg, err)
		}
		if !found || ts < next {
			next, found = ts, true
		}
	}
	err = it.Error()
	if cerr := b.closeTimerIter(it); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, false, fmt.Errorf("next %s timer of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	if found {
		*h = timerHint{kind: hintExact, ts: next}
	} else {
		*h = timerHint{kind: hintNone}
	}
	return next, found, nil
}

func (b *pebbleBackend) FireTimers(d state.TimeDomain, upTo int64, fn func(key []byte, ts int64) error) (err error) {
	di, err := domainIndex(d)
	if err != nil {
		return fmt.Errorf("fire timers of %s/%d: %w", b.opts.OperatorUID, b.opts.Subtask, err)
	}
	if b.firing != nil {
		return fmt.Errorf("fire %s timers of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, errNestedFire)
	}
	h := &b.timerHints[di]
	if h.nothingDue(upTo) {
		return nil
	}
	q, err := b.newPebbleTimerQueue(d, upTo, h.from())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := q.close(); err == nil && cerr != nil {
			err = fmt.Errorf("fire %s timers of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, cerr)
		}
	}()
	f := newTimerFiring(d, upTo, q, b.opts.KeyGroups)
	b.firing = f
	defer func() { b.firing = nil }()
	if err := f.run(b.opts.KeyGroups, b.SetCurrentKey, fn); err != nil {
		return err
	}
	h.fired(upTo)
	return nil
}

// pebbleTimerQueue reads the due timers of one domain, per key group, for
// one FireTimers call. A first pass seeks once per key group on a single
// iterator to find every group's head; a group whose head fires gets an
// iterator of its own over its due range, which then steps once per fired
// timer. Iterators see the database as of their creation, so a group that
// fn changed (touch) is sought again, from its floor, with a new iterator.
type pebbleTimerQueue struct {
	b    *pebbleBackend
	d    state.TimeDomain
	upTo int64
	kgs  []timerCursor // by key group - start
}

type timerCursor struct {
	// floor is where the group's due timers start: nothing before it is
	// due (fired, or earlier than the hint's bound).
	floor []byte
	it    *pebble.Iterator // positioned at the last head, or nil
	stale bool             // fn changed the group since it was opened
	known bool             // ts, key, ok are the group's current head
	ok    bool
	ts    int64
	key   []byte
}

func (b *pebbleBackend) newPebbleTimerQueue(d state.TimeDomain, upTo, from int64) (*pebbleTimerQueue, error) {
	kgs := b.opts.KeyGroups
	q := &pebbleTimerQueue{b: b, d: d, upTo: upTo, kgs: make([]timerCursor, kgs.Len())}
	probe, err := b.newTimerIter(kgBytes(kgs.Start), kgBytes(kgs.End))
	if err != nil {
		return nil, fmt.Errorf("fire %s timers of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	for kg := kgs.Start; kg < kgs.End; kg++ {
		c := &q.kgs[kg-kgs.Start]
		c.floor = encodeTimerKey(nil, kg, d, from, nil)
		c.known = true
		if !probe.SeekGE(c.floor) || bytes.Compare(probe.Key(), timerUpper(kg, d, upTo)) >= 0 {
			continue
		}
		if err := c.read(probe); err != nil {
			_ = b.closeTimerIter(probe)
			return nil, fmt.Errorf("fire %s timers of %s/%d, key group %d: %w", d, b.opts.OperatorUID, b.opts.Subtask, kg, err)
		}
	}
	err = probe.Error()
	if cerr := b.closeTimerIter(probe); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("fire %s timers of %s/%d: %w", d, b.opts.OperatorUID, b.opts.Subtask, err)
	}
	return q, nil
}

// read makes the timer at it the cursor's head.
func (c *timerCursor) read(it *pebble.Iterator) error {
	_, _, ts, key, err := decodeTimerKey(it.Key())
	if err != nil {
		return err
	}
	c.ok, c.ts, c.key = true, ts, bytes.Clone(key)
	return nil
}

func (q *pebbleTimerQueue) errorf(kg int, err error) error {
	return fmt.Errorf("fire %s timers of %s/%d, key group %d: %w", q.d, q.b.opts.OperatorUID, q.b.opts.Subtask, kg, err)
}

func (q *pebbleTimerQueue) head(kg int) (int64, []byte, bool, error) {
	c := &q.kgs[kg-q.b.opts.KeyGroups.Start]
	if c.known {
		return c.ts, c.key, c.ok, nil
	}
	var valid bool
	if c.it != nil && !c.stale {
		valid = c.it.Next() // past the head just removed
	} else {
		if c.it != nil {
			if err := q.b.closeTimerIter(c.it); err != nil {
				c.it = nil
				return 0, nil, false, q.errorf(kg, err)
			}
		}
		it, err := q.b.newTimerIter(timerPrefix(nil, kg, q.d), timerUpper(kg, q.d, q.upTo))
		if err != nil {
			c.it = nil
			return 0, nil, false, q.errorf(kg, err)
		}
		c.it, c.stale = it, false
		valid = it.SeekGE(c.floor)
	}
	c.known, c.ok = true, false
	if valid {
		if err := c.read(c.it); err != nil {
			return 0, nil, false, q.errorf(kg, err)
		}
		return c.ts, c.key, true, nil
	}
	err := c.it.Error()
	if cerr := q.b.closeTimerIter(c.it); err == nil {
		err = cerr
	}
	c.it = nil
	if err != nil {
		return 0, nil, false, q.errorf(kg, err)
	}
	return 0, nil, false, nil
}

func (q *pebbleTimerQueue) remove(kg int, ts int64, key []byte) error {
	c := &q.kgs[kg-q.b.opts.KeyGroups.Start]
	k := encodeTimerKey(nil, kg, q.d, ts, key)
	delete(q.b.timerKnown, string(k))
	if err := q.b.timerWrite(k, true); err != nil {
		return q.errorf(kg, fmt.Errorf("remove the timer at %d of key %q: %w", ts, key, err))
	}
	q.b.timerHints[q.d-1].deleted(ts)
	c.floor = append(k, 0)
	c.known = false
	return nil
}

func (q *pebbleTimerQueue) touch(kg int, ts int64, key []byte, add bool) {
	c := &q.kgs[kg-q.b.opts.KeyGroups.Start]
	c.stale, c.known = true, false
	if add {
		if k := encodeTimerKey(nil, kg, q.d, ts, key); bytes.Compare(k, c.floor) < 0 {
			c.floor = k
		}
	}
}

func (q *pebbleTimerQueue) close() error {
	var errs []error
	for i := range q.kgs {
		if c := &q.kgs[i]; c.it != nil {
			errs = append(errs, q.b.closeTimerIter(c.it))
			c.it = nil
		}
	}
	return errors.Join(errs...)
}
