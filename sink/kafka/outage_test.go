package kafka

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/twophase"
)

// flakyCluster is a kfake cluster that can go away and come back on the
// same port with the same data, like a broker restarting: kfake persists
// its state (open transactions included) to a directory on Close and
// reloads it on start.
type flakyCluster struct {
	t    *testing.T
	dir  string
	port int

	mu sync.Mutex
	c  *kfake.Cluster
	wg sync.WaitGroup // the goroutines bringing it back
}

func newFlakyCluster(t *testing.T) *flakyCluster {
	t.Helper()
	f := &flakyCluster{t: t, dir: filepath.Join(t.TempDir(), "kfake")}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic), kfake.DataDir(f.dir))
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	f.port, _ = strconv.Atoi(port)
	f.c = c
	t.Cleanup(func() {
		f.wg.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.c != nil {
			f.c.Close()
		}
	})
	return f
}

func (f *flakyCluster) client() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers("127.0.0.1:" + strconv.Itoa(f.port))}
}

// down stops the broker: connections are refused until up.
func (f *flakyCluster) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c != nil {
		f.c.Close()
		f.c = nil
	}
}

// up starts the broker again on its port, with its data.
func (f *flakyCluster) up() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.c != nil {
		return
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(f.port), kfake.DataDir(f.dir))
	if err != nil {
		f.t.Errorf("restarting kfake on port %d: %v", f.port, err)
		return
	}
	f.c = c
}

// downFor stops the broker now and starts it again after d.
func (f *flakyCluster) downFor(d time.Duration) {
	f.down()
	f.wg.Go(func() {
		time.Sleep(d)
		f.up()
	})
}

