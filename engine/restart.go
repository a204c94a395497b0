package engine

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Clock is the time source of restart strategies and the checkpoint
// coordinator (its interval, timeout and min pause timers run on After);
// tests substitute a fake one that they advance explicitly.
type Clock interface {
	Now() time.Time
	// After delivers once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RestartStrategy decides, after a job attempt failed, whether and when
// the job restarts. It is asked once per failure, from the job's goroutine.
type RestartStrategy interface {
	// OnFailure returns the pause before the next attempt, or false when
	// the job must fail for good.
	OnFailure(now time.Time) (time.Duration, bool)
	// String describes the strategy for logs and errors.
	String() string
}

// NoRestart fails the job at the first failure.
func NoRestart() RestartStrategy { return noRestart{} }

type noRestart struct{}

func (noRestart) OnFailure(time.Time) (time.Duration, bool) { return 0, false }
func (noRestart) String() string                            { return "none" }

// FixedDelay restarts up to attempts times, pausing delay before each.
func FixedDelay(attempts int, delay time.Duration) RestartStrategy {
	return &fixedDelay{attempts: attempts, delay: delay}
}

type fixedDelay struct {
	attempts, used int
	delay          time.Duration
}

func (f *fixedDelay) OnFailure(time.Time) (time.Duration, bool) {
	if f.used >= f.attempts {
		return 0, false
	}
	f.used++
	return f.delay, true
}

func (f *fixedDelay) String() string { return "fixed-delay" }

// FailureRate restarts after a pause of delay unless more than maxFailures
// failures happened within the last interval.
func FailureRate(maxFailures int, interval, delay time.Duration) RestartStrategy {
	return &failureRate{max: maxFailures, interval: interval, delay: delay}
}

type failureRate struct {
	max      int
	interval time.Duration
	delay    time.Duration
	failures []time.Time
}

func (f *failureRate) OnFailure(now time.Time) (time.Duration, bool) {
	f.failures = append(f.failures, now)
	kept := f.failures[:0]
	for _, t := range f.failures {
		if now.Sub(t) < f.interval {
			kept = append(kept, t)
		}
	}
	f.failures = kept
	if len(f.failures) > f.max {
		return 0, false
	}
	return f.delay, true
}

func (f *failureRate) String() string { return "failure-rate" }

// ExponentialDelayOptions configure ExponentialDelay.
type ExponentialDelayOptions struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	// ResetAfter: a failure after this long without one starts over at
	// Initial.
	ResetAfter time.Duration
	// Jitter in [0, 1]: each pause is spread by up to ±Jitter of itself.
	Jitter float64
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64
}

// ExponentialDelay restarts forever, with pauses growing by Multiplier up
// to Max and reset to Initial after a quiet ResetAfter.
func ExponentialDelay(o ExponentialDelayOptions) RestartStrategy {
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Multiplier < 1 {
		o.Multiplier = 1
	}
	return &exponentialDelay{o: o}
}

type exponentialDelay struct {
	o       ExponentialDelayOptions
	current time.Duration
	last    time.Time
}

func (e *exponentialDelay) OnFailure(now time.Time) (time.Duration, bool) {
	if e.current == 0 || (e.o.ResetAfter > 0 && now.Sub(e.last) >= e.o.ResetAfter) {
		e.current = e.o.Initial
	} else {
		e.current = min(time.Duration(float64(e.current)*e.o.Multiplier), e.o.Max)
	}
	e.last = now
	d := e.current
	if e.o.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + e.o.Jitter*(2*e.o.Rand()-1)))
	}
	return d, true
}

func (e *exponentialDelay) String() string { return "exponential-delay" }

// NonRecoverable marks err so that the job fails at once instead of
// restarting. Any error in a chain that has a method NonRecoverable() bool
// returning true counts too, so packages below the engine can mark their
// errors without importing it.
func NonRecoverable(err error) error {
	if err == nil {
		return nil
	}
	return &nonRecoverable{err}
}

type nonRecoverable struct{ err error }

func (e *nonRecoverable) Error() string        { return e.err.Error() }
func (e *nonRecoverable) Unwrap() error        { return e.err }
func (e *nonRecoverable) NonRecoverable() bool { return true }

// IsNonRecoverable reports whether err must fail the job without restart.
func IsNonRecoverable(err error) bool {
	var nr interface{ NonRecoverable() bool }
	return errors.As(err, &nr) && nr.NonRecoverable()
}
