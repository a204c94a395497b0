package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// event is a record with an event time. Late says the source's generator
// had declared it late when it came: its TS is at or below the watermark
// of the events of its subtask before it.
type event struct {
	Sub  int   `json:"sub"`
	Seq  int   `json:"seq"`
	TS   int64 `json:"ts"`
	Late bool  `json:"late"`
}

// eventSource replays fixed lists of events, one per subtask, supplies
// their TS as timestamps (engine.TimestampedReader) and generates
// watermarks with bounded out-of-orderness (engine.WatermarkReader): the
// highest TS read so far minus bound minus 1. A subtask whose list is
// empty reports idle. Its state is the position in the list, as memSource.
type eventSource struct {
	parts [][]event
	bound int64
	// unbounded readers wait at the end instead of ending the stream.
	unbounded bool
	// pauseEvery and pause slow the readers down so that checkpoints
	// happen mid-stream.
	pauseEvery int
	pause      time.Duration
	// notified is the highest completed checkpoint a reader was told of.
	notified atomic.Int64
}

// events makes the list of subtask sub: n events, their timestamps rising
// by step from base, each moved back by up to jitter (out of order), and
// every lateEvery-th one (0: none) moved back by lateBy; Late is set as
// the generator with bound will see it.
func events(sub, n int, base, step, jitter, bound int64, lateEvery int, lateBy int64, rng *rand.Rand) []event {
	out := make([]event, n)
	maxTS := engine.NoTimestamp
	for i := range out {
		ts := base + int64(i)*step
		if jitter > 0 {
			ts -= rng.Int64N(jitter + 1)
		}
		if lateEvery > 0 && i > 0 && i%lateEvery == 0 {
			ts -= lateBy
		}
		late := maxTS != engine.NoTimestamp && ts <= maxTS-bound-1
		maxTS = max(maxTS, ts)
		out[i] = event{Sub: sub, Seq: i, TS: ts, Late: late}
	}
	return out
}

func (s *eventSource) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[event], error) {
	if sc.Parallelism != len(s.parts) {
		return nil, fmt.Errorf("eventSource has %d parts, the operator %d subtasks", len(s.parts), sc.Parallelism)
	}
	r := &eventReader{s: s, sub: sc.Subtask, maxTS: engine.NoTimestamp}
	for _, raw := range restored {
		var p memPosition
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		if p.Subtask == sc.Subtask {
			r.pos = p.Position
		}
	}
	return r, nil
}

type eventReader struct {
	s      *eventSource
	sub    int
	pos    int
	count  int
	maxTS  int64
	wakeAt time.Time
}

func (r *eventReader) Next(ctx context.Context) (event, bool, error) {
	e, _, ok, err := r.NextTimestamped(ctx)
	return e, ok, err
}

func (r *eventReader) NextTimestamped(ctx context.Context) (event, int64, bool, error) {
	part := r.s.parts[r.sub]
	if r.pos >= len(part) {
		if !r.s.unbounded {
			return event{}, 0, false, io.EOF
		}
		<-ctx.Done()
		return event{}, 0, false, nil
	}
	if r.s.pauseEvery > 0 && (r.count+1)%r.s.pauseEvery == 0 {
		if r.wakeAt.IsZero() {
			r.wakeAt = time.Now().Add(r.s.pause)
		}
		t := time.NewTimer(time.Until(r.wakeAt))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return event{}, 0, false, nil
		case <-t.C:
		}
		r.wakeAt = time.Time{}
	}
	r.count++
	e := part[r.pos]
	r.pos++
	r.maxTS = max(r.maxTS, e.TS)
	return e, e.TS, true, nil
}

func (r *eventReader) CurrentWatermark() (int64, bool) {
	if len(r.s.parts[r.sub]) == 0 {
		return engine.NoWatermark, true
	}
	if r.maxTS == engine.NoTimestamp {
		return engine.NoWatermark, false
	}
	return r.maxTS - r.s.bound - 1, false
}

func (r *eventReader) SnapshotState(id int64) ([][]byte, error) {
	b, err := json.Marshal(memPosition{Subtask: r.sub, Position: r.pos})
	return [][]byte{b}, err
}

func (r *eventReader) NotifyCheckpointComplete(_ context.Context, id int64) error {
	for {
		old := r.s.notified.Load()
		if id <= old || r.s.notified.CompareAndSwap(old, id) {
			return nil
		}
	}
}