// testTracker returns an outage tracker whose log lines go to logs (nil:
// discarded).
func testTracker(t *testing.T, tolerance time.Duration, logs ...*bytes.Buffer) *outage.Tracker {
	t.Helper()
	out := &bytes.Buffer{}
	if len(logs) > 0 {
		out = logs[0]
	}
	tr, err := outage.NewTracker(outage.Options{Tolerance: tolerance, Logger: slog.New(slog.NewTextHandler(out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func outageSink(t *testing.T, ctx context.Context, client []kgo.Opt, tr *outage.Tracker) (*twophase.Sink[*kgo.Record, Txn], *Transactor, error) {
	t.Helper()
	x, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: "job", TransactionTimeout: time.Minute, Outage: tr})
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(x.Close)
	return twophase.New[*kgo.Record, Txn](x, state.JSONCodec[Txn]{}, twophase.Scope{Subtask: 0, Parallelism: 1},
		twophase.Options{RetryBackoff: time.Millisecond}), x, nil
}

// Every step of the exactly-once sink rides out a broker that goes away
// for a second: connecting (the transaction version probe), the restore's
// listing and fencing, beginning a transaction, producing and flushing,
// the commit (the own client's EndTxn fails, the raw one through the side
// client waits), and the recovery commit of another process. Each outage
// is logged once when it starts and once when it ends, and the output is
// exactly what was written.
func TestTransactorRidesOutABrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFlakyCluster(t)
	client := f.client()
	var logs bytes.Buffer
	tr := testTracker(t, 30*time.Second, &logs)
	outages := 0
	blip := func() { outages++; f.downFor(time.Second) }

	blip()
	s, _, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatalf("connecting while the broker restarts: %v", err)
	}
	blip()
	if err := s.Restore(ctx, nil); err != nil {
		t.Fatalf("restoring (listing and fencing) while the broker restarts: %v", err)
	}
	blip()
	produceAll(t, ctx, s, "a1") // begins the transaction
	produceAll(t, ctx, s, "a2")
	blip()
	produceAll(t, ctx, s, "a3")
	if _, err := s.SnapshotState(ctx, 1); err != nil {
		t.Fatalf("pre-committing while the broker restarts: %v", err)
	}
	blip()
	if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatalf("committing while the broker restarts: %v", err)
	}
	produceAll(t, ctx, s, "b1", "b2")
	entries, err := s.SnapshotState(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Another process recovers checkpoint 2 while the broker restarts.
	blip()
	s2, _, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Restore(ctx, entries); err != nil {
		t.Fatalf("the recovery commit while the broker restarts: %v", err)
	}
	if got, want := committedValues(t, ctx, client), []string{"a1", "a2", "a3", "b1", "b2"}; !slices.Equal(got, want) {
		t.Fatalf("read_committed saw %v, want %v", got, want)
	}
	started, ended := strings.Count(logs.String(), "does not answer"), strings.Count(logs.String(), "answers again")
	if started < 1 || started > outages || started != ended {
		t.Fatalf("%d outages logged as started and %d as ended, want as many of each, at most %d:\n%s", started, ended, outages, logs.String())
	}
}

// Past the tolerance an outage is an ordinary failure, returned within
// about the tolerance: an *outage.Error the restart strategy handles, not
// a lost transaction and not non-recoverable. This holds for the recovery
// commit, for beginning a transaction, and for the pre-commit's flush of
// records the broker never received.
func TestAnOutageBeyondTheToleranceIsAnOrdinaryFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const tolerance = 2 * time.Second
	within := func(t *testing.T, what string, start time.Time, err error) {
		t.Helper()
		var oe *outage.Error
		var lost *twophase.LostError
		var nr interface{ NonRecoverable() bool }
		switch {
		case !errors.As(err, &oe) && !errors.Is(err, kgo.ErrRecordTimeout):
			t.Fatalf("%s: err = %v, want an *outage.Error (or the records' delivery timeout, which is the tolerance)", what, err)
		case errors.As(err, &lost) || errors.Is(err, twophase.ErrTransactionLost):
			t.Fatalf("%s: an outage reported as a lost transaction: %v", what, err)
		case errors.As(err, &nr) && nr.NonRecoverable():
			t.Fatalf("%s: an outage reported as non-recoverable: %v", what, err)
		}
		// kgo times a record's delivery from its Timestamp, which it sets
		// at Produce truncated to the millisecond (and without a
		// monotonic reading): the records' delivery timeout, which is the
		// tolerance, can end up to that much before start+tolerance.
		if took := time.Since(start); took < tolerance-5*time.Millisecond || took > tolerance+5*time.Second {
			t.Fatalf("%s gave up after %s, want just past the tolerance %s", what, took, tolerance)
		}
	}

	t.Run("recovery commit", func(t *testing.T) {
		f := newFlakyCluster(t)
		s, x, err := outageSink(t, ctx, f.client(), testTracker(t, tolerance))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		produceAll(t, ctx, s, "x")
		entries, err := s.SnapshotState(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		s2, _, err := outageSink(t, ctx, f.client(), testTracker(t, tolerance))
		if err != nil {
			t.Fatal(err)
		}
		x.Close()
		start := time.Now()
		f.down()
		within(t, "the recovery commit", start, s2.Restore(ctx, entries))
	})
	t.Run("begin", func(t *testing.T) {
		f := newFlakyCluster(t)
		s, x, err := outageSink(t, ctx, f.client(), testTracker(t, tolerance))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		// The recovery left every slot's client ready; without them (as
		// after a failed transaction dropped its slot's) Begin creates
		// one and initialises its producer id, which meets the outage.
		for _, sl := range x.slots {
			x.drop(sl)
		}
		start := time.Now()
		f.down()
		within(t, "beginning a transaction", start, s.Write(ctx, &kgo.Record{Value: []byte("x")}))
	})
	t.Run("pre-commit", func(t *testing.T) {
		f := newFlakyCluster(t)
		s, _, err := outageSink(t, ctx, f.client(), testTracker(t, tolerance))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		produceAll(t, ctx, s, "x")
		start := time.Now()
		f.down()
		produceAll(t, ctx, s, "y", "z")
		_, err = s.SnapshotState(ctx, 1)
		within(t, "the pre-commit", start, err)
		// The attempt ends: closing aborts the open transaction, which
		// waits for nothing while the cluster is away (the restore's
		// fencing aborts it).
		produceAll(t, ctx, s, "w")
		start = time.Now()
		if err := s.Close(ctx); err != nil {
			t.Fatalf("closing while the cluster is away: %v", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("closing while the cluster is away took %s", took)
		}
	})
	t.Run("at-least-once flush", func(t *testing.T) {
		f := newFlakyCluster(t)
		w, err := NewWriter(DeliveryAtLeastOnce, topic, f.client(), testTracker(t, tolerance))
		if err != nil {
			t.Fatal(err)
		}
		defer w.cl.Close()
		if err := w.Write(ctx, &kgo.Record{Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		f.down()
		if err := w.Write(ctx, &kgo.Record{Value: []byte("y")}); err != nil {
			t.Fatal(err)
		}
		within(t, "the at_least_once flush", start, w.Flush(ctx))
	})
}

// A commit refused as fenced is reported at once as a lost transaction,
// never waited on as if the cluster were away.
func TestAFencedCommitIsNotRiddenOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	var logs bytes.Buffer
	tr := testTracker(t, time.Minute, &logs)
	s1, x1, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	produceAll(t, ctx, s1, "x")
	entries, err := s1.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	x1.Close()
	if err := fence(ctx, plainClient(t, client), tr, TransactionalID("job", 0, 0), time.Minute); err != nil {
		t.Fatal(err)
	}
	s2, _, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s2.Restore(ctx, entries)
	var lost *twophase.LostError
	if !errors.As(err, &lost) {
		t.Fatalf("restore = %v, want a lost transaction", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the fenced commit took %s to be reported", took)
	}
	if strings.Contains(logs.String(), "does not answer") {
		t.Fatalf("a fenced commit was taken for an outage:\n%s", logs.String())
	}
}

// The operator's listing and abort of open transactions ride out a broker
// restart too.
func TestListOpenTransactionsRidesOutABrokerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newFlakyCluster(t)
	cl := plainClient(t, f.client())
	f.downFor(time.Second)
	if _, err := ListOpenTransactions(ctx, cl, "job"); err != nil {
		t.Fatalf("listing while the broker restarts: %v", err)
	}
	f.downFor(time.Second)
	if _, err := AbortOpenTransactions(ctx, cl, "job", time.Minute); err != nil {
		t.Fatalf("aborting while the broker restarts: %v", err)
	}
}

func TestSinkIsTransactionalForExactlyOnceOnly(t *testing.T) {
	for d, want := range map[Delivery]bool{DeliveryExactlyOnce: true, DeliveryAtLeastOnce: false, DeliveryNone: false} {
		s, err := NewSink(SinkOptions{Delivery: d, Topic: topic, TransactionalIDPrefix: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if s.Transactional() != want {
			t.Errorf("%s: Transactional() = %v, want %v", d, !want, want)
		}
	}
}

// Coordinator errors (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
// CONCURRENT_TRANSACTIONS) on the recovery commit and on fencing are
// waited out, not failures.
func TestCoordinatorErrorsAreRiddenOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, client := fakeKafka(t)
	tr := testTracker(t, 30*time.Second)
	s1, x1, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	produceAll(t, ctx, s1, "x")
	entries, err := s1.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	x1.Close()

	var mu sync.Mutex
	injected := map[int16]int{}
	for _, key := range []kmsg.Key{kmsg.EndTxn, kmsg.InitProducerID} {
		codes := []int16{kerr.CoordinatorLoadInProgress.Code, kerr.NotCoordinator.Code, kerr.ConcurrentTransactions.Code}
		c.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			mu.Lock()
			defer mu.Unlock()
			n := injected[key.Int16()]
			if n >= len(codes) {
				return nil, nil, false
			}
			c.KeepControl()
			injected[key.Int16()]++
			resp := req.ResponseKind()
			switch r := resp.(type) {
			case *kmsg.EndTxnResponse:
				r.ErrorCode = codes[n]
			case *kmsg.InitProducerIDResponse:
				r.ErrorCode = codes[n]
			}
			return resp, nil, true
		})
	}
	s2, _, err := outageSink(t, ctx, client, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Restore(ctx, entries); err != nil {
		t.Fatalf("restore through coordinator errors: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if injected[kmsg.EndTxn.Int16()] != 3 || injected[kmsg.InitProducerID.Int16()] != 3 {
		t.Fatalf("injected %v coordinator errors, want 3 on EndTxn and 3 on InitProducerID", injected)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("read_committed saw %v, want [x]", got)
	}
}
