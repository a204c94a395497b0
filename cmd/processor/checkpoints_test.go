package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/state"
)

// storeCheckpoint completes checkpoint (or savepoint) id with one private
// state file.
func storeCheckpoint(t *testing.T, st state.Storage, id int64, savepoint bool) *state.Metadata {
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
	md := &state.Metadata{CheckpointID: id, Savepoint: savepoint, Operators: []state.OperatorSnapshot{{UID: "op", Parallelism: 1,
		Subtasks: []state.SubtaskSnapshot{{Keyed: &state.Handle{Backend: "test", Files: []state.FileRef{ref}}}}}}}
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
	st, err := state.NewFileStorage(dir, "job", state.StorageOptions{Retained: 10})
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
	st, err := state.NewFileStorage(dir, "job", state.StorageOptions{Retained: 10})
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
