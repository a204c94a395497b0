package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// coordHarness is a coordinator of one attempt with fake source subtasks
// (only their trigger queues and wake-ups) and no goroutines: a test calls
// the coordinator's steps itself and looks at what the sources were sent.
type coordHarness struct {
	t      testing.TB
	j      *Job
	c      *coordinator
	srcs   []*subtask
	cancel context.CancelFunc
	// failed receives what the coordinator failed the attempt with.
	failed chan error
}

func newCoordHarness(t testing.TB, opts Options, sources int) *coordHarness {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Storage == nil {
		opts.Storage = dirstore.NewMemoryStorage("coord", dirstore.StorageOptions{})
	}
	j := NewJob("coord", opts)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := newCoordinator(ctx, j, nil, j.opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	h := &coordHarness{t: t, j: j, c: c, cancel: cancel, failed: make(chan error, 16)}
	n := &node{uid: "src", parallelism: sources, kind: kindSource}
	for i := range sources {
		st := &subtask{j: j, c: c, n: n, index: i, wake: make(chan struct{}, 1), triggers: j.newTriggerQueue(),
			log: j.opts.Logger}
		h.srcs = append(h.srcs, st)
	}
	c.subtasks = h.srcs
	c.fail = func(err error) {
		h.failed <- err
		cancel()
	}
	return h
}

// failures drains and returns what the attempt was failed with so far.
func (h *coordHarness) failures() []error {
	var errs []error
	for {
		select {
		case err := <-h.failed:
			errs = append(errs, err)
		default:
			return errs
		}
	}
}

// queued drains and returns the barrier ids queued for source i.
func (h *coordHarness) queued(i int) []int64 {
	var ids []int64
	for {
		select {
		case b := <-h.srcs[i].triggers:
			ids = append(ids, b.id)
		default:
			return ids
		}
	}
}

// status returns the history's status of checkpoint id ("" if unknown).
func (h *coordHarness) status(id int64) (CheckpointStatus, string) {
	for _, cs := range h.j.history.list() {
		if cs.ID == id {
			return cs.Status, cs.Failure
		}
	}
	return 0, ""
}

// Once a checkpoint failure beyond the tolerated ones failed the attempt,
// the coordinator triggers nothing more: no barrier reaches a source, and
// no checkpoint is left to be reported as ended by the attempt. (The run
// loop used to trigger the next periodic checkpoint in the same pass, or
// in the next one when select picked the tick over the cancelled context:
// TestCheckpointTimeoutAndTolerableFailures then found a checkpoint that
// failed with "the job attempt ended" instead of expiring.)
func TestNoCheckpointIsTriggeredAfterTheAttemptFailed(t *testing.T) {
	h := newCoordHarness(t, Options{Checkpoint: CheckpointOptions{Interval: time.Second, Timeout: time.Minute}}, 1)
	h.c.trigger(&pendingCheckpoint{})
	if got := h.queued(0); len(got) != 1 || got[0] != 1 {
		t.Fatalf("queued %v, want checkpoint 1", got)
	}
	h.c.abort(1, errTest("checkpoint 1 expired"), true)
	if failed := h.failures(); len(failed) != 1 || !strings.Contains(failed[0].Error(), "exceed the 0 tolerated") {
		t.Fatalf("failures %v, want the attempt failed by the first checkpoint failure", failed)
	}
	req := savepointRequest{done: make(chan savepointResult, 1)}
	h.c.trigger(&pendingCheckpoint{})
	h.c.trigger(&pendingCheckpoint{savepoint: true, req: &req})
	if got := h.queued(0); len(got) != 0 {
		t.Fatalf("barriers %v sent after the attempt failed", got)
	}
	if len(h.c.pending) != 0 {
		t.Fatalf("%d checkpoints pending after the attempt failed", len(h.c.pending))
	}
	select {
	case r := <-req.done:
		if r.err == nil {
			t.Fatalf("a savepoint asked after the attempt failed succeeded: %+v", r)
		}
	default:
		t.Fatal("a savepoint asked after the attempt failed was not answered")
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

// completeAll acks checkpoint id from every subtask of the harness.
func (h *coordHarness) completeAll(id int64) {
	h.t.Helper()
	for _, st := range h.c.subtasks {
		if err := h.c.onAck(ackMsg{id: id, st: st, at: time.Now()}); err != nil {
			h.t.Fatal(err)
		}
	}
	if s, why := h.status(id); s != CheckpointCompleted {
		h.t.Fatalf("checkpoint %d: %s %q", id, s, why)
	}
}

// notifyAll records that every subtask was notified of id.
func (h *coordHarness) notifyAll(id int64) {
	for _, st := range h.c.subtasks {
		h.c.notifiedIDs[st] = id
	}
}

func answered(t *testing.T, what string, req savepointRequest) savepointResult {
	t.Helper()
	select {
	case r := <-req.done:
		return r
	default:
		t.Fatalf("%s: not answered", what)
	}
	return savepointResult{}
}

// A stop with a savepoint followed by the final checkpoint (the input
// ended meanwhile): once both completed and every subtask was notified,
// the stop is answered with its savepoint and the attempt stops. (The
// final checkpoint's completion replaced the stop as the checkpoint the
// attempt waited for: the attempt finished and the stop's caller was
// never answered.)
func TestStopThenFinalCheckpointAnswersTheStop(t *testing.T) {
	h := newCoordHarness(t, Options{}, 2)
	stop := savepointRequest{stop: true, done: make(chan savepointResult, 1)}
	h.c.trigger(&pendingCheckpoint{savepoint: true, stop: true, req: &stop})
	h.c.finalPending = true
	h.c.trigger(&pendingCheckpoint{final: true})
	h.completeAll(1)
	h.completeAll(2)
	h.notifyAll(2)
	done, err := h.c.checkWaiting()
	if !done || !errors.Is(err, ErrStopped) {
		t.Fatalf("checkWaiting = %v, %v; want the attempt stopped", done, err)
	}
	if r := answered(t, "the stop", stop); r.err != nil || !strings.Contains(r.path, "savepoint-1") {
		t.Fatalf("stop answered %+v, want savepoint 1's path", r)
	}
}

// Two stops asked at once: both are answered (the later savepoint's
// completion replaced the earlier one as the checkpoint waited for, and
// the earlier caller was never answered).
func TestTwoStopsAreBothAnswered(t *testing.T) {
	h := newCoordHarness(t, Options{}, 1)
	first := savepointRequest{stop: true, done: make(chan savepointResult, 1)}
	second := savepointRequest{stop: true, done: make(chan savepointResult, 1)}
	h.c.trigger(&pendingCheckpoint{savepoint: true, stop: true, req: &first})
	h.c.trigger(&pendingCheckpoint{savepoint: true, stop: true, req: &second})
	h.completeAll(1)
	h.completeAll(2)
	h.notifyAll(1)
	if done, _ := h.c.checkWaiting(); done {
		t.Fatal("the attempt stopped before every subtask was notified of the last stop")
	}
	h.notifyAll(2)
	if done, err := h.c.checkWaiting(); !done || !errors.Is(err, ErrStopped) {
		t.Fatalf("checkWaiting = %v, %v; want the attempt stopped", done, err)
	}
	if r := answered(t, "the first stop", first); r.err != nil || !strings.Contains(r.path, "savepoint-1") {
		t.Fatalf("first stop answered %+v", r)
	}
	if r := answered(t, "the second stop", second); r.err != nil || !strings.Contains(r.path, "savepoint-2") {
		t.Fatalf("second stop answered %+v", r)
	}
}

// When the attempt ends before every sink committed the stops' savepoint,
// every waiting caller gets an error.
func TestWaitingStopsAreAnsweredWhenTheAttemptEnds(t *testing.T) {
	h := newCoordHarness(t, Options{}, 1)
	first := savepointRequest{stop: true, done: make(chan savepointResult, 1)}
	second := savepointRequest{stop: true, done: make(chan savepointResult, 1)}
	h.c.trigger(&pendingCheckpoint{savepoint: true, stop: true, req: &first})
	h.c.trigger(&pendingCheckpoint{savepoint: true, stop: true, req: &second})
	h.completeAll(1)
	h.completeAll(2)
	h.c.abortAll(errTest("the job attempt ended"))
	for _, r := range []savepointResult{answered(t, "the first stop", first), answered(t, "the second stop", second)} {
		if r.err == nil {
			t.Fatalf("a stop whose commits were not confirmed succeeded: %+v", r)
		}
	}
}

// A savepoint asked for just as an attempt ends (its loop never took the
// request) waits for the next attempt, as one asked while the job
// restarts does, instead of failing because of the attempt it happened to
// find. (It failed with "the job attempt ended before the savepoint was
// taken".)
func TestSavepointAskedAsAnAttemptEndsGoesToTheNextAttempt(t *testing.T) {
	h := newCoordHarness(t, Options{}, 1)
	j := h.j
	j.setCoord(h.c)
	h.cancel() // the attempt ended; its loop is gone
	type result struct {
		path string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		path, err := j.TriggerSavepoint(context.Background())
		got <- result{path, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("answered %+v while the job restarts", r)
	case <-time.After(50 * time.Millisecond):
	}
	j.setCoord(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, err := newCoordinator(ctx, j, nil, j.opts.Logger)
	if err != nil {
		t.Fatal(err)
	}
	j.setCoord(next)
	select {
	case req := <-next.savepoints:
		req.done <- savepointResult{path: "savepoint-of-the-next-attempt"}
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the next attempt")
	}
	if r := <-got; r.err != nil || r.path != "savepoint-of-the-next-attempt" {
		t.Fatalf("answered %+v, want the next attempt's savepoint", r)
	}
}
