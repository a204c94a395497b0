package dirstore

import (
	"context"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// A _metadata written before the writer version and the state formats
// were recorded (version 1, neither field) still loads, with both empty;
// one written now carries them through Complete, Load and Adopt (which
// keeps the original's writer version: the state is the original's).
func TestMetadataVersionFields(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 10})
	must(t, err)
	// As the code before this field wrote it: a source's offsets inline.
	body := []byte(`{
 "version": 1,
 "job": "job",
 "checkpoint_id": 1,
 "timestamp": "2025-01-02T03:04:05Z",
 "operators": [
  {
   "uid": "source",
   "parallelism": 1,
   "max_parallelism": 128,
   "subtasks": [
    {
     "subtask": 0,
     "operator": {
      "backend": "operator",
      "key_groups": {"start": 0, "end": -1},
      "inline": "eyJvZmZzZXQiOjQyfQ=="
     }
    }
   ]
  }
 ]
}`)
	head := fmt.Sprintf("%s v1 crc32c=%08x len=%d\n", metadataHeader, crc32.Checksum(body, castagnoli), len(body))
	old := filepath.Join(dir, "job", "chk-1")
	must(t, os.MkdirAll(old, 0o755))
	must(t, os.WriteFile(filepath.Join(old, metadataFile), append([]byte(head), body...), 0o644))
	md, err := st.Load(ctx, old)
	if err != nil {
		t.Fatalf("an old _metadata does not load: %v", err)
	}
	if md.WriterVersion != "" || md.Operators[0].StateFormat != 0 || string(md.Operators[0].Subtasks[0].Operator.Inline) != `{"offset":42}` {
		t.Fatalf("old metadata loaded as %+v", md)
	}

	md = &checkpoint.Metadata{CheckpointID: 2, WriterVersion: "v3.1.4", Operators: []checkpoint.OperatorSnapshot{
		{UID: "source", Parallelism: 1, MaxParallelism: 128, StateFormat: 2,
			Subtasks: []checkpoint.SubtaskSnapshot{{Operator: &checkpoint.Handle{Backend: "operator", Inline: []byte("x")}}}},
		{UID: "map", Parallelism: 1, MaxParallelism: 128}}}
	must(t, st.Complete(ctx, md))
	got, err := st.Load(ctx, "chk-2")
	must(t, err)
	if got.WriterVersion != "v3.1.4" || got.Operator("source").StateFormat != 2 || got.Operator("map").StateFormat != 0 {
		t.Fatalf("loaded writer version %q, formats %d and %d", got.WriterVersion, got.Operator("source").StateFormat, got.Operator("map").StateFormat)
	}
	ad, err := st.Adopt(ctx, got, 3)
	must(t, err)
	again, err := st.Load(ctx, ad.Path)
	must(t, err)
	if again.WriterVersion != "v3.1.4" || again.Operator("source").StateFormat != 2 {
		t.Fatalf("adopted: writer version %q, source format %d", again.WriterVersion, again.Operator("source").StateFormat)
	}
}
