package testdriver_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/testdriver"
)

// timeoutFn remembers each key's last value and, a minute of processing
// time after it, emits "<value>@<ms since start>" from a processing-time
// timer; a record "cancel" deletes the key's pending timer instead.
type timeoutFn struct {
	start int64 // the driver's processing-time start, ms
	last  *state.ValueState[string]
	due   *state.ValueState[int64]
}

func (f *timeoutFn) Open(ctx *engine.KeyedContext) error {
	var err error
	if f.last, err = state.NewValueState(ctx.Backend(), "last", state.StringCodec{}); err != nil {
		return err
	}
	f.due, err = state.NewValueState(ctx.Backend(), "due", state.Int64Codec{})
	return err
}

func (f *timeoutFn) Process(ctx *engine.KeyedContext, _ string, r *kgo.Record, _ func(*kgo.Record)) error {
	if string(r.Value) == "cancel" {
		due, ok, err := f.due.Value()
		if err != nil || !ok {
			return err
		}
		if err := f.due.Clear(); err != nil {
			return err
		}
		return ctx.DeleteProcessingTimeTimer(due)
	}
	due := ctx.CurrentProcessingTime() + time.Minute.Milliseconds()
	if err := f.last.Update(string(r.Value)); err != nil {
		return err
	}
	if err := f.due.Update(due); err != nil {
		return err
	}
	return ctx.RegisterProcessingTimeTimer(due)
}

func (f *timeoutFn) OnTimer(ctx *engine.KeyedContext, key string, ts int64, out func(*kgo.Record)) error {
	if ctx.TimeDomain() != state.ProcessingTime {
		return fmt.Errorf("timer of key %s at %d: domain %s, want processing time", key, ts, ctx.TimeDomain())
	}
	v, _, err := f.last.Value()
	if err != nil {
		return err
	}
	if err := f.due.Clear(); err != nil {
		return err
	}
	out(&kgo.Record{Key: []byte(key), Value: []byte(v + "@" + strconv.FormatInt(ts-f.start, 10))})
	return nil
}

// A processing-time timer fires only once AdvanceProcessingTime moves
// the clock past it, exactly once, across crashes before and after it
// fired; a record deleting its key's timer before the clock moves keeps
// it from firing.
func TestAdvanceProcessingTimeFiresTimers(t *testing.T) {
	for _, pebble := range []bool{false, true} {
		t.Run(fmt.Sprintf("pebble=%v", pebble), func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			df := func(b *jobs.Builder) error {
				in := jobs.Source(b, "source", func(r *kgo.Record) (*kgo.Record, error) { return r, nil })
				keyed := engine.KeyBy(in, func(r *kgo.Record) string { return string(r.Key) }, state.StringCodec{})
				jobs.Sink(b, engine.Process(keyed, "timeout", b.Parallelism(), func() engine.KeyedProcessFunction[string, *kgo.Record, *kgo.Record] {
					return &timeoutFn{start: start.UnixMilli()}
				}), "sink")
				return nil
			}
			d := testdriver.New(t, df, testdriver.Options{Parallelism: 2, Partitions: 2, Pebble: pebble,
				ManualProcessingTime: true, ProcessingTimeStart: start})
			rec := func(key, v string, p int32) *kgo.Record {
				return &kgo.Record{Key: []byte(key), Value: []byte(v), Partition: p}
			}
			d.Pipe(rec("a", "1", 0), rec("b", "2", 1), rec("c", "3", 0))
			d.Checkpoint()
			d.AdvanceProcessingTime(59*time.Second + 999*time.Millisecond)
			if got := sorted(d.Committed()); got != "" {
				t.Fatalf("1 ms before the timers: committed %q, want nothing", got)
			}
			d.Pipe(rec("c", "cancel", 0))
			d.Crash() // the timers are restored from the checkpoint
			if got, want := d.ProcessingTime(), start.Add(59*time.Second+999*time.Millisecond); !got.Equal(want) {
				t.Fatalf("after Crash: processing time %s, want %s (the clock keeps its time)", got, want)
			}
			d.AdvanceProcessingTime(time.Millisecond)
			if got := sorted(d.Committed()); got != "" {
				t.Fatalf("at the timers' time: committed %q, want nothing until the clock is past it", got)
			}
			d.AdvanceProcessingTime(time.Millisecond)
			if got, want := sorted(d.Committed()), "a=1@60000 b=2@60000"; got != want {
				t.Fatalf("1 ms past the timers' time: committed %q, want %q", got, want)
			}
			d.Pipe(rec("a", "4", 0))
			d.Crash()
			d.AdvanceProcessingTime(time.Hour)
			if got, want := sorted(d.Committed()), "a=1@60000 a=4@120001 b=2@60000"; got != want {
				t.Fatalf("an hour later, after a crash: committed %q, want %q", got, want)
			}
			d.Crash()
			d.AdvanceProcessingTime(time.Hour)
			if got, want := sorted(d.Committed()), "a=1@60000 a=4@120001 b=2@60000"; got != want {
				t.Fatalf("after another crash and hour: committed %q, want %q (each timer once)", got, want)
			}
		})
	}
}

// sorted is show with the records in key order: subtasks commit in no
// fixed order.
func sorted(rs []*kgo.Record) string {
	parts := strings.Fields(show(rs))
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
