package state

import (
	"fmt"
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

// The numeric values of the domains are part of the stored formats (a
// byte of every Pebble timer key and of every canonical timer entry) and
// must never change.

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
