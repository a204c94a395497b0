package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/state"
)

// A trigger reaches every source or none: when one source's queue is
// full, no source is sent the barrier and the checkpoint fails. (It used
// to be delivered to the sources before the full one: their barrier n
// then met barrier n+1 of the others downstream.)
func TestTriggerReachesEverySourceOrNone(t *testing.T) {
	h := newCoordHarness(t, Options{Checkpoint: CheckpointOptions{TolerableFailures: 5}}, 3)
	full := h.srcs[2].triggers
	for i := range cap(full) {
		full <- barrier{id: int64(100 + i)}
	}
	h.c.trigger(&pendingCheckpoint{})
	for i := range 2 {
		if got := h.queued(i); len(got) != 0 {
			t.Errorf("source %d was sent %v although source 2's queue was full", i, got)
		}
	}
	if st, why := h.status(1); st != CheckpointFailed || !strings.Contains(why, "too many checkpoints queued") {
		t.Errorf("checkpoint 1: %s %q, want FAILED for the full queue", st, why)
	}
	h.queued(2)
	h.c.trigger(&pendingCheckpoint{})
	for i := range 3 {
		if got := h.queued(i); len(got) != 1 || got[0] != 2 {
			t.Errorf("source %d was sent %v, want checkpoint 2", i, got)
		}
	}
}

// recSink records what a sink subtask wrote and snapshotted.
type recSink struct {
	mu     sync.Mutex
	writes []any
	snaps  []int64
}

func (s *recSink) write(_ context.Context, v any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, v)
	return nil
}
func (s *recSink) drain(context.Context) error { return nil }
func (s *recSink) SnapshotState(_ context.Context, id int64) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, id)
	return [][]byte{fmt.Appendf(nil, "%v", s.writes)}, nil
}
func (s *recSink) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (s *recSink) NotifyCheckpointAborted(context.Context, int64) error  { return nil }
func (s *recSink) Close(context.Context) error                           { return nil }

// inputHarness runs one sink subtask's input loop on unbuffered channels:
// a send returns once the loop took the element, so the test decides the
// order in which the loop sees its inputs.
type inputHarness struct {
	*coordHarness
	st   *subtask
	sink *recSink
	done chan error
}

func newInputHarness(t *testing.T, inputs int, mode CheckpointMode) *inputHarness {
	h := newCoordHarness(t, Options{Checkpoint: CheckpointOptions{Mode: mode}}, 0)
	store, err := state.NewOperatorStateStore(0, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink := &recSink{}
	st := &subtask{j: h.j, c: h.c, n: &node{uid: "sink", parallelism: 1, kind: kindSink}, wake: make(chan struct{}, 1),
		sink: sink, opStore: store, log: h.j.opts.Logger}
	for range inputs {
		st.inputs = append(st.inputs, input{ch: make(chan element)})
	}
	h.c.subtasks = []*subtask{st}
	ih := &inputHarness{coordHarness: h, st: st, sink: sink, done: make(chan error, 1)}
	go func() { ih.done <- st.runInputs(h.c.ctx) }()
	t.Cleanup(func() {
		h.cancel()
		<-ih.done
		st.async.Wait()
	})
	return ih
}

// send hands el to input in; the loop must take it (a blocked input is
// not read: the test fails after a while rather than hang).
func (ih *inputHarness) send(in int, el element) {
	ih.t.Helper()
	select {
	case ih.st.inputs[in].ch <- el:
	case err := <-ih.done:
		ih.t.Fatalf("the input loop ended: %v", err)
	case <-time.After(10 * time.Second):
		ih.t.Fatalf("input %d was not read", in)
	}
}

func (ih *inputHarness) barrier(in int, id int64) { ih.send(in, element{barrier: &barrier{id: id}}) }

// nextAck returns the next ack or decline the subtask sent.
func (ih *inputHarness) nextAck() ackMsg {
	ih.t.Helper()
	select {
	case a := <-ih.c.acks:
		return a
	case <-time.After(10 * time.Second):
		ih.t.Fatal("no ack")
	}
	return ackMsg{}
}

// Alignment compares barrier ids. Barrier 1 came on input 0, then barrier
// 2 on input 1 (input 1 skipped checkpoint 1): the subtask declines 1 and
// snapshots 2 only when barrier 2 came on input 0 as well, with input 0's
// record between its barriers 1 and 2 in the snapshot. (The old loop
// counted blocked inputs: it took checkpoint 2 at once, without input 0's
// records before its barrier 2, and later aligned input 0's barrier 2
// with input 1's barrier 3.)
func TestInputLoopNeverAlignsDifferentCheckpoints(t *testing.T) {
	for _, inputs := range []int{2, 3} { // the fast path and reflect.Select
		t.Run(fmt.Sprint(inputs, "-inputs"), func(t *testing.T) {
			ih := newInputHarness(t, inputs, ExactlyOnce)
			ih.send(0, element{value: "a1"})
			ih.barrier(0, 1)
			ih.barrier(1, 2)
			a := ih.nextAck()
			if a.id != 1 || a.err == nil || !strings.Contains(a.err.Error(), "declined checkpoint 1") {
				t.Fatalf("first ack: checkpoint %d, err %v; want checkpoint 1 declined", a.id, a.err)
			}
			ih.send(0, element{value: "a2"})
			ih.barrier(0, 2)
			for in := 2; in < inputs; in++ {
				ih.barrier(in, 1) // stale
				ih.barrier(in, 2)
			}
			if a := ih.nextAck(); a.id != 2 || a.err != nil {
				t.Fatalf("second ack: checkpoint %d, err %v; want checkpoint 2", a.id, a.err)
			}
			ih.sink.mu.Lock()
			defer ih.sink.mu.Unlock()
			if !slices.Equal(ih.sink.snaps, []int64{2}) || fmt.Sprint(ih.sink.writes) != "[a1 a2]" {
				t.Fatalf("snapshots %v with writes %v, want checkpoint 2 after a1 and a2", ih.sink.snaps, ih.sink.writes)
			}
		})
	}
}

// An abort announced while a checkpoint is aligned unblocks the inputs:
// the blocked input is read again and its records are written.
func TestInputLoopAbortUnblocks(t *testing.T) {
	ih := newInputHarness(t, 2, ExactlyOnce)
	ih.barrier(0, 1)
	ih.c.aborted.Store(1)
	ih.st.interrupt()
	ih.send(0, element{value: "after"})
	ih.barrier(1, 1) // stale now
	ih.barrier(1, 2)
	ih.barrier(0, 2)
	if a := ih.nextAck(); a.id != 2 || a.err != nil {
		t.Fatalf("ack: checkpoint %d, err %v; want checkpoint 2", a.id, a.err)
	}
}
