package engine_test

import (
	"context"
	"testing"

	"github.com/onceflow/onceflow/engine"
)

// A job whose context is cancelled before its first attempt starts ends
// CANCELED, as one cancelled while running does (a group pipeline
// cancelling its other stages reads their states).
func TestCancelBeforeTheFirstAttemptIsCanceled(t *testing.T) {
	j := engine.NewJob("early", engine.Options{})
	engine.SinkTo(engine.FromSource(j, "source", 1, genSource{n: 10}), "sink", 1, discard[int]{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := j.Run(ctx); err == nil {
		t.Fatal("Run of a cancelled context returned nil")
	}
	if st := j.Status().State; st != engine.JobCanceled {
		t.Fatalf("state %s after a cancel before the first attempt, want CANCELED", st)
	}
}

// discard is a sink without transactions that drops what it gets.
type discard[T any] struct{}

func (discard[T]) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[T], error) {
	return discard[T]{}, nil
}
func (discard[T]) Write(context.Context, T) error                         { return nil }
func (discard[T]) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (discard[T]) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (discard[T]) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (discard[T]) Close(context.Context) error                            { return nil }
