package engine

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/onceflow/onceflow/state"
)

// Timers of keyed process functions. They are keyed state (state.Timers of
// the subtask's backend): checkpointed, restored and rescaled with the
// key's group. Every call below runs on the subtask's goroutine, between
// records, so OnTimer never runs at the same time as Process.
//
//   - Event-time timers fire when the subtask's watermark reaches them
//     (onWatermark, before the watermark is forwarded, so what OnTimer
//     emits precedes it downstream), in (time, key group, key) order. What
//     OnTimer emits carries the timer's time as its timestamp.
//   - Processing-time timers fire once the job's ProcessingClock is past
//     them (a timer at t when the clock reads t+1 or later, as Flink's
//     fire one millisecond late): the input loop waits on a
//     ProcessingClock.After armed for the earliest one (re-armed when an
//     earlier one is registered, and after each firing for the next), and
//     fires them before it reads its next input once that wake-up was
//     delivered. Why past: a function that reads the clock to pick a
//     timer, as a processing-time window does with its last millisecond,
//     would otherwise see a record arrive in the millisecond its timer
//     already fired in, register the same timer again, and fire twice.
//     What OnTimer emits carries NoTimestamp, as in Flink.

// hasTimers reports whether the subtask's function receives timers.
func (st *subtask) hasTimers() bool {
	return st.backend != nil && st.op != nil && st.op.onTimer != nil
}

// registerTimer adds a timer of domain d at ts for the current key.
func (st *subtask) registerTimer(d state.TimeDomain, ts int64) error {
	if !st.hasTimers() {
		what := "an event-time timer"
		if d == state.ProcessingTime {
			what = "a processing-time timer"
		}
		return fmt.Errorf("engine: operator %s registers %s, but its function has no OnTimer method (KeyedTimerFunction) to receive it", st.n.uid, what)
	}
	if err := st.backend.RegisterTimer(d, ts); err != nil {
		return err
	}
	if d == state.ProcessingTime {
		st.armProcessingTime(ts)
	}
	return nil
}

// deleteTimer removes the current key's timer of domain d at ts.
func (st *subtask) deleteTimer(d state.TimeDomain, ts int64) error {
	if st.backend == nil {
		return fmt.Errorf("engine: operator %s is not keyed: it has no timers", st.n.uid)
	}
	return st.backend.DeleteTimer(d, ts)
}

// fireTimers calls OnTimer for every timer of domain d at or before upTo.
func (st *subtask) fireTimers(ctx context.Context, d state.TimeDomain, upTo int64) error {
	if !st.hasTimers() {
		return nil
	}
	defer func() { st.timerDomain = 0 }()
	out := st.outFunc()
	return st.backend.FireTimers(d, upTo, func(key []byte, ts int64) error {
		st.timerDomain = d
		st.ts, st.emitTS, st.emitCtx, st.emitErr = ts, ts, ctx, nil
		if d == state.ProcessingTime {
			st.emitTS = NoTimestamp
		}
		if err := st.op.onTimer(key, ts, out); err != nil {
			return fmt.Errorf("%s timer at %d: %w", d, ts, err)
		}
		return st.emitErr
	})
}

// armProcessingTime makes the input loop wake up once the clock is past
// ts (epoch ms) for the processing-time timers, unless it already wakes up
// no later.
func (st *subtask) armProcessingTime(ts int64) {
	if st.ptC != nil && st.ptAt <= ts {
		return
	}
	clock := st.j.opts.ProcessingClock
	past := ts
	if past < math.MaxInt64 { // a timer at the end of time stays far away
		past++
	}
	st.ptAt, st.ptC = ts, clock.After(time.UnixMilli(past).Sub(clock.Now()))
}

// onProcessingTime fires the processing-time timers the clock is past and
// arms the wake-up for the next one.
func (st *subtask) onProcessingTime(ctx context.Context) error {
	st.ptC = nil
	if err := st.fireTimers(ctx, state.ProcessingTime, st.j.opts.ProcessingClock.Now().UnixMilli()-1); err != nil {
		return err
	}
	return st.armNextProcessingTime()
}

// armNextProcessingTime arms the wake-up for the earliest processing-time
// timer in state (at open, for restored timers, and after a firing).
func (st *subtask) armNextProcessingTime() error {
	if !st.hasTimers() {
		return nil
	}
	next, ok, err := st.backend.NextTimer(state.ProcessingTime)
	if err != nil {
		return err
	}
	if ok {
		st.armProcessingTime(next)
	}
	return nil
}
