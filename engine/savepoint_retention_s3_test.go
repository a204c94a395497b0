package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/state"
)

// openS3 opens job's S3 storage in st as a processor starting it does:
// at the newest epoch + 1.
func openS3(t *testing.T, st objstore.Store, job string) *s3store.Storage {
	t.Helper()
	ctx := context.Background()
	probe, err := s3store.New(ctx, st, s3store.Options{Prefix: "ckpt", Job: job, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := s3store.New(ctx, st, s3store.Options{Prefix: "ckpt", Job: job, Epoch: probe.NewestEpoch() + 1, Retained: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// s3Savepoints are the ids of job's savepoint manifests in st, and the
// savepoint ids that have data objects.
func s3Savepoints(t *testing.T, st objstore.Store, job string) (manifests, data []int64) {
	t.Helper()
	root := "ckpt/" + job + "/"
	for _, dir := range []string{"manifest/", "data/"} {
		infos, err := st.List(context.Background(), root+dir+"savepoint-")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			rest := strings.TrimPrefix(in.Key, root+dir+"savepoint-")
			var id int64
			if _, err := fmt.Sscanf(rest, "%d", &id); err != nil {
				t.Fatalf("key %s: %v", in.Key, err)
			}
			if dir == "manifest/" {
				manifests = append(manifests, id)
			} else if !slices.Contains(data, id) {
				data = append(data, id)
			}
		}
	}
	slices.Sort(manifests)
	slices.Sort(data)
	return manifests, data
}

// keyedCopyJob is source → keyBy(v%97) → reduce "last" (keeps the last
// value of each key, emits every value) → sink: a copy whose savepoints
// hold keyed state in files.
func keyedCopyJob(name string, opts engine.Options, src engine.Source[int], sink engine.Sink[int]) *engine.Job {
	j := engine.NewJob(name, opts)
	keyed := engine.KeyBy(engine.FromSource(j, "source", 1, src), func(v int) string { return fmt.Sprint(v % 97) }, state.StringCodec{})
	last := engine.Reduce(keyed, "last", 2, state.JSONCodec[int]{}, func(_, v int) (int, error) { return v, nil })
	engine.SinkTo(last, "sink", 1, sink)
	return j
}

// Savepoints in S3 do not pile up either: with RetainSavepoints 3, the
// coordinator prunes through the storage (checkpoint.SavepointPruner) as
// each savepoint completes, before it is answered, removing the oldest
// savepoints' manifests and their data objects, each logged. The newest
// savepoint stays the job's restore point, and a plain run (a new owner,
// a higher epoch) resumes from it with every record exactly once.
// (Savepoints in S3 were never removed: the coordinator pruned
// directories only, and eight savepoints left eight manifests.)
func TestSavepointsBeyondTheRetainedCountAreRemovedFromS3(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	input := seq(0, 4000)
	sink := &txnSink{transactional: true}
	logs := &logbuf.Buffer{}
	opts := engine.Options{Storage: openS3(t, mem, "sr"), Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Checkpoint: engine.CheckpointOptions{RetainSavepoints: 3}}
	src := &memSource[int]{parts: [][]int{input}, pauseEvery: 1, pause: 200 * time.Microsecond, unbounded: true}
	j := keyedCopyJob("sr", opts, src, sink)
	cancel, wait := startJob(t, j)
	var last string
	var taken []int64
	for i := 1; i <= 8; i++ {
		path, err := j.TriggerSavepoint(ctx)
		if err != nil {
			t.Fatalf("savepoint %d: %v", i, err)
		}
		last = path
		var id int64
		if _, err := fmt.Sscanf(path[strings.LastIndex(path, "savepoint-"):], "savepoint-%d", &id); err != nil {
			t.Fatalf("savepoint %d answered %q: %v", i, path, err)
		}
		taken = append(taken, id)
		want := taken[max(0, len(taken)-3):]
		if ms, data := s3Savepoints(t, mem, "sr"); !slices.Equal(ms, want) || !slices.Equal(data, want) {
			t.Fatalf("after savepoint %d: savepoint manifests %v, data of savepoints %v; want both %v", i, ms, data, want)
		}
		// The newest point, seen by another instance, is the savepoint
		// just answered, every file intact.
		r, err := s3store.New(ctx, mem, s3store.Options{Prefix: "ckpt", Job: "sr", Epoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		if md, _, err := r.Latest(ctx); err != nil || md == nil || md.Path != path {
			t.Fatalf("after savepoint %d the restore point is %+v (%v), want %s", i, md, err, path)
		}
	}
	if n := strings.Count(logs.String(), "removed an old savepoint beyond the retained count"); n != 5 {
		t.Fatalf("%d removals logged, want 5:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "failed") || strings.Contains(logs.String(), "cannot remove savepoints") {
		t.Fatalf("the job logged a failure:\n%s", logs.String())
	}
	cancel()
	_ = wait()

	// A plain run of a new owner resumes from the newest savepoint; the
	// same sink instance dedupes transactions it committed already.
	logs2 := &logbuf.Buffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs2, nil))
	opts.Storage = openS3(t, mem, "sr")
	if err := runJob(t, keyedCopyJob("sr", opts, &memSource[int]{parts: [][]int{input}}, sink)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs2.String(), fmt.Sprintf("path=%s", last)) {
		t.Fatalf("the run did not restore %s:\n%s", last, logs2.String())
	}
	got := counts(sink.output())
	for _, v := range input {
		if got[v] != 1 {
			t.Fatalf("record %d written %d times", v, got[v])
		}
	}
	if len(got) != len(input) {
		t.Fatalf("%d distinct records, want %d", len(got), len(input))
	}
}
