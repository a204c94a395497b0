package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// versionedSource declares the format of its operator state.
type versionedSource struct {
	*memSource[int]
}

func (versionedSource) StateFormatVersion() int { return 4 }

// The _metadata file on disk carries the writing binary's version and the
// state format of each operator that declares one, in the JSON fields
// docs/state.md names (writer_version, state_format).
func TestMetadataFileRecordsVersionAndFormats(t *testing.T) {
	dir := t.TempDir()
	st := newFileStorage(t, dir, "mdfile")
	j := copyJob("mdfile", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 10 * time.Millisecond}, Storage: st},
		versionedSource{&memSource[int]{parts: [][]int{seq(0, 50)}}}, &memSink[int]{})
	if err := runJob(t, j); err != nil {
		t.Fatal(err)
	}
	md, _, err := st.Latest(context.Background())
	if err != nil || md == nil {
		t.Fatalf("latest = %v, %v", md, err)
	}
	raw, err := os.ReadFile(filepath.Join(md.Path, "_metadata"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if !strings.Contains(text, `"writer_version": "`) {
		t.Errorf("%s/_metadata records no writer_version:\n%s", md.Path, text)
	}
	if !strings.Contains(text, `"state_format": 4`) {
		t.Errorf("%s/_metadata records no state_format 4 for the source:\n%s", md.Path, text)
	}
	if strings.Count(text, `"state_format"`) != 1 {
		t.Errorf("%s/_metadata records a state_format for an operator that declares none:\n%s", md.Path, text)
	}
}
