package jobs

import (
	"context"
	"errors"
	"testing"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
)

// fencingStorage fails every write with a fence, as an S3 storage does
// once a newer process published a checkpoint of the job.
type fencingStorage struct{ checkpoint.Storage }

var errFence = &s3store.FencedError{Key: "p/job/manifest/chk-9", Epoch: 1, Newer: 2}

func (fencingStorage) Complete(context.Context, *checkpoint.Metadata) error { return errFence }
func (fencingStorage) Writer(int64, string, int) (checkpoint.SnapshotWriter, error) {
	return nil, errFence
}
func (fencingStorage) Abort(int64) error { return errors.New("abort failed") }

func TestFencedS3StorageFailsTheJobWithoutRestart(t *testing.T) {
	st := fencedStop{fencingStorage{}}
	err := st.Complete(context.Background(), &checkpoint.Metadata{})
	if !errors.Is(err, s3store.ErrFenced) || !engine.IsNonRecoverable(err) {
		t.Fatalf("Complete of a fenced storage: %v (fenced %t, non-recoverable %t); want both", err, errors.Is(err, s3store.ErrFenced), engine.IsNonRecoverable(err))
	}
	if _, err := st.Writer(3, "count", 0); !engine.IsNonRecoverable(err) {
		t.Fatalf("Writer of a fenced storage: %v; want non-recoverable", err)
	}
	// Other failures keep their meaning: the restart strategy decides.
	if err := st.Abort(3); err == nil || engine.IsNonRecoverable(err) {
		t.Fatalf("Abort: %v; want the storage's own, recoverable error", err)
	}
}
