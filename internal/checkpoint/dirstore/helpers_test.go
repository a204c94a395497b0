package dirstore

import (
	"context"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/testerr"
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

func must(t testing.TB, err error) { t.Helper(); testerr.Must(t, err) }

func wantErrContains(t testing.TB, err error, parts ...string) {
	t.Helper()
	testerr.Contains(t, err, parts...)
}
