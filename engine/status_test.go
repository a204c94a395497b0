package engine_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/state"
)

// gateSink's writers block in their first Write until open is closed.
type gateSink struct {
	open    chan struct{}
	blocked chan struct{} // closed by the first Write that blocks
	inner   *memSink[int]
}

func (s *gateSink) NewWriter(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[int], error) {
	w, err := s.inner.NewWriter(ctx, sc, restored)
	if err != nil {
		return nil, err
	}
	return &gateWriter{SinkWriter: w, s: s}, nil
}

type gateWriter struct {
	engine.SinkWriter[int]
	s      *gateSink
	waited bool
}

func (w *gateWriter) Write(ctx context.Context, v int) error {
	if !w.waited {
		w.waited = true
		close(w.s.blocked)
		select {
		case <-w.s.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return w.SinkWriter.Write(ctx, v)
}

// opStats is the status of operator uid (fatal when absent).
func opStats(t *testing.T, st engine.Status, uid string) engine.OperatorStats {
	t.Helper()
	for _, op := range st.Operators {
		if op.UID == uid {
			return op
		}
	}
	t.Fatalf("no operator %s in %+v", uid, st.Operators)
	return engine.OperatorStats{}
}

// TestStatusTellsTheGraphAndBackpressure: Status names each operator's
// kind, parallelism and inputs, and counts the time its subtasks wait on
// full channels, a wait under way included: with the sink held in its
// first write, the source and the map upstream of it are backpressured
// and the sink is not; once the sink goes on, the job finishes.
func TestStatusTellsTheGraphAndBackpressure(t *testing.T) {
	var part []int
	for i := range 200 {
		part = append(part, i)
	}
	sink := &gateSink{open: make(chan struct{}), blocked: make(chan struct{}), inner: &memSink[int]{}}
	j := engine.NewJob("backpressure", engine.Options{ChannelCapacity: 4, DisableChaining: true})
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{part}})
	m := engine.Map(src, "double", func(v int) (int, error) { return 2 * v, nil })
	engine.SinkTo(m, "sink", 1, sink)

	done := make(chan error, 1)
	go func() { done <- runJob(t, j) }()
	<-sink.blocked
	started := time.Now()

	// The source and the map fill their channels (4 each) and wait; the
	// waits under way grow with time.
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st := j.Status()
		if len(st.Operators) == 3 && opStats(t, st, "source").Backpressured > 20*time.Millisecond && opStats(t, st, "double").Backpressured > 20*time.Millisecond {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("source and map not backpressured within 20s of the sink blocking: %+v", st.Operators)
		case <-tick.C:
		}
	}
	st := j.Status()
	for _, want := range []engine.OperatorStats{
		{UID: "source", Kind: "source", Parallelism: 1},
		{UID: "double", Kind: "operator", Parallelism: 1, Inputs: []string{"source"}},
		{UID: "sink", Kind: "sink", Parallelism: 1, Inputs: []string{"double"}},
	} {
		got := opStats(t, st, want.UID)
		if got.Kind != want.Kind || got.Parallelism != want.Parallelism || !slices.Equal(got.Inputs, want.Inputs) {
			t.Errorf("%s: kind %q, parallelism %d, inputs %v; want %q, %d, %v", want.UID, got.Kind, got.Parallelism, got.Inputs,
				want.Kind, want.Parallelism, want.Inputs)
		}
		if limit := time.Since(started) + time.Second; got.Backpressured > limit {
			t.Errorf("%s: backpressured %s, more than the %s since the sink blocked (one subtask)", want.UID, got.Backpressured, limit)
		}
	}
	if bp := opStats(t, st, "sink").Backpressured; bp != 0 {
		t.Errorf("sink backpressured %s: it has no downstream channel", bp)
	}
	if before, after := opStats(t, st, "double").Backpressured, opStats(t, j.Status(), "double").Backpressured; after < before {
		t.Errorf("map's backpressured time went back from %s to %s", before, after)
	}

	close(sink.open)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := len(sink.inner.output()); got != len(part) {
		t.Errorf("%d records committed, want %d", got, len(part))
	}
}

