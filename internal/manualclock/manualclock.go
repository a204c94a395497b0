// Package manualclock is a clock that moves only when told: the
// processing time of package testdriver's Options.ManualProcessingTime,
// and of the library's tests that fire processing-time timers without
// sleeping. It is an engine.Clock (Now and After).
//
// Unlike outagetest.Clock, whose After moves the time itself and fires at
// once (a retry loop's pause), After here waits: its channel fills only
// once Advance has brought the time to its instant.
package manualclock

import (
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use. Every channel After
// returns is buffered (one value) and filled exactly once: at once for a
// duration of zero or less, else by the Advance that reaches its instant,
// before that Advance returns.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock at start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After delivers the clock's time once it has moved on by d (at once for
// d <= 0).
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock on by d and fills the channel of every After it
// reached, before it returns. A negative d moves the time back and fills
// nothing.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// Forget drops every After not yet filled, whose channels nobody reads
// any more (the waits of a job that ended): no Advance fills them.
func (c *Clock) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters = nil
}
