package dirstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// maxParallelism is the key groups of the tests' operators (the
// engine's default).
const maxParallelism = 128

// completeOne completes a checkpoint holding the given keyed handles of one
// operator.
func completeOne(t testing.TB, st checkpoint.Storage, uid string, id int64, savepoint bool, parallelism int, handles ...*checkpoint.Handle) *checkpoint.Metadata {
	t.Helper()
	md := &checkpoint.Metadata{CheckpointID: id, Savepoint: savepoint, Timestamp: time.Unix(id, 0).UTC()}
	op := checkpoint.OperatorSnapshot{UID: uid, Parallelism: parallelism, MaxParallelism: maxParallelism}
	for i, h := range handles {
		op.Subtasks = append(op.Subtasks, checkpoint.SubtaskSnapshot{Subtask: i, Keyed: h})
	}
	md.Operators = append(md.Operators, op)
	if err := st.Complete(context.Background(), md); err != nil {
		t.Fatal(err)
	}
	return md
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErrContains(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}
