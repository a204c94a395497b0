package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// SavepointInfo describes one savepoint of a job's storage, read from its
// metadata (its state files are not read).
type SavepointInfo struct {
	CheckpointInfo
	// Taken is when the savepoint was triggered (zero when its metadata
	// is unreadable).
	Taken time.Time
	// Bytes is the size of its state: its files and the state kept inline
	// in its metadata (Metadata.StateBytes).
	Bytes int64
	// RestorePoint is true for the job's newest complete checkpoint or
	// savepoint, the one a plain run resumes from.
	RestorePoint bool
	// Why says why a savepoint beyond the bound was kept, or why an
	// incomplete or damaged one is not counted; empty otherwise.
	Why string
}

// PruneOptions says what SavepointPruner.PruneSavepoints keeps.
type PruneOptions struct {
	// Keep is how many of the newest complete savepoints stay; at least 1.
	Keep int
	// Verify finds the newest restore point with Storage.Latest, which
	// reads every file of the newest candidates (a damaged newest point is
	// skipped, as a restore would skip it), instead of from metadata only.
	// For an operator's prune; a prune right after a savepoint completed
	// skips it, since that savepoint was just written whole.
	Verify bool
	// DryRun removes nothing: the result says what would go.
	DryRun bool
}

// PruneResult says what SavepointPruner.PruneSavepoints kept and removed,
// oldest first.
type PruneResult struct {
	// Kept are the complete savepoints that stay; those beyond the bound
	// say why (SavepointInfo.Why).
	Kept []SavepointInfo
	// Removed are the savepoints removed (or, with DryRun, to remove).
	Removed []SavepointInfo
	// Skipped are incomplete or damaged savepoints: neither counted nor
	// removed, Why saying what is wrong with each.
	Skipped []SavepointInfo
}

// SavepointPruner is a Storage that can remove its own savepoints beyond
// a bound. A savepoint belongs to the user and Complete's retention never
// removes one, but whoever may trigger savepoints can fill the storage
// with them (a distributed job takes one for every partition group that
// moves). Both storages of this module implement it; the engine's
// coordinator calls it after each savepoint when the job bounds its
// savepoints, and the processor's savepoints prune on request. Every
// implementation keeps these rules:
//
//   - Only complete savepoints (intact metadata) count towards the bound
//     and only they are removed. An incomplete or damaged one (metadata
//     missing, or present but unreadable) is neither counted nor touched,
//     nor is anything it may name: it is reported (PruneResult.Skipped),
//     and the operator decides.
//   - The newest PruneOptions.Keep complete savepoints stay.
//   - The job's newest restore point stays, whatever the bound: the
//     newest complete checkpoint or savepoint, the one a plain run
//     resumes from (Storage.Latest; PruneOptions.Verify finds it as
//     Latest does).
//   - A savepoint stays when metadata that stays (a checkpoint's, a kept
//     savepoint's) names one of its files: pruning never deletes a file
//     that retained metadata names. None does today (a savepoint's files
//     are its own copies, and Adopt copies the files of a savepoint it
//     adopts), but the rule holds for any format.
//   - A savepoint's metadata goes first, durably, then its files: an
//     interruption leaves files no metadata names (which Sweep or the
//     storage's collection of orphans removes), never a savepoint that
//     looks complete and misses files.
//   - A storage that may not write the job's checkpoints (opened
//     read-only, or fenced by a newer owner) removes nothing; a DryRun
//     still reads and answers.
type SavepointPruner interface {
	// PruneSavepoints removes the oldest complete savepoints beyond
	// opts.Keep, except those a restore may need, and returns what it
	// kept, removed and skipped. It may run while the job runs: it is
	// serialized with the storage's completions. A removal that fails
	// ends the prune with an error naming the savepoint; what was removed
	// before it is in the result. A keep below 1 is an error, and so is a
	// storage that may not write (read-only, or fenced: matching the
	// storage's fence error), unless opts.DryRun.
	PruneSavepoints(ctx context.Context, opts PruneOptions) (PruneResult, error)
}

// ErrPruneNotSupported is matched (errors.Is) by PruneSavepoints's error
// for a storage that does not implement SavepointPruner.
var ErrPruneNotSupported = errors.New("the checkpoint storage cannot prune savepoints (it does not implement checkpoint.SavepointPruner)")

// PruneSavepoints prunes st's savepoints when st implements
// SavepointPruner, and otherwise fails, naming st's type, with an error
// matching ErrPruneNotSupported.
func PruneSavepoints(ctx context.Context, st Storage, opts PruneOptions) (PruneResult, error) {
	p, ok := st.(SavepointPruner)
	if !ok {
		return PruneResult{}, fmt.Errorf("storage %T: prune savepoints: %w", st, ErrPruneNotSupported)
	}
	return p.PruneSavepoints(ctx, opts)
}

// StateBytes is the size of md's state: the files it names and the state
// kept inline in it.
func (md *Metadata) StateBytes() int64 {
	var n int64
	for _, op := range md.Operators {
		for _, st := range op.Subtasks {
			for _, h := range []*Handle{st.Keyed, st.Operator} {
				if h == nil {
					continue
				}
				n += int64(len(h.Inline))
				for _, r := range h.Files {
					if r.Inline {
						n += int64(len(r.Data))
					} else {
						n += r.Size
					}
				}
			}
		}
	}
	return n
}
