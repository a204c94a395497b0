package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// cancelWithDelete runs a copy job over input with DeleteOnCancel into
// sink, optionally takes a savepoint, waits until two checkpoints after
// it committed more output, and cancels. It returns the savepoint's path
// ("" without one) and the source's position in it.
func cancelWithDelete(t *testing.T, dir string, input []int, sink engine.Sink[int], committed func() []int, savepoint bool) (string, int) {
	t.Helper()
	st := newFileStorage(t, dir, "oc")
	src := &memSource[int]{parts: [][]int{input}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}
	j := copyJob("oc", engine.Options{Storage: st,
		Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond, DeleteOnCancel: true}}, src, sink)
	cancel, wait := startJob(t, j)
	waitFor(t, "a checkpoint", func() bool { return completedCount(j) >= 1 })
	path, pos := "", 0
	if savepoint {
		var err error
		if path, err = j.TriggerSavepoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, cs := range j.Status().Checkpoints {
			if cs.Path == path {
				pos, _ = src.position(cs.ID, 0)
			}
		}
	}
	n := completedCount(j)
	waitFor(t, "two checkpoints after the savepoint, committing more", func() bool {
		return completedCount(j) >= n+2 && len(committed()) > pos+10
	})
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if md, _, err := st.Latest(context.Background()); err != nil || (md != nil && md.Path != path) {
		t.Fatalf("after the cancel with delete the latest point is %v (%v), want only the savepoint %q", md, err, path)
	}
	return path, pos
}

// §3: a cancel with checkpoint.on_cancel delete removes the checkpoints but
// keeps the savepoints (they belong to the user). The next plain run must
// not resume from a savepoint older than what the cancelled run committed:
// with a transactional sink it refuses in one line naming the savepoint,
// the deletion and both ways out (--from it, accepting the duplicates, or
// --fresh), and writes nothing. (It resumed from the savepoint and wrote
// again everything committed after it.) --from the savepoint then works,
// and so does a plain run after that one.
func TestCancelWithDeleteDoesNotResumeFromAnOlderSavepoint(t *testing.T) {
	dir := t.TempDir()
	input := seq(0, 5000)
	sink1 := &txnSink{transactional: true}
	sp, pos := cancelWithDelete(t, dir, input, sink1, sink1.output, true)
	committedAfter := map[int]bool{}
	for _, v := range sink1.output() {
		if v >= input[pos] {
			committedAfter[v] = true
		}
	}

	sink2 := &txnSink{transactional: true}
	j := copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc")}, &memSource[int]{parts: [][]int{input[:pos+len(committedAfter)+100]}}, sink2)
	err := runJob(t, j)
	if err == nil {
		dups := 0
		for _, v := range sink2.output() {
			if committedAfter[v] {
				dups++
			}
		}
		t.Fatalf("the run after a cancel with delete resumed from %s and wrote again %d of the %d records the cancelled run had committed after it",
			sp, dups, len(committedAfter))
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !engine.IsNonRecoverable(err) || !strings.Contains(msg, sp) || !strings.Contains(msg, "on_cancel") ||
		!strings.Contains(msg, "--from "+sp) || !strings.Contains(msg, "--fresh") || !strings.Contains(msg, "duplicate") {
		t.Fatalf("Run = %q (non-recoverable %v); want one line naming %s and on_cancel, suggesting --from it (warning of duplicates) or --fresh",
			msg, engine.IsNonRecoverable(err), sp)
	}
	if n := len(sink2.output()); n != 0 {
		t.Fatalf("%d records written although the run refused to start", n)
	}
	t.Logf("refused: %s", msg)

	// --from the savepoint, on purpose: it runs, and so does the plain
	// run after it (its lineage continues above the deleted checkpoints).
	sink3 := &txnSink{transactional: true}
	j = copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc"), RestoreFrom: sp}, &memSource[int]{parts: [][]int{input[:pos+200]}}, sink3)
	if err := runJob(t, j); err != nil {
		t.Fatalf("--from %s after the refusal: %v", sp, err)
	}
	sink4 := &txnSink{transactional: true}
	j = copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc")}, &memSource[int]{parts: [][]int{input[:pos+300]}}, sink4)
	if err := runJob(t, j); err != nil {
		t.Fatalf("a plain run after --from %s: %v", sp, err)
	}
	// (The restore commits the final checkpoint's transaction again, into
	// this fresh sink: only what follows it counts.)
	if d := diffCounts(counts(atLeast(sink4.output(), input[pos+200])), counts(input[pos+200:pos+300])); d != "" {
		t.Fatalf("the plain run after --from did not continue where it ended: %s", d)
	}
}

// Without a savepoint the deleted checkpoints leave nothing to resume: a
// transactional sink's next plain run refuses too (starting over can
// write again what was committed, or skip input, as source.start says),
// naming --fresh.
func TestCancelWithDeleteWithoutSavepointRefusesToStartOver(t *testing.T) {
	dir := t.TempDir()
	input := seq(0, 5000)
	sink1 := &txnSink{transactional: true}
	cancelWithDelete(t, dir, input, sink1, sink1.output, false)
	sink2 := &txnSink{transactional: true}
	j := copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc")}, &memSource[int]{parts: [][]int{input[:100]}}, sink2)
	err := runJob(t, j)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "on_cancel") || !strings.Contains(err.Error(), "--fresh") {
		t.Fatalf("Run = %v; want one line naming on_cancel and --fresh (it wrote %d records again)", err, len(sink2.output()))
	}
	t.Logf("refused: %v", err)
}

