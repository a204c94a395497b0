package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/manualclock"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// firing is one OnTimer call as a timerFn saw it.
type firing struct {
	key     string
	ts      int64
	wm      int64 // ctx.CurrentWatermark()
	stamp   int64 // ctx.Timestamp()
	domain  state.TimeDomain
	subtask int
}

// timerFn registers, for every record, an event-time timer at the
// record's timestamp plus after (when after > 0) and a processing-time
// timer at the clock plus ptAfter (when ptAfter > 0), deleting the one at
// the clock plus ptDelete for even sequence numbers after registering it;
// OnTimer records the firing and emits an event carrying the timer's
// time. Process and OnTimer check that they never overlap.
type timerFn struct {
	s    *timerSpy
	busy atomic.Bool // this subtask's: in Process or OnTimer
}

type timerSpy struct {
	after, ptAfter, ptDelete int64
	overlaps                 atomic.Int64
	processed                atomic.Int64
	mu                       sync.Mutex
	fired                    []firing
	registered               map[string]bool // key/ts of event-time timers
}

func (s *timerSpy) newFn() engine.KeyedProcessFunction[string, event, event] { return &timerFn{s: s} }

func (s *timerSpy) firings() []firing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]firing(nil), s.fired...)
}

func (f *timerFn) Open(*engine.KeyedContext) error { return nil }

func (f *timerFn) Process(ctx *engine.KeyedContext, key string, e event, out func(event)) error {
	if !f.busy.CompareAndSwap(false, true) {
		f.s.overlaps.Add(1)
	}
	defer f.busy.Store(false)
	if f.s.after > 0 {
		ts := ctx.Timestamp() + f.s.after
		if err := ctx.RegisterEventTimeTimer(ts); err != nil {
			return err
		}
		f.s.mu.Lock()
		if f.s.registered == nil {
			f.s.registered = map[string]bool{}
		}
		f.s.registered[fmt.Sprintf("%s/%d", key, ts)] = true
		f.s.mu.Unlock()
	}
	if f.s.ptAfter > 0 {
		now := ctx.CurrentProcessingTime()
		if err := ctx.RegisterProcessingTimeTimer(now + f.s.ptAfter); err != nil {
			return err
		}
		if f.s.ptDelete > 0 {
			if err := ctx.RegisterProcessingTimeTimer(now + f.s.ptDelete); err != nil {
				return err
			}
			if e.Seq%2 == 0 {
				if err := ctx.DeleteProcessingTimeTimer(now + f.s.ptDelete); err != nil {
					return err
				}
			}
		}
	}
	f.s.processed.Add(1)
	return nil
}

func (f *timerFn) OnTimer(ctx *engine.KeyedContext, key string, ts int64, out func(event)) error {
	if !f.busy.CompareAndSwap(false, true) {
		f.s.overlaps.Add(1)
	}
	defer f.busy.Store(false)
	f.s.mu.Lock()
	f.s.fired = append(f.s.fired, firing{key: key, ts: ts, wm: ctx.CurrentWatermark(), stamp: ctx.Timestamp(),
		domain: ctx.TimeDomain(), subtask: ctx.Subtask()})
	f.s.mu.Unlock()
	out(event{Seq: -1, TS: ts, Sub: ctx.Subtask()})
	return nil
}

