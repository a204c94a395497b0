package engine

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// alignTest drives an aligner step by step and checks every step.
type alignTest struct {
	t  *testing.T
	a  *aligner
	t0 time.Time
}

func newAlignTest(t *testing.T, inputs int, mode CheckpointMode) *alignTest {
	return &alignTest{t: t, a: newAligner(inputs, mode), t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// want describes a step: the checkpoint snapshotted (0: none), the
// checkpoints declined, and the inputs blocked afterwards.
type want struct {
	snapshot int64
	declined []int64
	blocked  []int
}

func (at *alignTest) check(what string, step *alignStep, w want) {
	at.t.Helper()
	var got want
	if step.snapshot {
		got.snapshot = step.barrier.id
	}
	for _, d := range step.declined {
		got.declined = append(got.declined, d.id)
		if d.reason == "" {
			at.t.Errorf("%s: checkpoint %d declined without a reason", what, d.id)
		}
	}
	for i := range at.a.n {
		if at.a.isBlocked(i) {
			got.blocked = append(got.blocked, i)
		}
	}
	if got.snapshot != w.snapshot || !slices.Equal(got.declined, w.declined) || !slices.Equal(got.blocked, w.blocked) {
		at.t.Fatalf("%s: snapshot %d, declined %v, blocked %v; want snapshot %d, declined %v, blocked %v",
			what, got.snapshot, got.declined, got.blocked, w.snapshot, w.declined, w.blocked)
	}
}

// barrier feeds barrier id on input in, ms milliseconds after t0.
func (at *alignTest) barrier(in int, id int64, ms int, w want) *alignStep {
	at.t.Helper()
	step, err := at.a.onBarrier(in, barrier{id: id}, at.t0.Add(time.Duration(ms)*time.Millisecond))
	if err != nil {
		at.t.Fatalf("barrier %d on input %d: %v", id, in, err)
	}
	at.check(fmt.Sprintf("barrier %d on input %d", id, in), step, w)
	return step
}

func (at *alignTest) aborted(id int64, w want) {
	at.t.Helper()
	at.check(fmt.Sprintf("abort of %d", id), at.a.aborted(id), w)
}

// EXACTLY_ONCE: an input that delivered barrier n is blocked until
// barrier n came on every input; then the snapshot is taken, with the
// time the first input waited, and every input is read again.
func TestAlignerAlignsBarriersOfOneCheckpoint(t *testing.T) {
	at := newAlignTest(t, 3, ExactlyOnce)
	at.barrier(0, 1, 0, want{blocked: []int{0}})
	at.barrier(2, 1, 5, want{blocked: []int{0, 2}})
	step := at.barrier(1, 1, 12, want{snapshot: 1})
	if step.alignment != 12*time.Millisecond {
		t.Errorf("alignment %v, want 12ms", step.alignment)
	}
	at.barrier(1, 2, 20, want{blocked: []int{1}})
	at.barrier(0, 2, 20, want{blocked: []int{0, 1}})
	at.barrier(2, 2, 21, want{snapshot: 2})
}

// Barrier n+1 arriving on one input while n is aligned on another is
// never aligned with n: n is declined and every input unblocked, n+1 is
// aligned from there, and n's barrier arriving late on another input is
// stale (its input stays open).
func TestAlignerNewerBarrierAbandonsTheOlderAlignment(t *testing.T) {
	at := newAlignTest(t, 3, ExactlyOnce)
	at.barrier(0, 1, 0, want{blocked: []int{0}})
	at.barrier(1, 1, 1, want{blocked: []int{0, 1}})
	// Input 2 skipped checkpoint 1 (its upstream gave it up).
	at.barrier(2, 2, 2, want{declined: []int64{1}, blocked: []int{2}})
	at.barrier(0, 2, 3, want{blocked: []int{0, 2}})
	at.barrier(1, 2, 4, want{snapshot: 2})
}

// Barrier n+1 arrives on input 1 before barrier n on input 0: n+1 is
// aligned, n arriving afterwards is stale and declined, and n+1
// completes when it comes on input 0 too.
func TestAlignerNewerBarrierBeforeTheOlderOnAnotherInput(t *testing.T) {
	at := newAlignTest(t, 2, ExactlyOnce)
	at.barrier(1, 2, 0, want{blocked: []int{1}})
	at.barrier(0, 1, 1, want{declined: []int64{1}, blocked: []int{1}})
	at.barrier(0, 2, 2, want{snapshot: 2})
	at.barrier(0, 3, 3, want{blocked: []int{0}})
}

// An abort the coordinator announces ends the alignment of that
// checkpoint (no input stays blocked for it), and its barriers arriving
// later are dropped without a decline; an abort of a newer checkpoint
// also ends the alignment of an older one, which is declined.
func TestAlignerAbortUnblocks(t *testing.T) {
	at := newAlignTest(t, 2, ExactlyOnce)
	at.barrier(0, 3, 0, want{blocked: []int{0}})
	at.aborted(3, want{})
	at.barrier(1, 3, 1, want{})
	at.barrier(1, 4, 2, want{blocked: []int{1}})
	at.aborted(5, want{declined: []int64{4}})
	at.barrier(0, 4, 3, want{}) // declined already
	// An abort announced before any barrier of it arrived: its barriers
	// are dropped, the inputs stay open.
	at.aborted(6, want{})
	at.barrier(0, 6, 4, want{})
	at.barrier(1, 6, 4, want{})
	at.barrier(0, 7, 5, want{blocked: []int{0}})
	at.aborted(2, want{blocked: []int{0}}) // old news
	at.barrier(1, 7, 6, want{snapshot: 7})
}

// A stale barrier of a checkpoint older than an announced abort (the
// coordinator only announces the newest aborted id) is declined, so the
// coordinator need not wait for its timeout.
func TestAlignerDeclinesStaleBarriersOfPendingCheckpoints(t *testing.T) {
	at := newAlignTest(t, 2, ExactlyOnce)
	at.aborted(5, want{})
	at.barrier(0, 4, 0, want{declined: []int64{4}})
	at.barrier(1, 4, 0, want{}) // once
}

// A barrier on an input that is blocked cannot come (a blocked input is
// not read): the aligner reports it as a broken protocol.
func TestAlignerRejectsABarrierOnABlockedInput(t *testing.T) {
	a := newAligner(2, ExactlyOnce)
	if _, err := a.onBarrier(0, barrier{id: 1}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.onBarrier(0, barrier{id: 1}, time.Time{}); err == nil || !strings.Contains(err.Error(), "twice on input 0") {
		t.Fatalf("second barrier 1 on input 0: %v", err)
	}
	if _, err := a.onBarrier(2, barrier{id: 1}, time.Time{}); err == nil {
		t.Fatal("a barrier on input 2 of 2 was accepted")
	}
}

// The step carries the barrier's kind (a stop with a savepoint).
func TestAlignerKeepsTheBarrier(t *testing.T) {
	a := newAligner(2, ExactlyOnce)
	b := barrier{id: 9, savepoint: true, stop: true}
	if _, err := a.onBarrier(1, b, time.Time{}); err != nil {
		t.Fatal(err)
	}
	step, err := a.onBarrier(0, b, time.Time{})
	if err != nil || !step.snapshot || step.barrier != b {
		t.Fatalf("step %+v, %v; want a snapshot of %+v", step, err, b)
	}
}

// AT_LEAST_ONCE blocks nothing: a checkpoint is snapshotted when its
// barrier came on every input, several may be counted at once, and
// older ones still counted then are declined.
func TestAlignerCountsInAtLeastOnceMode(t *testing.T) {
	at := newAlignTest(t, 2, AtLeastOnce)
	at.barrier(0, 1, 0, want{})
	at.barrier(0, 2, 1, want{})
	at.barrier(1, 1, 2, want{snapshot: 1})
	at.barrier(1, 2, 3, want{snapshot: 2})
	// Input 1 skipped 3: when 4 came on both, 3 is declined.
	at.barrier(0, 3, 4, want{})
	at.barrier(0, 4, 5, want{})
	at.barrier(1, 4, 6, want{snapshot: 4, declined: []int64{3}})
	at.barrier(1, 3, 7, want{}) // stale, declined already
	// An announced abort drops what is counted for it and before it.
	at.barrier(0, 5, 8, want{})
	at.barrier(0, 6, 8, want{})
	at.barrier(0, 7, 8, want{})
	at.aborted(6, want{declined: []int64{5}})
	at.barrier(1, 6, 9, want{})
	at.barrier(1, 7, 9, want{snapshot: 7})
	if len(at.a.counting) != 0 {
		t.Fatalf("still counting %v", at.a.counting)
	}
}

// The aligner costs no allocation per barrier in the steady state.
func TestAlignerDoesNotAllocate(t *testing.T) {
	for _, mode := range []CheckpointMode{ExactlyOnce, AtLeastOnce} {
		a := newAligner(2, mode)
		id := int64(0)
		allocs := testing.AllocsPerRun(100, func() {
			id++
			if _, err := a.onBarrier(0, barrier{id: id}, time.Time{}); err != nil {
				t.Fatal(err)
			}
			if step, err := a.onBarrier(1, barrier{id: id}, time.Time{}); err != nil || !step.snapshot {
				t.Fatalf("no snapshot of %d: %v", id, err)
			}
		})
		if allocs != 0 {
			t.Errorf("mode %d: %.1f allocations per checkpoint", mode, allocs)
		}
	}
}
