package jobs

import (
	"context"
	"fmt"
	"slices"

	"github.com/onceflow/onceflow/state"
)

// savepointAware is the checkpoint storage Build gives the engine: its
// Latest also considers savepoints, returning a savepoint when it is newer
// than the latest checkpoint.
//
// Why: a completed savepoint is committed like a checkpoint (sinks commit
// their transactions when it completes; a stop-with-savepoint ends with
// every transaction of the savepoint committed). Resuming from an older
// checkpoint would replay the records between that checkpoint and the
// savepoint into new transactions: duplicates in the output. That happens
// after "processor stop" and a plain "processor run" (the usual restart),
// and after a failure that follows a savepoint taken while the job runs.
// Checkpoint ids are unique and increasing across checkpoints and
// savepoints (the engine starts every attempt above every id it finds), so
// the highest id is the newest state.
type savepointAware struct {
	state.Storage
}

// Latest returns the newest complete, intact checkpoint or savepoint. A
// savepoint that fails to load is reported in the returned infos and
// skipped, like a corrupt checkpoint.
func (s savepointAware) Latest(ctx context.Context) (*state.Metadata, []state.CheckpointInfo, error) {
	md, infos, err := s.Storage.Latest(ctx)
	if err != nil {
		return md, infos, err
	}
	all, err := s.Storage.List(ctx)
	if err != nil {
		return nil, infos, fmt.Errorf("listing savepoints: %w", err)
	}
	var newer []state.CheckpointInfo
	for _, in := range all {
		if in.Savepoint && in.Complete && in.Err == nil && (md == nil || in.ID > md.CheckpointID) {
			newer = append(newer, in)
		}
	}
	slices.SortFunc(newer, func(a, b state.CheckpointInfo) int { return int(b.ID - a.ID) })
	for _, in := range newer {
		sp, err := s.Storage.Load(ctx, in.Path)
		if err != nil {
			in.Err = err
			infos = append(infos, in)
			continue
		}
		return sp, infos, nil
	}
	return md, infos, nil
}
