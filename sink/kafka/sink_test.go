package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/twophase"
)

// seqSource is a bounded in-memory source: subtask i of p emits the
// values v<k> for k = i, i+p, ... below n, one every pause, and keeps its
// position as checkpointed state. The first reader of subtask 0 fails
// after failAfter records (0: never), once per source.
type seqSource struct {
	n, failAfter int
	pause        time.Duration
	failed       atomic.Bool
}

type seqPosition struct {
	Subtask int `json:"subtask"`
	Next    int `json:"next"`
}

func (s *seqSource) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[*kgo.Record], error) {
	r := &seqReader{s: s, sc: sc, next: sc.Subtask}
	for _, raw := range restored {
		var p seqPosition
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, err
		}
		if p.Subtask == sc.Subtask {
			r.next = p.Next
		}
	}
	return r, nil
}

func (s *seqSource) want() []string {
	out := make([]string, s.n)
	for k := range out {
		out[k] = fmt.Sprintf("v%04d", k)
	}
	return out
}

type seqReader struct {
	s       *seqSource
	sc      engine.Scope
	next    int
	emitted int
}

func (r *seqReader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	if r.next >= r.s.n {
		return nil, false, io.EOF
	}
	if r.s.failAfter > 0 && r.sc.Subtask == 0 && r.emitted == r.s.failAfter && r.s.failed.CompareAndSwap(false, true) {
		return nil, false, errors.New("injected failure")
	}
	select {
	case <-ctx.Done():
		return nil, false, nil
	case <-time.After(r.s.pause):
	}
	v := fmt.Sprintf("v%04d", r.next)
	r.next += r.sc.Parallelism
	r.emitted++
	return &kgo.Record{Key: []byte(v), Value: []byte(v)}, true, nil
}

func (r *seqReader) SnapshotState(int64) ([][]byte, error) {
	b, err := json.Marshal(seqPosition{Subtask: r.sc.Subtask, Next: r.next})
	return [][]byte{b}, err
}
func (r *seqReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *seqReader) Close() error                                          { return nil }

// A job writes through the sink while its first attempt fails half way:
// with exactly_once, read_committed readers see every record once, in both
// transaction versions; with at_least_once, none is missing. Stats is
// polled from another goroutine all along (run with -race).
func TestSinkInAJobThatFailsOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		delivery Delivery
		opts     []kfake.Opt
	}{
		{"exactly_once-tv2", DeliveryExactlyOnce, nil},
		{"exactly_once-tv1", DeliveryExactlyOnce, []kfake.Opt{kfake.MaxVersions(kversion.V3_9_0())}},
		{"at_least_once", DeliveryAtLeastOnce, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			client := fakeCluster(t, tc.opts...)
			sink, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, Delivery: tc.delivery,
				TransactionalIDPrefix: "job-" + tc.name, TransactionTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			src := &seqSource{n: 400, failAfter: 80, pause: 200 * time.Microsecond}
			j := engine.NewJob("sinkjob", engine.Options{Restart: engine.FixedDelay(3, 10*time.Millisecond),
				Checkpoint: engine.CheckpointOptions{Interval: 15 * time.Millisecond}})
			engine.SinkTo(engine.FromSource(j, "source", 2, src), "sink", 2, sink)

			var sawOpen atomic.Bool
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
					if st := sink.Stats(); st.OldestPending > 0 {
						sawOpen.Store(true)
					}
				}
			}()
			err = j.Run(ctx)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if j.Status().Restarts != 1 {
				t.Fatalf("%d restarts, want 1 (the injected failure)", j.Status().Restarts)
			}
			got := committedValues(t, ctx, client)
			want := src.want()
			switch tc.delivery {
			case DeliveryExactlyOnce:
				if !slices.Equal(got, want) {
					t.Fatalf("read_committed saw %d records, want exactly the %d inputs once each; first differences: %v", len(got), len(want), firstDiff(got, want))
				}
				if !sawOpen.Load() {
					t.Fatal("Stats never showed an uncommitted transaction while the job wrote")
				}
			default:
				if missing := slices.DeleteFunc(slices.Clone(want), func(v string) bool { _, ok := slices.BinarySearch(got, v); return ok }); len(missing) > 0 {
					t.Fatalf("at_least_once lost %d records, e.g. %v", len(missing), missing[:min(5, len(missing))])
				}
			}
			if st := sink.Stats(); st != (SinkStats{}) {
				t.Fatalf("stats after the job finished: %+v, want none pending", st)
			}
		})
	}
}

