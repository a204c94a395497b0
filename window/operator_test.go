package window

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
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

// event is one test input: a key, a value and its event time.
type event struct {
	key string
	n   int64
	ts  int64
}

// phasedSource reads its phases in order, each followed by a watermark:
// after a phase's last record, Next returns nothing until the engine has
// asked for the watermark (at the next WatermarkInterval), so a phase's
// records always precede the watermark that ends it, and the next phase's
// follow it. The watermark is the newest timestamp read minus bound,
// minus 1ms (bounded out-of-orderness). After the last phase, io.EOF.
type phasedSource struct {
	phases [][]event
	bound  int64
	// hold, when set, keeps the reader waiting after the last phase
	// instead of ending the input, so that the job stays up to be stopped
	// with a savepoint; it closes held once it waits there, every record
	// read.
	hold bool
	held chan struct{}
}

func (s phasedSource) NewReader(context.Context, engine.Scope, [][]byte) (engine.SourceReader[event], error) {
	return &phasedReader{src: s, maxTS: engine.NoTimestamp}, nil
}

type phasedReader struct {
	src          phasedSource
	phase, next  int
	maxTS        int64
	waitingPoll  bool
	polledAfter  bool
	watermarkLog []int64
	closedHeld   bool
}

func (r *phasedReader) Next(ctx context.Context) (event, bool, error) {
	v, _, ok, err := r.NextTimestamped(ctx)
	return v, ok, err
}

func (r *phasedReader) NextTimestamped(ctx context.Context) (event, int64, bool, error) {
	for r.phase < len(r.src.phases) && r.next == len(r.src.phases[r.phase]) {
		if !r.polledAfter {
			r.waitingPoll = true
			<-ctx.Done() // the engine interrupts Next to ask for the watermark
			return event{}, 0, false, nil
		}
		r.phase, r.next, r.polledAfter = r.phase+1, 0, false
	}
	if r.phase == len(r.src.phases) {
		if r.src.hold {
			if r.src.held != nil && !r.closedHeld {
				close(r.src.held)
				r.closedHeld = true
			}
			<-ctx.Done()
			return event{}, 0, false, nil
		}
		return event{}, 0, false, io.EOF
	}
	e := r.src.phases[r.phase][r.next]
	r.next++
	r.maxTS = max(r.maxTS, e.ts)
	return e, e.ts, true, nil
}

func (r *phasedReader) CurrentWatermark() (int64, bool) {
	if r.waitingPoll {
		r.waitingPoll, r.polledAfter = false, true
	}
	if r.maxTS == engine.NoTimestamp {
		return engine.NoWatermark, false
	}
	wm := r.maxTS - r.src.bound - 1
	r.watermarkLog = append(r.watermarkLog, wm)
	return wm, false
}

func (r *phasedReader) SnapshotState(int64) ([][]byte, error)                 { return nil, nil }
func (r *phasedReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *phasedReader) Close() error                                          { return nil }

// collect gathers what reaches the sink.
type collect[T any] struct {
	mu  sync.Mutex
	got []T
}

func (c *collect[T]) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[T], error) {
	return c, nil
}
func (c *collect[T]) Write(_ context.Context, v T) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, v)
	return nil
}
func (c *collect[T]) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (c *collect[T]) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (c *collect[T]) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (c *collect[T]) Close(context.Context) error                            { return nil }

// sumAgg counts and sums n.
type sumAgg struct{}

type countSum struct{ Count, Sum int64 }

func (sumAgg) New() countSum { return countSum{} }
func (sumAgg) Add(a countSum, e event) (countSum, error) {
	return countSum{a.Count + 1, a.Sum + e.n}, nil
}
func (sumAgg) Merge(a, b countSum) (countSum, error) {
	return countSum{a.Count + b.Count, a.Sum + b.Sum}, nil
}
func (sumAgg) Result(a countSum) (countSum, error) { return a, nil }

// runWindows runs phases through a window operator with spec and returns
// its outputs, one line each ("key [start, end) count/sum" or "late key
// ts"), sorted.
func runWindows(t *testing.T, backend state.KeyedBackendFactory, spec Spec, bound int64, phases ...[]event) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	storage, err := dirstore.NewFileStorage(t.TempDir(), "windows", dirstore.StorageOptions{Retained: 1})
	if err != nil {
		t.Fatal(err)
	}
	j := engine.NewJob("windows", engine.Options{Storage: storage, Backend: backend, WatermarkInterval: 2 * time.Millisecond,
		Checkpoint: engine.CheckpointOptions{Interval: time.Hour, Mode: engine.ExactlyOnce, Timeout: time.Minute}})
	in := engine.FromSource(j, "source", 1, phasedSource{phases: phases, bound: bound})
	keyed := engine.KeyBy(in, func(e event) string { return e.key }, state.StringCodec{})
	out := Aggregate(keyed, "windows", 2, spec, sumAgg{}, state.JSONCodec[countSum]{})
	sink := &collect[Output[string, event, countSum]]{}
	engine.SinkTo(out, "sink", 1, sink)
	if err := j.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	var lines []string
	for _, o := range sink.got {
		if o.Late {
			lines = append(lines, fmt.Sprintf("late %s %d", o.Key, o.Record.ts))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %v %d/%d", o.Key, o.Window, o.Value.Count, o.Value.Sum))
	}
	sort.Strings(lines)
	return lines
}

