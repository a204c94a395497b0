package dirstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// Savepoint retention: PruneSavepoints keeps checkpoint.SavepointPruner's
// rules. A onceflow savepoint lives in the job's checkpoint directory
// (<dir>/<job>/savepoint-<id>), self-contained: its private files are
// moved into its directory and the shared ones copied there when it
// completes, and Adopt copies every file of a savepoint it adopts, so a
// lineage started with --from never depends on the savepoint's directory.
// Its RestoredFrom (and a Superseded's Path) are provenance for logs and
// inspection, not references: the superseded sinks' state is inline. The
// check of the files kept metadata names stays, so that a future format
// that shares files with a savepoint cannot make pruning lose them. A
// savepoint is removed _metadata first, durably, then its directory: an
// interruption leaves an incomplete savepoint (Sweep removes it at the
// job's start), never one that looks complete and misses files.

var _ checkpoint.SavepointPruner = (*dirStorage)(nil)

// errNoSavepointFiles is the error of a storage that is not the package's
// own.
func errNoSavepointFiles(st checkpoint.Storage) error {
	return fmt.Errorf("storage %T keeps no savepoint directories this package can list or prune", st)
}

// savepointPoint is one chk-<n> or savepoint-<id> directory and its
// metadata (nil with err when incomplete or damaged).
type savepointPoint struct {
	dir checkpointDir
	md  *checkpoint.Metadata
	err error
}

// readPoints reads the metadata of every checkpoint and savepoint
// directory of s, oldest first.
func (s *dirStorage) readPoints(ctx context.Context) ([]savepointPoint, error) {
	dirs, err := s.checkpointDirs()
	if err != nil {
		return nil, err
	}
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].id < dirs[j].id })
	out := make([]savepointPoint, 0, len(dirs))
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		md, err := s.readMetadata(filepath.Join(s.root, d.name))
		out = append(out, savepointPoint{dir: d, md: md, err: err})
	}
	return out, nil
}

// savepointInfo describes p, a savepoint.
func (s *dirStorage) savepointInfo(p savepointPoint) checkpoint.SavepointInfo {
	in := checkpoint.SavepointInfo{CheckpointInfo: checkpoint.CheckpointInfo{ID: p.dir.id, Savepoint: true, Path: filepath.Join(s.root, p.dir.name),
		Complete: p.err == nil, Damaged: isDamaged(p.err), Err: p.err}}
	if p.md != nil {
		in.Committed = p.md.Committed
		in.Taken = p.md.Timestamp
		in.Bytes = p.md.StateBytes()
	}
	switch {
	case in.Damaged:
		in.Why = "damaged: " + p.err.Error()
	case p.err != nil:
		in.Why = "incomplete: " + p.err.Error()
	}
	return in
}

// newestComplete is the id of the newest point of points whose metadata
// is intact (0: none).
func newestComplete(points []savepointPoint) int64 {
	var id int64
	for _, p := range points {
		if p.md != nil {
			id = max(id, p.dir.id)
		}
	}
	return id
}

// ListSavepoints returns the savepoints of st, oldest first, from their
// metadata: it does not read their state files (Load verifies them). It
// writes nothing. st must be a storage of this package (NewFileStorage or
// NewMemoryStorage).
func ListSavepoints(ctx context.Context, st checkpoint.Storage) ([]checkpoint.SavepointInfo, error) {
	s, ok := st.(*dirStorage)
	if !ok {
		return nil, errNoSavepointFiles(st)
	}
	points, err := s.readPoints(ctx)
	if err != nil {
		return nil, err
	}
	restore := newestComplete(points)
	var out []checkpoint.SavepointInfo
	for _, p := range points {
		if !p.dir.savepoint {
			continue
		}
		in := s.savepointInfo(p)
		in.RestorePoint = p.md != nil && p.dir.id == restore
		out = append(out, in)
	}
	return out, nil
}