func (r *eventReader) Close() error { return nil }

// sourceWatermark is what the generator of part declares once it read the
// whole list.
func sourceWatermark(part []event, bound int64) int64 {
	maxTS := engine.NoTimestamp
	for _, e := range part {
		maxTS = max(maxTS, e.TS)
	}
	return maxTS - bound - 1
}

// observed is what a probe saw for one record.
type observed struct {
	e       event
	ts, wm  int64
	subtask int
	attempt int64
}

// probe is a keyed process function of parallelism subtasks that
// records, for every record, its timestamp and the operator's watermark at
// that moment, and passes the record on. fail, when set, may fail a
// record.
type probe struct {
	parallelism int
	mu          sync.Mutex
	observed    []observed
	opened      []int64 // the watermark at Open, per Open
	opens       atomic.Int64
	fail        func(s observed) error
}

func (p *probe) newFn() engine.KeyedProcessFunction[string, event, event] {
	return &probeFn{p: p}
}

func (p *probe) records() []observed {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]observed(nil), p.observed...)
}

type probeFn struct {
	p       *probe
	attempt int64
}

func (f *probeFn) Open(ctx *engine.KeyedContext) error {
	f.p.mu.Lock()
	f.p.opened = append(f.p.opened, ctx.CurrentWatermark())
	f.p.mu.Unlock()
	// The opens of an attempt all come after those of the attempt
	// before it, so they count the attempts.
	f.attempt = (f.p.opens.Add(1)-1)/int64(f.p.parallelism) + 1
	return nil
}

func (f *probeFn) Process(ctx *engine.KeyedContext, _ string, e event, out func(event)) error {
	s := observed{e: e, ts: ctx.Timestamp(), wm: ctx.CurrentWatermark(), subtask: ctx.Subtask(), attempt: f.attempt}
	f.p.mu.Lock()
	f.p.observed = append(f.p.observed, s)
	f.p.mu.Unlock()
	if f.p.fail != nil {
		if err := f.p.fail(s); err != nil {
			return err
		}
	}
	out(e)
	return nil
}

// checkSeen checks what a probe saw: every record kept its source's
// timestamp through the operators before the probe, no record the
// generator did not declare late is at or below the watermark (a
// watermark never overtakes a record), and the watermark of each probe
// subtask never goes back within an attempt. It returns how many records
// came with a watermark set, and how many late records were observed as late.
func checkSeen(t *testing.T, ss []observed) (withWM, lateSeen int) {
	t.Helper()
	type at struct {
		sub     int
		attempt int64
	}
	last := map[at]int64{}
	bad := 0
	for _, s := range ss {
		if s.ts != s.e.TS {
			t.Fatalf("record %d/%d came with timestamp %d, its source gave %d", s.e.Sub, s.e.Seq, s.ts, s.e.TS)
		}
		if s.ts <= s.wm {
			if !s.e.Late {
				bad++
				if bad <= 5 {
					t.Errorf("record %d/%d (ts %d, not late at its source) came after watermark %d: the watermark overtook it",
						s.e.Sub, s.e.Seq, s.ts, s.wm)
				}
			} else {
				lateSeen++
			}
		}
		k := at{s.subtask, s.attempt}
		if prev, ok := last[k]; ok && s.wm < prev {
			t.Fatalf("the watermark of probe subtask %d went back from %d to %d", s.subtask, prev, s.wm)
		}
		last[k] = s.wm
		if s.wm != engine.NoWatermark {
			withWM++
		}
	}
	if bad > 0 {
		t.Fatalf("%d records came after a watermark at or above their timestamp", bad)
	}
	return withWM, lateSeen
}

func eventKey(e event) string { return strconv.Itoa(e.Seq % 17) }

// operatorStats returns the stats of operator uid.
func operatorStats(j *engine.Job, uid string) (engine.OperatorStats, bool) {
	for _, o := range j.Status().Operators {
		if o.UID == uid {
			return o, true
		}
	}
	return engine.OperatorStats{}, false
}

