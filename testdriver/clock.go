package testdriver

import (
	"sync"
	"time"
)

// manualClock is the processing time of a driver with
// Options.ManualProcessingTime (engine.Options.ProcessingClock): it moves
// only when AdvanceProcessingTime moves it. After's channel is buffered
// and filled once the clock reaches its instant, at once for an instant
// already passed; the engine fires a subtask's due timers before its
// next input once that channel is filled.
type manualClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []manualWaiter
}

type manualWaiter struct {
	at time.Time
	ch chan time.Time
}

func newManualClock(start time.Time) *manualClock { return &manualClock{now: start} }

// Now is the clock's time.
func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After delivers the clock's time once it has moved on by d.
func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, manualWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// advance moves the clock on by d and fills the channel of every waiter
// it reached, before it returns.
func (c *manualClock) advance(d time.Duration) {
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

// forget drops the waiters of a job that ended (Crash): nobody reads
// their channels any more.
func (c *manualClock) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters = nil
}
