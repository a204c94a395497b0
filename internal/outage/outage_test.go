package outage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/outage/outagetest"
)

func newTracker(t *testing.T, tol time.Duration) (*Tracker, *outagetest.Clock, *bytes.Buffer) {
	t.Helper()
	clk := outagetest.NewClock()
	var logs bytes.Buffer
	tr, err := NewTracker(Options{Tolerance: tol, Now: clk.Now, After: clk.After,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return tr, clk, &logs
}

var dialErr = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}

func TestDoRidesOutAnOutageAndLogsOnce(t *testing.T) {
	tr, clk, logs := newTracker(t, 10*time.Second)
	calls := 0
	err := tr.Do(context.Background(), "listing topics", func(context.Context) error {
		calls++
		if calls < 12 {
			if calls == 5 {
				if st := tr.Status(); !st.Down || st.What != "listing topics" || !strings.Contains(st.LastError, "refused") {
					t.Errorf("status during the outage: %+v", st)
				}
			}
			return fmt.Errorf("unable to dial: %w", dialErr)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if calls != 12 {
		t.Fatalf("%d calls, want 12", calls)
	}
	if st := tr.Status(); st.Down {
		t.Fatalf("still down after a success: %+v", st)
	}
	if n := strings.Count(logs.String(), "does not answer"); n != 1 {
		t.Fatalf("outage start logged %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs.String(), "answers again"); n != 1 {
		t.Fatalf("outage end logged %d times, want once:\n%s", n, logs)
	}
	if clk.Now().Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) >= 10*time.Second {
		t.Fatalf("the retries took %s of fake time, past the tolerance", clk.Now())
	}
}

func TestDoGivesUpPastTheTolerance(t *testing.T) {
	tr, clk, _ := newTracker(t, 5*time.Second)
	start := clk.Now()
	err := tr.Do(context.Background(), "fencing x", func(context.Context) error { return kerr.NotCoordinator })
	var oe *Error
	if !errors.As(err, &oe) || !errors.Is(err, kerr.NotCoordinator) {
		t.Fatalf("err = %v, want an *Error wrapping NOT_COORDINATOR", err)
	}
	if oe.For < 5*time.Second || clk.Now().Sub(start) > 7*time.Second {
		t.Fatalf("gave up after %s (clock moved %s), want just past 5s", oe.For, clk.Now().Sub(start))
	}
	if !strings.Contains(err.Error(), "kafka.outage_tolerance") || !strings.Contains(err.Error(), "fencing x") {
		t.Fatalf("error does not name the call and the key: %v", err)
	}
}

// The bound is the outage's, not each call's: a call that starts failing
// late in an outage does not wait a whole tolerance more.
func TestTheBoundIsPerOutage(t *testing.T) {
	tr, clk, _ := newTracker(t, 10*time.Second)
	if err := tr.Failed("fetch", dialErr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(8 * time.Second)
	begin := clk.Now()
	err := tr.Do(context.Background(), "commit", func(context.Context) error { return dialErr })
	if err == nil {
		t.Fatal("Do succeeded")
	}
	if waited := clk.Now().Sub(begin); waited > 3*time.Second {
		t.Fatalf("the late call waited %s; the outage had 2s of tolerance left", waited)
	}
	// A success ends the outage; the next one starts a new bound.
	tr.Succeeded()
	if err := tr.Failed("fetch", dialErr, time.Time{}); err != nil {
		t.Fatalf("a new outage failed at once: %v", err)
	}
}

func TestNeverRetried(t *testing.T) {
	for _, e := range []error{kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.TransactionalIDNotFound,
		kerr.InvalidProducerIDMapping, kerr.OffsetOutOfRange, kerr.InvalidTxnState, kgo.ErrClientClosed,
		context.Canceled, errors.New("some bug")} {
		tr, _, logs := newTracker(t, time.Minute)
		calls := 0
		err := tr.Do(context.Background(), "x", func(context.Context) error { calls++; return fmt.Errorf("wrapped: %w", e) })
		if calls != 1 || !errors.Is(err, e) {
			t.Errorf("%v: %d calls, err %v; want one call and the error back", e, calls, err)
		}
		if logs.Len() != 0 {
			t.Errorf("%v: logged an outage: %s", e, logs)
		}
	}
}

func TestRetriable(t *testing.T) {
	for _, e := range []error{dialErr, kerr.NotCoordinator, kerr.CoordinatorLoadInProgress, kerr.ConcurrentTransactions,
		kerr.NotLeaderForPartition, kerr.NotEnoughReplicas, kerr.LeaderNotAvailable, context.DeadlineExceeded,
		fmt.Errorf("x: %w", dialErr)} {
		if !Retriable(e) {
			t.Errorf("Retriable(%v) = false", e)
		}
	}
}

func TestDoStopsWithTheContext(t *testing.T) {
	tr, _, _ := newTracker(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := tr.Do(ctx, "x", func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return dialErr
	})
	if !errors.Is(err, dialErr) && !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if calls != 3 {
		t.Fatalf("%d calls after the cancel", calls)
	}
}

// Permanent turns a retriable-looking error into one Do returns at once,
// while errors.Is still finds the code.
func TestPermanentIsNeverRetried(t *testing.T) {
	tr, _, logs := newTracker(t, time.Minute)
	calls := 0
	missing := Permanent(fmt.Errorf("topic nope: %w", kerr.UnknownTopicOrPartition))
	err := tr.Do(context.Background(), "listing topics", func(context.Context) error {
		calls++
		return fmt.Errorf("kafka source: %w", missing)
	})
	if calls != 1 || !errors.Is(err, kerr.UnknownTopicOrPartition) || err.Error() != "kafka source: topic nope: UNKNOWN_TOPIC_OR_PARTITION: "+kerr.UnknownTopicOrPartition.Description {
		t.Fatalf("%d calls, err %v; want one call and the error as it was", calls, err)
	}
	if !Retriable(kerr.UnknownTopicOrPartition) || Retriable(missing) || Permanent(nil) != nil {
		t.Fatal("Permanent does not mark exactly what it wraps")
	}
	if logs.Len() != 0 {
		t.Fatalf("logged an outage: %s", logs)
	}
}

// Status counts the outages begun, for a metric; Now is the Tracker's
// clock.
func TestStatusCountsOutages(t *testing.T) {
	tr, clk, _ := newTracker(t, time.Minute)
	if st := tr.Status(); st.Down || st.Outages != 0 || st.Tolerance != time.Minute {
		t.Fatalf("fresh tracker: %+v", st)
	}
	for i := 1; i <= 2; i++ {
		begin := tr.Now()
		if !begin.Equal(clk.Now()) {
			t.Fatalf("Now %v, clock %v", begin, clk.Now())
		}
		for range 3 {
			if err := tr.Failed("fetch", dialErr, time.Time{}); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
		}
		if st := tr.Status(); !st.Down || st.Outages != int64(i) || st.For != 3*time.Second || !st.Since.Equal(begin) {
			t.Fatalf("during outage %d: %+v", i, st)
		}
		tr.Succeeded()
		if st := tr.Status(); st.Down || st.Outages != int64(i) || st.LastError != "" {
			t.Fatalf("after outage %d: %+v", i, st)
		}
	}
}

// A call that gave up ends the outage's bound; the next bound starts with
// the first call that begins to fail after it. The next job attempt's
// calls thus wait a whole tolerance again rather than failing at once
// (which would spend the restart strategy's attempts in as many restart
// delays), however long the failed attempt took to stop; calls of the
// failed attempt give up at once. The status still reports one outage
// from its start.
func TestGivingUpStartsTheNextBound(t *testing.T) {
	tr, clk, logs := newTracker(t, 10*time.Second)
	start := clk.Now()
	err := tr.Do(context.Background(), "attempt 1: listing topics", func(context.Context) error { return dialErr })
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("attempt 1: %v, want an *Error", err)
	}
	// Attempt 1 takes 4s to stop; a call of it that has been failing
	// since before gives up at once and starts no bound.
	clk.Advance(4 * time.Second)
	if err := tr.Failed("attempt 1: fetch", dialErr, start.Add(time.Second)); !errors.As(err, &oe) {
		t.Fatalf("a call of the failed attempt: %v, want an *Error", err)
	}
	clk.Advance(time.Second) // the restart delay
	calls := 0
	err = tr.Do(context.Background(), "attempt 2: listing topics", func(context.Context) error {
		calls++
		if clk.Now().Sub(start) < 22*time.Second {
			return dialErr
		}
		return nil
	})
	if err != nil {
		t.Fatalf("attempt 2, with the cluster back 7s into it: %v", err)
	}
	if calls < 2 {
		t.Fatalf("attempt 2 made %d calls", calls)
	}
	if n, m := strings.Count(logs.String(), "does not answer"), strings.Count(logs.String(), "answers again"); n != 1 || m != 1 {
		t.Fatalf("one outage logged %d times at its start and %d at its end:\n%s", n, m, logs)
	}
	if st := tr.Status(); st.Down || st.Outages != 1 {
		t.Fatalf("status: %+v", st)
	}

	// Within one bound, a late call still gets only what is left; after a
	// give-up, a call with no run of its own (callStart zero) starts the
	// next bound; the error says how long the outage has lasted.
	if err := tr.Failed("fetch", dialErr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(9 * time.Second)
	if st := tr.Status(); st.Since.IsZero() || st.For != 9*time.Second {
		t.Fatalf("status: %+v", st)
	}
	if err := tr.Failed("commit", dialErr, time.Time{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := tr.Failed("commit", dialErr, time.Time{}); !errors.As(err, &oe) || oe.For != 10*time.Second {
		t.Fatalf("10s into the outage: %v, want an *Error", err)
	}
	clk.Advance(2 * time.Second)
	if err := tr.Failed("fetch", dialErr, time.Time{}); err != nil {
		t.Fatalf("the first call after the give-up: %v", err)
	}
	if st := tr.Status(); st.For != 12*time.Second || st.Outages != 2 {
		t.Fatalf("the status counts from the outage's start: %+v", st)
	}
	clk.Advance(10 * time.Second)
	if err := tr.Failed("fetch", dialErr, time.Time{}); !errors.As(err, &oe) || oe.For != 22*time.Second ||
		!strings.Contains(err.Error(), "unreachable for 22s, beyond kafka.outage_tolerance 10s") {
		t.Fatalf("at the end of the next bound: %v, want an *Error saying the outage has lasted 22s", err)
	}
}

func TestClientBackoffGrowsToItsBound(t *testing.T) {
	for range 200 {
		for fails := 0; fails <= 40; fails++ {
			d := ClientBackoff(fails)
			lo := 80 * time.Millisecond
			if fails >= 5 {
				lo = 800 * time.Millisecond // 100ms doubled 4 times is 1.6s, over the bound
			}
			if d < lo || d > ClientBackoffMax {
				t.Fatalf("ClientBackoff(%d) = %s, want within [%s, %s]", fails, d, lo, ClientBackoffMax)
			}
		}
		if d := ClientBackoff(1); d > 120*time.Millisecond {
			t.Fatalf("ClientBackoff(1) = %s, want 100ms ±20%%", d)
		}
	}
}
