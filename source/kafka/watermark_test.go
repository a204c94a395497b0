package kafka

import (
	"math"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// wmTest drives a partitionWatermarks step by step on a clock of its own.
type wmTest struct {
	t   *testing.T
	w   *partitionWatermarks
	now time.Time
	// pending are the partitions with records fetched and not read yet.
	pending map[Partition]bool
	// pos are the reader's positions (nil: 0 for every partition); ends
	// is the last listing of the log ends (nil: one asked for at now,
	// every partition at its position: read to its end).
	pos  map[Partition]int64
	ends *logEnds
	// list is what the last check said of a fresher listing.
	list bool
}

func newWMTest(t *testing.T, bound, idle time.Duration) *wmTest {
	return &wmTest{t: t, w: newPartitionWatermarks(bound, idle), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (wt *wmTest) advance(d time.Duration) { wt.now = wt.now.Add(d) }

// check calls current and compares.
func (wt *wmTest) check(what string, want int64, wantIdle bool) {
	wt.t.Helper()
	pos, ends := wt.pos, wt.ends
	if pos == nil {
		pos = map[Partition]int64{}
		for p := range wt.w.parts {
			pos[p] = 0
		}
	}
	if ends == nil {
		ends = &logEnds{at: wt.now, ends: pos}
	}
	got, idle, list := wt.w.current(wt.now, wt.pending, pos, ends)
	wt.list = list
	if got != want || idle != wantIdle {
		wt.t.Fatalf("%s: watermark %d (idle %v), want %d (idle %v)", what, got, idle, want, wantIdle)
	}
}

// wantList fails unless the last check asked for a listing as want says.
func (wt *wmTest) wantList(want bool, what string) {
	wt.t.Helper()
	if wt.list != want {
		wt.t.Fatalf("%s: asked for a listing %v, want %v", what, wt.list, want)
	}
}

func part(p int32) Partition { return Partition{Topic: "t", Partition: p} }

// A partition's watermark is its highest timestamp minus the bound minus
// 1 ms; the subtask's is the minimum over its partitions, NoWatermark
// until each has produced. Out-of-order records within the bound do not
// move it back.
func TestPartitionWatermarksTakeTheMinimum(t *testing.T) {
	wt := newWMTest(t, 100*time.Millisecond, 0)
	wt.w.assign(part(0), wt.now)
	wt.w.assign(part(1), wt.now)
	wt.check("two partitions, no record", engine.NoWatermark, false)
	wt.w.record(part(0), 1000)
	wt.check("only partition 0 produced", engine.NoWatermark, false)
	wt.w.record(part(1), 700)
	wt.check("both produced", 599, false)
	wt.w.record(part(1), 650) // out of order, within the bound
	wt.check("an older record", 599, false)
	wt.w.record(part(1), 1500)
	wt.check("partition 1 ahead", 899, false)
	wt.w.record(part(0), 2000)
	wt.w.record(part(0), 1950)
	wt.check("partition 0 ahead again", 1399, false)
	wt.w.assign(part(0), wt.now) // assigned again: no change
	wt.check("assigned twice", 1399, false)
	wt.w.assign(part(2), wt.now) // discovered later
	wt.check("a new partition without records", engine.NoWatermark, false)
	wt.w.record(part(2), 5000)
	wt.check("the new partition produced", 1399, false)
}

// Without an idle timeout a silent partition holds the watermark back
// for ever; with one it is left out once it has produced nothing for the
// timeout, until it produces again. Every partition idle: the subtask is.
func TestPartitionWatermarksLeaveIdlePartitionsOut(t *testing.T) {
	never := newWMTest(t, 0, 0)
	never.w.assign(part(0), never.now)
	never.w.assign(part(1), never.now)
	never.w.record(part(0), 100)
	never.advance(time.Hour)
	never.check("no timeout: partition 1 never idle", engine.NoWatermark, false)

	wt := newWMTest(t, 10*time.Millisecond, 5*time.Second)
	for p := range int32(3) {
		wt.w.assign(part(p), wt.now)
	}
	wt.w.record(part(0), 1000)
	wt.w.record(part(1), 2000)
	wt.check("partition 2 silent, not yet idle", engine.NoWatermark, false)
	wt.advance(4 * time.Second)
	wt.w.record(part(0), 1100)
	wt.w.record(part(1), 2100)
	wt.check("4s: partition 2 still counted", engine.NoWatermark, false)
	wt.advance(time.Second)
	wt.check("5s: partition 2 idle since its assignment", 1089, false)
	wt.advance(3 * time.Second)
	wt.w.record(part(1), 2200)
	wt.check("8s: partition 0 silent for 4s", 1089, false)
	wt.advance(time.Second)
	wt.check("9s: partition 0 idle too", 2189, false)
	wt.w.record(part(2), 500)
	wt.check("partition 2 produces again, far behind", 489, false)
	wt.w.record(part(0), 3000)
	wt.check("partition 0 back", 489, false)
	wt.advance(5 * time.Second)
	wt.check("every partition silent for 5s", engine.NoWatermark, true)
	wt.w.record(part(1), 2300)
	wt.check("partition 1 produces: active", 2289, false)
}

// A partition whose records wait in the reader's buffer behind other
// partitions' (a backlog) is not idle, however long they wait; once they
// are read and it is silent for the timeout, it is.
func TestPartitionWatermarksBufferedPartitionIsNotIdle(t *testing.T) {
	wt := newWMTest(t, 0, time.Second)
	wt.w.assign(part(0), wt.now)
	wt.w.assign(part(1), wt.now)
	wt.w.record(part(0), 1000)
	wt.w.record(part(1), 100)
	wt.check("both produced", 99, false)
	wt.pending = map[Partition]bool{part(1): true}
	for range 5 {
		wt.advance(time.Second)
		wt.w.record(part(0), 1000+wt.now.UnixMilli()%100000)
		wt.check("partition 1 waits in the buffer", 99, false)
	}
	wt.pending = nil
	wt.w.record(part(1), 200)
	wt.check("partition 1 read", 199, false)
	wt.advance(time.Second)
	wt.w.record(part(0), 9000)
	wt.check("partition 1 silent for the timeout, nothing buffered", 8999, false)
}

// A subtask that owns no partition is idle from the start, with or
// without an idle timeout, until a partition is assigned to it.
func TestPartitionWatermarksWithoutPartitionsAreIdle(t *testing.T) {
	for _, idle := range []time.Duration{0, time.Second} {
		wt := newWMTest(t, 0, idle)
		wt.check("no partition", engine.NoWatermark, true)
		wt.advance(time.Minute)
		wt.check("no partition, a minute later", engine.NoWatermark, true)
		wt.w.assign(part(7), wt.now)
		wt.check("a partition discovered", engine.NoWatermark, false)
		wt.w.record(part(7), 42)
		wt.check("its first record", 41, false)
	}
}

// A record of a partition not assigned yet counts from the next call; the
// subtraction of the bound does not overflow.
func TestPartitionWatermarksEdges(t *testing.T) {
	wt := newWMTest(t, time.Second, time.Second)
	wt.w.record(part(3), 10_000)
	wt.check("record before assign", 8999, false)
	wt.advance(time.Second)
	wt.check("silent for the timeout", engine.NoWatermark, true)

	low := newWMTest(t, time.Second, 0)
	low.w.assign(part(0), low.now)
	low.w.record(part(0), math.MinInt64+5)
	low.check("a timestamp near the minimum", engine.NoWatermark, false)
	low.w.record(part(0), math.MinInt64+2000)
	low.check("a timestamp just above the bound", math.MinInt64+999, false)
}

// A partition silent for the timeout goes idle only on a listing of its
// log's end asked for after the timeout ran out that shows it read to
// that end. Until that listing answers it counts and the generator asks
// for one; a listing showing it behind keeps it in, and is asked for
// again every timeout.
func TestPartitionWatermarksSilentPartitionBehindItsLogIsNotIdle(t *testing.T) {
	wt := newWMTest(t, 0, time.Second)
	start := wt.now
	wt.w.assign(part(0), wt.now)
	wt.w.assign(part(1), wt.now)
	wt.pos = map[Partition]int64{part(0): 10, part(1): 3}
	wt.ends = &logEnds{at: start, ends: map[Partition]int64{part(0): 10, part(1): 3}}
	wt.w.record(part(0), 1000)
	wt.w.record(part(1), 500)
	wt.check("both produced", 499, false)
	wt.wantList(false, "no partition silent")

	wt.advance(time.Second)
	wt.w.record(part(0), 2000)
	wt.check("partition 1 silent for the timeout, the listing older than that", 499, false)
	wt.wantList(true, "a silent partition, no listing since")
	wt.ends = &logEnds{at: wt.now, ends: map[Partition]int64{part(0): 12, part(1): 8}}
	wt.check("listed after the timeout: partition 1 at 3 of 8", 499, false)
	wt.wantList(false, "a fresh listing showed partition 1 behind")
	wt.advance(999 * time.Millisecond)
	wt.w.record(part(0), 2100)
	wt.check("still behind", 499, false)
	wt.wantList(false, "less than a timeout since that listing")
	wt.advance(time.Millisecond)
	wt.w.record(part(0), 2200)
	wt.check("behind a timeout later", 499, false)
	wt.wantList(true, "a timeout since that listing")
	wt.pos[part(1)] = 8 // its records were fetched and read, no newer one
	wt.w.record(part(1), 600)
	wt.check("partition 1 produced", 599, false)
	wt.advance(time.Second)
	wt.w.record(part(0), 2300)
	wt.ends = &logEnds{at: wt.now.Add(-time.Millisecond), ends: map[Partition]int64{part(1): 8}}
	wt.check("at its end, but listed before the timeout ran out", 599, false)
	wt.ends = &logEnds{at: wt.now, ends: map[Partition]int64{part(1): 8}}
	wt.check("at its end, listed after the timeout", 2299, false)
	wt.advance(time.Second)
	wt.ends = &logEnds{at: wt.now, ends: map[Partition]int64{part(1): 8}}
	wt.check("partition 0 silent too, but not in the listing", 2299, false)
	wt.ends = &logEnds{at: wt.now, ends: map[Partition]int64{part(0): 10, part(1): 8}}
	wt.check("both at their ends", engine.NoWatermark, true)
	wt.wantList(false, "every partition idle on a fresh listing")
}

// A partition the reader no longer reads (no position) goes idle by
// silence alone: no listing can show it read.
func TestPartitionWatermarksPartitionWithoutPositionIdlesBySilence(t *testing.T) {
	wt := newWMTest(t, 0, time.Second)
	wt.w.assign(part(0), wt.now)
	wt.w.assign(part(1), wt.now)
	wt.pos = map[Partition]int64{part(0): 0}
	wt.ends = &logEnds{at: wt.now}
	wt.w.record(part(0), 1000)
	wt.w.record(part(1), 500)
	wt.check("both produced", 499, false)
	wt.advance(time.Second)
	wt.w.record(part(0), 1100)
	wt.check("partition 1 silent, without a position", 1099, false)
}
