package kafka

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A pooled Reader decodes later fetches into the batches its records were
// recycled from, and a record that was not recycled keeps its value.
func TestPooledReaderReusesRecycledBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produceBatch := func(from, n int) {
		t.Helper()
		cl, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic("in"), kgo.ProducerLinger(50*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := from; i < from+n; i++ {
			v := fmt.Sprintf("r%04d", i)
			cl.Produce(ctx, &kgo.Record{Value: []byte(v)}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartEarliest, PoolBytes: 16 << 20}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read := func(from, n int) []*kgo.Record {
		t.Helper()
		var recs []*kgo.Record
		for len(recs) < n {
			rec, ok, err := r.Next(ctx)
			if err != nil || !ok {
				t.Fatalf("reading record %d: %v", from+len(recs), err)
			}
			if want := fmt.Sprintf("r%04d", from+len(recs)); string(rec.Value) != want {
				t.Fatalf("read %q, want %q", rec.Value, want)
			}
			recs = append(recs, rec)
		}
		return recs
	}

	produceBatch(0, 300)
	first := read(0, 300)
	kept := first[len(first)-1] // of the last batch: that batch stays out of the pool
	for _, rec := range first[:len(first)-1] {
		rec.Recycle()
	}
	if r.pool.Hits() != 0 {
		t.Fatalf("%d gets served from the pool before any batch came back", r.pool.Hits())
	}
	for round := 1; round <= 3; round++ {
		produceBatch(300*round, 300)
		for _, rec := range read(300*round, 300) {
			rec.Recycle()
		}
	}
	if r.pool.Hits() == 0 {
		t.Fatalf("no get was served from the pool after batches were recycled (misses %d)", r.pool.Misses())
	}
	if string(kept.Value) != "r0299" {
		t.Fatalf("a record not recycled changed under its holder: %q, want r0299", kept.Value)
	}
}