func backends(t *testing.T) map[string]state.KeyedBackendFactory {
	return map[string]state.KeyedBackendFactory{
		"memory": statebackend.NewMemoryFactory(),
		"pebble": statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir()}),
	}
}

// reference is the tumbling count/sum per key of events, computed
// directly.
func reference(size int64, events ...[]event) []string {
	type kw struct {
		key   string
		start int64
	}
	acc := map[kw]countSum{}
	for _, phase := range events {
		for _, e := range phase {
			start := e.ts - ((e.ts%size)+size)%size
			c := acc[kw{e.key, start}]
			acc[kw{e.key, start}] = countSum{c.Count + 1, c.Sum + e.n}
		}
	}
	var lines []string
	for _, k := range slices.Collect(maps.Keys(acc)) {
		c := acc[k]
		lines = append(lines, fmt.Sprintf("%s %v %d/%d", k.key, Window{k.start, k.start + size}, c.Count, c.Sum))
	}
	sort.Strings(lines)
	return lines
}

// ownTumbling is a user's Assigner: tumbling windows the operator cannot
// recognise as fixed-size.
type ownTumbling struct{ t Tumbling }

func (o ownTumbling) Assign(dst []Window, ts int64) []Window { return o.t.Assign(dst, ts) }
func (ownTumbling) Merging() bool                            { return false }

