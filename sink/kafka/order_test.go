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
)

// A transaction begun while the previous one still flushes (the
// pre-commit beside the writing, SinkOptions.AsyncPreCommit) reaches a
// partition only after every record of the previous one: the partition
// holds a0..a4 then b0..b4 although b's records were written, and b
// pre-committed, while a's produce request was held on the broker. Before
// the Transactor ordered them, b's records were appended first (the word
// count's output showed a word's count 380 after its 448 under a broker
// restart).
func TestATransactionWaitsForThePreviousOnesRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, client := fakeKafka(t, kfake.SeedTopics(1, topic))
	tr, err := NewTransactor(ctx, 0, TransactorOptions{ClientOpts: client, Topic: topic, Prefix: "order", TransactionTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// The first produce request of transaction a is held until release;
	// bSent closes when a produce request of another id arrives first.
	var holdID atomic.Pointer[string]
	var holding, otherSeen atomic.Bool
	held, release, bSent := make(chan struct{}), make(chan struct{}), make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		id, pr := holdID.Load(), req.(*kmsg.ProduceRequest)
		if id == nil || pr.TransactionID == nil {
			return nil, nil, false
		}
		if *pr.TransactionID != *id {
			if holding.Load() && otherSeen.CompareAndSwap(false, true) {
				close(bSent)
			}
			return nil, nil, false
		}
		if holding.CompareAndSwap(false, true) {
			close(held)
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})

	a, err := tr.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holdID.Store(&a.TransactionalID)
	write := func(txn Txn, prefix string) {
		t.Helper()
		for i := range 5 {
			if err := tr.Write(ctx, txn, &kgo.Record{Value: fmt.Appendf(nil, "%s%d", prefix, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(a, "a")
	preA := make(chan error, 1)
	go func() { _, err := tr.PreCommit(ctx, a); preA <- err }()
	<-held // a's records are on the wire and stay there

	b, err := tr.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(b, "b")
	preB := make(chan error, 1)
	go func() { _, err := tr.PreCommit(ctx, b); preB <- err }()
	// Release a once b's records reached the broker (the order is lost
	// then) or, if they do not come, after a grace that only the
	// ordering Transactor waits out.
	select {
	case <-bSent:
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	for name, ch := range map[string]chan error{"a": preA, "b": preB} {
		if err := <-ch; err != nil {
			t.Fatalf("pre-commit of %s: %v", name, err)
		}
	}
	for _, txn := range []Txn{a, b} {
		if err := tr.Commit(ctx, txn); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, r := range committedRecords(t, ctx, client) {
		got = append(got, string(r.Value))
	}
	want := []string{"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"}
	if !slices.Equal(got, want) {
		t.Fatalf("partition 0 holds %v, want %v: the next transaction's records overtook the flushing one's", got, want)
	}
}
