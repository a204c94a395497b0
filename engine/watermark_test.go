package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// valveTest drives a valve step by step and checks every step.
type valveTest struct {
	t *testing.T
	v *valve
}

func newValveTest(t *testing.T, inputs int) *valveTest {
	vt := &valveTest{t: t, v: newValve(inputs)}
	if got := vt.v.current(); got != (watermark{time: NoWatermark}) {
		t.Fatalf("a new valve's output is %s, want active at NoWatermark", fmtWM(got))
	}
	return vt
}

func fmtWM(w watermark) string {
	t := fmt.Sprint(w.time)
	switch w.time {
	case NoWatermark:
		t = "none"
	case MaxWatermark:
		t = "max"
	}
	if w.idle {
		return "idle@" + t
	}
	return t
}

// step feeds w on input in and checks the output and whether it changed
// (must be sent downstream).
func (vt *valveTest) step(in int, w watermark, want watermark, changed bool) {
	vt.t.Helper()
	got, ch := vt.v.onInput(in, w)
	if got != want || ch != changed {
		vt.t.Fatalf("%s on input %d: output %s (changed %v), want %s (changed %v)", fmtWM(w), in, fmtWM(got), ch, fmtWM(want), changed)
	}
	if cur := vt.v.current(); cur != got {
		vt.t.Fatalf("%s on input %d: current() is %s, the step returned %s", fmtWM(w), in, fmtWM(cur), fmtWM(got))
	}
}

func wmAt(t int64) watermark { return watermark{time: t} }

var idleWM = watermark{idle: true}

// The output is the minimum over the inputs: it stays at NoWatermark
// until every input has sent one, and then follows the slowest input.
func TestValveTakesTheMinimumAcrossInputs(t *testing.T) {
	vt := newValveTest(t, 3)
	vt.step(0, wmAt(10), wmAt(NoWatermark), false)
	vt.step(1, wmAt(5), wmAt(NoWatermark), false)
	vt.step(2, wmAt(7), wmAt(5), true)
	vt.step(1, wmAt(12), wmAt(7), true)
	vt.step(0, wmAt(11), wmAt(7), false) // 0 is not the slowest
	vt.step(2, wmAt(20), wmAt(11), true)
	vt.step(0, wmAt(30), wmAt(12), true)
	vt.step(1, wmAt(MaxWatermark), wmAt(20), true) // an input at its end
	vt.step(2, wmAt(MaxWatermark), wmAt(30), true)
	vt.step(0, wmAt(MaxWatermark), wmAt(MaxWatermark), true)
}

// Neither an input's watermark nor the output goes back: a lower
// watermark is ignored.
func TestValveNeverGoesBack(t *testing.T) {
	vt := newValveTest(t, 2)
	vt.step(0, wmAt(10), wmAt(NoWatermark), false)
	vt.step(1, wmAt(20), wmAt(10), true)
	vt.step(0, wmAt(3), wmAt(10), false)
	vt.step(1, wmAt(15), wmAt(10), false)
	vt.step(0, wmAt(18), wmAt(18), true) // input 1 stayed at 20
	vt.step(0, wmAt(25), wmAt(20), true)

	one := newValveTest(t, 1) // a source's clamp
	one.step(0, wmAt(100), wmAt(100), true)
	one.step(0, wmAt(99), wmAt(100), false)
	one.step(0, wmAt(100), wmAt(100), false)
	one.step(0, wmAt(101), wmAt(101), true)
}

// An idle input is left out of the minimum until it sends a watermark
// again; when every input is idle the output is idle (at its last
// watermark), and the first input to become active makes it active.
func TestValveLeavesIdleInputsOut(t *testing.T) {
	vt := newValveTest(t, 3)
	vt.step(0, wmAt(10), wmAt(NoWatermark), false)
	vt.step(1, wmAt(20), wmAt(NoWatermark), false)
	vt.step(2, idleWM, wmAt(10), true) // 2 no longer holds the output at NoWatermark
	vt.step(0, wmAt(30), wmAt(20), true)
	vt.step(1, idleWM, wmAt(30), true)
	vt.step(0, idleWM, watermark{time: 30, idle: true}, true)
	vt.step(1, idleWM, watermark{time: 30, idle: true}, false)
	vt.step(1, wmAt(40), wmAt(40), true) // active again, and ahead
	vt.step(2, wmAt(45), wmAt(40), false)
	vt.step(1, wmAt(50), wmAt(45), true) // 0 is still idle
}

