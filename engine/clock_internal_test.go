package engine

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/manualclock"
)

// manualClock is a manualclock.Clock from clockStart whose After also
// sends every delay it is asked for to armed, so that a test can wait
// until a loop armed its timer before advancing.
type manualClock struct {
	*manualclock.Clock
	armed chan time.Duration
}

var clockStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newManualClock() *manualClock {
	return &manualClock{Clock: manualclock.New(clockStart), armed: make(chan time.Duration, 1024)}
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	ch := c.Clock.After(d)
	select {
	case c.armed <- d:
	default:
	}
	return ch
}

// set moves the time to clockStart+at (forward only) and fires the
// timers due.
func (c *manualClock) set(at time.Duration) {
	c.Advance(max(clockStart.Add(at).Sub(c.Now()), 0))
}

// timerHarness is a coordinator on a manual clock with one source,
// driven step by step: set the time, run the timers due, ack.
type timerHarness struct {
	*coordHarness
	clock *manualClock
}

func newTimerHarness(t *testing.T, o CheckpointOptions) *timerHarness {
	clock := newManualClock()
	return &timerHarness{coordHarness: newCoordHarness(t, Options{Checkpoint: o, Clock: clock}, 1), clock: clock}
}

// at sets the clock to start+d and runs the coordinator's timers.
func (h *timerHarness) at(d time.Duration) {
	h.clock.set(d)
	h.c.onTimers(h.clock.Now())
}

// deadline is when the coordinator wants to wake up next, after start.
func (h *timerHarness) deadline() time.Duration {
	h.t.Helper()
	at, ok := h.c.nextDeadline()
	if !ok {
		return -1
	}
	return at.Sub(clockStart)
}

// ackAll acknowledges checkpoint id from every source at start+d.
func (h *timerHarness) ackAll(id int64, d time.Duration) {
	h.t.Helper()
	h.clock.set(d)
	for _, st := range h.srcs {
		if err := h.c.onAck(ackMsg{id: id, st: st, at: h.clock.Now()}); err != nil {
			h.t.Fatal(err)
		}
	}
	if s, why := h.status(id); s != CheckpointCompleted {
		h.t.Fatalf("checkpoint %d: %s %q after every ack", id, s, why)
	}
}

func (h *timerHarness) expectQueued(want ...int64) {
	h.t.Helper()
	got := h.queued(0)
	if len(got) != len(want) || (len(got) > 0 && got[0] != want[0]) {
		h.t.Fatalf("at %v: barriers %v queued, want %v", h.clock.Now().Sub(clockStart), got, want)
	}
}

// The interval counts from the last trigger: nothing is triggered before
// it is due, a checkpoint once it is, and none while MaxConcurrent are in
// flight.
func TestCoordinatorIntervalOnTheClock(t *testing.T) {
	h := newTimerHarness(t, CheckpointOptions{Interval: 10 * time.Second, Timeout: time.Hour, MaxConcurrent: 1})
	if d := h.deadline(); d != 10*time.Second {
		t.Fatalf("first deadline %v, want 10s", d)
	}
	h.at(9 * time.Second)
	h.expectQueued()
	h.at(10 * time.Second)
	h.expectQueued(1)
	if d := h.deadline(); d != time.Hour+10*time.Second {
		t.Fatalf("deadline with checkpoint 1 in flight %v, want its timeout", d)
	}
	h.at(25 * time.Second) // due, but one is in flight already
	h.expectQueued()
	h.ackAll(1, 26*time.Second)
	// Overdue since 20s: due now.
	if d := h.deadline(); d != 26*time.Second {
		t.Fatalf("deadline after completion %v, want 26s (now)", d)
	}
	h.at(26 * time.Second)
	h.expectQueued(2)
	h.ackAll(2, 27*time.Second)
	if d := h.deadline(); d != 36*time.Second {
		t.Fatalf("deadline %v, want 36s (the interval after the last trigger)", d)
	}
}

