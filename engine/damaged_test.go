package engine_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// txnSink is a memSink that says it is transactional
// (engine.TransactionalSink), like the Kafka sink with exactly_once.
type txnSink struct {
	memSink[int]
	transactional bool
}

func (s *txnSink) Transactional() bool { return s.transactional }

// damagedStorage runs a copy job to the end with checkpoints in a file
// storage, flips one bit in the newest checkpoint's _metadata and returns
// the storage's directory, the damaged checkpoint's path and the newest
// intact one's.
func damagedStorage(t *testing.T, job string) (dir, damaged, intact string) {
	t.Helper()
	dir = t.TempDir()
	st := newFileStorage(t, dir, job)
	j := copyJob(job, engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: st},
		&memSource[int]{parts: [][]int{seq(0, 200)}, pauseEvery: 1, pause: time.Millisecond}, &memSink[int]{})
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	md, _, err := st.Latest(context.Background())
	if err != nil || md == nil {
		t.Fatalf("latest = %v, %v", md, err)
	}
	damaged = md.Path
	meta := filepath.Join(damaged, "_metadata")
	raw, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x01
	if err := os.WriteFile(meta, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	prev, infos, err := newFileStorage(t, dir, job).Latest(context.Background())
	if err != nil || prev == nil {
		t.Fatalf("no intact checkpoint before the damaged one: %v %v", prev, err)
	}
	for _, in := range infos {
		if in.Path == damaged && !in.Damaged {
			t.Fatalf("the storage does not report %s as damaged: %+v", damaged, in)
		}
	}
	return dir, damaged, prev.Path
}

func newFileStorage(t *testing.T, dir, job string) checkpoint.Storage {
	t.Helper()
	st, err := dirstore.NewFileStorage(dir, job, dirstore.StorageOptions{Retained: 3})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// With a transactional sink a damaged newest checkpoint is never skipped
// silently: its transactions may have committed output that a replay from
// the one before writes again. The job refuses to start with one line
// naming the damaged checkpoint and saying what to do. (It used to
// restore the one before with a warning, and replay.)
func TestDamagedNewestCheckpointRefusesATransactionalSink(t *testing.T) {
	dir, damaged, intact := damagedStorage(t, "dmg")
	sink := &txnSink{transactional: true}
	j := copyJob("dmg", engine.Options{Storage: newFileStorage(t, dir, "dmg")}, &memSource[int]{parts: [][]int{seq(0, 200)}}, sink)
	err := runJob(t, j)
	if err == nil {
		t.Fatalf("the job ran from the checkpoint before the damaged %s", damaged)
	}
	msg := err.Error()
	if !engine.IsNonRecoverable(err) || strings.Contains(msg, "\n") || !strings.Contains(msg, damaged) ||
		!strings.Contains(msg, "--from "+intact) || !strings.Contains(msg, "duplicate") {
		t.Fatalf("Run = %q (non-recoverable: %v); want one line naming %s, suggesting --from %s and warning of duplicates",
			msg, engine.IsNonRecoverable(err), damaged, intact)
	}
	if n := len(sink.output()); n != 0 {
		t.Fatalf("%d records written although the job refused to start", n)
	}
	t.Logf("refused: %s", msg)
}

// A sink that is not transactional keeps the fallback to the checkpoint
// before, logged at Error level naming both checkpoints.
func TestDamagedNewestCheckpointFallsBackForOtherSinks(t *testing.T) {
	for _, sink := range []engine.Sink[int]{&memSink[int]{}, &txnSink{transactional: false}} {
		dir, damaged, intact := damagedStorage(t, "dmg")
		logs := &logbuf.Buffer{}
		j := copyJob("dmg", engine.Options{Storage: newFileStorage(t, dir, "dmg"), Logger: slog.New(slog.NewTextHandler(logs, nil))},
			&memSource[int]{parts: [][]int{seq(0, 200)}}, sink)
		if err := runJob(t, j); err != nil {
			t.Fatal(err)
		}
		var line string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "level=ERROR") && strings.Contains(l, damaged) {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, intact) {
			t.Fatalf("no error naming %s and %s:\n%s", damaged, intact, logs)
		}
		if !strings.Contains(logs.String(), "msg=restoring") || !strings.Contains(logs.String(), "path="+intact) {
			t.Fatalf("did not restore %s:\n%s", intact, logs)
		}
	}
}

// With --from (Options.RestoreFrom) the operator chose the checkpoint: the
// damaged newest one does not block.
func TestDamagedNewestCheckpointDoesNotBlockRestoreFrom(t *testing.T) {
	dir, _, intact := damagedStorage(t, "dmg")
	sink := &txnSink{transactional: true}
	logs := &logbuf.Buffer{}
	j := copyJob("dmg", engine.Options{Storage: newFileStorage(t, dir, "dmg"), RestoreFrom: intact, Logger: slog.New(slog.NewTextHandler(logs, nil))},
		&memSource[int]{parts: [][]int{seq(0, 200)}}, sink)
	if err := runJob(t, j); err != nil {
		t.Fatalf("Run with --from %s = %v", intact, err)
	}
	if !strings.Contains(logs.String(), "msg=restoring") || !strings.Contains(logs.String(), "restored_from="+intact) {
		t.Fatalf("the job did not restore %s:\n%s", intact, logs)
	}
}