// An Assigner of the user's own, neither merging nor one of the package's
// fixed-size ones, fires as the package's tumbling windows do: its timers
// find their windows by a look at the key's windows.
func TestAnAssignerOfTheUsersOwn(t *testing.T) {
	var ph []event
	for i := range 60 {
		ph = append(ph, event{key: fmt.Sprintf("k%d", i%3), n: int64(i), ts: int64(i * 40)})
	}
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			tw, _ := NewTumbling(500*time.Millisecond, 0)
			got := runWindows(t, b, Spec{Assigner: ownTumbling{tw}}, 100, ph)
			if want := reference(500, ph); !slices.Equal(got, want) {
				t.Fatalf("results:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// Tumbling event-time windows over out-of-order input within the bound:
// each window fires once, with the count and sum of its records, equal to
// a direct computation.
func TestTumblingCountsEqualAReference(t *testing.T) {
	var phases [][]event
	for p := range 5 {
		var ph []event
		for i := range 40 {
			ts := int64(p*1000 + (i*37)%1000 - 150) // out of order by up to ~1s within a phase
			ph = append(ph, event{key: fmt.Sprintf("k%d", i%3), n: int64(i), ts: max(ts, int64(p*1000))})
		}
		phases = append(phases, ph)
	}
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			tw, _ := NewTumbling(500*time.Millisecond, 0)
			got := runWindows(t, b, Spec{Assigner: tw}, 1000, phases...)
			if want := reference(500, phases...); !slices.Equal(got, want) {
				t.Fatalf("tumbling results:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// A record whose windows are all past their cleanup time goes to the late
// output (counted); one within the allowed lateness updates its window,
// which fires again.
func TestLateRecords(t *testing.T) {
	tw, _ := NewTumbling(10*time.Millisecond, 0)
	phases := [][]event{
		{{"a", 1, 1}, {"a", 2, 5}, {"b", 3, 12}},
		{{"a", 4, 30}},  // watermark 29: [0,10) and [10,20) fire
		{{"a", 5, 7}},   // [0,10): cleanup 9+15=24 <= 29: late
		{{"b", 6, 19}},  // [10,20): cleanup 19+15=34 > 29: fires again, updated
		{{"b", 7, 100}}, // watermark 99
		{{"b", 8, 15}},  // late now
	}
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			var late atomic.Int64
			got := runWindows(t, b, Spec{Assigner: tw, AllowedLateness: 15 * time.Millisecond, Late: &late}, 0, phases...)
			want := []string{
				"a [0, 10) 2/3",
				"a [30, 40) 1/4",
				"b [10, 20) 1/3",
				"b [10, 20) 2/9",
				"b [100, 110) 1/7",
				"late a 7",
				"late b 15",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("outputs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if late.Load() != 2 {
				t.Fatalf("late counter %d, want 2", late.Load())
			}
		})
	}
}

// Session windows merge as records arrive, also out of order, and each
// session fires once with all its records.
func TestSessionsMerge(t *testing.T) {
	s, _ := NewSession(10 * time.Millisecond)
	phases := [][]event{
		{{"a", 1, 100}, {"a", 2, 130}, {"a", 3, 105}, {"b", 4, 100}},
		{{"a", 5, 118}}, // [118,128) touches neither [100,115) nor [130,140)
		{{"a", 6, 125}}, // [125,135) reaches [118,128) and [130,140)
		{{"b", 7, 200}, {"a", 8, 300}},
	}
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			got := runWindows(t, b, Spec{Assigner: s}, 50, phases...)
			want := []string{
				"a [100, 115) 2/4",
				"a [118, 140) 3/13",
				"a [300, 310) 1/8",
				"b [100, 110) 1/4",
				"b [200, 210) 1/7",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("sessions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// Sliding windows: a record counts in every window that holds it.
func TestSlidingWindows(t *testing.T) {
	sw, _ := NewSliding(10*time.Millisecond, 5*time.Millisecond, 0)
	got := runWindows(t, statebackend.NewMemoryFactory(), Spec{Assigner: sw}, 100,
		[]event{{"a", 1, 3}, {"a", 2, 7}, {"a", 4, 12}})
	want := []string{"a [-5, 5) 1/1", "a [0, 10) 2/3", "a [10, 20) 1/4", "a [5, 15) 2/6"}
	if !slices.Equal(got, want) {
		t.Fatalf("sliding:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// eventCodec stores a test event as JSON.
type eventJSON struct {
	Key string `json:"k"`
	N   int64  `json:"n"`
	TS  int64  `json:"t"`
}

type eventCodec struct{}

func (eventCodec) Name() string { return "test-event" }
func (eventCodec) Encode(e event) ([]byte, error) {
	return json.Marshal(eventJSON{e.key, e.n, e.ts})
}
func (eventCodec) Decode(b []byte) (event, error) {
	var j eventJSON
	err := json.Unmarshal(b, &j)
	return event{j.Key, j.N, j.TS}, err
}

// Apply hands the window function every record of a window, in arrival
// order, from state (both backends; sessions merge their record lists).
func TestApplySeesEveryRecord(t *testing.T) {
	s, _ := NewSession(10 * time.Millisecond)
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			storage, err := dirstore.NewFileStorage(t.TempDir(), "apply", dirstore.StorageOptions{Retained: 1})
			if err != nil {
				t.Fatal(err)
			}
			j := engine.NewJob("apply", engine.Options{Storage: storage, Backend: b, WatermarkInterval: 2 * time.Millisecond,
				Checkpoint: engine.CheckpointOptions{Interval: time.Hour, Mode: engine.ExactlyOnce, Timeout: time.Minute}})
			in := engine.FromSource(j, "source", 1, phasedSource{phases: [][]event{
				{{"a", 1, 100}, {"a", 2, 130}, {"a", 3, 105}},
				{{"a", 4, 118}, {"a", 5, 125}},
			}, bound: 100})
			keyed := engine.KeyBy(in, func(e event) string { return e.key }, state.StringCodec{})
			out := Apply(keyed, "apply", 1, Spec{Assigner: s}, eventCodec{}, func(es []event) (string, error) {
				var ns []string
				for _, e := range es {
					ns = append(ns, fmt.Sprint(e.n))
				}
				return strings.Join(ns, ","), nil
			})
			sink := &collect[Output[string, event, string]]{}
			engine.SinkTo(out, "sink", 1, sink)
			if err := j.Run(ctx); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range sink.got {
				got = append(got, fmt.Sprintf("%v %s", o.Window, o.Value))
			}
			sort.Strings(got)
			// [100,115) holds 1 and 3; 5's [125,135) merged the sessions
			// of 4 ([118,128)) and 2 ([130,140)): their lists in the order
			// of their starts, then 5.
			if want := []string{"[100, 115) 1,3", "[118, 140) 4,2,5"}; !slices.Equal(got, want) {
				t.Fatalf("windows %v, want %v", got, want)
			}
		})
	}
}

// chanSource reads events from a channel until it is closed.
type chanSource chan event

func (s chanSource) NewReader(context.Context, engine.Scope, [][]byte) (engine.SourceReader[event], error) {
	return s, nil
}

func (s chanSource) Next(ctx context.Context) (event, bool, error) {
	select {
	case e, ok := <-s:
		if !ok {
			return event{}, false, io.EOF
		}
		return e, true, nil
	case <-ctx.Done():
		return event{}, false, nil
	}
}
func (chanSource) SnapshotState(int64) ([][]byte, error)                 { return nil, nil }
func (chanSource) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (chanSource) Close() error                                          { return nil }

// Processing-time windows follow the job's clock: records are in the
// window of their arrival, and a window fires when the clock passes its
// end, not before; nothing is late.
func TestProcessingTimeWindowsFollowTheClock(t *testing.T) {
	clock, src, results, processed, done := procWindowJob(t)
	for _, e := range []event{{"a", 1, 0}, {"a", 2, 0}, {"b", 5, 0}} {
		src <- e
	}
	processed()
	clock.Advance(900 * time.Millisecond) // 10.9 s: [10 s, 11 s) is still open
	src <- event{"a", 4, 0}
	processed()
	if got := results(); len(got) != 0 {
		t.Fatalf("windows fired before the clock reached their end: %v", got)
	}
	clock.Advance(200 * time.Millisecond) // 11.1 s
	src <- event{"a", 8, 0}               // in [11 s, 12 s)
	want := []string{"a [10000, 11000) 3/7", "b [10000, 11000) 1/5"}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(results(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the clock passed 11 s: %v, want %v", results(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	processed()
	clock.Advance(time.Second) // 12.1 s
	want = append(want, "a [11000, 12000) 1/8")
	slices.Sort(want)
	for !slices.Equal(results(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the clock passed 12 s: %v, want %v", results(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(src)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A processing-time window fires once the clock is past its last
// millisecond, as in Flink (whose processing-time timers fire one
// millisecond after their time): a record that arrives in that last
// millisecond still joins the window, which fires once with it, not a
// second time on its own.
func TestProcessingTimeWindowFiresOnceAfterItsLastMillisecond(t *testing.T) {
	clock, src, results, processed, done := procWindowJob(t)
	src <- event{"a", 1, 0}
	processed()
	clock.Advance(999 * time.Millisecond) // 10.999 s: the window's last millisecond
	processed()
	src <- event{"a", 2, 0}
	processed()
	if got := results(); len(got) != 0 {
		t.Fatalf("fired in its last millisecond: %v", got)
	}
	clock.Advance(time.Millisecond) // 11 s
	want := []string{"a [10000, 11000) 2/3"}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(results(), want) {
		if time.Now().After(deadline) || len(results()) > len(want) {
			t.Fatalf("after the clock reached 11 s: %v, want %v", results(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	processed()
	if got := results(); !slices.Equal(got, want) {
		t.Fatalf("then %v, want %v", got, want)
	}
	close(src)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// procWindowJob runs a job of 1 s tumbling processing-time windows summing
// events by key, on a manual clock at 10 s. It returns the clock, the
// source, the windows fired so far (sorted "key [start, end) count/sum"),
// a function that returns once every event sent so far went through the
// window operator (a savepoint's barrier follows them), and the job's end.
func procWindowJob(t *testing.T) (*manualclock.Clock, chanSource, func() []string, func(), <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	clock := manualclock.New(time.UnixMilli(10_000))
	storage, err := dirstore.NewFileStorage(t.TempDir(), "proc", dirstore.StorageOptions{Retained: 1})
	if err != nil {
		t.Fatal(err)
	}
	j := engine.NewJob("proc", engine.Options{Storage: storage, Backend: statebackend.NewMemoryFactory(), Clock: clock,
		Checkpoint: engine.CheckpointOptions{Interval: time.Hour, Mode: engine.ExactlyOnce, Timeout: time.Minute}})
	src := make(chanSource)
	keyed := engine.KeyBy(engine.FromSource(j, "source", 1, src), func(e event) string { return e.key }, state.StringCodec{})
	tw, _ := NewTumbling(time.Second, 0)
	out := Aggregate(keyed, "windows", 1, Spec{Assigner: tw, Time: ProcessingTime}, sumAgg{}, state.JSONCodec[countSum]{})
	sink := &collect[Output[string, event, countSum]]{}
	engine.SinkTo(out, "sink", 1, sink)
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	results := func() []string {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		var lines []string
		for _, o := range sink.got {
			lines = append(lines, fmt.Sprintf("%s %v %d/%d", o.Key, o.Window, o.Value.Count, o.Value.Sum))
		}
		sort.Strings(lines)
		return lines
	}
	processed := func() {
		t.Helper()
		if _, err := j.TriggerSavepoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return clock, src, results, processed, done
}