// TestStatusKeepsTheLastFailure: a failed attempt's error and time stay
// in Status after the restart, until a newer failure replaces them.
func TestStatusKeepsTheLastFailure(t *testing.T) {
	clock := newFakeClock()
	j, _ := failingJob(engine.Options{Restart: engine.FixedDelay(3, 10*time.Second)}, clock, 2, time.Second)
	if st := j.Status(); st.LastFailure != "" || !st.LastFailureTime.IsZero() {
		t.Fatalf("before any run: last failure %q at %s", st.LastFailure, st.LastFailureTime)
	}
	if err := runJob(t, j); err != nil {
		t.Fatalf("Run = %v after two failures of three allowed", err)
	}
	st := j.Status()
	if st.Restarts != 2 || !strings.Contains(st.LastFailure, "attempt 2 fails") {
		t.Errorf("restarts %d, last failure %q; want 2 and attempt 2's", st.Restarts, st.LastFailure)
	}
	// The clock: 1s into attempt 1, 10s pause, 1s into attempt 2.
	if want := time.Date(2026, 1, 1, 0, 0, 12, 0, time.UTC); !st.LastFailureTime.Equal(want) {
		t.Errorf("last failure at %s, want %s", st.LastFailureTime, want)
	}
}

// TestStatusShowsAChainsBackpressureOnEachOperator: operators chained
// together wait as one (one goroutine), so each shows the chain's wait:
// with the sink held, source and double (a chain) wait on the keyed
// channel to count, and count and sink (a chain, held) do not.
func TestStatusShowsAChainsBackpressureOnEachOperator(t *testing.T) {
	var part []int
	for i := range 200 {
		part = append(part, i)
	}
	sink := &gateSink{open: make(chan struct{}), blocked: make(chan struct{}), inner: &memSink[int]{}}
	j := engine.NewJob("chain-backpressure", engine.Options{ChannelCapacity: 4})
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{part}})
	m := engine.Map(src, "double", func(v int) (int, error) { return 2 * v, nil })
	keyed := engine.KeyBy(m, func(v int) int { return v }, state.JSONCodec[int]{})
	counts := engine.Reduce(keyed, "count", 1, state.JSONCodec[int]{}, func(acc, v int) (int, error) { return acc + v, nil })
	engine.SinkTo(counts, "sink", 1, sink)

	done := make(chan error, 1)
	go func() { done <- runJob(t, j) }()
	<-sink.blocked
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st := j.Status()
		if len(st.Operators) == 4 && opStats(t, st, "source").Backpressured > 20*time.Millisecond {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the source's chain not backpressured within 20s of the sink blocking: %+v", st.Operators)
		case <-tick.C:
		}
	}
	st := j.Status()
	if s, d := opStats(t, st, "source").Backpressured, opStats(t, st, "double").Backpressured; s != d {
		t.Errorf("source backpressured %s, double %s: one chain, one wait", s, d)
	}
	for _, uid := range []string{"count", "sink"} {
		if bp := opStats(t, st, uid).Backpressured; bp != 0 {
			t.Errorf("%s backpressured %s: its chain waits in the sink, not on a channel", uid, bp)
		}
	}
	close(sink.open)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestStatusCountsRecordsOfAChainAsWithoutChaining: a chained operator
// counts no records in of its own (its feeder's records out are its
// records in), so each operator's counts must be those of the same job
// run without chaining: the filter in the middle makes every operator's
// counts differ from the one before it.
func TestStatusCountsRecordsOfAChainAsWithoutChaining(t *testing.T) {
	type counts struct{ in, out int64 }
	run := func(disable bool) map[string]counts {
		j := engine.NewJob("chain-counts", engine.Options{DisableChaining: disable})
		src := engine.FromSource(j, "source", 2, &memSource[int]{parts: [][]int{seq(0, 60), seq(60, 40)}, unbounded: true})
		odd := engine.Filter(src, "odd", func(v int) bool { return v%2 == 1 })
		twice := engine.FlatMap(odd, "twice", func(v int, out func(int)) error { out(v); out(v); return nil })
		engine.SinkTo(twice, "sink", 2, &memSink[int]{})
		cancel, wait := startJob(t, j)
		waitSinkIn(t, j, 100)
		got := map[string]counts{}
		for _, op := range j.Status().Operators {
			got[op.UID] = counts{op.RecordsIn, op.RecordsOut}
		}
		cancel()
		if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run (chaining disabled: %t) = %v", disable, err)
		}
		return got
	}
	want := map[string]counts{"source": {0, 100}, "odd": {100, 50}, "twice": {50, 100}, "sink": {100, 0}}
	for _, disable := range []bool{true, false} {
		if got := run(disable); !maps.Equal(got, want) {
			t.Errorf("chaining disabled %t: records in/out by operator %v, want %v", disable, got, want)
		}
	}
}