// A sink that is not transactional accepts duplicates anyway (at least
// once): its job resumes from the savepoint, logged at Error level naming
// it and the deletion.
func TestCancelWithDeleteResumesOtherSinksLoudly(t *testing.T) {
	dir := t.TempDir()
	input := seq(0, 5000)
	sink1 := &memSink[int]{}
	sp, pos := cancelWithDelete(t, dir, input, sink1, sink1.output, true)
	logs := &logbuf.Buffer{}
	sink2 := &memSink[int]{}
	j := copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc"), Logger: slog.New(slog.NewTextHandler(logs, nil))},
		&memSource[int]{parts: [][]int{input[:pos+100]}}, sink2)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, sp) && strings.Contains(l, "on_cancel") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no error names %s and on_cancel:\n%s", sp, logs)
	}
	if d := diffCounts(counts(atLeast(sink2.output(), input[pos])), counts(input[pos:pos+100])); d != "" {
		t.Fatalf("did not resume from the savepoint at %d: %s", pos, d)
	}
}

// atLeast returns the values of vs not below min.
func atLeast(vs []int, min int) []int {
	var out []int
	for _, v := range vs {
		if v >= min {
			out = append(out, v)
		}
	}
	return out
}

// §3, --from after a cancel with delete: the savepoint's transactions were
// committed by the cancelled run, whose transactional ids then served
// newer transactions; committing them again is refused (Kafka's
// PRODUCER_FENCED, "DATA MAY BE LOST"). The deletion records the newest
// checkpoint's operator state, so the restore knows which of the
// savepoint's transactions were committed since (Scope.NewerCheckpoint)
// and commits none of them again. (Before, the restore was told of no
// newer checkpoint, committed them again and failed: the integration
// test TestCancelWithDeleteDoesNotReplayCommittedOutput failed that way
// about 1 run in 4.)
func TestFromASavepointAfterCancelWithDeleteKnowsWhatWasCommitted(t *testing.T) {
	dir := t.TempDir()
	sink := newFenceSink()
	sink.reuseIDs = true
	st := newFileStorage(t, dir, "oc")
	src := &memSource[int]{parts: [][]int{seq(0, 5000)}, pauseEvery: 1, pause: time.Millisecond, unbounded: true}
	j := copyJob("oc", engine.Options{Storage: st,
		Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond, DeleteOnCancel: true}}, src, sink)
	cancel, wait := startJob(t, j)
	<-sink.opened
	waitFor(t, "a checkpoint", func() bool { return completedCount(j) >= 1 })
	sp, err := j.TriggerSavepoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := completedCount(j)
	waitFor(t, "two checkpoints after the savepoint", func() bool { return completedCount(j) >= n+2 })
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run 1: %v", err)
	}
	var newest int64
	for _, cs := range j.Status().Checkpoints {
		if cs.Status == engine.CheckpointCompleted && !cs.Savepoint {
			newest = max(newest, cs.ID)
		}
	}
	if newest == 0 {
		t.Fatalf("run 1 reports no completed checkpoint: %+v", j.Status().Checkpoints)
	}

	j = copyJob("oc", engine.Options{Storage: newFileStorage(t, dir, "oc"), RestoreFrom: sp},
		&memSource[int]{parts: [][]int{seq(0, 5000)}, unbounded: true}, sink)
	cancel, wait = startJob(t, j)
	var sc engine.Scope
	select {
	case sc = <-sink.opened:
	case <-time.After(10 * time.Second):
	}
	cancel()
	if err := wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("--from %s after the cancel: %v", sp, err)
	}
	if sc.NewerCheckpoint != newest || len(sc.NewerEntries) == 0 {
		t.Fatalf("--from %s: the sink was told of newer checkpoint %d with %d entries, want %d, the newest one the cancel deleted",
			sp, sc.NewerCheckpoint, len(sc.NewerEntries), newest)
	}
}
