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

// Status.LastNotified trails a completed checkpoint until every sink was
// notified of it and committed: a caller that waits for a sink's commit
// (the testdriver's Checkpoint) waits for it, not for LastCheckpoint.
func TestLastNotifiedWaitsForTheSinksCommit(t *testing.T) {
	release := make(chan struct{})
	sink := &memSink[int]{onComplete: func(int64) { <-release }}
	j := copyJob("notified", engine.Options{}, &memSource[int]{parts: [][]int{seq(0, 10)}, unbounded: true}, sink)
	startJob(t, j)
	waitSinkIn(t, j, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := j.TriggerSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	st := j.Status()
	if st.LastCheckpoint == 0 || st.LastNotified >= st.LastCheckpoint {
		t.Fatalf("with the sink's commit held: LastCheckpoint %d, LastNotified %d; want LastNotified below it", st.LastCheckpoint, st.LastNotified)
	}
	close(release)
	waitFor(t, "LastNotified to reach the savepoint", func() bool { return j.Status().LastNotified >= st.LastCheckpoint })
	if got := sink.output(); len(got) != 10 {
		t.Fatalf("after the notification the sink committed %d records, want 10", len(got))
	}
}
