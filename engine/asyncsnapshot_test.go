package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// asyncSink is memSink whose writers finish their snapshot after the
// barrier (engine.AsyncSnapshotWriter): the pre-commit's wait returns
// what finish sends.
type asyncSink struct {
	*memSink[int]
	finish chan error
}

func (s asyncSink) NewWriter(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[int], error) {
	w, err := s.memSink.NewWriter(ctx, sc, restored)
	if err != nil {
		return nil, err
	}
	return asyncWriter{w.(*memWriter[int]), s.finish}, nil
}

type asyncWriter struct {
	*memWriter[int]
	finish chan error
}

func (w asyncWriter) SnapshotStateAsync(ctx context.Context, id int64) ([][]byte, func(context.Context) error, error) {
	entries, err := w.SnapshotState(ctx, id)
	return entries, func(ctx context.Context) error {
		select {
		case err := <-w.finish:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}, err
}

// startAsyncSinkJob runs a copy of 10 records into an asyncSink until the
// sink has received them all.
func startAsyncSinkJob(t *testing.T, name string) (*engine.Job, asyncSink) {
	t.Helper()
	sink := asyncSink{memSink: &memSink[int]{}, finish: make(chan error, 1)}
	j := copyJob(name, engine.Options{Checkpoint: engine.CheckpointOptions{TolerableFailures: 5}},
		&memSource[int]{parts: [][]int{seq(0, 10)}, unbounded: true}, sink)
	startJob(t, j)
	waitSinkIn(t, j, 10)
	return j, sink
}

// waitSinkIn waits until j's sink operator received n records.
func waitSinkIn(t *testing.T, j *engine.Job, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the sink to receive %d records", n), func() bool {
		for _, op := range j.Status().Operators {
			if op.Kind == "sink" {
				return op.RecordsIn == n
			}
		}
		return false
	})
}

// A sink whose snapshot finishes after the barrier acknowledges the
// checkpoint only once it did: the checkpoint does not complete, and
// nothing is committed, while the sink's wait runs.
func TestAnAsyncSinkSnapshotHoldsTheCheckpointUntilItFinishes(t *testing.T) {
	j, sink := startAsyncSinkJob(t, "async-snapshot")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := j.TriggerSavepoint(ctx)
		done <- err
	}()
	waitFor(t, "the savepoint's barrier at the sink", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.preCommits) > 0
	})
	select {
	case err := <-done:
		t.Fatalf("the savepoint ended (%v) while the sink's snapshot had not finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	if st := j.Status(); st.LastCheckpoint != 0 || len(sink.output()) != 0 {
		t.Fatalf("with the sink's snapshot running: LastCheckpoint %d, %d records committed; want neither", st.LastCheckpoint, len(sink.output()))
	}
	sink.finish <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the commit of the savepoint", func() bool { return len(sink.output()) == 10 })
}

// A sink snapshot that fails after the barrier fails the checkpoint.
func TestAFailedAsyncSinkSnapshotFailsTheCheckpoint(t *testing.T) {
	j, sink := startAsyncSinkJob(t, "async-snapshot-fails")
	sink.finish <- errors.New("flush refused")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := j.TriggerSavepoint(ctx)
	if err == nil || !strings.Contains(err.Error(), "flush refused") {
		t.Fatalf("savepoint: %v, want the sink snapshot's failure", err)
	}
	if n := len(sink.output()); n != 0 {
		t.Fatalf("%d records committed after the failed checkpoint, want 0", n)
	}
}
