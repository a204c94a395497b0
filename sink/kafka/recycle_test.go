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
)

// countingPool is a kgo.PoolRecords that counts the record slices given
// back: a batch comes back once every record of it was recycled.
type countingPool struct{ puts atomic.Int64 }

func (p *countingPool) GetRecords(n int) []kgo.Record { return make([]kgo.Record, 0, n) }
func (p *countingPool) PutRecords([]kgo.Record)       { p.puts.Add(1) }

// pooledRecords writes values to topic "in" and reads them back through a
// client fetching into pool, as sourcekafka's pooled Reader does.
func pooledRecords(t *testing.T, ctx context.Context, client []kgo.Opt, pool *countingPool, values []string) []*kgo.Record {
	t.Helper()
	prod, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic("in"), kgo.ProducerLinger(20*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for _, v := range values {
		prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics("in"), kgo.WithPools(pool),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cons.Close)
	var recs []*kgo.Record
	for len(recs) < len(values) {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(recs), len(values))
		}
		fs.EachRecord(func(r *kgo.Record) {
			// As the copy job does: a record of the sink's topic, with
			// the fetch's Context, through which it is recycled.
			*r = kgo.Record{Value: r.Value, Context: r.Context}
			recs = append(recs, r)
		})
	}
	return recs
}

// Both writers recycle what they wrote once it was written, and not
// before: the output holds every value as it was fetched.
func TestSinkRecyclesWrittenRecords(t *testing.T) {
	var values []string
	for i := range 200 {
		values = append(values, fmt.Sprintf("v%03d", i))
	}
	writers := sinkWriters()
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fakeCluster(t, kfake.SeedTopics(1, "in"))
			pool := &countingPool{}
			recs := pooledRecords(t, ctx, client, pool, values)
			if pool.puts.Load() != 0 {
				t.Fatalf("%d batches back in the pool before their records were written", pool.puts.Load())
			}
			write(t, ctx, client, recs)
			if pool.puts.Load() == 0 {
				t.Fatal("no fetched batch came back to its pool after every record of it was written")
			}
			if got := committedValues(t, ctx, client); !slices.Equal(got, values) {
				t.Fatalf("read %d values, want the 200 written (first %v)", len(got), got[:min(3, len(got))])
			}
		})
	}
}

// sinkWriters are both writers of the sink, by delivery guarantee: each
// writes recs and returns once they are visible to read_committed.
func sinkWriters() map[string]func(t *testing.T, ctx context.Context, client []kgo.Opt, recs []*kgo.Record) {
	return map[string]func(t *testing.T, ctx context.Context, client []kgo.Opt, recs []*kgo.Record){
		"exactly_once": func(t *testing.T, ctx context.Context, client []kgo.Opt, recs []*kgo.Record) {
			s, _ := newSink(t, ctx, client, "job")
			if err := s.Restore(ctx, nil); err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if err := s.Write(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.SnapshotState(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if err := s.NotifyCheckpointComplete(ctx, 1); err != nil {
				t.Fatal(err)
			}
		},
		"at_least_once": func(t *testing.T, ctx context.Context, client []kgo.Opt, recs []*kgo.Record) {
			w, err := NewWriter(DeliveryAtLeastOnce, topic, client, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close(context.Background()) })
			for _, r := range recs {
				if err := w.Write(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// A record's timestamp is the job's to choose: both writers write records
// stamped long before the outage tolerance, and keep their timestamps.
// (kgo's own delivery timeout counts from each batch's first Timestamp and
// failed such records before they were sent.)
func TestSinkWritesRecordsOfAnyTimestamp(t *testing.T) {
	for name, write := range sinkWriters() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fakeCluster(t)
			base := time.Date(2020, 9, 13, 12, 26, 40, 0, time.UTC)
			var recs []*kgo.Record
			want := map[string]int64{}
			for i := range 50 {
				v := fmt.Sprintf("v%02d", i)
				ts := base.Add(time.Duration(i) * time.Hour)
				recs = append(recs, &kgo.Record{Key: []byte(v), Value: []byte(v), Timestamp: ts})
				want[v] = ts.UnixMilli()
			}
			write(t, ctx, client, recs)
			got := map[string]int64{}
			for _, r := range committedRecords(t, ctx, client) {
				got[string(r.Value)] = r.Timestamp.UnixMilli()
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("read %v, want %v (value: timestamp ms)", got, want)
			}
		})
	}
}
