package testdriver_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/testdriver"
)

// mapCounter counts words in a plain Go map, not in keyed state: the
// map is not in any checkpoint, so a restore starts it over while the
// sink's committed counts go on. The driver's crash catches it.
type mapCounter struct{ counts map[string]int64 }

func (c *mapCounter) Open(*engine.KeyedContext) error {
	c.counts = map[string]int64{}
	return nil
}

func (c *mapCounter) Process(_ *engine.KeyedContext, word, _ string, out func(*kgo.Record)) error {
	c.counts[word]++
	out(&kgo.Record{Key: []byte(word), Value: strconv.AppendInt(nil, c.counts[word], 10)})
	return nil
}

// counting is the word count with the counter newCounter makes.
func counting(newCounter func() engine.KeyedProcessFunction[string, string, *kgo.Record]) jobs.Dataflow {
	return func(b *jobs.Builder) error {
		lines := jobs.Source(b, "source", func(r *kgo.Record) (string, error) { return string(r.Value), nil })
		words := engine.FlatMap(lines, "split", func(line string, out func(string)) error {
			for _, w := range strings.Fields(line) {
				out(w)
			}
			return nil
		})
		byWord := jobs.KeyBy(b, words, "count", func(w string) string { return w }, state.StringCodec{}, state.StringCodec{})
		jobs.Sink(b, engine.Process(byWord, "count", b.Parallelism(), newCounter), "sink")
		return nil
	}
}

// referenceCounts is the word count's exactly-once output for in: every
// word's running count after each of its occurrences.
func referenceCounts(in []*kgo.Record) []*kgo.Record {
	n := map[string]int64{}
	var out []*kgo.Record
	for _, r := range in {
		for _, w := range strings.Fields(string(r.Value)) {
			n[w]++
			out = append(out, &kgo.Record{Key: []byte(w), Value: strconv.AppendInt(nil, n[w], 10)})
		}
	}
	return out
}

// crashScenario pipes lines over four partitions, checkpoints, pipes
// more, crashes (their output uncommitted), pipes again, crashes twice in
// a row, and checks the output.
func crashScenario(t *testing.T, d *testdriver.Driver) error {
	t.Helper()
	words := []string{"a", "b", "c", "d", "e"}
	pipe := func(from, to int) {
		for i := from; i < to; i++ {
			d.Pipe(&kgo.Record{Partition: int32(i % 4), Value: []byte(words[i%5] + " " + words[i%3])})
		}
	}
	pipe(0, 20)
	d.Checkpoint()
	pipe(20, 30)
	d.Crash()
	pipe(30, 40)
	d.Crash()
	d.Crash()
	pipe(40, 50)
	return d.CheckExactlyOnce(referenceCounts)
}

func TestCrashCatchesStateOutsideCheckpoints(t *testing.T) {
	for _, p := range []int{1, 3} {
		t.Run(fmt.Sprintf("parallelism %d", p), func(t *testing.T) {
			opts := testdriver.Options{Parallelism: p, Partitions: 4}
			good := testdriver.New(t, wordcount.Dataflow, opts)
			if err := crashScenario(t, good); err != nil {
				t.Fatalf("the keyed-state count: %v", err)
			}
			bad := testdriver.New(t, counting(func() engine.KeyedProcessFunction[string, string, *kgo.Record] { return &mapCounter{} }), opts)
			err := crashScenario(t, bad)
			if err == nil {
				t.Fatal("the count in a Go map passed the exactly-once check after crashes")
			}
			if !strings.Contains(err.Error(), "not exactly-once") {
				t.Fatalf("the check's error does not say what failed: %v", err)
			}
			t.Log(err)
		})
	}
}

// Without a crash the Go map's count is right: only the crash shows
// that it is not checkpointed.
func TestMapCounterPassesWithoutCrash(t *testing.T) {
	d := testdriver.New(t, counting(func() engine.KeyedProcessFunction[string, string, *kgo.Record] { return &mapCounter{} }), testdriver.Options{})
	d.Pipe(line("a b a"), line("b c"))
	d.Checkpoint()
	d.Pipe(line("a"))
	if err := d.CheckExactlyOnce(referenceCounts); err != nil {
		t.Fatal(err)
	}
}

// The uncommitted output of a crashed job never shows: what Committed
// returns only grows by checkpoints, and a crash before any checkpoint
// re-reads everything.
func TestCrashDiscardsUncommittedOutput(t *testing.T) {
	d := testdriver.New(t, wordcount.Dataflow, testdriver.Options{Pebble: true})
	d.Pipe(line("x y"))
	d.Crash()
	if got := d.Committed(); len(got) != 0 {
		t.Fatalf("committed before any checkpoint: %d records", len(got))
	}
	d.Pipe(line("x"))
	d.Checkpoint()
	if got, want := show(d.Committed()), "x=1 y=1 x=2"; got != want {
		t.Fatalf("committed %q, want %q", got, want)
	}
	for _, r := range d.Committed() {
		if r.Topic != "output" {
			t.Fatalf("committed record of topic %q, want output", r.Topic)
		}
	}
}