// A checkpoint not complete within the timeout expires on the clock; the
// expiry counts as a failure against TolerableFailures: one more than
// tolerated fails the attempt, and a completion resets the count.
func TestCoordinatorTimeoutOnTheClock(t *testing.T) {
	h := newTimerHarness(t, CheckpointOptions{Interval: 10 * time.Second, Timeout: 30 * time.Second, TolerableFailures: 1})
	h.at(10 * time.Second)
	h.expectQueued(1)
	h.at(39 * time.Second)
	if s, _ := h.status(1); s != CheckpointInProgress {
		t.Fatalf("checkpoint 1 %s before its timeout", s)
	}
	h.at(40 * time.Second)
	if s, why := h.status(1); s != CheckpointFailed || !strings.Contains(why, "expired after 30s") {
		t.Fatalf("checkpoint 1: %s %q at its timeout, want FAILED, expired", s, why)
	}
	if f := h.failures(); len(f) != 0 {
		t.Fatalf("one expiry failed the attempt although one is tolerated: %v", f)
	}
	// The next is due at once (the interval passed, no min pause).
	h.expectQueued(2)
	h.ackAll(2, 45*time.Second)
	h.at(55 * time.Second)
	h.expectQueued(3)
	h.at(85 * time.Second)
	if f := h.failures(); len(f) != 0 {
		t.Fatalf("an expiry after a completion failed the attempt: %v", f)
	}
	h.expectQueued(4)
	h.at(115 * time.Second)
	f := h.failures()
	if len(f) != 1 || !strings.Contains(f[0].Error(), "checkpoint 4 failed and 2 consecutive checkpoint failures exceed the 1 tolerated") ||
		!strings.Contains(f[0].Error(), "expired") {
		t.Fatalf("failures %v, want the attempt failed by the second consecutive expiry", f)
	}
	h.expectQueued() // and nothing triggered after
}

// The min pause separates the end of a checkpoint (completed or failed),
// or the attempt's start, from the next trigger, exactly as the
// statistics report them.
func TestCoordinatorMinPauseOnTheClock(t *testing.T) {
	h := newTimerHarness(t, CheckpointOptions{Interval: 10 * time.Second, MinPause: 25 * time.Second, Timeout: time.Minute, TolerableFailures: 5})
	h.at(10 * time.Second)
	h.expectQueued()
	h.at(25 * time.Second)
	h.expectQueued(1)
	h.ackAll(1, 27*time.Second)
	if d := h.deadline(); d != 52*time.Second {
		t.Fatalf("deadline %v, want 52s (25s after the completion at 27s)", d)
	}
	h.at(51 * time.Second)
	h.expectQueued()
	h.at(52 * time.Second)
	h.expectQueued(2)
	cs := h.j.history.list()
	if end := cs[0].Triggered.Add(cs[0].Duration); cs[1].Triggered.Sub(end) != 25*time.Second {
		t.Fatalf("checkpoint 2 triggered %v after checkpoint 1 ended, want the 25s min pause", cs[1].Triggered.Sub(end))
	}
	// After a failure too.
	h.at(112 * time.Second) // checkpoint 2 expires
	h.expectQueued()
	if d := h.deadline(); d != 137*time.Second {
		t.Fatalf("deadline after the expiry %v, want 137s", d)
	}
	h.at(137 * time.Second)
	h.expectQueued(3)
}

// The run loop waits on the injected clock: the interval's trigger and a
// timeout's expiry happen when the test moves the clock, not before.
func TestCoordinatorLoopRunsOnTheClock(t *testing.T) {
	h := newTimerHarness(t, CheckpointOptions{Interval: 10 * time.Second, Timeout: 30 * time.Second})
	done := make(chan error, 1)
	go func() { done <- h.c.run() }()
	waitArmed := func(want time.Duration) {
		t.Helper()
		for {
			select {
			case d := <-h.clock.armed:
				if d == want {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the loop never armed a %v timer", want)
			}
		}
	}
	waitArmed(10 * time.Second)
	select {
	case b := <-h.srcs[0].triggers:
		t.Fatalf("checkpoint %d triggered before the clock moved", b.id)
	default:
	}
	h.clock.set(10 * time.Second)
	if b := <-h.srcs[0].triggers; b.id != 1 {
		t.Fatalf("triggered %d, want 1", b.id)
	}
	waitArmed(30 * time.Second)
	h.clock.set(40 * time.Second)
	if err := <-h.failed; err == nil || !strings.Contains(err.Error(), "checkpoint 1 expired after 30s") {
		t.Fatalf("attempt failed with %v, want checkpoint 1's expiry", err)
	}
	if err := <-done; err != nil && !errors.Is(err, ErrStopped) {
		t.Fatalf("run = %v", err)
	}
	if s, _ := h.status(1); s != CheckpointFailed {
		t.Fatalf("checkpoint 1 %s", s)
	}
}
