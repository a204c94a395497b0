package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/onceflow/onceflow/state"
	"github.com/onceflow/onceflow/twophase"
)

// These tests run on kfake, franz-go's in-process broker. They check the
// Transactor's own logic quickly; the proof that the protocol holds on a
// real broker is in the integration tests.

const topic = "out"

func fakeCluster(t *testing.T, opts ...kfake.Opt) []kgo.Opt {
	t.Helper()
	_, client := fakeKafka(t, opts...)
	return client
}

// fakeKafka starts a one-broker kfake cluster with the output topic in 2
// partitions (opts may seed it again), closed when the test ends, and
// returns it with the client options that reach it.
func fakeKafka(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, []kgo.Opt) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(2, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

func newSink(t *testing.T, ctx context.Context, client []kgo.Opt, prefix string) (*twophase.Sink[*kgo.Record, Txn], *Transactor) {
	t.Helper()
	tr, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: prefix, TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return twophase.New[*kgo.Record, Txn](tr, state.JSONCodec[Txn]{}, twophase.Scope{Subtask: 0, Parallelism: 1}, twophase.Options{RetryBackoff: time.Millisecond}), tr
}

// committedValues reads the topic with read_committed isolation, up to
// each partition's last stable offset at the time of the call. Control
// records (commit and abort markers) are kept so that the read position
// is known exactly: below the last stable offset every stretch of offsets
// ends with a committed record or a marker, both of which the reader
// returns, so the read ends once each partition's position reaches it.
func committedValues(t *testing.T, ctx context.Context, client []kgo.Opt) []string {
	t.Helper()
	var got []string
	for _, r := range committedRecords(t, ctx, client) {
		got = append(got, string(r.Value))
	}
	slices.Sort(got)
	return got
}

// committedRecords is committedValues' read: the records themselves, in
// partition and offset order.
func committedRecords(t *testing.T, ctx context.Context, client []kgo.Opt) []*kgo.Record {
	t.Helper()
	adm, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	lso, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	lso.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: still waiting for partitions %v", topic, want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				got = append(got, r)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return got
}

// bothVersions runs f on a fake cluster of each transaction version: 2
// (KIP-890) and 1 (a 3.9 broker).
func bothVersions(t *testing.T, f func(t *testing.T, ctx context.Context, client []kgo.Opt)) {
	for _, tc := range []struct {
		name string
		opts []kfake.Opt
	}{
		{"tv2", nil},
		{"tv1", []kfake.Opt{kfake.MaxVersions(kversion.V3_9_0())}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			f(t, ctx, fakeCluster(t, tc.opts...))
		})
	}
}

