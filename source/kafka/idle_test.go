package kafka

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage/outagetest"
)

// withholdingCluster is a kfake cluster of one topic whose fetches leave
// out the partitions in withheld: the broker answers them as if the
// client had not asked, as a slow leader or a busy fetcher would.
type withholdingCluster struct {
	c        *kfake.Cluster
	client   []kgo.Opt
	withheld atomic.Pointer[[]int32]
}

func newWithholdingCluster(t *testing.T, partitions int32, topic string) *withholdingCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := &withholdingCluster{c: c}
	w.withheld.Store(&[]int32{})
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		skip := *w.withheld.Load()
		f := req.(*kmsg.FetchRequest)
		for i := range f.Topics {
			f.Topics[i].Partitions = slices.DeleteFunc(f.Topics[i].Partitions, func(p kmsg.FetchRequestTopicPartition) bool {
				return slices.Contains(skip, p.Partition)
			})
		}
		return nil, nil, false
	})
	// Without fetch sessions every fetch names its partitions, so that
	// leaving one out of a request does not drop it from a session; a
	// short wait, so that a fetch waiting for data does not hold a
	// partition back once it is no longer withheld.
	w.client = []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.DisableFetchSessions(), kgo.FetchMaxWait(100 * time.Millisecond)}
	return w
}

// openIdleReader opens the only subtask's reader of topic "in" with a 1s
// idle timeout on a clock of its own; it is closed when the test ends.
func openIdleReader(t *testing.T, ctx context.Context, client []kgo.Opt) (engine.SourceReader[stamped], engine.WatermarkReader, *outagetest.Clock) {
	t.Helper()
	clk := outagetest.NewClock()
	src, err := NewSource(SourceOptions[stamped]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1, Now: clk.Now},
		Decode: stampedDecoder, IdleTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.NewReader(ctx, engine.Scope{Subtask: 0, Parallelism: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, r.(engine.WatermarkReader), clk
}

// readAll reads from r until nothing comes for 300ms.
func readAll(t *testing.T, r engine.SourceReader[stamped]) []stamped {
	t.Helper()
	var out []stamped
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		v, ok, err := r.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, v)
	}
}

// A partition whose records are in its log but not fetched yet is behind,
// not idle, however long the fetch takes: were it left out of the
// watermark, the other partitions would carry the watermark past its
// records and make them late. (After a restart on a busy machine the
// first fetch of a partition can take longer than the idle timeout.) Once
// it has been read and is silent for the timeout, it is idle.
func TestSourcePartitionNotFetchedYetIsNotIdle(t *testing.T) {
	w := newWithholdingCluster(t, 2, "in")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const base = 1_700_000_000_000
	seq := 0
	p0, p1 := run(0, 5, base+5000, 100, 0, &seq), run(1, 5, base, 100, 0, &seq)
	produceStamped(t, ctx, w.client, "in", append(slices.Clone(p0), p1...)...)
	w.withheld.Store(&[]int32{1})

	r, wr, clk := openIdleReader(t, ctx, w.client)
	if got := readAll(t, r); len(got) != len(p0) {
		t.Fatalf("read %d records with partition 1 withheld, want partition 0's %d", len(got), len(p0))
	}
	if wm, idle := wr.CurrentWatermark(); wm != engine.NoWatermark || idle {
		t.Fatalf("before the timeout: watermark %d (idle %v), want none: partition 1 has not produced", wm, idle)
	}
	clk.Advance(2 * time.Second)
	// However often the engine asks, partition 1 holds the watermark.
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if wm, idle := wr.CurrentWatermark(); wm != engine.NoWatermark || idle {
			t.Fatalf("partition 1 has 5 records not fetched yet and went idle: watermark %d (idle %v), which makes them late", wm, idle)
		}
	}

	w.withheld.Store(&[]int32{})
	if got := readAll(t, r); len(got) != len(p1) {
		t.Fatalf("read %d records once partition 1 was fetched, want %d", len(got), len(p1))
	}
	if wm, idle := wr.CurrentWatermark(); wm != highest(1, p1)-1 || idle {
		t.Fatalf("both partitions read: watermark %d (idle %v), want partition 1's %d", wm, idle, highest(1, p1)-1)
	}
	// Both silent and read to their ends: idle once the timeout passed.
	clk.Advance(2 * time.Second)
	waitIdle(t, wr)
}

// waitIdle polls r's watermark until it says idle (within 10s).
func waitIdle(t *testing.T, r engine.WatermarkReader) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		wm, idle := r.CurrentWatermark()
		if idle {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("read to their ends and silent past the timeout, the partitions are not idle: watermark %d", wm)
		}
	}
}

// A partition whose log ends in a transaction's marker, committed or
// aborted, is read to its end once its last record is: the reader steps
// over markers (Reader.Next), so silence makes it idle as it does a
// partition written without transactions. Were the position left before
// the marker, the listing would show it behind for ever.
func TestSourcePartitionEndingInATransactionMarkerGoesIdle(t *testing.T) {
	w := newWithholdingCluster(t, 2, "in")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	txn, err := kgo.NewClient(append(slices.Clone(w.client), kgo.DefaultProduceTopic("in"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("idle-test"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	// Partition 0 ends in a committed transaction, partition 1 in an
	// aborted one after a committed record.
	write := func(end kgo.TransactionEndTry, recs ...*kgo.Record) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(p int32, ts int64) *kgo.Record {
		return &kgo.Record{Partition: p, Timestamp: time.UnixMilli(ts), Value: fmt.Appendf(nil, `{"p":%d,"ts":%d}`, p, ts)}
	}
	const base = 1_700_000_000_000
	write(kgo.TryCommit, rec(0, base), rec(0, base+100), rec(1, base+50))
	write(kgo.TryAbort, rec(1, base+900))

	r, wr, clk := openIdleReader(t, ctx, w.client)
	if got := readAll(t, r); len(got) != 3 {
		t.Fatalf("read %v, want the 3 committed records", got)
	}
	if wm, idle := wr.CurrentWatermark(); wm != base+50-1 || idle {
		t.Fatalf("after the committed records: watermark %d (idle %v), want %d", wm, idle, base+50-1)
	}
	clk.Advance(2 * time.Second)
	waitIdle(t, wr)
}