func firstDiff(got, want []string) []string {
	var out []string
	for _, v := range want {
		if _, ok := slices.BinarySearch(got, v); !ok {
			out = append(out, "missing "+v)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			out = append(out, "duplicate "+got[i])
		}
	}
	return out[:min(10, len(out))]
}

// The statistics follow one exactly_once writer through a checkpoint.
func TestSinkStatsFollowTheTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	sink, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, TransactionalIDPrefix: "stats", TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	w, err := sink.NewWriter(ctx, engine.Scope{Subtask: 0, Parallelism: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := sink.Stats(); st != (SinkStats{}) {
		t.Fatalf("stats of a writer with nothing written: %+v", st)
	}
	if err := w.Write(ctx, &kgo.Record{Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if st := sink.Stats(); st.PendingTransactions != 0 || st.OldestPending < 5*time.Millisecond {
		t.Fatalf("with a transaction open: %+v, want none pending and an age of at least 5ms", st)
	}
	if _, err := w.SnapshotState(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := sink.Stats(); st.PendingTransactions != 1 || st.OldestPending < 5*time.Millisecond {
		t.Fatalf("after the pre-commit: %+v, want one pending, at least 5ms old", st)
	}
	if err := w.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The commit runs on the writer's own goroutine; Drain waits for it.
	d, ok := w.(engine.Drainer)
	if !ok {
		t.Fatal("the exactly_once writer does not implement engine.Drainer")
	}
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if st := sink.Stats(); st != (SinkStats{}) {
		t.Fatalf("after the commit: %+v, want nothing pending", st)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("read_committed saw %v, want [a]", got)
	}
}

// A job that ran exactly_once and now runs at_least_once still commits
// the transactions its restored checkpoint holds.
func TestAnotherDeliveryCommitsTheRestoredTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	scope := engine.Scope{Subtask: 0, Parallelism: 1, Restored: true}
	eo, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, TransactionalIDPrefix: "switch", TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	w, err := eo.NewWriter(ctx, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, &kgo.Record{Value: []byte("pre-committed")}); err != nil {
		t.Fatal(err)
	}
	entries, err := w.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The process dies before the notification: nothing is visible.
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(t, ctx, client); len(got) != 0 {
		t.Fatalf("read_committed saw %v before the recovery", got)
	}

	alo, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, Delivery: DeliveryAtLeastOnce, TransactionalIDPrefix: "switch"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := alo.NewWriter(ctx, scope, entries)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close(ctx)
	if err := w2.Write(ctx, &kgo.Record{Value: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.SnapshotState(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"later", "pre-committed"}) {
		t.Fatalf("read_committed saw %v, want the recovered transaction and the later record", got)
	}

	noPrefix, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, Delivery: DeliveryNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noPrefix.NewWriter(ctx, scope, entries); err == nil {
		t.Fatal("a writer without the prefix accepted restored transactions it cannot commit")
	}
}

func TestNewSinkRefusesIncompleteOptions(t *testing.T) {
	if _, err := NewSink(SinkOptions{Topic: topic}); err == nil {
		t.Fatal("exactly_once without a transactional id prefix was accepted")
	}
	if _, err := NewSink(SinkOptions{Topic: topic, Delivery: "twice"}); err == nil {
		t.Fatal("an unknown delivery guarantee was accepted")
	}
}

// A process pre-commits checkpoint 1, opens the next transaction and dies
// before the notification. The next attempt's NewWriter commits checkpoint
// 1's transaction and aborts the open one before it returns.
func TestNewWriterCommitsTheRestoredCheckpointAndAbortsTheRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	sink, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, TransactionalIDPrefix: "crash", TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	scope := engine.Scope{Subtask: 0, Parallelism: 1}
	dead, err := sink.NewWriter(ctx, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Write(ctx, &kgo.Record{Value: []byte("checkpointed")}); err != nil {
		t.Fatal(err)
	}
	entries, err := dead.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Write(ctx, &kgo.Record{Value: []byte("after the barrier")}); err != nil {
		t.Fatal(err)
	}
	// Flush the open transaction's record to the broker, as a process
	// that died later would have. Its clients are closed only when the
	// test ends, without ending a transaction (a crash).
	defer dead.(*txnWriter).tr.Close()
	if err := dead.(*txnWriter).tr.slots[1].client.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cl := plainClient(t, client)
	if open, err := ListOpenTransactions(ctx, cl, "crash"); err != nil || len(open) != 2 {
		t.Fatalf("before the restore: open transactions %v (%v), want the pre-committed and the open one", open, err)
	}

	scope.Restored = true
	w, err := sink.NewWriter(ctx, scope, entries)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if open, err := ListOpenTransactions(ctx, cl, "crash"); err != nil || len(open) != 0 {
		t.Fatalf("after the restore: open transactions %v (%v), want none", open, err)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"checkpointed"}) {
		t.Fatalf("read_committed saw %v, want only the checkpointed record", got)
	}
}

// A stop's savepoint is restored after the broker forgot its transactional
// ids (the engine marks it committed, engine.Scope.RestoredCommitted):
// NewWriter commits nothing of it again, which the broker would refuse as
// a lost transaction, and the job writes on.
func TestNewWriterOfACommittedSavepointCommitsNothingAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	sink, err := NewSink(SinkOptions{ClientOpts: client, Topic: topic, TransactionalIDPrefix: "stop", TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	scope := engine.Scope{Subtask: 0, Parallelism: 1}
	w1, err := sink.NewWriter(ctx, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.Write(ctx, &kgo.Record{Value: []byte("before the stop")}); err != nil {
		t.Fatal(err)
	}
	savepoint, err := w1.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w1.NotifyCheckpointComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := w1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The id is reused by someone else meanwhile, as an expired id would
	// be forgotten: committing the savepoint's transaction again fails.
	if err := fence(ctx, plainClient(t, client), testTracker(t, time.Minute), TransactionalID("stop", 0, 0), time.Minute); err != nil {
		t.Fatal(err)
	}
	scope.Restored = true
	if _, err := sink.NewWriter(ctx, scope, savepoint); !errors.Is(err, twophase.ErrTransactionLost) {
		t.Fatalf("restoring without the committed mark: %v, want the refused commit reported as lost", err)
	}
	scope.RestoredCommitted = true
	w2, err := sink.NewWriter(ctx, scope, savepoint)
	if err != nil {
		t.Fatalf("restoring the committed savepoint: %v", err)
	}
	defer w2.Close(ctx)
	if err := w2.Write(ctx, &kgo.Record{Value: []byte("after the stop")}); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.SnapshotState(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := w2.NotifyCheckpointComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// The commit runs on the writer's own goroutine: read once it is done.
	if err := w2.(engine.Drainer).Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"after the stop", "before the stop"}) {
		t.Fatalf("read_committed saw %v; the log holds:\n%s", got, dumpLog(t, ctx, client))
	}
}

// dumpLog prints every record and marker of the test topic, for failure
// messages.
func dumpLog(t *testing.T, ctx context.Context, client []kgo.Opt) string {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())...)
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	var b strings.Builder
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(pctx)
		if pctx.Err() != nil {
			return b.String()
		}
		fs.EachRecord(func(r *kgo.Record) {
			fmt.Fprintf(&b, "p%d@%d pid=%d epoch=%d control=%t txn=%t key=%x value=%q\n", r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch,
				r.Attrs.IsControl(), r.Attrs.IsTransactional(), r.Key, r.Value)
		})
	}
}
