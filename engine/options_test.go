package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// copyJob is source → sink with one subtask each.
func copyJob(name string, opts engine.Options, src engine.Source[int], sink engine.Sink[int]) *engine.Job {
	j := engine.NewJob(name, opts)
	engine.SinkTo(engine.FromSource(j, "source", 1, src), "sink", 1, sink)
	return j
}

// startJob runs j in the background; wait returns Run's error.
func startJob(t *testing.T, j *engine.Job) (cancel func(), wait func() error) {
	t.Helper()
	ctx, cancelCtx := context.WithTimeout(context.Background(), 2*time.Minute)
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	t.Cleanup(func() {
		cancelCtx()
		<-done
		done <- nil
	})
	return cancelCtx, func() error {
		err := <-done
		done <- err
		return err
	}
}

// waitFor polls cond until it holds or fails the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func completedCount(j *engine.Job) int {
	n := 0
	for _, cs := range j.Status().Checkpoints {
		if cs.Status == engine.CheckpointCompleted {
			n++
		}
	}
	return n
}

func byStatus(j *engine.Job, status engine.CheckpointStatus) []engine.CheckpointStats {
	var out []engine.CheckpointStats
	for _, cs := range j.Status().Checkpoints {
		if cs.Status == status {
			out = append(out, cs)
		}
	}
	return out
}

