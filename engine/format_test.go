package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// fmtSource is a memSource that declares the format version of its
// operator state (engine.StateFormatVersioner) and records the restored
// format its readers were told.
type fmtSource struct {
	*memSource[int]
	format   int
	mu       sync.Mutex
	restored []int
}

func (s *fmtSource) StateFormatVersion() int { return s.format }

func (s *fmtSource) NewReader(ctx context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[int], error) {
	s.mu.Lock()
	s.restored = append(s.restored, sc.RestoredStateFormat)
	s.mu.Unlock()
	return s.memSource.NewReader(ctx, sc, restored)
}

// fmtSink is a transactional memSink declaring its state format.
type fmtSink struct {
	*memSink[int]
	format int
}

func (s *fmtSink) StateFormatVersion() int { return s.format }
func (s *fmtSink) Transactional() bool     { return true }

// fmtJob is a copy job whose source and sink declare the formats given (0:
// they do not implement StateFormatVersioner) run by a binary of version.
func fmtJob(t *testing.T, dir, version, from string, srcFormat, sinkFormat int) (*engine.Job, *fmtSource, *memSink[int]) {
	t.Helper()
	st, err := dirstore.NewFileStorage(dir, "fmt", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	mem := &memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 10, pause: time.Millisecond}
	src := &fmtSource{memSource: mem, format: srcFormat}
	out := &memSink[int]{}
	opts := engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 5 * time.Millisecond}, Storage: st, Version: version, RestoreFrom: from}
	j := engine.NewJob("fmt", opts)
	s := engine.FromSource(j, "source", 1, engine.Source[int](src))
	if sinkFormat > 0 {
		engine.SinkTo(s, "sink", 1, engine.Sink[int](&fmtSink{memSink: out, format: sinkFormat}))
	} else {
		engine.SinkTo(s, "sink", 1, engine.Sink[int](out))
	}
	return j, src, out
}

