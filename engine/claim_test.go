package engine_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/objstore"
)

// scopeSource is a memSource that records the Scope.Restored of every
// reader it opens.
type scopeSource struct {
	*memSource[int]
	mu       sync.Mutex
	restored []bool
}

func (s *scopeSource) NewReader(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[int], error) {
	s.mu.Lock()
	s.restored = append(s.restored, sc.Restored)
	s.mu.Unlock()
	return s.memSource.NewReader(ctx, sc, restored)
}

func (s *scopeSource) scopes() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.restored)
}

// claimS3 opens a new owner's S3 storage of job "claim" in st, as the
// processor does (the newest epoch + 1), and claims the job.
func claimS3(t *testing.T, st objstore.Store) (*s3store.Storage, *s3store.ClaimResult) {
	t.Helper()
	ctx := context.Background()
	probe, err := s3store.New(ctx, st, s3store.Options{Job: "claim", Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := s3store.New(ctx, st, s3store.Options{Job: "claim", Epoch: probe.NewestEpoch() + 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Claim(ctx)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return s, res
}

// A job whose newest checkpoint is an empty claim (a new owner took a
// group that had none) starts fresh: nothing is restored (the source's
// Scope says so), it logs that it starts after the claim, and its
// checkpoints take ids above the claim's.
func TestEmptyClaimStartsFresh(t *testing.T) {
	st := objstore.NewMemory(objstore.MemoryOptions{})
	storage, res := claimS3(t, st)
	if !res.Empty() || res.Metadata.CheckpointID != 1 {
		t.Fatalf("claim = %+v", res.Metadata)
	}
	logs := &logbuf.Buffer{}
	src := &scopeSource{memSource: &memSource[int]{parts: [][]int{seq(0, 50)}, pauseEvery: 10, pause: time.Millisecond}}
	sink := &memSink[int]{}
	j := copyJob("claim", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: storage,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}, src, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	if got := src.scopes(); len(got) != 1 || got[0] {
		t.Fatalf("source scopes' Restored = %v; want one fresh reader", got)
	}
	if d := diffCounts(counts(sink.output()), counts(seq(0, 50))); d != "" {
		t.Fatalf("output: %s", d)
	}
	out := logs.String()
	if !strings.Contains(out, "empty claim: starting fresh") || strings.Contains(out, `msg=restoring`) || strings.Contains(out, "level=WARN") {
		t.Fatalf("logs:\n%s", out)
	}
	for _, cs := range j.Status().Checkpoints {
		if cs.ID <= res.Metadata.CheckpointID {
			t.Errorf("checkpoint %d (%s) is not above the claim %d", cs.ID, cs.Status, res.Metadata.CheckpointID)
		}
	}
	md, _, err := storage.Latest(context.Background())
	if err != nil || md == nil || md.Claim || md.CheckpointID <= 1 {
		t.Fatalf("Latest after the run = %+v, %v; want a checkpoint of the job above the claim", md, err)
	}
}

// A claim of a job with a checkpoint is that checkpoint under the new
// owner's epoch at the next id: the job restores it (the source resumes
// where the claimed checkpoint stood, nothing is written twice) and
// checkpoints above it.
func TestClaimedCheckpointRestores(t *testing.T) {
	st := objstore.NewMemory(objstore.MemoryOptions{})
	first, err := s3store.New(context.Background(), st, s3store.Options{Job: "claim", Epoch: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink[int]{}
	j := copyJob("claim", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: first},
		&memSource[int]{parts: [][]int{seq(0, 50)}, pauseEvery: 10, pause: time.Millisecond}, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	storage, res := claimS3(t, st)
	if res.Empty() || res.From == nil || res.Metadata.CheckpointID != res.From.CheckpointID+1 {
		t.Fatalf("claim = %+v from %+v", res.Metadata, res.From)
	}
	logs := &logbuf.Buffer{}
	src := &scopeSource{memSource: &memSource[int]{parts: [][]int{seq(0, 80)}, pauseEvery: 10, pause: time.Millisecond}}
	j = copyJob("claim", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: storage,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}, src, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	if got := src.scopes(); len(got) != 1 || !got[0] {
		t.Fatalf("source scopes' Restored = %v; want one restored reader", got)
	}
	if d := diffCounts(counts(sink.output()), counts(seq(0, 80))); d != "" {
		t.Fatalf("output over both runs: %s", d)
	}
	if out := logs.String(); !strings.Contains(out, "checkpoint="+itoa(res.Metadata.CheckpointID)+" path="+res.Metadata.Path) {
		t.Fatalf("the job did not restore the claim %d:\n%s", res.Metadata.CheckpointID, out)
	}
	for _, cs := range j.Status().Checkpoints {
		if cs.ID <= res.Metadata.CheckpointID {
			t.Errorf("checkpoint %d (%s) is not above the claim %d", cs.ID, cs.Status, res.Metadata.CheckpointID)
		}
	}
}