// A source subtask that owns no partition reports idle from the start: its
// own output is idle at NoWatermark, and downstream it does not hold the
// other subtasks' watermarks back.
func TestValveSubtaskWithoutPartitions(t *testing.T) {
	src := newValveTest(t, 1)
	src.step(0, idleWM, watermark{time: NoWatermark, idle: true}, true)
	src.step(0, idleWM, watermark{time: NoWatermark, idle: true}, false)

	down := newValveTest(t, 2)
	down.step(1, src.v.current(), wmAt(NoWatermark), false)
	down.step(0, wmAt(100), wmAt(100), true)
	down.step(0, wmAt(200), wmAt(200), true)
}

// An input that becomes active again with a watermark below the output
// does not move the output back; it holds the output there until it
// catches up (it is not left out: its records above the output are not
// late).
func TestValveInputActiveAgainBelowTheOutput(t *testing.T) {
	vt := newValveTest(t, 2)
	vt.step(0, wmAt(100), wmAt(NoWatermark), false)
	vt.step(1, idleWM, wmAt(100), true)
	vt.step(1, wmAt(50), wmAt(100), false) // active again, behind
	vt.step(0, wmAt(200), wmAt(100), false)
	vt.step(1, wmAt(150), wmAt(150), true)
	vt.step(1, wmAt(300), wmAt(200), true)

	// The same for an input that was idle from the start: it was never
	// counted, and it joins below the output.
	vt = newValveTest(t, 2)
	vt.step(1, idleWM, wmAt(NoWatermark), false)
	vt.step(0, wmAt(100), wmAt(100), true)
	vt.step(1, wmAt(20), wmAt(100), false)
	vt.step(0, wmAt(120), wmAt(100), false)
	vt.step(1, wmAt(110), wmAt(110), true)

	// Idle to active at its old watermark: a lower one is ignored.
	vt = newValveTest(t, 2)
	vt.step(0, wmAt(80), wmAt(NoWatermark), false)
	vt.step(1, wmAt(90), wmAt(80), true)
	vt.step(1, idleWM, wmAt(80), false)
	vt.step(0, wmAt(100), wmAt(100), true)
	vt.step(1, wmAt(60), wmAt(100), false) // active at 90, not 60
	vt.step(0, wmAt(120), wmAt(100), false)
	vt.step(1, wmAt(95), wmAt(100), false)
	vt.step(1, wmAt(130), wmAt(120), true)
}

