package runner

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// runCLI runs the processor command line args and returns the exit code,
// stdout and stderr.
func runCLI(args ...string) (int, string, string) {
	var out, errOut logbuf.Buffer
	code := execute(context.Background(), newRoot(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// savepointNames are the savepoint directories in jobDir.
func savepointNames(t *testing.T, jobDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(jobDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "savepoint-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// processor savepoints list shows every savepoint, its size and the
// newest restore point; prune --keep N removes the oldest beyond N (a dry
// run only says so) and tells what it removed, kept and left alone.
func TestSavepointsListAndPrune(t *testing.T) {
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	storeCheckpoint(t, st, 1, false)
	storeCheckpoint(t, st, 2, true)
	storeCheckpoint(t, st, 3, true)
	storeCheckpoint(t, st, 4, false)
	storeCheckpoint(t, st, 5, true)
	storeCheckpoint(t, st, 6, true)
	jobDir := filepath.Join(dir, "job")
	if err := os.Mkdir(filepath.Join(jobDir, "savepoint-7"), 0o755); err != nil { // never completed
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jobDir, "savepoint-7", "state"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCLI("savepoints", "list", jobDir)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("list printed:\n%s", out)
	}
	for i, want := range []string{"2 ", "3 ", "5 ", "6 ", "7 "} {
		if !strings.HasPrefix(lines[i+1], want) {
			t.Fatalf("line %d %q, want savepoint %s:\n%s", i+1, lines[i+1], want, out)
		}
	}
	if !strings.Contains(lines[4], "newest restore point") || !strings.Contains(lines[4], "240 B") || !strings.Contains(lines[5], "incomplete") {
		t.Fatalf("list printed:\n%s", out)
	}

	code, out, errOut = runCLI("savepoints", "prune", "--keep", "2", "--dry-run", jobDir)
	if code != 0 || !strings.Contains(out, "would remove "+filepath.Join(jobDir, "savepoint-2")) ||
		!strings.Contains(out, "would remove 2 savepoint(s)") || !strings.Contains(out, "left "+filepath.Join(jobDir, "savepoint-7")+" alone: incomplete") {
		t.Fatalf("prune --dry-run: exit %d:\n%s%s", code, out, errOut)
	}
	if got := savepointNames(t, jobDir); len(got) != 5 {
		t.Fatalf("the dry run removed savepoints: %v left", got)
	}

	code, out, errOut = runCLI("savepoints", "prune", "--keep", "2", jobDir)
	if code != 0 || !strings.Contains(out, "removed "+filepath.Join(jobDir, "savepoint-3")) || !strings.Contains(out, "removed 2 savepoint(s), 480 B; 2 kept") {
		t.Fatalf("prune: exit %d:\n%s%s", code, out, errOut)
	}
	if got := savepointNames(t, jobDir); !slices.Equal(got, []string{"savepoint-5", "savepoint-6", "savepoint-7"}) {
		t.Fatalf("left %v, want savepoints 5, 6 and the incomplete 7", got)
	}
	if code, out, errOut := runCLI("checkpoints", "list", jobDir); code != 0 || strings.Contains(out, "DAMAGED") {
		t.Fatalf("checkpoints list after the prune: exit %d:\n%s%s", code, out, errOut)
	}
}

// prune needs --keep of at least 1, an existing directory and a stopped
// job: while the job runs (its lock held) it refuses, naming the lock,
// and removes nothing.
func TestSavepointsPruneRefusals(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nojob")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"savepoints", "prune", missing}, 2, "--keep N is required"},
		{[]string{"savepoints", "prune", "--keep", "0", missing}, 2, "at least 1 savepoint must stay"},
		{[]string{"savepoints", "prune", "--keep", "1"}, 2, "accepts 1 arg"},
		{[]string{"savepoints", "prune", "--keep", "1", missing}, 1, missing},
		{[]string{"savepoints", "list", missing}, 1, missing},
	} {
		if code, _, errOut := runCLI(tc.args...); code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d %q, want %d with %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}

	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	m := newMemJob(100000, time.Millisecond)
	r := startRun(t, m, nil, "--config", cfg)
	addr := r.addr()
	jobDir := filepath.Join(dir, "checkpoints", "memwc")
	for range 3 {
		if code, out, errOut := runCLI("savepoint", "--http", addr); code != 0 {
			t.Fatalf("savepoint: exit %d %s %s", code, out, errOut)
		}
	}
	code, out, errOut := runCLI("savepoints", "prune", "--keep", "1", jobDir)
	if code != 1 || !strings.Contains(errOut, filepath.Join(dir, "checkpoints", "memwc.lock")) || !strings.Contains(errOut, "another processor runs this job") {
		t.Fatalf("prune while the job runs: exit %d:\n%s%s", code, out, errOut)
	}
	if got := savepointNames(t, jobDir); len(got) != 3 {
		t.Fatalf("a refused prune removed savepoints: %v left", got)
	}
	// A dry run reads only: it may run beside the job.
	if code, out, errOut := runCLI("savepoints", "prune", "--keep", "1", "--dry-run", jobDir); code != 0 || !strings.Contains(out, "would remove 2 savepoint(s)") {
		t.Fatalf("prune --dry-run while the job runs: exit %d:\n%s%s", code, out, errOut)
	}
	r.sigs <- syscall.SIGTERM
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, r.stderr.String())
	}
	stop := strings.TrimSpace(r.stdout.String())
	code, out, errOut = runCLI("savepoints", "prune", "--keep", "1", jobDir)
	if code != 0 || !strings.Contains(out, "removed 3 savepoint(s)") {
		t.Fatalf("prune after the stop: exit %d:\n%s%s", code, out, errOut)
	}
	if got := savepointNames(t, jobDir); !slices.Equal(got, []string{filepath.Base(stop)}) {
		t.Fatalf("left %v, want only the stop's %s", got, stop)
	}
}