// Event-time timers fire once the operator's watermark reaches them: each
// (key, time) once however often it was registered, in time order per
// subtask, never while Process runs, with the timer's time as timestamp
// (also on what OnTimer emits); the input's end fires the rest. On both
// backends.
func TestEventTimeTimersFireWhenTheWatermarkPasses(t *testing.T) {
	for _, backend := range []string{"memory", "pebble"} {
		t.Run(backend, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 12))
			const bound = 20
			src := &eventSource{bound: bound, pauseEvery: 100, pause: time.Millisecond, parts: [][]event{
				events(0, 1500, 100_000, 4, 15, bound, 0, 0, rng),
				events(1, 1500, 100_000, 4, 15, bound, 0, 0, rng),
			}}
			factory := statebackend.NewMemoryFactory()
			if backend == "pebble" {
				factory = statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir()})
			}
			j := engine.NewJob("timers", engine.Options{WatermarkInterval: time.Millisecond, Backend: factory,
				Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}})
			spy := &timerSpy{after: 40}
			s := engine.FromSource(j, "source", 2, src)
			// Keys by timestamp bucket: several records of a key register
			// the same timer.
			key := func(e event) string { return fmt.Sprint((e.TS / 8) % 23) }
			fired := engine.Process(engine.KeyBy(s, key, state.StringCodec{}), "timers", 2, spy.newFn)
			after := &probe{parallelism: 1}
			onlyFired := engine.Filter(fired, "fired", func(e event) bool { return e.Seq == -1 })
			probed := engine.Process(engine.KeyBy(onlyFired, func(event) string { return "all" }, state.StringCodec{}), "after", 1, after.newFn)
			engine.SinkTo(probed, "sink", 1, &memSink[event]{})
			if err := runJob(t, j); err != nil {
				t.Fatal(err)
			}
			if n := spy.overlaps.Load(); n != 0 {
				t.Fatalf("OnTimer and Process overlapped %d times", n)
			}
			fs := spy.firings()
			seen := map[string]int{}
			last := map[int]int64{}
			beforeEnd := 0
			for _, f := range fs {
				k := fmt.Sprintf("%s/%d", f.key, f.ts)
				seen[k]++
				if f.domain != state.EventTime || f.stamp != f.ts {
					t.Fatalf("timer %s fired in domain %v with timestamp %d", k, f.domain, f.stamp)
				}
				if f.wm < f.ts {
					t.Fatalf("timer %s fired at watermark %d, before the watermark reached it", k, f.wm)
				}
				if f.wm != engine.MaxWatermark {
					beforeEnd++
				}
				if f.ts < last[f.subtask] {
					t.Fatalf("subtask %d fired timer %s after one at %d", f.subtask, k, last[f.subtask])
				}
				last[f.subtask] = f.ts
			}
			for k := range spy.registered {
				if seen[k] != 1 {
					t.Errorf("timer %s fired %d times, want once", k, seen[k])
				}
			}
			if len(seen) != len(spy.registered) || len(fs) != len(seen) {
				t.Fatalf("%d firings of %d timers, %d registered", len(fs), len(seen), len(spy.registered))
			}
			if beforeEnd < len(fs)/4 {
				t.Fatalf("only %d of %d timers fired before the input's end", beforeEnd, len(fs))
			}
			// What OnTimer emitted carries the timer's time downstream.
			got := after.records()
			if len(got) != len(fs) {
				t.Fatalf("%d fired events downstream, want %d", len(got), len(fs))
			}
			for _, o := range got {
				if o.ts != o.e.TS {
					t.Fatalf("an event OnTimer emitted for %d came with timestamp %d", o.e.TS, o.ts)
				}
			}
		})
	}
}

// runUntilProcessed runs j until ctx ends, on a goroutine whose result
// the returned channel carries, and waits until spy processed n records.
func runUntilProcessed(t *testing.T, ctx context.Context, j *engine.Job, spy *timerSpy, n int64) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	waitUntil(t, done, func() string { return fmt.Sprintf("%d records processed", spy.processed.Load()) },
		func() bool { return spy.processed.Load() == n })
	return done
}

