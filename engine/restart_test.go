package engine_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// fakeClock records every pause it is asked for and lets it pass at once,
// moving its time forward by the pause. Pauses of neverPasses or more
// never pass and are not recorded: they are the checkpoint coordinator's
// timeouts (failingJob sets a longer checkpoint timeout), which the same
// clock drives.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	pauses []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

const neverPasses = 100 * time.Hour

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	if d >= neverPasses {
		return make(chan time.Time)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pauses = append(c.pauses, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.pauses...)
}

// failingJob fails its first failures attempts (each after advancing the
// clock by runFor), then finishes.
func failingJob(opts engine.Options, clock *fakeClock, failures int64, runFor time.Duration) (*engine.Job, *atomic.Int64) {
	var attempts atomic.Int64
	opts.Clock = clock
	opts.Checkpoint.Timeout = 10 * neverPasses
	j := engine.NewJob("restarts", opts)
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{{1}}})
	m := engine.Map(src, "maybe-fail", func(v int) (int, error) {
		n := attempts.Add(1)
		clock.advance(runFor)
		if n <= failures {
			return 0, fmt.Errorf("attempt %d fails", n)
		}
		return v, nil
	})
	engine.SinkTo(m, "sink", 1, &memSink[int]{})
	return j, &attempts
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFixedDelayRestarts(t *testing.T) {
	clock := newFakeClock()
	j, attempts := failingJob(engine.Options{Restart: engine.FixedDelay(3, 10*time.Second)}, clock, 100, time.Second)
	err := runJob(t, j)
	if err == nil || !strings.Contains(err.Error(), "fixed-delay restart strategy gives up") || !strings.Contains(err.Error(), "attempt 4 fails") {
		t.Fatalf("Run = %v, want the fourth attempt's failure", err)
	}
	if got := clock.recorded(); !equalDurations(got, []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second}) {
		t.Errorf("pauses %v, want three of 10s", got)
	}
	if attempts.Load() != 4 || j.Status().Restarts != 3 {
		t.Errorf("%d attempts, %d restarts; want 4 and 3", attempts.Load(), j.Status().Restarts)
	}

	// Fewer failures than attempts: the job finishes.
	clock = newFakeClock()
	j, _ = failingJob(engine.Options{Restart: engine.FixedDelay(3, time.Second)}, clock, 2, time.Second)
	if err := runJob(t, j); err != nil {
		t.Fatalf("Run = %v after two failures of three allowed", err)
	}
}

func TestFailureRateRestarts(t *testing.T) {
	// Each attempt runs 20s before failing: within a minute, the third
	// failure is one too many.
	clock := newFakeClock()
	j, attempts := failingJob(engine.Options{Restart: engine.FailureRate(2, time.Minute, 5*time.Second)}, clock, 100, 20*time.Second)
	err := runJob(t, j)
	if err == nil || !strings.Contains(err.Error(), "failure-rate restart strategy gives up") {
		t.Fatalf("Run = %v", err)
	}
	if got := clock.recorded(); !equalDurations(got, []time.Duration{5 * time.Second, 5 * time.Second}) || attempts.Load() != 3 {
		t.Errorf("pauses %v after %d attempts, want 5s twice and 3 attempts", got, attempts.Load())
	}

	// Failures spread out more than the interval never exhaust it.
	clock = newFakeClock()
	j, attempts = failingJob(engine.Options{Restart: engine.FailureRate(2, time.Minute, 5*time.Second)}, clock, 6, 40*time.Second)
	if err := runJob(t, j); err != nil {
		t.Fatalf("Run = %v: failures 45s apart exceed 2 per minute?", err)
	}
	if attempts.Load() != 7 {
		t.Errorf("%d attempts, want 7", attempts.Load())
	}

	// The strategy on its own, at chosen times.
	s := engine.FailureRate(2, time.Minute, time.Second)
	t0 := time.Unix(0, 0)
	for i, c := range []struct {
		at time.Duration
		ok bool
	}{{0, true}, {30 * time.Second, true}, {61 * time.Second, true}, {62 * time.Second, false}} {
		if _, ok := s.OnFailure(t0.Add(c.at)); ok != c.ok {
			t.Errorf("failure %d at %v: restart=%v, want %v", i, c.at, ok, c.ok)
		}
	}
}

func TestExponentialDelayRestarts(t *testing.T) {
	clock := newFakeClock()
	j, _ := failingJob(engine.Options{Restart: engine.ExponentialDelay(engine.ExponentialDelayOptions{
		Initial: time.Second, Max: 10 * time.Second, Multiplier: 2, ResetAfter: time.Hour,
	})}, clock, 6, time.Second)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i := range want {
		want[i] *= time.Second
	}
	if got := clock.recorded(); !equalDurations(got, want) {
		t.Errorf("pauses %v, want %v", got, want)
	}

	// A quiet ResetAfter starts over; jitter spreads around the pause.
	var r float64
	s := engine.ExponentialDelay(engine.ExponentialDelayOptions{
		Initial: time.Second, Max: time.Minute, Multiplier: 3, ResetAfter: 10 * time.Minute, Jitter: 0.5,
		Rand: func() float64 { return r },
	})
	t0 := time.Unix(0, 0)
	steps := []struct {
		at   time.Duration
		r    float64
		want time.Duration
	}{
		{0, 0.5, time.Second},                          // no spread at r=0.5
		{time.Minute, 0.5, 3 * time.Second},            // grows
		{2 * time.Minute, 0, 4500 * time.Millisecond},  // 9s - 50%
		{3 * time.Minute, 1, 40500 * time.Millisecond}, // 27s + 50%
		{20 * time.Minute, 0.5, time.Second},           // quiet for 17 minutes: reset
	}
	for i, st := range steps {
		r = st.r
		d, ok := s.OnFailure(t0.Add(st.at))
		if !ok || d != st.want {
			t.Errorf("failure %d: pause %v (restart=%v), want %v", i, d, ok, st.want)
		}
	}
}

func TestNoRestart(t *testing.T) {
	clock := newFakeClock()
	j, attempts := failingJob(engine.Options{}, clock, 1, time.Second)
	err := runJob(t, j)
	if err == nil || !strings.Contains(err.Error(), "attempt 1 fails") || attempts.Load() != 1 || len(clock.recorded()) != 0 {
		t.Fatalf("Run = %v after %d attempts and pauses %v; want the first failure, no restart", err, attempts.Load(), clock.recorded())
	}
	if engine.IsNonRecoverable(err) {
		t.Errorf("an ordinary failure reported as non-recoverable")
	}
}