// waitForStatus blocks until checkpoint id has the status in j's history
// or ctx ends.
func waitForStatus(ctx context.Context, j *engine.Job, id int64, status engine.CheckpointStatus) {
	for ctx.Err() == nil {
		for _, cs := range j.Status().Checkpoints {
			if cs.ID == id && cs.Status == status {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// A checkpoint that does not complete within the timeout is aborted (and
// the sink told so); consecutive failures beyond the tolerable number fail
// the job, fewer do not. The sink's pre-commit of checkpoints 1 and 2
// returns only once the coordinator expired them: a sleep longer than the
// timeout was not enough under load, where the coordinator, starved of
// CPU, took the late ack before its next tick and completed checkpoint 2.
func TestCheckpointTimeoutAndTolerableFailures(t *testing.T) {
	for _, tolerable := range []int{1, 2} {
		var j *engine.Job
		sink := &memSink[int]{beforeSnapshot: func(ctx context.Context, id int64) {
			if id <= 2 {
				waitForStatus(ctx, j, id, engine.CheckpointFailed)
			}
		}}
		j = copyJob("timeout", engine.Options{
			Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, TolerableFailures: tolerable},
		}, &memSource[int]{parts: [][]int{seq(0, 400)}, pauseEvery: 1, pause: time.Millisecond}, sink)
		err := runJob(t, j)
		failed := byStatus(j, engine.CheckpointFailed)
		for _, cs := range failed {
			if !strings.Contains(cs.Failure, "expired") {
				t.Errorf("checkpoint %d failed with %q, want an expiry", cs.ID, cs.Failure)
			}
		}
		sink.mu.Lock()
		aborted := len(sink.aborted)
		sink.mu.Unlock()
		if aborted == 0 {
			t.Errorf("tolerable=%d: the sink was never told of an aborted checkpoint", tolerable)
		}
		switch tolerable {
		case 1:
			if err == nil || !strings.Contains(err.Error(), "2 consecutive checkpoint failures exceed the 1 tolerated") {
				t.Fatalf("tolerable=1: Run = %v, want the job to fail at the second expired checkpoint", err)
			}
		case 2:
			if err != nil {
				t.Fatalf("tolerable=2: Run = %v, want two expired checkpoints tolerated", err)
			}
			if len(failed) != 2 || completedCount(j) == 0 {
				t.Fatalf("tolerable=2: %d failed and %d completed checkpoints, want 2 failed then completions", len(failed), completedCount(j))
			}
			if got := len(sink.output()); got != 400 {
				t.Fatalf("tolerable=2: %d records committed, want 400", got)
			}
		}
	}
}

// maxOverlap is the largest number of checkpoints in flight at once.
func maxOverlap(cs []engine.CheckpointStats) int {
	best := 0
	for _, a := range cs {
		n := 0
		for _, b := range cs {
			if !b.Triggered.After(a.Triggered) && b.Triggered.Add(b.Duration).After(a.Triggered) {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

// MaxConcurrent bounds the checkpoints in flight.
func TestMaxConcurrentCheckpoints(t *testing.T) {
	for _, maxc := range []int{1, 3} {
		sink := &memSink[int]{snapshotDelay: func(int64) time.Duration { return 30 * time.Millisecond }}
		j := copyJob("concurrent", engine.Options{
			Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond, MaxConcurrent: maxc},
		}, &memSource[int]{parts: [][]int{seq(0, 100000)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}, sink)
		cancel, wait := startJob(t, j)
		waitFor(t, "ten checkpoints", func() bool { return completedCount(j) >= 10 })
		cancel()
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after cancel = %v", err)
		}
		var done []engine.CheckpointStats
		for _, cs := range j.Status().Checkpoints {
			if cs.Status != engine.CheckpointInProgress && cs.Status != engine.CheckpointFailed {
				done = append(done, cs)
			}
		}
		got := maxOverlap(done)
		switch {
		case got > maxc:
			t.Errorf("max_concurrent=%d: %d checkpoints were in flight at once", maxc, got)
		case maxc > 1 && got < 2:
			t.Errorf("max_concurrent=%d: checkpoints never overlapped although each takes 30ms at a 5ms interval", maxc)
		}
	}
}

// Stop-with-savepoint commits everything read before its barrier and
// leaves nothing pending; a job resumed from the savepoint (like flink run
// -s) goes on from there exactly, even with the keyed operator rescaled
// from 2 to 3 subtasks.
func TestStopWithSavepointAndResume(t *testing.T) {
	dir := t.TempDir()
	storage := func() checkpoint.Storage {
		st, err := dirstore.NewFileStorage(dir, "sp", dirstore.StorageOptions{Retained: 2})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	parts := [][]int{seq(0, 3000), seq(5000, 3000)}
	sink := &memSink[wordCount]{}
	build := func(src *memSource[int], from string, p int) *engine.Job {
		j := engine.NewJob("sp", engine.Options{
			Checkpoint:  engine.CheckpointOptions{Interval: 20 * time.Millisecond},
			Storage:     storage(),
			Backend:     statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: filepath.Join(dir, "state")}),
			RestoreFrom: from,
		})
		in := engine.FromSource(j, "source", 2, src)
		words := engine.Map(in, "word", func(v int) (wordCount, error) { return wordCount{Word: fmt.Sprint("k", v%7), Count: 1}, nil })
		keyed := engine.KeyBy(words, func(wc wordCount) string { return wc.Word }, state.StringCodec{})
		sums := engine.Sum(keyed, "count", p, state.JSONCodec[wordCount]{}, func(wc wordCount) int64 { return wc.Count },
			func(wc wordCount, n int64) wordCount { wc.Count = n; return wc })
		engine.SinkTo(sums, "sink", 2, sink)
		return j
	}
	// The first run is given only the first half of each part, then waits
	// as an unbounded source does: the stop comes before the end of the
	// input however slow the machine is (waiting for two checkpoints took
	// longer than reading all 6000 records once under load).
	first := [][]int{parts[0][:1500], parts[1][:1500]}
	src := &memSource[int]{parts: first, pauseEvery: 10, pause: time.Millisecond, unbounded: true}
	j := build(src, "", 2)
	_, wait := startJob(t, j)
	waitFor(t, "a checkpoint", func() bool { return completedCount(j) >= 2 })
	path, err := j.StopWithSavepoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run after stop = %v, want ErrStopped", err)
	}
	if j.Status().State != engine.JobStopped {
		t.Errorf("state %s, want STOPPED", j.Status().State)
	}
	var spID int64
	for _, cs := range j.Status().Checkpoints {
		if cs.Savepoint && cs.Status == engine.CheckpointCompleted {
			spID = cs.ID
		}
	}
	p0, _ := src.position(spID, 0)
	p1, _ := src.position(spID, 1)
	if got := len(sink.output()); got != p0+p1 {
		t.Fatalf("%d records committed after stop-with-savepoint, the sources read %d before it", got, p0+p1)
	}
	if _, err := os.Stat(filepath.Join(path, "_metadata")); err != nil {
		t.Fatalf("savepoint path %s: %v", path, err)
	}

	// Resume from the savepoint, rescaled, with bounded sources.
	j2 := build(&memSource[int]{parts: parts}, path, 3)
	if err := runJob(t, j2); err != nil {
		t.Fatal(err)
	}
	n := map[string]int64{}
	want := map[wordCount]int{}
	for _, p := range parts {
		for _, v := range p {
			k := fmt.Sprint("k", v%7)
			n[k]++
			want[wordCount{k, n[k]}] = 1
		}
	}
	if d := diffCounts(counts(sink.output()), want); d != "" {
		t.Fatalf("output after resuming from the savepoint: %s", d)
	}
}

// A stop asked before the job runs (a SIGTERM while the processor starts)
// waits for it to run and then stops it with a savepoint; after Run
// returned, a savepoint fails at once.
func TestStopAskedBeforeTheJobRunsWaitsForIt(t *testing.T) {
	sink := &memSink[int]{}
	j := copyJob("early", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: time.Hour}},
		&memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}, sink)
	type result struct {
		path string
		err  error
	}
	stopped := make(chan result, 1)
	go func() {
		path, err := j.StopWithSavepoint(context.Background())
		stopped <- result{path, err}
	}()
	select {
	case r := <-stopped:
		t.Fatalf("the stop returned before the job ran: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	_, wait := startJob(t, j)
	r := <-stopped
	if r.err != nil || r.path == "" {
		t.Fatalf("stop before run: path %q, err %v", r.path, r.err)
	}
	if err := wait(); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run = %v, want ErrStopped", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := j.TriggerSavepoint(ctx); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("savepoint after Run returned: %v, want an immediate not-running error", err)
	}
}

// Cancellation keeps the checkpoints unless DeleteOnCancel says otherwise.
func TestCancelRetention(t *testing.T) {
	for _, del := range []bool{false, true} {
		st := dirstore.NewMemoryStorage("cancel", dirstore.StorageOptions{Retained: 3})
		j := copyJob("cancel", engine.Options{
			Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond, DeleteOnCancel: del},
			Storage:    st,
		}, &memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}, &memSink[int]{})
		cancel, wait := startJob(t, j)
		waitFor(t, "checkpoints", func() bool { return completedCount(j) >= 2 })
		cancel()
		if err := wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
		if s := j.Status().State; s != engine.JobCanceled {
			t.Errorf("state %s, want CANCELED", s)
		}
		md, _, err := st.Latest(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if del != (md == nil) {
			t.Errorf("DeleteOnCancel=%v: latest checkpoint after cancel = %v", del, md)
		}
	}
}

// Injected I/O errors while checkpoint 3 is written fail that checkpoint,
// not the job: with one failure tolerated it goes on, and its output is
// exact. The source takes at least 300ms, so checkpoint 3 is never the
// final one even on a loaded machine.
func TestStorageFaultFailsTheCheckpointNotTheJob(t *testing.T) {
	injected := errors.New("injected disk error")
	var faults atomic.Int64
	fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		// chk-3 itself, not chk-30 to chk-39: two failures in a row
		// would exceed the one tolerated.
		sep := string(filepath.Separator)
		inChk3 := strings.Contains(op.Path, sep+"chk-3"+sep) || strings.HasSuffix(op.Path, sep+"chk-3")
		if (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpRename) && inChk3 {
			faults.Add(1)
			return injected
		}
		return nil
	}))
	st, err := dirstore.NewFileStorage(t.TempDir(), "fault", dirstore.StorageOptions{Retained: 2, FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	parts := textParts(2, 600, 9)
	sink := &memSink[wordCount]{}
	var poison atomic.Int64
	j := wordCountJob("fault", engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond, TolerableFailures: 1},
		Storage:    st,
		Backend:    statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: t.TempDir(), Incremental: true}),
	}, &memSource[string]{parts: parts, pauseEvery: 10, pause: 5 * time.Millisecond}, sink, &poison, newFailPlan())
	if err := runJob(t, j); err != nil {
		t.Fatalf("Run = %v, want the job to survive one failed checkpoint", err)
	}
	if faults.Load() == 0 {
		t.Fatal("no fault was injected")
	}
	var failed []engine.CheckpointStats
	for _, cs := range byStatus(j, engine.CheckpointFailed) {
		failed = append(failed, cs)
		if cs.ID != 3 || !strings.Contains(cs.Failure, "injected disk error") {
			t.Errorf("checkpoint %d failed with %q, want only checkpoint 3 with the injected error", cs.ID, cs.Failure)
		}
	}
	if len(failed) != 1 || j.Status().Restarts != 0 {
		t.Errorf("%d failed checkpoints and %d restarts, want 1 and 0", len(failed), j.Status().Restarts)
	}
	if d := diffCounts(counts(sink.output()), expectedCounts(parts)); d != "" {
		t.Fatalf("output: %s", d)
	}
}