// waitUntil polls cond until it holds, failing after 20s with what.
func waitUntil(t *testing.T, done <-chan error, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("the job ended early: %v", err)
		case <-deadline:
			t.Fatalf("not reached within 20s: %s", what())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Processing-time timers fire once the job's clock is past them, not
// before (window/operator_test.go shows a timer of the clock's current
// millisecond waiting); a deleted one does not fire; what OnTimer emits for one carries
// NoTimestamp.
func TestProcessingTimeTimersFireOnTheClock(t *testing.T) {
	clock := manualclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var parts [][]event
	for sub := range 2 {
		var part []event
		for i := range 40 {
			part = append(part, event{Sub: sub, Seq: sub*100 + i, TS: int64(i)})
		}
		parts = append(parts, part)
	}
	src := &eventSource{unbounded: true, parts: parts}
	j := engine.NewJob("pt", engine.Options{Clock: clock})
	spy := &timerSpy{ptAfter: 1000, ptDelete: 2000}
	key := func(e event) string { return fmt.Sprint(e.Seq) }
	fired := engine.Process(engine.KeyBy(engine.FromSource(j, "source", 2, src), key, state.StringCodec{}), "timers", 2, spy.newFn)
	after := &probe{parallelism: 1}
	probed := engine.Process(engine.KeyBy(fired, func(event) string { return "all" }, state.StringCodec{}), "after", 1, after.newFn)
	engine.SinkTo(probed, "sink", 1, &memSink[event]{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runUntilProcessed(t, ctx, j, spy, 80)
	if fs := spy.firings(); len(fs) != 0 {
		t.Fatalf("%d processing-time timers fired before the clock moved", len(fs))
	}
	start := clock.Now().UnixMilli()
	clock.Advance(1000 * time.Millisecond)
	clock.Advance(time.Millisecond)
	waitUntil(t, done, func() string { return fmt.Sprintf("%d timers fired", len(spy.firings())) },
		func() bool { return len(spy.firings()) == 80 })
	clock.Advance(time.Second)
	// The odd keys' second timers; the even keys' were deleted.
	waitUntil(t, done, func() string { return fmt.Sprintf("%d timers fired", len(spy.firings())) },
		func() bool { return len(spy.firings()) == 120 })
	waitUntil(t, done, func() string { return fmt.Sprintf("%d events downstream", len(after.records())) },
		func() bool { return len(after.records()) == 120 })
	cancel()
	<-done
	if n := spy.overlaps.Load(); n != 0 {
		t.Fatalf("OnTimer and Process overlapped %d times", n)
	}
	for i, f := range spy.firings() {
		want := start + 1000
		if i >= 80 {
			want = start + 2000
		}
		var seq int
		fmt.Sscan(f.key, &seq)
		if f.domain != state.ProcessingTime || f.ts != want || f.stamp != f.ts || (i >= 80 && seq%2 == 0) {
			t.Fatalf("firing %d: %+v, want a processing-time timer of an odd key at %d", i, f, want)
		}
	}
	if n := len(spy.firings()); n != 120 {
		t.Fatalf("%d timers fired, want 120 (the deleted ones not)", n)
	}
	for _, o := range after.records() {
		if o.ts != engine.NoTimestamp {
			t.Fatalf("an event OnTimer emitted for a processing-time timer came with timestamp %d, want NoTimestamp", o.ts)
		}
	}
}

// Timers are keyed state: timers registered before a savepoint fire after
// a restore with the operator rescaled from 2 to 3 subtasks, once the
// watermark reaches them, each once.
func TestEventTimeTimersSurviveASavepointAndARescale(t *testing.T) {
	const bound = 5
	var first [][]event
	for sub := range 2 {
		var part []event
		for i := range 100 {
			part = append(part, event{Sub: sub, Seq: sub*1000 + i, TS: 1_000 + int64(i)*10})
		}
		first = append(first, part)
	}
	storage := dirstore.NewMemoryStorage("timers", dirstore.StorageOptions{})
	job := func(src *eventSource, spy *timerSpy, p int, from string) *engine.Job {
		j := engine.NewJob("timers", engine.Options{WatermarkInterval: time.Millisecond, Storage: storage, RestoreFrom: from,
			Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}})
		key := func(e event) string { return fmt.Sprint(e.Seq) }
		fired := engine.Process(engine.KeyBy(engine.FromSource(j, "source", 2, src), key, state.StringCodec{}), "timers", p, spy.newFn)
		engine.SinkTo(fired, "sink", 1, &memSink[event]{})
		return j
	}
	// Timers 100 s after each record: none is due before the savepoint.
	spy1 := &timerSpy{after: 100_000}
	j1 := job(&eventSource{bound: bound, unbounded: true, parts: first}, spy1, 2, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- j1.Run(ctx) }()
	waitWatermarks(t, j1, done, map[string]int64{"timers": 1_000 + 99*10 - bound - 1})
	path, err := j1.StopWithSavepoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	if fs := spy1.firings(); len(fs) != 0 {
		t.Fatalf("%d timers fired before the savepoint", len(fs))
	}

	// After the restore: one more record per subtask, 300 s on: the 200
	// restored timers fire when the watermark passes them.
	spy2 := &timerSpy{}
	var parts [][]event
	for sub := range 2 {
		parts = append(parts, append(first[sub], event{Sub: sub, Seq: sub*1000 + 500, TS: 300_000}))
	}
	j2 := job(&eventSource{bound: bound, unbounded: true, parts: parts}, spy2, 3, path)
	done = make(chan error, 1)
	go func() { done <- j2.Run(ctx) }()
	waitUntil(t, done, func() string { return fmt.Sprintf("%d restored timers fired", len(spy2.firings())) },
		func() bool { return len(spy2.firings()) >= len(spy1.registered) })
	cancel()
	<-done
	got := map[string]int{}
	for _, f := range spy2.firings() {
		got[fmt.Sprintf("%s/%d", f.key, f.ts)]++
		if f.wm < f.ts {
			t.Errorf("restored timer %s/%d fired at watermark %d", f.key, f.ts, f.wm)
		}
	}
	if d := diffCounts(got, func() map[string]int {
		want := map[string]int{}
		for k := range spy1.registered {
			want[k] = 1
		}
		return want
	}()); d != "" {
		t.Fatalf("restored timers fired %s", d)
	}
}

// Registering a timer without an OnTimer method to receive it fails the
// job, naming the operator.
func TestTimerWithoutOnTimerFails(t *testing.T) {
	j := engine.NewJob("notimer", engine.Options{})
	s := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{{1}}})
	engine.SinkTo(engine.Process(engine.KeyBy(s, func(v int) string { return "k" }, state.StringCodec{}), "fn", 1,
		func() engine.KeyedProcessFunction[string, int, int] { return noTimerFn{} }), "sink", 1, &memSink[int]{})
	err := runJob(t, j)
	if err == nil || !strings.Contains(err.Error(), "operator fn registers an event-time timer, but its function has no OnTimer method") {
		t.Fatalf("Run = %v, want the refusal naming operator fn", err)
	}
}

