package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The guard fails the records only after the tolerance without progress
// while records are buffered, timed on its own clock, not on the records'
// timestamps.
func TestDeliveryGuardFailsRecordsAfterTheToleranceWithoutProgress(t *testing.T) {
	const tol = 10 * time.Second
	now := time.Unix(1000, 0)
	g := newDeliveryGuard(tol)
	g.now, g.afterFunc = func() time.Time { return now }, nil
	buffered := int64(0)
	g.start(func() int64 { return buffered })
	ctx := g.produceCtx(context.Background())
	if g.produceCtx(context.Background()) != ctx {
		t.Fatal("a second produceCtx in the same transaction gave another context")
	}
	step := func(d time.Duration) bool { now = now.Add(d); return g.check() }

	// Idle: nothing buffered, however long.
	for range 5 {
		if step(tol) {
			t.Fatal("cancelled with nothing buffered")
		}
	}
	// Buffered and moving: never.
	buffered = 100
	for range 5 {
		g.produced(&kgo.Record{}, nil) // one record delivered
		if step(tol) {
			t.Fatal("cancelled while records were being delivered")
		}
	}
	// Stalled: the first check without progress starts the stall.
	if step(time.Second) || step(tol-time.Millisecond) {
		t.Fatal("cancelled before the tolerance")
	}
	if ctx.Err() != nil {
		t.Fatal("context done before the tolerance")
	}
	if !step(time.Millisecond) {
		t.Fatal("not cancelled after the tolerance without progress")
	}
	if ctx.Err() == nil {
		t.Fatal("the produce context is not done")
	}
	err := g.failure(context.Canceled)
	if !errors.Is(err, kgo.ErrRecordTimeout) || err.Error() == context.Canceled.Error() {
		t.Fatalf("failure = %v, want the guard's cause wrapping kgo.ErrRecordTimeout", err)
	}
	if other := errors.New("boom"); g.failure(other) != other {
		t.Fatal("failure changed an error that is not the context's")
	}

	// The next transaction starts afresh; stop cancels what is left.
	g.start(func() int64 { return buffered })
	ctx2 := g.produceCtx(context.Background())
	if ctx2 == ctx || ctx2.Err() != nil {
		t.Fatal("start did not give a fresh context")
	}
	if step(time.Second) || step(tol/2) {
		t.Fatal("a fresh transaction inherited the stall")
	}
	g.stop()
	if ctx2.Err() == nil || step(2*tol) {
		t.Fatal("stop left the context running, or a stopped guard cancelled")
	}
	if !errors.Is(g.failure(context.Canceled), errGuardStopped) {
		t.Fatalf("failure after stop = %v", g.failure(context.Canceled))
	}
}

// A guard's context also ends with its parent's.
func TestDeliveryGuardContextFollowsItsParent(t *testing.T) {
	g := newDeliveryGuard(time.Minute)
	g.afterFunc = nil
	g.start(func() int64 { return 0 })
	parent, cancel := context.WithCancel(context.Background())
	ctx := g.produceCtx(parent)
	cancel()
	if ctx.Err() == nil {
		t.Fatal("the produce context outlived its parent")
	}
	if err := g.failure(context.Canceled); err != context.Canceled {
		t.Fatalf("failure = %v, want context.Canceled", err)
	}
}
