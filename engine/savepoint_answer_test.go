package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// A savepoint asked for while a bounded job's final checkpoint is being
// committed cannot complete (the job finishes first); its caller is
// answered with an error when Run returns, not left waiting. (The
// coordinator returned with the savepoint still pending and nobody
// answered it: a caller without a deadline waited forever.)
func TestSavepointPendingWhenTheJobFinishesIsAnswered(t *testing.T) {
	var j *engine.Job
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	isSavepointInProgress := func() bool {
		for _, cs := range j.Status().Checkpoints {
			if cs.Savepoint && cs.Status == engine.CheckpointInProgress {
				return true
			}
		}
		return false
	}
	sink := &memSink[int]{
		// The final checkpoint (1: no periodic checkpoints) is committed
		// only once the savepoint was triggered...
		onComplete: func(id int64) {
			for id == 1 && !isSavepointInProgress() && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
		},
		// ... which cannot complete before the job finishes.
		beforeSnapshot: func(ctx context.Context, id int64) {
			if id > 1 {
				<-ctx.Done()
			}
		},
	}
	j = copyJob("finishing", engine.Options{}, &memSource[int]{parts: [][]int{seq(0, 50)}}, sink)
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	waitFor(t, "the final checkpoint", func() bool { return completedCount(j) == 1 })
	answer := make(chan error, 1)
	go func() {
		_, err := j.TriggerSavepoint(context.Background()) // no deadline: only an answer ends it
		answer <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want the job finished", err)
	}
	select {
	case err := <-answer:
		if err == nil {
			t.Fatal("the savepoint succeeded although the job finished before it")
		}
		t.Logf("answered: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the savepoint request is still unanswered 10s after Run returned")
	}
}