// drainSink's writers say when Drain ran and which checkpoint the writer
// was last notified of at that moment.
type drainSink struct {
	memSink[int]
	mu        sync.Mutex
	drainedAt []int64
}

type drainWriter struct {
	engine.SinkWriter[int]
	s        *drainSink
	notified int64
}

func (s *drainSink) NewWriter(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[int], error) {
	w, err := s.memSink.NewWriter(ctx, sc, restored)
	return &drainWriter{SinkWriter: w, s: s}, err
}

func (w *drainWriter) NotifyCheckpointComplete(ctx context.Context, id int64) error {
	w.notified = id
	return w.SinkWriter.NotifyCheckpointComplete(ctx, id)
}

func (w *drainWriter) Drain(context.Context) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.drainedAt = append(w.s.drainedAt, w.notified)
	return nil
}

// A stop with a savepoint drains every sink writer that implements
// engine.Drainer after notifying it of the savepoint, before the stop
// succeeds; ordinary checkpoints do not drain.
func TestStopWithSavepointDrainsTheSinks(t *testing.T) {
	sink := &drainSink{}
	j := engine.NewJob("drain", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond}})
	engine.SinkTo(engine.FromSource(j, "source", 1,
		&memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}), "sink", 2, sink)
	_, wait := startJob(t, j)
	waitFor(t, "checkpoints", func() bool { return completedCount(j) >= 3 })
	sink.mu.Lock()
	early := len(sink.drainedAt)
	sink.mu.Unlock()
	if early != 0 {
		t.Fatalf("drained %d times before any stop", early)
	}
	path, err := j.StopWithSavepoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run = %v", err)
	}
	var spID int64
	for _, cs := range j.Status().Checkpoints {
		if cs.Savepoint && cs.Path == path {
			spID = cs.ID
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.drainedAt) != 2 || sink.drainedAt[0] != spID || sink.drainedAt[1] != spID {
		t.Fatalf("drained at %v, want each of the 2 writers once, after the notification of savepoint %d", sink.drainedAt, spID)
	}
}

