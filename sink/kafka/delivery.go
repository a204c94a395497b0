package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// deliveryGuard is the sink's record delivery timeout (Kafka's
// delivery.timeout.ms): records that wait the outage tolerance without
// reaching the cluster fail, and with them the transaction or the
// at_least_once barrier. kgo fails them only where it deems that safe:
// records of a partition that answers every produce with a retriable
// error (NOT_LEADER_FOR_PARTITION on kfake) kept waiting, as they did
// with kgo's own timeout, until the checkpoint timed out.
//
// Why not kgo.RecordDeliveryTimeout: kgo times a batch from its first
// record's Timestamp, which is the job's to choose. A copy keeps the
// input's timestamps and a replay carries old ones, and kgo failed such
// records before sending them ("records have timed out before they were
// able to be produced"). The guard times from the client's progress
// instead: while records are buffered and none of them completes for the
// tolerance, it cancels the context they were produced with. kgo fails
// records of a cancelled context where it would fail timed-out ones,
// before writing a request or after a response (never where failing could
// break the sequence numbers), and wakes a Produce blocked on a full
// buffer. The failure names the tolerance and wraps kgo.ErrRecordTimeout.
//
// A guard serves one client; between start and stop it gives that
// client's produce calls their context (produceCtx), which derives from
// the first caller's, and their promise (promise), which notes that a
// record completed, keeps the first failure (failed) and recycles the
// record. The check runs on a timer every probeEvery of the
// tolerance, owned by the guard and stopped by stop; tests call check
// themselves with a clock of their own.
type deliveryGuard struct {
	tolerance time.Duration
	every     time.Duration
	now       func() time.Time
	afterFunc func(time.Duration, func()) *time.Timer // nil: no timer (tests)

	// progressed says a record's produce completed since the last check
	// (a flag, not a count: an atomic load per record, and a store once
	// per check, where an add per record was a measurable part of a
	// copy's CPU).
	progressed atomic.Bool
	// promise is produced, bound once: one function for every record.
	promise func(*kgo.Record, error)

	// ctx is read without mu only on the producing goroutine, which is
	// the only one to set it (under mu).
	mu       sync.Mutex
	buffered func() int64 // the client's buffered records; nil when stopped
	ctx      context.Context
	cancel   context.CancelCauseFunc
	timer    *time.Timer
	stalled  time.Time // since when nothing completed with records buffered
	first    error     // the first failed produce since start
}

// newDeliveryGuard returns a stopped guard of the tolerance.
func newDeliveryGuard(tolerance time.Duration) *deliveryGuard {
	g := &deliveryGuard{tolerance: tolerance, every: probeEvery(tolerance), now: time.Now, afterFunc: time.AfterFunc}
	g.promise = g.produced
	return g
}

// start guards a client's records from now on: buffered reports how many
// it holds. It forgets the failure of the records before.
func (g *deliveryGuard) start(buffered func() int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buffered, g.ctx, g.cancel, g.stalled, g.first = buffered, nil, nil, time.Time{}, nil
	g.progressed.Store(false)
	if g.afterFunc != nil && g.timer == nil {
		g.timer = g.afterFunc(g.every, g.tick)
	}
}

// stop ends the guard's watch: the timer stops and the produce context is
// cancelled, for records still buffered (an aborted transaction's) not to
// wait on it.
func (g *deliveryGuard) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buffered = nil
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if g.cancel != nil {
		g.cancel(errGuardStopped)
	}
}

var errGuardStopped = errors.New("kafka sink: the transaction ended")

// produceCtx is the context to produce with: on the first call after
// start, one derived from parent that check cancels on a stall.
func (g *deliveryGuard) produceCtx(parent context.Context) context.Context {
	if g.ctx != nil {
		return g.ctx
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ctx, g.cancel = context.WithCancelCause(parent)
	if g.buffered == nil { // stopped: nothing guards these records
		g.cancel(errGuardStopped)
	}
	return g.ctx
}

// produced is the promise of every record produced with the guard's
// context: it notes the progress, keeps the first failure
// ("producing to topic/partition: ...", a failure through the produce
// context as the guard's cause) and recycles the record, which gives a
// record fetched into pooled memory (sourcekafka.ReaderOptions.PoolBytes)
// back to its pool and does nothing to any other.
func (g *deliveryGuard) produced(r *kgo.Record, err error) {
	if !g.progressed.Load() {
		g.progressed.Store(true)
	}
	if err != nil {
		err = g.failure(err)
		g.mu.Lock()
		if g.first == nil {
			g.first = fmt.Errorf("producing to %s/%d: %w", r.Topic, r.Partition, err)
		}
		g.mu.Unlock()
	}
	r.Recycle()
}

// failed returns the first failed produce since start, or nil.
func (g *deliveryGuard) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.first
}

// failure turns the error of a record failed through its produce context
// into the guard's cause; any other error is returned as it is.
func (g *deliveryGuard) failure(err error) error {
	if !errors.Is(err, context.Canceled) {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctx != nil {
		if cause := context.Cause(g.ctx); cause != nil && cause != context.Canceled {
			return cause
		}
	}
	return err
}

func (g *deliveryGuard) tick() {
	g.check()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		g.timer.Reset(g.every)
	}
}

// check cancels the produce context once records were buffered and none
// completed for the tolerance. It reports whether it did.
func (g *deliveryGuard) check() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.buffered == nil {
		return false
	}
	now, moved := g.now(), g.progressed.Swap(false)
	n := g.buffered()
	switch {
	case moved || n == 0:
		g.stalled = time.Time{}
	case g.stalled.IsZero():
		g.stalled = now
	case now.Sub(g.stalled) >= g.tolerance && g.cancel != nil && g.ctx.Err() == nil:
		g.cancel(fmt.Errorf("no record was acknowledged for %s (the outage tolerance) with %d buffered: %w",
			now.Sub(g.stalled).Round(time.Millisecond), n, kgo.ErrRecordTimeout))
		return true
	}
	return false
}