func produceAll(t *testing.T, ctx context.Context, s *twophase.Sink[*kgo.Record, Txn], vals ...string) {
	t.Helper()
	for _, v := range vals {
		if err := s.Write(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCommitOnNotifyMakesRecordsVisible(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []kfake.Opt
		version int16
	}{
		{"tv2", nil, 2},
		{"tv1", []kfake.Opt{kfake.MaxVersions(kversion.V3_9_0())}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fakeCluster(t, tc.opts...)
			s, tr := newSink(t, ctx, client, "job")
			if (tr.Version() >= 2) != (tc.version >= 2) {
				t.Fatalf("transaction version %d, want %d (KIP-890 or not)", tr.Version(), tc.version)
			}
			if err := s.Restore(ctx, nil); err != nil {
				t.Fatal(err)
			}
			for chk := int64(1); chk <= 4; chk++ {
				produceAll(t, ctx, s, fmt.Sprintf("a%d", chk), fmt.Sprintf("b%d", chk))
				if _, err := s.SnapshotState(ctx, chk); err != nil {
					t.Fatal(err)
				}
				if err := s.NotifyCheckpointComplete(ctx, chk); err != nil {
					t.Fatal(err)
				}
			}
			got := committedValues(t, ctx, client)
			want := []string{"a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"}
			if !slices.Equal(got, want) {
				t.Fatalf("read_committed saw %v, want %v", got, want)
			}
		})
	}
}

// A job is killed after checkpoint 4 completed and checkpoint 5's barrier
// passed; checkpoint 4's metadata turns out damaged, so the user resumes
// --from checkpoint 3 as the refusal says, and no newer checkpoint's
// entries tell which of 3's transactions were committed since. The
// restore must commit them again, which works only while their ids were
// not reused: the round robin over the pool's five ids keeps an id free
// for four transactions. (Taking the first free id instead reused 3's id
// for 6's transaction, and this restore reported DATA MAY BE LOST.)
func TestResumeFromBeforeTheNewestCommitsItsTransactions(t *testing.T) {
	bothVersions(t, func(t *testing.T, ctx context.Context, client []kgo.Opt) {
		s1, tr1 := newSink(t, ctx, client, "resume")
		if err := s1.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		entries := map[int64][][]byte{}
		produceAll(t, ctx, s1, "v0")
		for chk := int64(1); chk <= 5; chk++ {
			var err error
			if entries[chk], err = s1.SnapshotState(ctx, chk); err != nil {
				t.Fatal(err)
			}
			// Records keep coming between a barrier and its
			// checkpoint's completion, as in the engine.
			produceAll(t, ctx, s1, fmt.Sprintf("v%d", chk))
			if chk < 5 {
				if err := s1.NotifyCheckpointComplete(ctx, chk); err != nil {
					t.Fatal(err)
				}
			}
		}
		tr1.Close() // SIGKILL: checkpoint 5 never completes

		s2, _ := newSink(t, ctx, client, "resume")
		if err := s2.Restore(ctx, entries[3]); err != nil {
			t.Fatalf("resuming from checkpoint 3 with 4 the newest: %v", err)
		}
		got := committedValues(t, ctx, client)
		slices.Sort(got)
		if want := []string{"v0", "v1", "v2", "v3"}; !slices.Equal(got, want) {
			t.Fatalf("read_committed saw %v, want %v (checkpoint 4's transactions, not 5's)", got, want)
		}
	})
}

// A process pre-commits checkpoint 1, starts the next transaction and dies.
// The restore commits checkpoint 1's transaction with a raw EndTxn (the
// dead process's client is gone) and fences the rest.
func TestRecoveryCommitsRestoredAndAbortsLingering(t *testing.T) {
	bothVersions(t, func(t *testing.T, ctx context.Context, client []kgo.Opt) {
		s1, tr1 := newSink(t, ctx, client, "job")
		if err := s1.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		produceAll(t, ctx, s1, "kept1", "kept2")
		chk1, err := s1.SnapshotState(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		produceAll(t, ctx, s1, "lost1")
		if _, err := s1.SnapshotState(ctx, 2); err != nil { // pre-committed, never completed
			t.Fatal(err)
		}
		produceAll(t, ctx, s1, "lost2")
		if err := tr1.slots[2].client.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		tr1.Close() // like a crash: no transaction is ended

		s2, _ := newSink(t, ctx, client, "job")
		if err := s2.Restore(ctx, chk1); err != nil {
			t.Fatal(err)
		}
		// Committing the restored transaction twice (a second crash
		// during recovery) must succeed again.
		s3, _ := newSink(t, ctx, client, "job")
		if err := s3.Restore(ctx, chk1); err != nil {
			t.Fatalf("repeating the recovery commit: %v", err)
		}
		got := committedValues(t, ctx, client)
		if !slices.Equal(got, []string{"kept1", "kept2"}) {
			t.Fatalf("read_committed saw %v, want [kept1 kept2]", got)
		}
		adm, err := kgo.NewClient(client...)
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		listed, err := kadm.NewClient(adm).ListTransactions(ctx, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for id, lt := range listed {
			if lt.State == "Ongoing" {
				t.Fatalf("transaction %s still open after recovery", id)
			}
		}
	})
}

func TestRecoveryOfAnAbortedTransactionIsReportedAsLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	s1, tr1 := newSink(t, ctx, client, "job")
	if err := s1.Restore(ctx, nil); err != nil {
		t.Fatal(err)
	}
	produceAll(t, ctx, s1, "x")
	chk1, err := s1.SnapshotState(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr1.Close()
	// Someone fences the id before recovery (as a timeout abort would).
	if err := fence(ctx, plainClient(t, client), testTracker(t, time.Minute), TransactionalID("job", 0, 0), time.Minute); err != nil {
		t.Fatal(err)
	}
	s2, _ := newSink(t, ctx, client, "job")
	err = s2.Restore(ctx, chk1)
	var lost *twophase.LostError
	if !errors.As(err, &lost) || !errors.Is(err, twophase.ErrTransactionLost) {
		t.Fatalf("restore = %v, want a lost-transaction error", err)
	}
	if lost.CheckpointID != 1 {
		t.Fatalf("lost error names checkpoint %d, want 1", lost.CheckpointID)
	}
}

// plainClient returns a client without a transactional id.
func plainClient(tb testing.TB, client []kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(client...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cl.Close)
	return cl
}

func TestParseTransactionalID(t *testing.T) {
	for _, tc := range []struct {
		id        string
		sub, slot int
		ok        bool
	}{
		{TransactionalID("wc", 3, 7), 3, 7, true},
		{TransactionalID("wc-demo", 0, 1), 0, 1, true},
		{"wc-x-1", 0, 0, false},
		{"other-1-1", 0, 0, false},
		{"wc-1", 0, 0, false},
	} {
		sub, slot, ok := parseTransactionalID(tc.id[:2], tc.id)
		if tc.id == TransactionalID("wc-demo", 0, 1) {
			sub, slot, ok = parseTransactionalID("wc-demo", tc.id)
		}
		if ok != tc.ok || (ok && (sub != tc.sub || slot != tc.slot)) {
			t.Errorf("parse(%q) = %d %d %v, want %d %d %v", tc.id, sub, slot, ok, tc.sub, tc.slot, tc.ok)
		}
	}
}

// With every slot taken the pool grows, up to MaxSlots; then Begin fails
// naming the key to raise. A restore that keeps an id beyond the pool
// takes it in, held, so growth does not reuse it.
func TestPoolGrowsUpToMaxSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	tr, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: "grow", Slots: 2, MaxSlots: 3, TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	keep := []Txn{{TransactionalID: TransactionalID("grow", 0, 5)}}
	if err := tr.AbortLingering(ctx, twophase.Scope{Subtask: 0, Parallelism: 1}, keep); err != nil {
		t.Fatal(err)
	}
	if n := len(tr.slots); n != 6 || !tr.slots[5].held {
		t.Fatalf("after keeping slot 5: %d slots (held %v), want 6 with slot 5 held", n, n == 6 && tr.slots[5].held)
	}
	var ids []string
	for range 5 { // slots 0..4 are free
		txn, err := tr.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, txn.TransactionalID)
	}
	if _, err := tr.Begin(ctx); err == nil || !strings.Contains(err.Error(), "sink.slots") {
		t.Fatalf("Begin with all 6 slots taken: %v, want an error naming sink.slots", err)
	}
	for i, id := range ids {
		if id != TransactionalID("grow", 0, i) {
			t.Fatalf("transaction %d on %s, want slot %d", i, id, i)
		}
	}

	tr2, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: "grow2", Slots: 2, MaxSlots: 3, TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if err := tr2.AbortLingering(ctx, twophase.Scope{Subtask: 0, Parallelism: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		txn, err := tr2.Begin(ctx)
		if err != nil {
			t.Fatalf("Begin %d of a pool of 2 growing to 3: %v", i, err)
		}
		if txn.TransactionalID != TransactionalID("grow2", 0, i) {
			t.Fatalf("Begin %d on %s", i, txn.TransactionalID)
		}
	}
	if _, err := tr2.Begin(ctx); err == nil {
		t.Fatal("Begin beyond MaxSlots succeeded")
	}
}

// A moved partition group runs nothing before its sinks' recovery ends
// (issue 16's takeover), so the recovery's round trips to the cluster are
// on the takeover's path. AbortLingering fences the free slots of the
// pool at once, each through its own client, and leaves that client's
// producer id initialised for the slot's first transaction: the fake
// coordinator holds every InitProducerID until the whole pool's have
// arrived (one at a time they never would; each is then held for
// holdAtMost), and the first transaction needs no further one.
func TestAbortLingeringFencesThePoolAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := fakeKafka(t)
	const slots = 4
	const holdAtMost = 2 * time.Second
	var mu sync.Mutex
	inits, inFlight, most := 0, 0, 0
	all := make(chan struct{})
	c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		inits++
		n := inits
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		if n == slots {
			close(all)
		}
		if n <= slots {
			c.SleepControl(func() {
				select {
				case <-all:
				case <-time.After(holdAtMost):
				}
			})
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil, nil, false
	})
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	tr, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: "at-once", Slots: slots, TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	start := time.Now()
	if err := tr.AbortLingering(ctx, twophase.Scope{Subtask: 0, Parallelism: 1}, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	mu.Lock()
	fenced, atOnce := inits, most
	mu.Unlock()
	if fenced != slots || atOnce != slots {
		t.Fatalf("AbortLingering sent %d InitProducerID requests, at most %d in flight at once (took %s), want the pool's %d at once",
			fenced, atOnce, took.Round(time.Millisecond), slots)
	}
	if _, err := tr.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	after := inits
	mu.Unlock()
	if after != fenced {
		t.Fatalf("the first transaction after AbortLingering sent %d more InitProducerID requests, want none (its slot's producer id is initialised by the fence)", after-fenced)
	}
}