// Checkpoint ids are never reused within a job, even when an attempt
// fails with a checkpoint in flight whose files were then removed: the
// storage refuses writers for an aborted id, and two history entries of
// one id would be ambiguous. (The next attempt took its first id from the
// storage's listing and the restored checkpoint, where the discarded
// checkpoint no longer was.)
func TestCheckpointIDsAreNotReusedAfterAFailedAttempt(t *testing.T) {
	var j *engine.Job
	var failNow, failed atomic.Bool
	sink := &memSink[int]{beforeSnapshot: func(ctx context.Context, id int64) {
		// Checkpoint 1 completes; the attempt fails while 2 is in flight.
		if id >= 2 && failed.CompareAndSwap(false, true) {
			failNow.Store(true)
			<-ctx.Done() // the attempt fails with this checkpoint in flight
		}
	}}
	j = engine.NewJob("ids", engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond},
		Restart:    engine.FixedDelay(1, 0),
		// The map fails while the sink, on its own goroutine, holds the
		// checkpoint.
		DisableChaining: true,
	})
	src := engine.FromSource(j, "source", 1, &memSource[int]{parts: [][]int{seq(0, 300)}, pauseEvery: 1, pause: time.Millisecond})
	m := engine.Map(src, "fail", func(v int) (int, error) {
		if failNow.CompareAndSwap(true, false) {
			return 0, errors.New("injected failure while a checkpoint is in flight")
		}
		return v, nil
	})
	engine.SinkTo(m, "sink", 1, sink)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, cs := range j.Status().Checkpoints {
		if seen[cs.ID] {
			t.Fatalf("checkpoint id %d used twice: %+v", cs.ID, j.Status().Checkpoints)
		}
		seen[cs.ID] = true
	}
	if j.Status().Restarts != 1 || completedCount(j) == 0 {
		t.Fatalf("%d restarts, %d completed checkpoints; want 1 and some", j.Status().Restarts, completedCount(j))
	}
}
