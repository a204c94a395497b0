package engine

import (
	"fmt"
	"time"
)

// aligner decides, barrier by barrier, when a subtask with several input
// channels snapshots, in the manner of Flink's CheckpointBarrierHandler:
// in EXACTLY_ONCE mode it aligns (an input that delivered barrier n is
// blocked until barrier n came on every input), in AT_LEAST_ONCE mode it
// only counts (nothing is blocked; the snapshot is taken when barrier n
// came on every input). It is a plain state machine driven by the
// subtask's goroutine: no locks, no goroutines, no clock of its own.
//
// Barriers are compared by id. On one channel ids only grow (a source
// emits its triggers in order and channels are FIFO), so:
//
//   - Barrier n on one input is only ever aligned with barrier n on the
//     others.
//   - A newer barrier m arriving while n is being aligned means an input
//     skipped n (an upstream subtask gave n up): n can never be aligned
//     here. As in Flink, n is abandoned — every input is unblocked and
//     the subtask declines n, so the coordinator aborts it at once
//     instead of waiting for its timeout — and alignment of m starts.
//   - A barrier older than the newest one this subtask snapshotted,
//     abandoned or started aligning, or not newer than the newest abort
//     the coordinator announced, is stale: it is dropped, its input stays
//     open, and the subtask declines it unless it already acked or
//     declined an id at least as high (the coordinator ignores a decline
//     of a checkpoint that is no longer pending).
//   - An abort announced by the coordinator (aborted) for the checkpoint
//     being aligned or a newer one ends the alignment and unblocks every
//     input; a checkpoint older than the announced one that was being
//     aligned is declined. So no input stays blocked for a checkpoint
//     that will not complete.
//
// In AT_LEAST_ONCE mode several checkpoints may be counted at once; when
// barrier m came on every input, every older one still counted is
// declined (some input skipped it).
type aligner struct {
	n     int
	exact bool

	// floor: barriers with an id <= floor are stale.
	floor int64
	// reported is the highest id this subtask snapshotted or declined;
	// announced the highest abort the coordinator announced. Neither
	// needs a decline.
	reported  int64
	announced int64

	// EXACTLY_ONCE: the barrier being aligned (cur.id == 0: none), which
	// inputs delivered it, how many, and when the first came.
	cur     barrier
	blocked []bool
	arrived int
	start   time.Time

	// AT_LEAST_ONCE: the checkpoints being counted, oldest first.
	counting []countedBarrier

	// step is reused by every call: a barrier costs no allocation.
	step alignStep
}

type countedBarrier struct {
	b barrier
	n int
}

// alignStep says what the subtask does after a barrier or an abort.
type alignStep struct {
	// snapshot: take the checkpoint of barrier and forward it.
	snapshot bool
	barrier  barrier
	// alignment is how long inputs were blocked for it (EXACTLY_ONCE).
	alignment time.Duration
	// declined lists checkpoints this subtask gives up; it tells the
	// coordinator, which aborts each one still pending.
	declined []declinedCheckpoint
}

type declinedCheckpoint struct {
	id     int64
	reason string
}

func newAligner(inputs int, mode CheckpointMode) *aligner {
	a := &aligner{n: inputs, exact: mode == ExactlyOnce}
	if a.exact {
		a.blocked = make([]bool, inputs)
	}
	return a
}

// isBlocked reports whether input i must not be read now.
func (a *aligner) isBlocked(i int) bool { return a.exact && a.blocked[i] }

// onBarrier handles barrier b from input in, received at now. The step
// it returns is valid until the next call; afterwards the caller reads
// isBlocked for every input. An error is a broken channel protocol (a
// barrier on a blocked input) and fails the attempt.
func (a *aligner) onBarrier(in int, b barrier, now time.Time) (*alignStep, error) {
	a.step = alignStep{declined: a.step.declined[:0]}
	if in < 0 || in >= a.n {
		return nil, fmt.Errorf("barrier %d on input %d of %d", b.id, in, a.n)
	}
	if b.id <= a.floor {
		a.decline(b.id, "its barrier arrived after the checkpoint was given up here")
		return &a.step, nil
	}
	if !a.exact {
		return a.count(b), nil
	}
	switch {
	case a.cur.id == b.id:
		if a.blocked[in] {
			return nil, fmt.Errorf("barrier %d arrived twice on input %d", b.id, in)
		}
	case a.cur.id != 0: // b is newer: the input skipped cur
		a.decline(a.cur.id, fmt.Sprintf("barrier %d arrived on input %d before barrier %d came on every input", b.id, in, a.cur.id))
		a.release()
		fallthrough
	default:
		a.cur, a.start = b, now
		a.floor = b.id - 1
	}
	a.blocked[in] = true
	a.arrived++
	if a.arrived < a.n {
		return &a.step, nil
	}
	a.step.snapshot, a.step.barrier, a.step.alignment = true, a.cur, now.Sub(a.start)
	a.floor, a.reported = a.cur.id, a.cur.id
	a.release()
	return &a.step, nil
}

// count is onBarrier in AT_LEAST_ONCE mode.
func (a *aligner) count(b barrier) *alignStep {
	i := 0
	for i < len(a.counting) && a.counting[i].b.id < b.id {
		i++
	}
	if i == len(a.counting) || a.counting[i].b.id != b.id {
		a.counting = append(a.counting, countedBarrier{})
		copy(a.counting[i+1:], a.counting[i:])
		a.counting[i] = countedBarrier{b: b}
	}
	a.counting[i].n++
	if a.counting[i].n < a.n {
		return &a.step
	}
	for _, older := range a.counting[:i] {
		a.decline(older.b.id, fmt.Sprintf("barrier %d came on every input first", b.id))
	}
	a.counting = append(a.counting[:0], a.counting[i+1:]...)
	a.step.snapshot, a.step.barrier = true, b
	a.floor, a.reported = b.id, b.id
	return &a.step
}

// aborted handles the coordinator's announcement that checkpoint id (and
// possibly others before it) was aborted.
func (a *aligner) aborted(id int64) *alignStep {
	a.step = alignStep{declined: a.step.declined[:0]}
	a.announced = max(a.announced, id)
	if id <= a.floor {
		return &a.step
	}
	a.floor = id
	if a.exact {
		if a.cur.id != 0 && a.cur.id <= id {
			if a.cur.id < id {
				a.decline(a.cur.id, fmt.Sprintf("checkpoint %d was aborted while it was being aligned", id))
			}
			a.release()
		}
		return &a.step
	}
	kept := a.counting[:0]
	for _, c := range a.counting {
		switch {
		case c.b.id > id:
			kept = append(kept, c)
		case c.b.id < id:
			a.decline(c.b.id, fmt.Sprintf("checkpoint %d was aborted while it was being counted", id))
		}
	}
	a.counting = kept
	return &a.step
}

// decline records that the subtask gives up checkpoint id, once.
func (a *aligner) decline(id int64, reason string) {
	if id <= a.reported || id == a.announced {
		return
	}
	a.reported = id
	a.step.declined = append(a.step.declined, declinedCheckpoint{id: id, reason: reason})
}

// release ends the alignment in progress: every input is read again.
func (a *aligner) release() {
	clear(a.blocked)
	a.arrived, a.cur = 0, barrier{}
}
