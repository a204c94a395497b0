// Package outage rides out a Kafka cluster that is briefly away: a broker
// restarting, a leader moving, a coordinator loading. Kafka's own clients
// retry such failures until delivery.timeout.ms, so a rolling restart costs
// a Flink or Kafka Streams job nothing; franz-go retries many of them too,
// but returns a failed dial of an admin request (metadata, topic listing,
// transaction listing) to the caller at once. A Tracker gives every Kafka
// interaction of one job the same bounded patience.
//
// The bound is per outage, not per call: an outage starts with the first
// retriable failure any call sees and ends with the next success of any
// call. A call gives up once the outage it is waiting in (or its own run of
// failures, whichever started first) has lasted the tolerance; the error it
// then returns is an ordinary failure, and the job's restart strategy
// decides what follows. Giving up ends the outage's bound: the next
// bound starts with the first call that begins to fail after it (a call
// of the job's next attempt), which waits a whole tolerance again, as a
// restarted Kafka client would, instead of failing at once and spending
// the restart strategy's attempts in as many restart delays. Calls that
// began to fail before (the failed attempt's, still stopping) give up at
// once.
// Errors that say a transaction or an offset can
// never succeed (a fenced producer, an invalid epoch, an unknown
// transaction, an offset out of range) are never retried here: Retriable
// is false for them, and they keep their callers' loud paths.
//
// The Tracker logs once when an outage starts and once when it ends, never
// once per call, and reports the outage (since when, the last error) for
// health checks and metrics. It is safe for concurrent use.
package outage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultTolerance is how long one outage may last before the calls
// waiting in it give up (kafka.outage_tolerance).
const DefaultTolerance = 60 * time.Second

// Options configure a Tracker. The zero value is usable.
type Options struct {
	// Tolerance is how long an outage may last before calls give up
	// (default DefaultTolerance).
	Tolerance time.Duration
	// Logger receives the start and end of each outage (nil:
	// slog.Default()).
	Logger *slog.Logger
	// Now and After are the clock (nil: the time package's); tests
	// substitute a fake one.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Backoff is the pause before retry n (n >= 1) within one call
	// (default: 50ms doubling up to 1s).
	Backoff func(n int) time.Duration
}

// Tracker is the outage state of one job's Kafka cluster.
type Tracker struct {
	opts Options
	// down mirrors !since.IsZero() for Succeeded's fast path: a call on
	// the record path costs one atomic load while the cluster answers.
	down atomic.Bool

	mu      sync.Mutex
	since   time.Time // start of the ongoing outage; zero when none
	bound   time.Time // start of the outage's current bound; zero after a call gave up
	gaveUp  time.Time // when a call last gave up in the ongoing outage
	what    string    // the call that saw it start
	last    error     // the latest retriable failure of the outage
	outages int64     // outages begun so far
}

