package engine_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// What a crash or a failed completion leaves behind (a savepoint-<id>
// without _metadata, after its files moved there; chk-<n> directories
// without _metadata, older and newer than the newest complete checkpoint)
// is removed when the job starts, each logged once at Info naming its
// path, instead of being warned about at every start. The job's new
// checkpoints still take ids above the removed ones.
func TestLeftoverIncompletePointsAreRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	first := copyJob("left", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: newFileStorage(t, dir, "left")},
		&memSource[int]{parts: [][]int{seq(0, 100)}, pauseEvery: 1, pause: time.Millisecond}, &memSink[int]{})
	if err := runJob(t, first); err != nil {
		t.Fatal(err)
	}
	md, _, err := newFileStorage(t, dir, "left").Latest(context.Background())
	if err != nil || md == nil {
		t.Fatalf("latest = %v, %v", md, err)
	}
	jobDir := filepath.Join(dir, "left")
	leftover := func(name string) string {
		t.Helper()
		p := filepath.Join(jobDir, name)
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists already", p)
		}
		if err := os.MkdirAll(filepath.Join(p, "op-source", "0"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "op-source", "0", "state"), []byte("half a snapshot"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	top := md.CheckpointID + 2
	leftovers := []string{
		leftover("chk-0"), // older than the newest complete one
		leftover("savepoint-" + itoa(md.CheckpointID+1)),
		leftover("chk-" + itoa(top)),
	}
	// A removal (DiscardAll, retention) cut short after the _metadata went.
	if err := os.WriteFile(filepath.Join(leftovers[0], "_committed"), []byte("committed 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	run := func() string {
		t.Helper()
		logs := &logbuf.Buffer{}
		j := copyJob("left", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: newFileStorage(t, dir, "left"),
			Logger: slog.New(slog.NewTextHandler(logs, nil))},
			&memSource[int]{parts: [][]int{seq(0, 100)}}, &memSink[int]{})
		if err := runJob(t, j); err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	logs := run()
	if strings.Contains(logs, "level=WARN") {
		t.Errorf("the start warned:\n%s", logs)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
		var lines []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "path="+p+" ") || strings.HasSuffix(l, "path="+p) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "level=INFO") {
			t.Errorf("want one Info line naming %s, got %q:\n%s", p, lines, logs)
		}
	}
	latest, _, err := newFileStorage(t, dir, "left").Latest(context.Background())
	if err != nil || latest == nil || latest.CheckpointID <= top {
		t.Fatalf("latest after the run = %v, %v; want a checkpoint above the removed %d", latest, err, top)
	}
	if logs := run(); strings.Contains(logs, "incomplete") || strings.Contains(logs, "level=WARN") {
		t.Errorf("the next start still speaks of leftovers:\n%s", logs)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
