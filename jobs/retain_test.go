package jobs

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// checkpoint.retain_savepoints applies to S3 checkpoints as to
// directories: a partition group's engine options keep the bound (10 by
// default) without a warning, and its storage prunes through
// checkpoint.SavepointPruner, a fence making the prune's failure final
// like the storage's other writes. (The bound was set to 0 for S3 with a
// warning at every group's build, so the savepoints of every rebalance
// stayed in the bucket.)
func TestRetainSavepointsAppliesToS3(t *testing.T) {
	cfg := groupConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	o, err := engineOptions(ctx, cfg, Env{Group: &Group{Index: 1, Count: 2}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if o.Checkpoint.RetainSavepoints != 10 || strings.Contains(logs.String(), "retain_savepoints") {
		t.Fatalf("engine options keep %d savepoints, want 10 (checkpoint.retain_savepoints' default); logged:\n%s", o.Checkpoint.RetainSavepoints, logs.String())
	}
	if _, ok := o.Storage.(checkpoint.SavepointPruner); !ok {
		t.Fatalf("the group's storage %T cannot prune savepoints", o.Storage)
	}
	for id := int64(2); id <= 4; id++ {
		if err := o.Storage.Complete(ctx, &checkpoint.Metadata{CheckpointID: id, Savepoint: true, Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := checkpoint.PruneSavepoints(ctx, o.Storage, checkpoint.PruneOptions{Keep: 1})
	if err != nil || len(res.Removed) != 2 || len(res.Kept) != 1 || res.Kept[0].ID != 4 {
		t.Fatalf("prune through the group's storage = %+v, %v; want savepoints 2 and 3 removed", res, err)
	}
	// The group moves: the former owner's prune is refused for good.
	if _, err := newStorage(ctx, cfg, &Group{Index: 1, Count: 2}, log); err != nil {
		t.Fatal(err)
	}
	_, err = checkpoint.PruneSavepoints(ctx, o.Storage, checkpoint.PruneOptions{Keep: 1})
	if !errors.Is(err, s3store.ErrFenced) || !engine.IsNonRecoverable(err) {
		t.Fatalf("the former owner's prune = %v; want a non-recoverable ErrFenced", err)
	}
}
