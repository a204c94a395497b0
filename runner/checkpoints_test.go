package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/jobs"
)

// storeCheckpoint completes checkpoint (or savepoint) id with one private
// state file.
func storeCheckpoint(t *testing.T, st checkpoint.Storage, id int64, savepoint bool) *checkpoint.Metadata {
	t.Helper()
	w, err := st.Writer(id, "op", 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Create("state", false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, strings.Repeat("state of the checkpoint ", 10))
	ref, err := f.Close()
	if err != nil {
		t.Fatal(err)
	}
	md := &checkpoint.Metadata{CheckpointID: id, Savepoint: savepoint, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Parallelism: 1,
		Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref}}}}}}}
	if err := st.Complete(context.Background(), md); err != nil {
		t.Fatal(err)
	}
	return md
}

func flipFileByte(t *testing.T, path string, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if at < 0 {
		at += len(b)
	}
	b[at] ^= 0x20
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// processor checkpoints list verifies every complete checkpoint's files:
// one with a corrupt state file or metadata is marked DAMAGED with the
// reason, a committed savepoint says so, an unfinished one is incomplete.
func TestCheckpointsListMarksDamagedAndCommitted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	storeCheckpoint(t, st, 1, false)
	storeCheckpoint(t, st, 2, true)
	if err := st.MarkCommitted(ctx, 2); err != nil {
		t.Fatal(err)
	}
	md3 := storeCheckpoint(t, st, 3, false)
	storeCheckpoint(t, st, 4, false)
	w, err := st.Writer(5, "op", 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Create("state", false)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	if _, err := f.Close(); err != nil {
		t.Fatal(err)
	}
	jobDir := filepath.Join(dir, "job")
	statePath := filepath.Join(jobDir, md3.Operators[0].Subtasks[0].Keyed.Files[0].Path)
	flipFileByte(t, statePath, 5)
	flipFileByte(t, filepath.Join(jobDir, "chk-4", "_metadata"), -4)

	var stdout, stderr bytes.Buffer
	if code := execute(ctx, newRoot(), []string{"checkpoints", "list", jobDir}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !regexp.MustCompile(`^ID\s+KIND\s+PATH\s+STATUS$`).MatchString(lines[0]) {
		t.Fatalf("want a header and 5 rows:\n%s", out)
	}
	rel := func(p string) string { r, _ := filepath.Rel(jobDir, p); return r }
	for i, want := range []struct {
		re    string
		parts []string
	}{
		{`^1\s+checkpoint\s+\S+/chk-1\s+complete$`, nil},
		{`^2\s+savepoint\s+\S+/savepoint-2\s+complete, committed$`, nil},
		{`^3\s+checkpoint\s+\S+/chk-3\s+DAMAGED: `, []string{rel(statePath), "corrupt"}},
		{`^4\s+checkpoint\s+\S+/chk-4\s+DAMAGED: `, []string{filepath.Join("chk-4", "_metadata"), "checksum"}},
		{`^5\s+checkpoint\s+\S+/chk-5\s+incomplete$`, nil},
	} {
		line := lines[i+1]
		if !regexp.MustCompile(want.re).MatchString(line) {
			t.Errorf("row %d %q does not match %s", i+1, line, want.re)
		}
		if !strings.Contains(line, jobDir) {
			t.Errorf("row %d %q does not name the directory %s", i+1, line, jobDir)
		}
		for _, p := range want.parts {
			if !strings.Contains(line, p) {
				t.Errorf("row %d %q does not name %q", i+1, line, p)
			}
		}
	}
	if strings.Contains(lines[1], "committed") || strings.Contains(lines[1], "DAMAGED") {
		t.Errorf("checkpoint 1 is neither committed nor damaged: %q", lines[1])
	}
}

// processor checkpoints inspect says whether a checkpoint is committed and
// where an adopted one came from.
func TestCheckpointsInspectShowsCommittedAndAdopted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	sp := storeCheckpoint(t, st, 1, true)
	if err := st.MarkCommitted(ctx, 1); err != nil {
		t.Fatal(err)
	}
	src, err := st.Load(ctx, sp.Path)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := st.Adopt(ctx, src, 2)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := execute(ctx, newRoot(), []string{"checkpoints", "inspect", ad.Path}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"checkpoint 2 of job job", "committed:", "restored from " + sp.Path} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output does not say %q:\n%s", want, out)
		}
	}
}

// treeSnapshot lists every file and directory under root with its mode,
// size and modification time: equal snapshots mean nothing was created,
// removed, renamed or written (whatever the user, root included).
func treeSnapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chmodTree makes every directory under root mode dirs and every file mode
// files.
func chmodTree(t *testing.T, root string, dirs, files os.FileMode) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(p, dirs)
		}
		return os.Chmod(p, files)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// processor checkpoints list and inspect only read: on a job directory