// waitWatermarks polls the job's status until every operator of want has
// that watermark (not idle), or fails after 20s naming what each had.
func waitWatermarks(t *testing.T, j *engine.Job, done <-chan error, want map[string]int64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		ok := true
		for uid, w := range want {
			if o, found := operatorStats(j, uid); !found || o.Watermark != w || o.WatermarkIdle {
				ok = false
			}
		}
		if ok {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the job ended before the watermarks arrived: %v", err)
		case <-deadline:
			t.Fatalf("watermarks not reached within 20s: want %v, status %+v", want, j.Status().Operators)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Watermarks cross a keyed shuffle (broadcast to every downstream
// subtask, each combining both source subtasks) and chains (before and
// after it); timestamps cross the chained map and filter and the shuffle.
// Every operator ends at the lower of the two sources' watermarks, and no
// record is overtaken by a watermark.
func TestWatermarksPassAKeyedShuffleAndChains(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const bound = 50
	src := &eventSource{bound: bound, unbounded: true, pauseEvery: 50, pause: time.Millisecond, parts: [][]event{
		events(0, 500, 1_000_000, 10, 40, bound, 0, 0, rng),
		events(1, 300, 1_000_000, 10, 40, bound, 0, 0, rng),
	}}
	j := engine.NewJob("wm", engine.Options{WatermarkInterval: time.Millisecond,
		Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}})
	s := engine.FromSource(j, "source", 2, src)
	mapped := engine.Map(s, "map", func(e event) (event, error) { return e, nil })
	kept := engine.Filter(mapped, "filter", func(event) bool { return true })
	p := &probe{parallelism: 3}
	probed := engine.Process(engine.KeyBy(kept, eventKey, state.StringCodec{}), "probe", 3, p.newFn)
	after := engine.Map(probed, "after", func(e event) (event, error) { return e, nil })
	sink := &memSink[event]{}
	engine.SinkTo(after, "sink", 3, sink)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	// The lower source: subtask 1, with fewer events.
	low := min(sourceWatermark(src.parts[0], bound), sourceWatermark(src.parts[1], bound))
	want := map[string]int64{}
	for _, uid := range []string{"source", "map", "filter", "probe", "after", "sink"} {
		want[uid] = low
	}
	waitWatermarks(t, j, done, want)
	for deadline := time.Now().Add(20 * time.Second); len(p.records()) < 800 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	ss := p.records()
	if len(ss) != 800 {
		t.Fatalf("the probe saw %d records, want 800", len(ss))
	}
	if withWM, _ := checkSeen(t, ss); withWM == 0 {
		t.Fatal("no record came with a watermark set: the test proves nothing")
	}
}

// Records out of order, some later than the bound, through an operator
// that aligns the barriers of three source subtasks, chained or not: a
// record the generator did not declare late never comes after a watermark
// at or above its timestamp, the watermark never goes back, and the input's
// end sends MaxWatermark.
func TestWatermarksNeverOvertakeRecords(t *testing.T) {
	for _, unchained := range []bool{false, true} {
		t.Run(fmt.Sprintf("unchained=%v", unchained), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			const bound = 30
			src := &eventSource{bound: bound, pauseEvery: 200, pause: time.Millisecond}
			lates := 0
			for sub := range 3 {
				part := events(sub, 3000, 5_000, 3, 25, bound, 97, 200, rng)
				for _, e := range part {
					if e.Late {
						lates++
					}
				}
				src.parts = append(src.parts, part)
			}
			if lates == 0 {
				t.Fatal("no late event generated")
			}
			j := engine.NewJob("wm", engine.Options{WatermarkInterval: time.Millisecond, DisableChaining: unchained,
				Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond}})
			s := engine.FromSource(j, "source", 3, src)
			mapped := engine.Map(s, "map", func(e event) (event, error) { return e, nil })
			p := &probe{parallelism: 2}
			probed := engine.Process(engine.KeyBy(mapped, eventKey, state.StringCodec{}), "probe", 2, p.newFn)
			// At each pre-commit, the watermarks the probe and the sink
			// had: the final checkpoint's barrier follows MaxWatermark.
			var probeWM, sinkWM atomic.Int64
			sink := &memSink[event]{beforeSnapshot: func(context.Context, int64) {
				o, _ := operatorStats(j, "probe")
				probeWM.Store(o.Watermark)
				o, _ = operatorStats(j, "sink")
				sinkWM.Store(o.Watermark)
			}}
			engine.SinkTo(probed, "sink", 2, sink)
			if err := runJob(t, j); err != nil {
				t.Fatal(err)
			}
			if probeWM.Load() != engine.MaxWatermark || sinkWM.Load() != engine.MaxWatermark {
				t.Errorf("at the final checkpoint the probe's watermark was %d and the sink's %d, want MaxWatermark (the input ended)",
					probeWM.Load(), sinkWM.Load())
			}
			ss := p.records()
			if len(ss) != 9000 {
				t.Fatalf("the probe saw %d records, want 9000", len(ss))
			}
			withWM, lateSeen := checkSeen(t, ss)
			if withWM < len(ss)/4 {
				t.Fatalf("only %d of %d records came with a watermark set", withWM, len(ss))
			}
			t.Logf("%d records with a watermark set; %d of %d late events came after a watermark above them", withWM, lateSeen, lates)
		})
	}
}