type noTimerFn struct{}

func (noTimerFn) Open(*engine.KeyedContext) error { return nil }
func (noTimerFn) Process(ctx *engine.KeyedContext, _ string, v int, out func(int)) error {
	return ctx.RegisterEventTimeTimer(int64(v))
}

// countingClock counts the waits asked for a duration of zero or less
// (they are delivered at once).
type countingClock struct {
	*manualclock.Clock
	immediate atomic.Int64
}

func (c *countingClock) After(d time.Duration) <-chan time.Time {
	if d <= 0 {
		c.immediate.Add(1)
	}
	return c.Clock.After(d)
}

// A processing-time timer at the end of time (math.MaxInt64) never fires,
// and its wake-up is not due at once: a subtask that armed it one
// millisecond past its time, overflowing, woke up again and again without
// firing anything.
func TestProcessingTimeTimerAtTheEndOfTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &countingClock{Clock: manualclock.New(start)}
	src := &eventSource{unbounded: true, parts: [][]event{{{Sub: 0, Seq: 1, TS: 1}}}}
	j := engine.NewJob("end", engine.Options{Clock: clock})
	spy := &timerSpy{ptAfter: math.MaxInt64 - start.UnixMilli()}
	key := func(e event) string { return fmt.Sprint(e.Seq) }
	fired := engine.Process(engine.KeyBy(engine.FromSource(j, "source", 1, src), key, state.StringCodec{}), "timers", 1, spy.newFn)
	engine.SinkTo(fired, "sink", 1, &memSink[event]{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runUntilProcessed(t, ctx, j, spy, 1)
	// A savepoint's barrier passes the subtask after the timer was
	// armed: a subtask spinning on its wake-up has shown it by then (or
	// never reads the barrier).
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if _, err := j.TriggerSavepoint(sctx); err != nil {
		t.Fatalf("savepoint: %v (%d waits were due at once)", err, clock.immediate.Load())
	}
	cancel()
	<-done
	if n := clock.immediate.Load(); n > 0 {
		t.Fatalf("%d waits were due at once", n)
	}
	if fs := spy.firings(); len(fs) != 0 {
		t.Fatalf("the timer at the end of time fired: %+v", fs)
	}
}
