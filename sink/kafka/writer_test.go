package kafka

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestAtLeastOnceFlushWaitsForEveryRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	w, err := NewWriter(DeliveryAtLeastOnce, topic, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 50 {
		v := fmt.Sprintf("v%02d", i)
		want = append(want, v)
		if err := w.Write(ctx, &kgo.Record{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything before the barrier is on the broker once Flush returned.
	if got := committedValues(t, ctx, client); !slices.Equal(got, want) {
		t.Fatalf("after flush read %d records, want 50", len(got))
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAtLeastOnceFlushReportsAFailedProduce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	w, err := NewWriter(DeliveryAtLeastOnce, "", client, testTracker(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if err := w.Write(ctx, &kgo.Record{Topic: "no-such-topic", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err == nil {
		t.Fatal("a record that could not be produced must fail the flush (and so the checkpoint)")
	}
}

func TestParseDelivery(t *testing.T) {
	for _, ok := range []string{"none", "at_least_once", "exactly_once"} {
		if _, err := ParseDelivery(ok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParseDelivery("exactly-once"); err == nil {
		t.Fatal("a misspelt guarantee must be refused")
	}
}
