package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These run on kfake for speed; the exactly-once proof runs on a real
// broker in the integration tests.

func fake(t *testing.T, partitions int32, topics ...string) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

func produce(t *testing.T, ctx context.Context, client []kgo.Opt, topic string, n, from int) {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := from; i < from+n; i++ {
		v := fmt.Sprintf("r%04d", i)
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// readN reads until n records came or nothing arrives for a second.
func readN(t *testing.T, ctx context.Context, r *Reader, n int) []string {
	return readPatiently(t, ctx, r, n, 10)
}

func readPatiently(t *testing.T, ctx context.Context, r *Reader, n, idleRounds int) []string {
	t.Helper()
	var out []string
	idle := 0
	for len(out) < n && idle < idleRounds {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		rec, ok, err := r.Next(pctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			idle++
			continue
		}
		idle = 0
		out = append(out, string(rec.Value))
	}
	return out
}

func TestOwnersPartitionEveryPartitionOnce(t *testing.T) {
	for par := 1; par <= 5; par++ {
		counts := make([]int, par)
		for p := int32(0); p < 16; p++ {
			counts[Owner("words", p, par)]++
		}
		for s, c := range counts {
			if c < 16/par || c > 16/par+1 {
				t.Fatalf("parallelism %d: subtask %d owns %d of 16 partitions", par, s, c)
			}
		}
	}
}

// Two subtasks read four partitions; both snapshot in the middle and are
// restored from the union of their entries: together they read every
// record exactly once.
func TestRestoreResumesExactlyAtTheSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 4, "in")
	produce(t, ctx, client, "in", 200, 0)
	opts := ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartEarliest}
	var before []string
	var union [][]byte
	for sub := 0; sub < 2; sub++ {
		r, err := OpenReader(ctx, sub, 2, opts, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, readN(t, ctx, r, 30)...)
		st, err := r.SnapshotState(1)
		if err != nil {
			t.Fatal(err)
		}
		union = append(union, st...)
		// Records read after the snapshot are lost with the crash.
		readN(t, ctx, r, 10)
		r.Close()
	}
	produce(t, ctx, client, "in", 100, 200)
	var after []string
	for sub := 0; sub < 2; sub++ {
		r, err := OpenReader(ctx, sub, 2, opts, true, union)
		if err != nil {
			t.Fatal(err)
		}
		after = append(after, readN(t, ctx, r, 1000)...)
		r.Close()
	}
	all := append(before, after...)
	slices.Sort(all)
	if len(all) != 300 {
		t.Fatalf("read %d records, want 300", len(all))
	}
	for i, v := range all {
		if want := fmt.Sprintf("r%04d", i); v != want {
			t.Fatalf("record %d is %s, want %s (duplicate or loss)", i, v, want)
		}
	}
}

func TestStartLatestSkipsEarlierRecordsAndSnapshotsExactOffsets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 2, "in")
	produce(t, ctx, client, "in", 20, 0)
	opts := ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartLatest}
	r, err := OpenReader(ctx, 0, 1, opts, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Snapshot before any record: the positions are exact, so a restore
	// does not fall back to the log start.
	st, err := r.SnapshotState(1)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	produce(t, ctx, client, "in", 5, 20)
	r2, err := OpenReader(ctx, 0, 1, opts, true, st)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	got := readN(t, ctx, r2, 100)
	slices.Sort(got)
	if !slices.Equal(got, []string{"r0020", "r0021", "r0022", "r0023", "r0024"}) {
		t.Fatalf("got %v", got)
	}
}

func TestNewPartitionsAreDiscoveredAndReadFromTheirStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	now := time.Unix(0, 0)
	// kgo refreshes metadata at most every MetadataMinAge (5s by default).
	opts := ReaderOptions{ClientOpts: append(slices.Clone(client), kgo.MetadataMinAge(10*time.Millisecond)), Topics: []string{"in"}, Start: StartLatest, DiscoveryInterval: time.Minute,
		Now: func() time.Time { return now }}
	r, err := OpenReader(ctx, 0, 1, opts, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreatePartitions(ctx, 2, "in"); err != nil {
		t.Fatal(err)
	}
	// Written to the new partitions before the reader noticed them.
	for p := int32(1); p <= 2; p++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Partition: p, Value: []byte(fmt.Sprintf("p%d", p))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if got := readN(t, ctx, r, 1); len(got) != 0 {
		t.Fatalf("read %v before discovery was due", got)
	}
	now = now.Add(2 * time.Minute)
	// kgo starts fetching partitions it had no metadata for only after a
	// few seconds.
	got := readPatiently(t, ctx, r, 2, 150)
	slices.Sort(got)
	if !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("after discovery read %v, want [p1 p2]", got)
	}
}

func TestReadCommittedSkipsAbortedTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	tx, err := kgo.NewClient(append(slices.Clone(client), kgo.TransactionalID("t"), kgo.DefaultProduceTopic("in"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for _, commit := range []bool{false, true} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("commit=%v", commit))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := readN(t, ctx, r, 5); !slices.Equal(got, []string{"commit=true"}) {
		t.Fatalf("read %v, want only the committed record", got)
	}
}

func TestMissingTopicIsNamed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	_, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"nope"}}, false, nil)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v, want one naming topic nope", err)
	}
}

func TestMalformedCheckpointEntryIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	_, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}}, true, [][]byte{[]byte("{bad")})
	if err == nil || !strings.Contains(err.Error(), "entry 0") {
		t.Fatalf("err = %v", err)
	}
}

// The engine cancels Next's context to inject a barrier; a partition
// discovery that the cancellation cuts short must not fail the job, and
// is tried again on the next call.
func TestDiscoveryCutShortByABarrierIsNotAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// kadm answers from cached metadata younger than MetadataMinAge.
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(10 * time.Millisecond)}
	now := time.Unix(0, 0)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: time.Minute,
		Now: func() time.Time { return now }}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	now = now.Add(2 * time.Minute) // discovery is due
	time.Sleep(50 * time.Millisecond)

	// The barrier arrives while discovery's metadata request is in flight.
	barrier, inject := context.WithCancel(ctx)
	var armed atomic.Bool
	armed.Store(true)
	c.ControlKey(kmsg.Metadata.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		if armed.CompareAndSwap(true, false) {
			inject()
			time.Sleep(200 * time.Millisecond)
		}
		return nil, nil, false
	})
	if rec, ok, err := r.Next(barrier); err != nil || ok {
		t.Fatalf("Next cut short by a barrier = %v, %v, %v; want no record and no error", rec, ok, err)
	}
	if armed.Load() {
		t.Fatal("discovery sent no metadata request")
	}
	if !r.lastDiscovery.IsZero() {
		t.Fatalf("the cut-short discovery counts as done at %v; it must be tried again", r.lastDiscovery)
	}
	produce(t, ctx, client, "in", 1, 0)
	if got := readN(t, ctx, r, 1); !slices.Equal(got, []string{"r0000"}) {
		t.Fatalf("after the retried discovery read %v, want [r0000]", got)
	}
	if !r.lastDiscovery.Equal(now) {
		t.Fatalf("discovery not retried: last at %v, want %v", r.lastDiscovery, now)
	}
}

// A fetch error is not dropped when a barrier cuts the poll short, nor
// are the records of other partitions in the same poll: here the poll
// carries its own context's cancellation, OFFSET_OUT_OF_RANGE for in/0
// (which the client, having no reset offset, hands over instead of
// moving) and two records of in/1. Under fail take returns the refusal
// naming in/0; under earliest it moves in/0 to its log start, counts the
// jump and keeps in/1's records. The listing of in/0's range is not cut
// short by the cancelled context.
func TestFetchErrorOfAPollCutShortByABarrierSurfaces(t *testing.T) {
	for _, policy := range []OnOffsetOutOfRange{OutOfRangeFail, OutOfRangeEarliest} {
		t.Run(string(policy), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fake(t, 2, "in")
			r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1,
				OnOutOfRange: policy, Logger: slog.New(slog.DiscardHandler)}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			barrier, inject := context.WithCancel(ctx)
			inject()
			poll := append(fetchWith("", -1, context.Canceled), fetchWith("in", 0, kerr.OffsetOutOfRange)...)
			poll = append(poll, fetchWith("in", 1, nil, 0, 1)...)
			err = r.take(barrier, poll)
			if policy == OutOfRangeFail {
				if !isNonRecoverable(err) || !errors.Is(err, kerr.OffsetOutOfRange) || !strings.Contains(err.Error(), "in/0") {
					t.Fatalf("take of a poll cut short by a barrier: %v; want the non-recoverable refusal naming in/0", err)
				}
				return
			}
			if err != nil || len(r.buf) != 2 || r.buf[0].Partition != 1 || r.OffsetResets() != 1 || r.next[Partition{"in", 0}] != 0 {
				t.Fatalf("take under earliest: err %v, %d records buffered, %d resets, in/0 at %d; want no error, in/1's 2 records, 1 reset, in/0 at 0",
					err, len(r.buf), r.OffsetResets(), r.next[Partition{"in", 0}])
			}
		})
	}
}

// RecordsRead is published in runs, not per record, but it never runs
// ahead of Next, and once the reader waits for more records it counts
// every one Next returned (control records of a transaction excepted).
func TestRecordsReadIsExactWhileTheReaderWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 4, "in")
	produce(t, ctx, client, "in", 150, 0)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartEarliest}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := int64(1); n <= 150; n++ {
		if _, ok, err := r.Next(ctx); !ok || err != nil {
			t.Fatalf("record %d: ok %t, err %v", n, ok, err)
		}
		if got := r.RecordsRead(); got > n {
			t.Fatalf("RecordsRead %d after %d records", got, n)
		}
	}
	// The next Next polls, and waits, for records that do not come.
	pctx, pcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer pcancel()
	if _, ok, err := r.Next(pctx); ok || err != nil {
		t.Fatalf("Next past the end: ok %t, err %v", ok, err)
	}
	if got := r.RecordsRead(); got != 150 {
		t.Fatalf("RecordsRead %d while waiting, want 150", got)
	}
}
