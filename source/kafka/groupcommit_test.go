package kafka

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/onceflow/onceflow/internal/outage"
)

// blockingCommit is a commit function that reports each call's offsets
// on calls and returns only once release gives it a result.
type blockingCommit struct {
	calls   chan kadm.Offsets
	release chan error
}

func newBlockingCommit() *blockingCommit {
	return &blockingCommit{calls: make(chan kadm.Offsets, 16), release: make(chan error)}
}

func (b *blockingCommit) commit(ctx context.Context, o kadm.Offsets) error {
	b.calls <- o
	select {
	case err := <-b.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next returns the offsets of the next call, failing the test if none
// comes within a bound that only a hang reaches.
func (b *blockingCommit) next(t *testing.T) kadm.Offsets {
	t.Helper()
	select {
	case o := <-b.calls:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no commit was sent")
		return nil
	}
}

// blockedCommitter returns a group committer of group g whose commits go
// to a blockingCommit, with a tracker of a minute's tolerance.
func blockedCommitter(t *testing.T) (*blockingCommit, *groupCommitter, *outage.Tracker) {
	t.Helper()
	b := newBlockingCommit()
	tr, _ := tracker(t, time.Minute, nil)
	return b, newGroupCommitter(b.commit, "g", slog.New(slog.DiscardHandler), tr), tr
}

func offsetsAt(at int64) kadm.Offsets {
	o := kadm.Offsets{}
	o.AddOffset("in", 0, at, -1)
	return o
}

func atOf(t *testing.T, o kadm.Offsets) int64 {
	t.Helper()
	off, ok := o.Lookup("in", 0)
	if !ok {
		t.Fatalf("offsets %v without partition in/0", o)
	}
	return off.At
}

// While a commit is on the wire, offers return at once and coalesce: the
// next commit carries the latest offer's offsets, the ones between are
// never sent, and sync waits for that commit.
func TestGroupCommitterCoalescesBehindACommitOnTheWire(t *testing.T) {
	b, c, _ := blockedCommitter(t)
	defer c.close()

	c.offer(1, offsetsAt(10))
	if at := atOf(t, b.next(t)); at != 10 {
		t.Fatalf("first commit at %d, want 10", at)
	}
	c.offer(2, offsetsAt(20)) // the commit of 1 still waits on release
	c.offer(3, offsetsAt(30))
	b.release <- nil
	if at := atOf(t, b.next(t)); at != 30 {
		t.Fatalf("commit after the blocked one at %d, want 30 (the latest offer)", at)
	}
	synced := make(chan struct{})
	go func() { c.sync(); close(synced) }()
	select {
	case <-synced:
		t.Fatal("sync returned while the commit of checkpoint 3 was on the wire")
	case b.release <- nil:
	}
	<-synced
	select {
	case o := <-b.calls:
		t.Fatalf("a third commit at %d; checkpoint 2 was replaced by 3", atOf(t, o))
	default:
	}
}

// close sends an offer not sent yet (here behind a commit on the wire)
// and drops offers made after it.
func TestGroupCommitterCloseSendsTheLastOffer(t *testing.T) {
	b, c, _ := blockedCommitter(t)
	c.offer(1, offsetsAt(10))
	b.next(t)
	c.offer(2, offsetsAt(20))
	closed := make(chan struct{})
	go func() { c.close(); close(closed) }()
	b.release <- nil
	if at := atOf(t, b.next(t)); at != 20 {
		t.Fatalf("commit at close at %d, want 20", at)
	}
	b.release <- nil
	<-closed
	c.offer(3, offsetsAt(30))
	c.close()
	if len(b.calls) != 0 {
		t.Fatalf("an offer after close was sent: %v", atOf(t, <-b.calls))
	}
}

// While the tracker reports the cluster away, close does not wait for a
// commit on the wire: it cancels it and returns, so that a job failing in
// an outage restarts at once.
func TestGroupCommitterCloseInAnOutageDoesNotWait(t *testing.T) {
	b, c, tr := blockedCommitter(t)
	c.offer(1, offsetsAt(10))
	b.next(t)
	if err := tr.Failed("test", kerr.RequestTimedOut, time.Time{}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { c.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(closeCommitTimeout / 2):
		b.release <- nil
		<-closed
		t.Fatal("close waited for the commit on the wire while the cluster was away")
	}
}

// The subtask does not wait for the group commit: NotifyCheckpointComplete
// returns while CommitOffsets has not answered, and the commit still
// happens. Before the committer (the commit ran on the subtask) it did not
// return until the commit was released.
func TestNotifyCheckpointCompleteDoesNotWaitForTheGroupCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	b := newBlockingCommit()
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartEarliest,
		DiscoveryInterval: -1, CommitOffsets: b.commit}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	produce(t, ctx, client, "in", 3, 0)
	readN(t, ctx, r, 3)
	if _, err := r.SnapshotState(1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	returned := make(chan struct{})
	go func() {
		defer wg.Done()
		r.NotifyCheckpointComplete(ctx, 1)
		close(returned)
	}()
	if at := atOf(t, b.next(t)); at != 3 {
		t.Fatalf("committed offset %d, want 3", at)
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		b.release <- nil // let the old code's call end before failing
		wg.Wait()
		t.Fatal("NotifyCheckpointComplete waited for the group commit")
	}
	b.release <- nil
	r.Close()
}