func latestOf(t *testing.T, dir string) *checkpoint.Metadata {
	t.Helper()
	st, err := dirstore.NewFileStorage(dir, "fmt", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	md, _, err := st.Latest(context.Background())
	if err != nil || md == nil {
		t.Fatalf("latest = %v, %v", md, err)
	}
	return md
}

// Every checkpoint records the writing binary's version and, per
// operator, the format version its connector declared; without an
// Options.Version the build's module version is recorded.
func TestCheckpointRecordsVersionAndStateFormats(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := fmtJob(t, dir, "v1.2.3-test", "", 3, 2)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	md := latestOf(t, dir)
	if md.WriterVersion != "v1.2.3-test" {
		t.Errorf("writer version %q, want v1.2.3-test", md.WriterVersion)
	}
	if f := md.Operator("source").StateFormat; f != 3 {
		t.Errorf("source state format %d, want 3", f)
	}
	if f := md.Operator("sink").StateFormat; f != 2 {
		t.Errorf("sink state format %d, want 2", f)
	}

	dir = t.TempDir()
	j, _, _ = fmtJob(t, dir, "", "", 0, 0)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	md = latestOf(t, dir)
	if md.WriterVersion == "" {
		t.Error("no writer version recorded by default")
	}
	if f := md.Operator("source").StateFormat; f != 0 {
		t.Errorf("an undeclared format is recorded as %d", f)
	}
	t.Logf("default writer version: %q", md.WriterVersion)
}

// A checkpoint whose operator state a newer binary wrote in a newer format
// is refused by an older one, plain or with --from, before anything runs:
// one line, non-recoverable, ErrIncompatibleCheckpoint (the processor exits
// 2), naming the checkpoint, the operator, both formats and both versions.
// Nothing is adopted.
func TestNewerStateFormatIsRefused(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := fmtJob(t, dir, "v2.0.0", "", 2, 1)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	md := latestOf(t, dir)
	for _, from := range []string{"", md.Path} {
		j, src, out := fmtJob(t, dir, "v1.0.0", from, 1, 1)
		err := runJob(t, j)
		if err == nil {
			t.Fatalf("from %q: an older binary restored state of a newer format", from)
		}
		msg := err.Error()
		t.Logf("refused: %s", msg)
		if !errors.Is(err, engine.ErrIncompatibleCheckpoint) || !engine.IsNonRecoverable(err) || strings.Contains(msg, "\n") {
			t.Fatalf("from %q: Run = %q, want one non-recoverable line marked ErrIncompatibleCheckpoint", from, msg)
		}
		for _, want := range []string{md.Path, `"source"`, "format 2", "format 1", "v2.0.0", "v1.0.0", "--fresh"} {
			if !strings.Contains(msg, want) {
				t.Errorf("from %q: the refusal does not name %s: %s", from, want, msg)
			}
		}
		if strings.Contains(msg, `"sink"`) {
			t.Errorf("from %q: the refusal names the sink, whose format fits: %s", from, msg)
		}
		if len(src.restored) != 0 || len(out.output()) != 0 {
			t.Fatalf("from %q: the job ran (%d readers opened, %d records written)", from, len(src.restored), len(out.output()))
		}
		if now := latestOf(t, dir); now.CheckpointID != md.CheckpointID {
			t.Fatalf("from %q: the latest checkpoint is now %s, was %s", from, now.Path, md.Path)
		}
	}
}

// Restoring from an older point (--from) while the job's newest checkpoint
// holds sink state of a newer format is refused as well: the sinks read
// the newer checkpoint's state to tell what was committed since.
func TestNewerStateFormatInTheSupersededCheckpointIsRefused(t *testing.T) {
	dir := t.TempDir()
	j, _, _ := fmtJob(t, dir, "v1.0.0", "", 1, 1)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	old := latestOf(t, dir)
	// An upgrade resumes (an older format restores) and writes the new
	// format.
	j, src, _ := fmtJob(t, dir, "v2.0.0", "", 1, 2)
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	if len(src.restored) != 1 || src.restored[0] != 1 {
		t.Fatalf("the upgraded source was told restored formats %v, want [1]", src.restored)
	}
	newer := latestOf(t, dir)
	if newer.CheckpointID <= old.CheckpointID || newer.Operator("sink").StateFormat != 2 {
		t.Fatalf("the upgraded run left %s with sink format %d", newer.Path, newer.Operator("sink").StateFormat)
	}
	// The rollback.
	j, _, out := fmtJob(t, dir, "v1.0.0", old.Path, 1, 1)
	err := runJob(t, j)
	if !errors.Is(err, engine.ErrIncompatibleCheckpoint) {
		t.Fatalf("rolling back to %s under %s with a newer sink format: Run = %v", old.Path, newer.Path, err)
	}
	t.Logf("refused: %s", err)
	for _, want := range []string{old.Path, newer.Path, `"sink"`, "format 2", "v2.0.0", "v1.0.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %s: %s", want, err)
		}
	}
	if len(out.output()) != 0 || latestOf(t, dir).CheckpointID != newer.CheckpointID {
		t.Fatal("the refused restore ran or adopted")
	}
}

// Older formats and checkpoints without recorded formats (written before
// formats were recorded) restore, and the connector is told which format
// it got.
func TestOlderOrAbsentStateFormatRestores(t *testing.T) {
	for _, was := range []int{0, 1} {
		dir := t.TempDir()
		j, _, _ := fmtJob(t, dir, "v1.0.0", "", was, was)
		if err := runJob(t, j); err != nil {
			t.Fatal(err)
		}
		j, src, _ := fmtJob(t, dir, "v2.0.0", "", 2, 2)
		if err := runJob(t, j); err != nil {
			t.Fatalf("format %d into 2: %v", was, err)
		}
		if len(src.restored) != 1 || src.restored[0] != was {
			t.Fatalf("format %d into 2: the source was told %v", was, src.restored)
		}
	}
}