// without shared/, made read-only, they list and inspect every checkpoint
// and leave every file and directory as it was (compared by mode, size and
// mtime as well, since a test run as root writes through chmod 0555).
func TestCheckpointsListAndInspectDoNotWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	storeCheckpoint(t, st, 1, false)
	storeCheckpoint(t, st, 2, true)
	storeCheckpoint(t, st, 3, false)
	// An incomplete checkpoint and a savepoint whose completion failed.
	w, err := st.Writer(4, "op", 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Create("state", false)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	if _, err := f.Close(); err != nil {
		t.Fatal(err)
	}
	jobDir := filepath.Join(dir, "job")
	if err := os.MkdirAll(filepath.Join(jobDir, "savepoint-5", "op-op", "0"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A job directory copied without its empty shared/ (or from an older
	// layout): opening the storage must not create it.
	if err := os.Remove(filepath.Join(jobDir, "shared")); err != nil {
		t.Fatal(err)
	}
	chmodTree(t, jobDir, 0o555, 0o444)
	t.Cleanup(func() { chmodTree(t, jobDir, 0o755, 0o644) })
	before := treeSnapshot(t, dir)

	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := execute(ctx, newRoot(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}
	out := run("checkpoints", "list", jobDir)
	for _, want := range []string{"chk-1", "savepoint-2", "chk-3", "chk-4", "savepoint-5"} {
		if !strings.Contains(out, want) {
			t.Errorf("list does not show %s:\n%s", want, out)
		}
	}
	for _, p := range []string{"chk-1", "savepoint-2", filepath.Join("chk-3", "_metadata")} {
		run("checkpoints", "inspect", filepath.Join(jobDir, p))
		run("checkpoints", "inspect", "--json", filepath.Join(jobDir, p))
	}

	after := treeSnapshot(t, dir)
	for p, was := range before {
		if now, ok := after[p]; !ok {
			t.Errorf("%s was removed", p)
		} else if now != was {
			t.Errorf("%s changed: %s, now %s", p, was, now)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}

// processor checkpoints inspect shows the version of the binary that wrote
// a checkpoint and each operator's state format; a checkpoint from before
// they were recorded says so.
func TestCheckpointsInspectShowsVersionAndFormats(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 10})
	if err != nil {
		t.Fatal(err)
	}
	opState := &checkpoint.Handle{Backend: "operator", Inline: []byte(`{"offset":1}`)}
	md := &checkpoint.Metadata{CheckpointID: 1, WriterVersion: "v3.1.4", Operators: []checkpoint.OperatorSnapshot{
		{UID: "source", Parallelism: 1, StateFormat: 2, Subtasks: []checkpoint.SubtaskSnapshot{{Operator: opState}}},
		{UID: "count", Parallelism: 1, Subtasks: []checkpoint.SubtaskSnapshot{{Operator: opState}}}}}
	if err := st.Complete(ctx, md); err != nil {
		t.Fatal(err)
	}
	old := storeCheckpoint(t, st, 2, false)
	inspect := func(path string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := execute(ctx, newRoot(), []string{"checkpoints", "inspect", path}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		return stdout.String()
	}
	out := inspect(md.Path)
	t.Logf("\n%s", out)
	for _, re := range []string{`(?m)^written by version v3\.1\.4$`, `(?m)\sFORMAT$`, `(?m)^source\s.*\s2$`, `(?m)^count\s.*\s-$`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("inspect output does not match %s:\n%s", re, out)
		}
	}
	if out := inspect(old.Path); !strings.Contains(out, "written by an unrecorded version") {
		t.Errorf("inspect of a checkpoint without a version:\n%s", out)
	}
}

// processor run hands its version (what processor version prints) to the
// job, which records it in every checkpoint as the writer's version.
func TestRunPassesItsVersionToTheJob(t *testing.T) {
	var got atomic.Value
	r := startRunDeps(t, func(d deps) deps {
		d.build = func(_ context.Context, _ *config.Config, env jobs.Env) (*jobs.Built, error) {
			got.Store(env.Version)
			return nil, errors.New("stop here")
		}
		return d
	}, newMemJob(10, time.Millisecond), nil, "--config", jobConfig(t, t.TempDir(), ""))
	r.wait(30 * time.Second)
	if v, _ := got.Load().(string); v != version || v == "" {
		t.Fatalf("the job was built with version %q, processor version says %q", v, version)
	}
}