// A source subtask with nothing to read reports idle from its start: the
// operators downstream follow the other subtask's watermark instead of
// waiting for it forever.
func TestIdleSourceSubtaskDoesNotHoldTheWatermarkBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const bound = 10
	src := &eventSource{bound: bound, unbounded: true, parts: [][]event{
		events(0, 200, 70_000, 5, 8, bound, 0, 0, rng),
		nil, // owns nothing: idle
	}}
	j := engine.NewJob("idle", engine.Options{WatermarkInterval: time.Millisecond})
	s := engine.FromSource(j, "source", 2, src)
	p := &probe{parallelism: 2}
	probed := engine.Process(engine.KeyBy(s, eventKey, state.StringCodec{}), "probe", 2, p.newFn)
	engine.SinkTo(probed, "sink", 1, &memSink[event]{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	w := sourceWatermark(src.parts[0], bound)
	waitWatermarks(t, j, done, map[string]int64{"source": w, "probe": w, "sink": w})
	cancel()
	<-done
	checkSeen(t, p.records())
}

// After a failure the keyed operator resumes at the watermark of the
// checkpoint it restores (not at NoWatermark: above what it had before
// that checkpoint's barrier), the sources start theirs from scratch, and
// the replay is exact.
func TestKeyedWatermarkResumesAfterAFailure(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const bound = 20
	src := &eventSource{bound: bound, pauseEvery: 50, pause: time.Millisecond}
	for sub := range 2 {
		src.parts = append(src.parts, events(sub, 4000, 1_000, 2, 15, bound, 0, 0, rng))
	}
	p := &probe{parallelism: 2}
	var failed atomic.Bool
	// mark is the newest completed checkpoint when a record first came
	// at a watermark above 1000; the failure waits until one triggered
	// after that (mark+2: one may have been in flight) completed, so the
	// restored checkpoint's barrier came after that watermark.
	var mark atomic.Int64
	mark.Store(-1)
	p.fail = func(s observed) error {
		if s.attempt != 1 || s.wm <= 1_000 {
			return nil
		}
		mark.CompareAndSwap(-1, src.notified.Load())
		if src.notified.Load() >= mark.Load()+2 && failed.CompareAndSwap(false, true) {
			return fmt.Errorf("injected failure at watermark %d", s.wm)
		}
		return nil
	}
	j := engine.NewJob("restore", engine.Options{WatermarkInterval: time.Millisecond, Restart: engine.FixedDelay(1, 0),
		Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond}})
	s := engine.FromSource(j, "source", 2, src)
	probed := engine.Process(engine.KeyBy(s, eventKey, state.StringCodec{}), "probe", 2, p.newFn)
	sink := &memSink[event]{}
	engine.SinkTo(probed, "sink", 2, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	if !failed.Load() {
		t.Fatal("the injected failure never happened")
	}
	ss := p.records()
	checkSeen(t, ss)
	// The sources' watermarks once they read everything: no watermark
	// of the first attempt was above the lower one.
	reached := min(sourceWatermark(src.parts[0], bound), sourceWatermark(src.parts[1], bound))
	p.mu.Lock()
	opened := p.opened
	p.mu.Unlock()
	if len(opened) != 4 {
		t.Fatalf("the probe opened %d times, want 4 (2 subtasks, 2 attempts)", len(opened))
	}
	for i, wm := range opened[:2] {
		if wm != engine.NoWatermark {
			t.Errorf("Open %d of the first attempt saw watermark %d, want NoWatermark", i, wm)
		}
	}
	for i, wm := range opened[2:] {
		if wm <= 1_000 || wm > reached {
			t.Errorf("Open %d of the second attempt saw watermark %d, want the restored checkpoint's (above 1000, where it was before the barrier, and at most %d)", i, wm, reached)
		}
	}
	// The restore replays exactly: every event reached the sink once.
	want := map[event]int{}
	for _, part := range src.parts {
		for _, e := range part {
			want[e]++
		}
	}
	if d := diffCounts(counts(sink.output()), want); d != "" {
		t.Fatalf("output not exact after the restore: %s", d)
	}
}

// A job stopped with a savepoint once its watermark reached W, restored
// with the keyed operator rescaled from 2 to 3 subtasks: every subtask
// opens at W, and records at or below W that come after the restore are
// late there, as they would have been had the job gone on (a window that
// fired before the savepoint is not opened again by them). The sources
// start from scratch: without the savepoint the same records are not
// late.
func TestKeyedWatermarkResumesFromASavepointRescaled(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const bound = 10
	first := [][]event{events(0, 300, 10_000, 5, 5, bound, 0, 0, rng), events(1, 300, 10_000, 5, 5, bound, 0, 0, rng)}
	w := min(sourceWatermark(first[0], bound), sourceWatermark(first[1], bound))
	// After the savepoint: 50 events per subtask below W (from 1000
	// below it), then 50 above, in order.
	later := func(sub int) []event {
		var out []event
		for i := range 100 {
			ts := w - 1000 + int64(i)*20
			if i >= 50 {
				ts = w + 1 + int64(i-50)*20
			}
			out = append(out, event{Sub: sub, Seq: 300 + i, TS: ts})
		}
		return out
	}
	job := func(src *eventSource, p *probe, storage checkpoint.Storage, from string) *engine.Job {
		j := engine.NewJob("rescale", engine.Options{WatermarkInterval: time.Millisecond, Storage: storage, RestoreFrom: from,
			Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}})
		s := engine.FromSource(j, "source", 2, src)
		probed := engine.Process(engine.KeyBy(s, eventKey, state.StringCodec{}), "probe", p.parallelism, p.newFn)
		engine.SinkTo(probed, "sink", 1, &memSink[event]{})
		return j
	}

	storage := dirstore.NewMemoryStorage("rescale", dirstore.StorageOptions{})
	p1 := &probe{parallelism: 2}
	j1 := job(&eventSource{bound: bound, unbounded: true, parts: first}, p1, storage, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- j1.Run(ctx) }()
	waitWatermarks(t, j1, done, map[string]int64{"probe": w})
	path, err := j1.StopWithSavepoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}

	for _, restored := range []bool{true, false} {
		t.Run(fmt.Sprintf("restored=%v", restored), func(t *testing.T) {
			p2 := &probe{parallelism: 3}
			var j2 *engine.Job
			if restored {
				// The savepoint's positions: the later events follow.
				src := &eventSource{bound: bound, parts: [][]event{append(slices.Clone(first[0]), later(0)...),
					append(slices.Clone(first[1]), later(1)...)}}
				j2 = job(src, p2, storage, path)
			} else {
				src := &eventSource{bound: bound, parts: [][]event{later(0), later(1)}}
				j2 = job(src, p2, dirstore.NewMemoryStorage("rescale", dirstore.StorageOptions{}), "")
			}
			if err := runJob(t, j2); err != nil {
				t.Fatal(err)
			}
			p2.mu.Lock()
			opened := p2.opened
			p2.mu.Unlock()
			wantOpen := engine.NoWatermark
			if restored {
				wantOpen = w
			}
			if len(opened) != 3 {
				t.Fatalf("the probe opened %d times, want 3", len(opened))
			}
			for i, got := range opened {
				if got != wantOpen {
					t.Errorf("Open %d saw watermark %d, want %d", i, got, wantOpen)
				}
			}
			ss := p2.records()
			if len(ss) != 200 {
				t.Fatalf("the probe saw %d records, want the 200 after the savepoint", len(ss))
			}
			late := 0
			for _, s := range ss {
				if s.ts <= w && s.ts <= s.wm {
					late++
				}
				if s.ts > w && s.ts <= s.wm {
					t.Fatalf("record %+v above the savepoint's watermark came late, at watermark %d", s.e, s.wm)
				}
			}
			switch {
			case restored && late != 100:
				t.Fatalf("%d of the 100 records at or below the savepoint's watermark %d came late, want all", late, w)
			case !restored && late != 0:
				t.Fatalf("a fresh job saw %d records late, want none (its watermark starts from scratch)", late)
			}
		})
	}
}