// PruneSavepoints implements checkpoint.SavepointPruner: it removes the
// oldest complete savepoints beyond opts.Keep, except those a restore may
// need (see checkpoint.SavepointPruner), and returns what it kept,
// removed and skipped (incomplete and damaged savepoint directories). It
// runs between checkpoint completions (it holds the lock Complete,
// MarkCommitted, Adopt and DiscardAll take), so it may run while the job
// does. A removal that fails ends the prune with an error naming the
// savepoint; what was removed before it is in the result. A keep below 1
// is an error, and so is a storage open read-only (StorageOptions.
// ReadOnly: only a DryRun reads one).
func (s *dirStorage) PruneSavepoints(ctx context.Context, opts checkpoint.PruneOptions) (checkpoint.PruneResult, error) {
	var res checkpoint.PruneResult
	if opts.Keep < 1 {
		return res, fmt.Errorf("storage %s: prune savepoints: keep %d: at least 1 savepoint must be kept (the newest may be the job's restore point)", s.root, opts.Keep)
	}
	if !opts.DryRun {
		if err := s.readOnly("prune savepoints"); err != nil {
			return res, err
		}
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.waitRemovals() // the queued removals of earlier completions first
	points, err := s.readPoints(ctx)
	if err != nil {
		return res, fmt.Errorf("storage %s: prune savepoints: %w", s.root, err)
	}
	restore := newestComplete(points)
	if opts.Verify {
		md, _, err := s.Latest(ctx)
		if err != nil {
			return res, fmt.Errorf("storage %s: prune savepoints: finding the newest restore point: %w", s.root, err)
		}
		restore = 0
		if md != nil {
			restore = md.CheckpointID
		}
	}

	// The plan: the newest Keep complete savepoints and the restore point
	// stay, the other complete ones go.
	var complete []savepointPoint // savepoints, newest first
	for i := len(points) - 1; i >= 0; i-- {
		p := points[i]
		if !p.dir.savepoint {
			continue
		}
		if p.md == nil {
			res.Skipped = append([]checkpoint.SavepointInfo{s.savepointInfo(p)}, res.Skipped...)
			continue
		}
		complete = append(complete, p)
	}
	why := map[int64]string{} // the kept beyond the bound
	remove := map[int64]bool{}
	for i, p := range complete {
		switch {
		case i < opts.Keep:
		case p.dir.id == restore:
			why[p.dir.id] = "the job's newest restore point"
		default:
			remove[p.dir.id] = true
		}
	}
	// Whatever stays keeps the savepoints whose files it names, until
	// nothing changes (a kept savepoint may name another's).
	byDir := map[string]int64{}
	for _, p := range complete {
		byDir[p.dir.name] = p.dir.id
	}
	for changed := true; changed; {
		changed = false
		for _, p := range points {
			if p.md == nil || remove[p.dir.id] && p.dir.savepoint {
				continue
			}
			forEachRef(p.md, func(r checkpoint.FileRef) {
				id, ok := byDir[s.topDir(r.Path)]
				if ok && id != p.dir.id && remove[id] {
					delete(remove, id)
					why[id] = fmt.Sprintf("%s names its file %s", p.dir.name, r.Path)
					changed = true
				}
			})
		}
	}
	for i := len(complete) - 1; i >= 0; i-- {
		p := complete[i]
		in := s.savepointInfo(p)
		in.RestorePoint = p.dir.id == restore
		if !remove[p.dir.id] {
			in.Why = why[p.dir.id]
			res.Kept = append(res.Kept, in)
			continue
		}
		if opts.DryRun {
			res.Removed = append(res.Removed, in)
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("storage %s: prune savepoints: %w", s.root, err)
		}
		if err := s.removeSavepointDir(in.Path); err != nil {
			return res, fmt.Errorf("storage %s: prune savepoints: removing savepoint %d (%s): %w", s.root, in.ID, in.Path, err)
		}
		res.Removed = append(res.Removed, in)
	}
	if len(res.Removed) > 0 && !opts.DryRun {
		if err := s.fs.syncDir(s.root); err != nil {
			return res, fmt.Errorf("storage %s: prune savepoints: sync after removing: %w", s.root, err)
		}
	}
	return res, nil
}

// topDir is the first element of a stored file's path inside the job
// directory ("" for a path outside it).
func (s *dirStorage) topDir(path string) string {
	if filepath.IsAbs(path) {
		rel, err := filepath.Rel(s.root, path)
		if err != nil || !filepath.IsLocal(rel) {
			return ""
		}
		path = rel
	}
	first, _, _ := strings.Cut(filepath.ToSlash(filepath.Clean(path)), "/")
	return first
}

// removeSavepointDir removes a savepoint's directory: its _metadata first,
// durably (the directory synced), so that an interruption or a power loss
// leaves an incomplete savepoint, never one that looks complete and
// misses files.
func (s *dirStorage) removeSavepointDir(dir string) error {
	if err := s.fs.Remove(filepath.Join(dir, metadataFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.fs.syncDir(dir); err != nil {
		return err
	}
	return s.fs.RemoveAll(dir)
}