type sumFn struct{ sums *state.MapState[int64, int64] }

func (f *sumFn) Open(ctx *engine.KeyedContext) error {
	var err error
	f.sums, err = state.NewMapState(ctx.Backend(), "sums", state.Int64Codec{}, state.Int64Codec{})
	return err
}

func (f *sumFn) Process(ctx *engine.KeyedContext, _ string, r *kgo.Record, _ func(*kgo.Record)) error {
	start := ctx.Timestamp() / 10 * 10
	v, _ := strconv.ParseInt(string(r.Value), 10, 64)
	cur, _, err := f.sums.Get(start)
	if err != nil {
		return err
	}
	if err := f.sums.Put(start, cur+v); err != nil {
		return err
	}
	return ctx.RegisterEventTimeTimer(start + 9)
}

func (f *sumFn) OnTimer(_ *engine.KeyedContext, key string, ts int64, out func(*kgo.Record)) error {
	start := ts - 9
	sum, _, err := f.sums.Get(start)
	if err != nil {
		return err
	}
	if err := f.sums.Remove(start); err != nil {
		return err
	}
	out(&kgo.Record{Key: []byte(key), Value: []byte(fmt.Sprintf("%d=%d", start, sum))})
	return nil
}

func TestAdvanceWatermarkFiresTimers(t *testing.T) {
	df := func(b *jobs.Builder) error {
		in := jobs.Source(b, "source", func(r *kgo.Record) (*kgo.Record, error) { return r, nil })
		keyed := engine.KeyBy(in, func(r *kgo.Record) string { return string(r.Key) }, state.StringCodec{})
		jobs.Sink(b, engine.Process(keyed, "sum", b.Parallelism(), func() engine.KeyedProcessFunction[string, *kgo.Record, *kgo.Record] { return &sumFn{} }), "sink")
		return nil
	}
	at := func(key string, ms int64, v int) *kgo.Record {
		return &kgo.Record{Key: []byte(key), Value: []byte(strconv.Itoa(v)), Timestamp: time.UnixMilli(ms)}
	}
	d := testdriver.New(t, df, testdriver.Options{Parallelism: 2, Partitions: 2})
	d.Pipe(at("k", 1, 1), at("k", 5, 2), at("k", 12, 4))
	d.AdvanceWatermark(9)
	d.Checkpoint()
	if got, want := show(d.Committed()), "k=0=3"; got != want {
		t.Fatalf("after watermark 9: committed %q, want %q", got, want)
	}
	d.Pipe(at("k", 15, 8))
	d.Crash()
	d.AdvanceWatermark(19)
	d.Checkpoint()
	if got, want := show(d.Committed()), "k=0=3 k=10=12"; got != want {
		t.Fatalf("after a crash and watermark 19: committed %q, want %q", got, want)
	}
}

// A record the Dataflow's decode function refuses fails the job, and
// the next step says so.
func TestDecodeErrorFailsTheStep(t *testing.T) {
	df := func(b *jobs.Builder) error {
		in := jobs.Source(b, "source", func(r *kgo.Record) (*kgo.Record, error) {
			if string(r.Value) == "bad" {
				return nil, fmt.Errorf("bad value")
			}
			return r, nil
		})
		jobs.Sink(b, in, "sink")
		return nil
	}
	ft := &fakeT{T: t}
	d := testdriver.New(ft, df, testdriver.Options{})
	d.Pipe(line("good"), line("bad"))
	func() {
		defer func() { recover() }()
		d.Checkpoint()
	}()
	if !strings.Contains(ft.msg, "partition 0 offset 1") || !strings.Contains(ft.msg, "bad value") {
		t.Fatalf("the failed step said %q, want the record's partition and offset and the decode error", ft.msg)
	}
}

// fakeT records the first Fatalf and stops the step with a panic, as
// t.Fatalf stops the test's goroutine.
type fakeT struct {
	*testing.T
	msg string
}

func (f *fakeT) Fatalf(format string, args ...any) {
	if f.msg == "" {
		f.msg = fmt.Sprintf(format, args...)
	}
	panic(f.msg)
}

func TestBrokenDataflowFailsNew(t *testing.T) {
	ft := &fakeT{T: t}
	func() {
		defer func() { recover() }()
		testdriver.New(ft, func(b *jobs.Builder) error {
			jobs.Source(b, "source", func(r *kgo.Record) (*kgo.Record, error) { return r, nil })
			return nil
		}, testdriver.Options{})
	}()
	if !strings.Contains(ft.msg, "no sink") {
		t.Fatalf("New said %q, want the missing sink", ft.msg)
	}
}
