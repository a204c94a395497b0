package kafka

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
)

// TestNewSinkRefusesBadOptionsByName: NewSink refuses each option it
// cannot run with, in one message naming the option and the bad value
// (before: a negative transaction timeout or slot count was replaced by
// the default, too few slots for the checkpoints in flight were accepted).
// Nothing here connects to a cluster.
func TestNewSinkRefusesBadOptionsByName(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts SinkOptions
		want []string
	}{
		{"unknown delivery", SinkOptions{Delivery: "twice", TransactionalIDPrefix: "p"}, []string{"Delivery", `"twice"`, "none, at_least_once, exactly_once"}},
		{"exactly_once without a prefix", SinkOptions{}, []string{"TransactionalIDPrefix", `""`, "exactly_once"}},
		{"negative slots", SinkOptions{TransactionalIDPrefix: "p", Slots: -1}, []string{"Slots", "-1", "negative"}},
		{"too few slots", SinkOptions{TransactionalIDPrefix: "p", Slots: 13, MaxConcurrentCheckpoints: 4}, []string{"Slots", "13", "needs at least 14"}},
		{"too few slots by default", SinkOptions{TransactionalIDPrefix: "p", Slots: 4}, []string{"Slots", "4", "needs at least 5"}},
		{"negative checkpoints in flight", SinkOptions{TransactionalIDPrefix: "p", MaxConcurrentCheckpoints: -1}, []string{"MaxConcurrentCheckpoints", "-1"}},
		{"negative transaction timeout", SinkOptions{TransactionalIDPrefix: "p", TransactionTimeout: -time.Minute}, []string{"TransactionTimeout", "-1m0s"}},
		{"negative producer buffer", SinkOptions{TransactionalIDPrefix: "p", MaxBufferedRecords: -5}, []string{"MaxBufferedRecords", "-5", "0 takes the default 25000"}},
		{"negative producer buffer, at_least_once", SinkOptions{Delivery: DeliveryAtLeastOnce, MaxBufferedRecords: -1}, []string{"MaxBufferedRecords", "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSink(tc.opts)
			if err == nil {
				t.Fatalf("NewSink accepted %+v: %+v", tc.opts, s.opts)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	for _, ok := range []SinkOptions{
		{TransactionalIDPrefix: "p"},
		{TransactionalIDPrefix: "p", Slots: 14, MaxConcurrentCheckpoints: 4},
		{Delivery: DeliveryAtLeastOnce, Slots: 2},
		{Delivery: DeliveryNone},
		{TransactionalIDPrefix: "p", MaxBufferedRecords: 500},
	} {
		if _, err := NewSink(ok); err != nil {
			t.Errorf("NewSink(%+v): %v", ok, err)
		}
	}
}

// TestNewTransactorRefusesBadOptionsByName: NewTransactor refuses each
// option it cannot run with before it connects, naming the option and the
// value (before: a MaxSlots below Slots or a negative Slots or transaction
// timeout was replaced by the default).
func TestNewTransactorRefusesBadOptionsByName(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts TransactorOptions
		want []string
	}{
		{"no prefix", TransactorOptions{}, []string{"Prefix", `""`}},
		{"negative slots", TransactorOptions{Prefix: "p", Slots: -1}, []string{"Slots", "-1", "below 2"}},
		{"one slot", TransactorOptions{Prefix: "p", Slots: 1}, []string{"Slots", "1", "below 2"}},
		{"max slots below slots", TransactorOptions{Prefix: "p", Slots: 6, MaxSlots: 3}, []string{"MaxSlots", "3", "below Slots (6)"}},
		{"negative transaction timeout", TransactorOptions{Prefix: "p", TransactionTimeout: -time.Second}, []string{"TransactionTimeout", "-1s"}},
		{"negative producer buffer", TransactorOptions{Prefix: "p", MaxBufferedRecords: -1}, []string{"MaxBufferedRecords", "-1", "negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Refused before connecting: no cluster is needed, and
			// ctx only bounds a connection the refusal should prevent.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			tr, err := NewTransactor(ctx, 0, tc.opts)
			if err == nil {
				tr.Close()
				t.Fatal("NewTransactor accepted the options")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestNewSinkBoundsTheProducerBuffer: a sink without MaxBufferedRecords
// takes DefaultMaxBufferedRecords, and a value
// given is kept.
func TestNewSinkBoundsTheProducerBuffer(t *testing.T) {
	for _, tc := range []struct{ set, want int }{{0, DefaultMaxBufferedRecords}, {500, 500}} {
		s, err := NewSink(SinkOptions{TransactionalIDPrefix: "p", MaxBufferedRecords: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if s.opts.MaxBufferedRecords != tc.want {
			t.Errorf("MaxBufferedRecords %d: the sink uses %d, want %d", tc.set, s.opts.MaxBufferedRecords, tc.want)
		}
	}
}

// openWriter opens the writer of subtask 0 of 1 of a sink with opts,
// closed when the test ends.
func openWriter(t *testing.T, ctx context.Context, opts SinkOptions) engine.SinkWriter[*kgo.Record] {
	t.Helper()
	sink, err := NewSink(opts)
	if err != nil {
		t.Fatal(err)
	}
	w, err := sink.NewWriter(ctx, engine.Scope{Subtask: 0, Parallelism: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Close(ctx)
	})
	return w
}

// TestSinkCompressesAsConfigured: the batches a sink produces carry the
// codec of SinkOptions.Compression, none by default (Kafka's producer
// default, not franz-go's snappy), under both deliveries; an unknown
// codec is refused naming the option.
func TestSinkCompressesAsConfigured(t *testing.T) {
	for _, tc := range []struct {
		delivery    Delivery
		compression string
		want        uint8 // the batch attribute's codec: 0 none, 4 zstd
	}{
		{DeliveryExactlyOnce, "", 0},
		{DeliveryExactlyOnce, "zstd", 4},
		{DeliveryAtLeastOnce, "", 0},
		{DeliveryAtLeastOnce, "zstd", 4},
	} {
		t.Run(fmt.Sprintf("%s/%q", tc.delivery, tc.compression), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fakeCluster(t)
			w := openWriter(t, ctx, SinkOptions{ClientOpts: client, Topic: topic, Delivery: tc.delivery,
				TransactionalIDPrefix: "codec", Compression: tc.compression})
			for i := range 20 {
				if err := w.Write(ctx, &kgo.Record{Value: bytes.Repeat([]byte{'a' + byte(i)}, 200)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := w.SnapshotState(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if err := w.NotifyCheckpointComplete(ctx, 1); err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			n := 0
			for n < 20 {
				fs := cl.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					t.Fatalf("after %d records: %v", n, err)
				}
				fs.EachRecord(func(r *kgo.Record) {
					n++
					if got := r.Attrs.CompressionType(); got != tc.want {
						t.Fatalf("record %s/%d/%d: batch codec %d, want %d", r.Topic, r.Partition, r.Offset, got, tc.want)
					}
				})
			}
		})
	}
	if _, err := NewSink(SinkOptions{TransactionalIDPrefix: "p", Compression: "brotli"}); err == nil ||
		!strings.Contains(err.Error(), "Compression") || !strings.Contains(err.Error(), `"brotli"`) {
		t.Fatalf("NewSink with Compression brotli: %v, want a refusal naming the option and the value", err)
	}
}

// TestProducersLingerAsConfigured: every producer client of the sink, a
// transaction's and the at_least_once writer's, lingers SinkOptions.Linger,
// none by default (franz-go's own default is 10 ms, which held back the
// first records of every transaction), and a kgo.ProducerLinger in
// ClientOpts overrides it. A negative linger is refused naming the option.
func TestProducersLingerAsConfigured(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linger time.Duration
		extra  []kgo.Opt
		want   time.Duration
	}{
		{"default", 0, nil, DefaultLinger},
		{"set", 7 * time.Millisecond, nil, 7 * time.Millisecond},
		{"client options override", 7 * time.Millisecond, []kgo.Opt{kgo.ProducerLinger(3 * time.Millisecond)}, 3 * time.Millisecond},
	} {
		for _, delivery := range []Delivery{DeliveryExactlyOnce, DeliveryAtLeastOnce} {
			t.Run(tc.name+"/"+string(delivery), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				w := openWriter(t, ctx, SinkOptions{ClientOpts: append(fakeCluster(t), tc.extra...), Topic: topic,
					Delivery: delivery, TransactionalIDPrefix: "linger", Linger: tc.linger})
				if err := w.Write(ctx, &kgo.Record{Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
				var cl *kgo.Client
				switch w := w.(type) {
				case *txnWriter:
					cl = w.tr.writing.client
				case plainWriter:
					cl = w.w.cl
				default:
					t.Fatalf("writer %T", w)
				}
				if got := cl.OptValue(kgo.ProducerLinger).(time.Duration); got != tc.want {
					t.Errorf("the producer lingers %s, want %s", got, tc.want)
				}
			})
		}
	}
	if _, err := NewSink(SinkOptions{TransactionalIDPrefix: "p", Linger: -time.Millisecond}); err == nil ||
		!strings.Contains(err.Error(), "Linger") || !strings.Contains(err.Error(), "-1ms") {
		t.Fatalf("NewSink with Linger -1ms: %v, want a refusal naming the option and the value", err)
	}
}