func wmEntry(t *testing.T, start, end int, w int64) []byte {
	t.Helper()
	b, err := json.Marshal(watermarkEntry{Start: start, End: end, Watermark: w})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A keyed operator rescaled from 2 to 3 subtasks (128 key groups) whose
// old subtasks were at different watermarks: each new subtask starts at
// the lowest of its key groups', and keeps each key group's where they
// differ. Key groups the checkpoint holds nothing for start at
// NoWatermark.
func TestWatermarkFloorsAfterARescale(t *testing.T) {
	old := [][]byte{wmEntry(t, 0, 64, 100), wmEntry(t, 64, 128, 200)}
	for _, tc := range []struct {
		entries [][]byte
		kgs     checkpoint.KeyGroupRange
		low     int64
		floors  map[int]int64 // key group -> floor; nil: uniform
	}{
		{old, state.KeyGroupRangeForSubtask(0, 3, 128), 100, nil},
		{old, state.KeyGroupRangeForSubtask(1, 3, 128), 100, map[int]int64{43: 100, 63: 100, 64: 200, 85: 200}},
		{old, state.KeyGroupRangeForSubtask(2, 3, 128), 200, nil},
		{old, state.KeyGroupRangeForSubtask(0, 1, 128), 100, map[int]int64{0: 100, 127: 200}},
		{nil, state.KeyGroupRangeForSubtask(1, 3, 128), NoWatermark, nil},
		{old[:1], state.KeyGroupRangeForSubtask(1, 3, 128), NoWatermark, map[int]int64{43: 100, 64: NoWatermark}},
	} {
		low, floors, err := watermarkFloors(tc.entries, tc.kgs)
		if err != nil {
			t.Fatal(err)
		}
		if low != tc.low || (floors == nil) != (tc.floors == nil) {
			t.Fatalf("%d entries, key groups %v: lowest %d, floors %v; want %d, floors %v", len(tc.entries), tc.kgs, low, floors != nil, tc.low, tc.floors != nil)
		}
		for kg, want := range tc.floors {
			if got := floors[kg-tc.kgs.Start]; got != want {
				t.Errorf("key groups %v: key group %d at %d, want %d", tc.kgs, kg, got, want)
			}
		}
	}
	if _, _, err := watermarkFloors([][]byte{[]byte("{")}, state.KeyGroupRangeForSubtask(0, 1, 128)); err == nil {
		t.Fatal("a malformed entry was accepted")
	}
}

// KeyedContext.CurrentWatermark after such a restore: the current key's
// key group's watermark while the operator's own is below it, the
// operator's once it passed it.
func TestKeyedWatermarkAppliesTheKeyGroupsFloor(t *testing.T) {
	kgs := state.KeyGroupRangeForSubtask(1, 3, 128) // [43, 86)
	b, err := statebackend.NewMemoryFactory().CreateKeyedBackend(context.Background(), state.KeyedBackendOptions{
		Job: "j", OperatorUID: "op", Subtask: 1, Parallelism: 3, MaxParallelism: 128, KeyGroups: kgs})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := newCoordHarness(t, Options{}, 0)
	store, err := state.NewOperatorStateStore(1, 3, []*checkpoint.Handle{opHandle(t, 0, 2, wmEntry(t, 0, 64, 100)), opHandle(t, 1, 2, wmEntry(t, 64, 128, 200))})
	if err != nil {
		t.Fatal(err)
	}
	st := &subtask{j: h.j, c: h.c, n: &node{uid: "op", parallelism: 3, keyed: true}, index: 1, backend: b, opStore: store}
	st.initWatermarks()
	if err := st.restoreWatermark(kgs); err != nil {
		t.Fatal(err)
	}
	keyIn := func(lo, hi int) []byte {
		for i := 0; ; i++ {
			k := []byte("k" + strconv.Itoa(i))
			if kg := state.KeyGroupOf(k, 128); kg >= lo && kg < hi {
				return k
			}
		}
	}
	low, high := keyIn(43, 64), keyIn(64, 86)
	if got := st.keyedWatermark(); got != 100 {
		t.Fatalf("without a current key: %d, want the operator's 100", got)
	}
	check := func(key []byte, want int64) {
		t.Helper()
		b.SetCurrentKey(key)
		if got := st.keyedWatermark(); got != want {
			t.Fatalf("key %s (key group %d): watermark %d, want %d", key, state.KeyGroupOf(key, 128), got, want)
		}
	}
	check(low, 100)
	check(high, 200)
	if err := st.onWatermark(context.Background(), 0, watermark{time: 150}); err != nil {
		t.Fatal(err)
	}
	check(low, 150)
	check(high, 200)
	if err := st.onWatermark(context.Background(), 0, watermark{time: 250}); err != nil {
		t.Fatal(err)
	}
	check(low, 250)
	check(high, 250)

	// The operator snapshots its own watermark with its key groups.
	if err := st.snapshotWatermark(); err != nil {
		t.Fatal(err)
	}
	l, err := store.ListState(watermarkState, state.Union)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Get(), [][]byte{wmEntry(t, 43, 86, 250)}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("snapshot %q, want %q", got, want)
	}
}

// opHandle is the operator state handle of subtask of parallelism with one
// watermark entry.
func opHandle(t *testing.T, subtask, parallelism int, entry []byte) *checkpoint.Handle {
	t.Helper()
	s, err := state.NewOperatorStateStore(subtask, parallelism, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.ListState(watermarkState, state.Union)
	if err != nil {
		t.Fatal(err)
	}
	l.Update([][]byte{entry})
	h, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