// NewTracker returns a Tracker; it validates nothing it cannot default.
func NewTracker(opts Options) (*Tracker, error) {
	if opts.Tolerance < 0 {
		return nil, fmt.Errorf("outage: negative tolerance %s", opts.Tolerance)
	}
	if opts.Tolerance == 0 {
		opts.Tolerance = DefaultTolerance
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Backoff == nil {
		opts.Backoff = func(n int) time.Duration {
			d := 50 * time.Millisecond
			for i := 1; i < n && d < time.Second; i++ {
				d *= 2
			}
			return min(d, time.Second)
		}
	}
	return &Tracker{opts: opts}, nil
}

// Tolerance is the bound of one outage.
func (t *Tracker) Tolerance() time.Duration { return t.opts.Tolerance }

// Now is the Tracker's clock, for a caller of Failed that keeps the start
// of its own run of failures.
func (t *Tracker) Now() time.Time { return t.opts.Now() }

// Status says whether an outage is ongoing, since when, and the latest
// failure seen in it.
type Status struct {
	Down  bool
	Since time.Time
	// For is how long the outage has lasted so far.
	For       time.Duration
	What      string
	LastError string
	// Outages counts the outages begun since the Tracker was made, the
	// ongoing one included.
	Outages int64
	// Tolerance is the Tracker's: how long one outage is waited for.
	Tolerance time.Duration
}

// Status returns the current outage, if any, and the count of outages.
func (t *Tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.since.IsZero() {
		return Status{Outages: t.outages, Tolerance: t.opts.Tolerance}
	}
	s := Status{Down: true, Since: t.since, For: t.opts.Now().Sub(t.since), What: t.what, Outages: t.outages, Tolerance: t.opts.Tolerance}
	if t.last != nil {
		s.LastError = t.last.Error()
	}
	return s
}

// Error is returned by a call that waited in an outage for the whole
// tolerance. It is not marked non-recoverable: the restart strategy
// decides.
type Error struct {
	What      string
	For       time.Duration
	Tolerance time.Duration
	Err       error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: the Kafka cluster has been unreachable for %s, beyond kafka.outage_tolerance %s: %v",
		e.What, e.For.Round(time.Millisecond), e.Tolerance, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Succeeded records that a call reached the cluster: an ongoing outage
// ends (logged once, with its length).
func (t *Tracker) Succeeded() {
	if !t.down.Load() {
		return
	}
	t.mu.Lock()
	if t.since.IsZero() {
		t.mu.Unlock()
		return
	}
	since, what := t.since, t.what
	t.since, t.bound, t.gaveUp, t.what, t.last = time.Time{}, time.Time{}, time.Time{}, "", nil
	t.down.Store(false)
	now := t.opts.Now()
	t.mu.Unlock()
	t.opts.Logger.Info("the Kafka cluster answers again", "outage", now.Sub(since).Round(time.Millisecond), "first_failed", what)
}

// Failed records a retriable failure seen by a call that retries by
// itself (a fetch, a produce), started at callStart (its first failure in
// a row; zero means now). It returns nil while the outage is within the
// tolerance, and an *Error once it is not, which ends the outage's bound
// (see the package doc). Failed must only be given errors for which
// Retriable is true.
func (t *Tracker) Failed(what string, err error, callStart time.Time) error {
	now := t.opts.Now()
	t.mu.Lock()
	if t.since.IsZero() {
		t.since, t.bound, t.what = now, now, what
		t.outages++
		t.down.Store(true)
		t.mu.Unlock()
		t.opts.Logger.Warn("the Kafka cluster does not answer; waiting for it", "op", what, "tolerance", t.opts.Tolerance, "err", err)
		t.mu.Lock()
	}
	t.last = err
	first := callStart
	if first.IsZero() {
		first = now
	}
	if t.bound.IsZero() {
		// A call gave up. One that began to fail since starts the next
		// bound; one that began before gives up too.
		if first.Before(t.gaveUp) {
			return t.giveUpLocked(what, err, now)
		}
		t.bound = first
	}
	start := t.bound
	if first.Before(start) {
		start = first // the call's own run of failures began earlier
	}
	if now.Sub(start) < t.opts.Tolerance {
		t.mu.Unlock()
		return nil
	}
	return t.giveUpLocked(what, err, now)
}

// giveUpLocked ends the outage's bound and returns the error of a call
// that gave up; it unlocks t.mu.
func (t *Tracker) giveUpLocked(what string, err error, now time.Time) error {
	t.bound, t.gaveUp = time.Time{}, now
	d := now.Sub(t.since) // the error says how long the cluster has been away
	t.mu.Unlock()
	return &Error{What: what, For: d, Tolerance: t.opts.Tolerance, Err: err}
}

// Do calls fn until it returns nil or an error that is not Retriable,
// ctx ends, or the outage lasts the tolerance (an *Error wrapping the
// last failure). Each attempt gets ctx; what names the call in logs and
// errors.
func (t *Tracker) Do(ctx context.Context, what string, fn func(context.Context) error) error {
	var first time.Time
	for n := 1; ; n++ {
		err := fn(ctx)
		if err == nil {
			t.Succeeded()
			return nil
		}
		if ctx.Err() != nil || !Retriable(err) {
			return err
		}
		if first.IsZero() {
			first = t.opts.Now()
		}
		if oerr := t.Failed(what, err, first); oerr != nil {
			return oerr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (while the Kafka cluster was unreachable: %w)", what, ctx.Err(), err)
		case <-t.opts.After(t.opts.Backoff(n)):
		}
	}
}

// permanentError marks an error no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can fix even though what it
// wraps may look retriable (a topic that does not exist answers
// UNKNOWN_TOPIC_OR_PARTITION, a retriable code): Retriable is false for
// it and for every error wrapping it. errors.Is and errors.As still see
// err. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Retriable reports whether err says the cluster, or the part of it the
// call needed, was away for a while (a connection that failed or broke, a
// leader or coordinator moving or loading, too few in-sync replicas, a
// request that timed out), so that the same call may succeed later.
// Errors about the request itself, and those saying a producer, a
// transaction or an offset can never succeed, are not retriable.
func Retriable(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*permanentError](err); ok {
		return false
	}
	for _, never := range []error{
		kgo.ErrClientClosed, context.Canceled,
		kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.InvalidTxnState,
		kerr.InvalidProducerIDMapping, kerr.TransactionalIDNotFound, kerr.UnknownProducerID,
		kerr.TransactionalIDAuthorizationFailed, kerr.OffsetOutOfRange,
	} {
		if errors.Is(err, never) {
			return false
		}
	}
	if errors.Is(err, kerr.ConcurrentTransactions) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	if kgo.IsRetryableBrokerErr(err) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true // a dial, read or write on the connection failed
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
