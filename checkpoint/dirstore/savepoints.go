package dirstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/onceflow/onceflow/checkpoint"
)

// Savepoint retention.
//
// Flink never removes a savepoint: it lives where the user asked it to be
// written, and belongs to the user. A onceflow savepoint lives in the
// job's checkpoint directory (<dir>/<job>/savepoint-<id>), and anyone who
// may POST /api/v1/savepoint can take one, so without a bound repeated
// savepoints fill the disk. PruneSavepoints removes the oldest savepoints
// beyond a bound, the way retained checkpoints are bounded, under rules
// that never remove a point a restore needs:
//
//   - Only complete savepoints (intact _metadata) count towards the bound
//     and only they are removed. An incomplete or damaged one is neither
//     counted nor touched: it is reported, and the operator decides.
//   - The newest Keep complete savepoints stay.
//   - The job's newest restore point stays, whatever the bound: the newest
//     complete checkpoint or savepoint, the one a plain run resumes from
//     (Storage.Latest), verified file by file with PruneOptions.Verify.
//   - A savepoint whose files a kept checkpoint or savepoint names stays.
//     None does today: a savepoint is self-contained (its private files are
//     moved into its directory and the shared ones copied there when it
//     completes), and Adopt copies every file of a savepoint it adopts, so
//     a lineage started with --from never depends on the savepoint's
//     directory. Its RestoredFrom (and a Superseded's Path) are provenance
//     for logs and inspection, not references: the superseded sinks' state
//     is inline. The check stays, so that a future format that shares
//     files with a savepoint cannot make pruning lose them.
//
// A savepoint is removed _metadata first, durably, then its directory: an
// interruption leaves an incomplete savepoint, never one that looks
// complete and misses files.

// SavepointInfo describes one savepoint of a job's storage, read from its
// metadata (its state files are not read).
type SavepointInfo struct {
	checkpoint.CheckpointInfo
	// Taken is when the savepoint was triggered (zero when its metadata
	// is unreadable).
	Taken time.Time
	// Bytes is the size of its state: its files and the state kept inline
	// in its metadata.
	Bytes int64
	// RestorePoint is true for the job's newest complete checkpoint or
	// savepoint, the one a plain run resumes from.
	RestorePoint bool
	// Why says why a savepoint beyond the bound was kept, or why an
	// incomplete or damaged one is not counted; empty otherwise.
	Why string
}

// PruneOptions says what PruneSavepoints keeps.
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

// PruneResult says what PruneSavepoints kept and removed, oldest first.
type PruneResult struct {
	// Kept are the complete savepoints that stay; those beyond the bound
	// say why (SavepointInfo.Why).
	Kept []SavepointInfo
	// Removed are the savepoints removed (or, with DryRun, to remove).
	Removed []SavepointInfo
	// Skipped are incomplete or damaged savepoint directories: neither
	// counted nor removed.
	Skipped []SavepointInfo
}

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
func (s *dirStorage) savepointInfo(p savepointPoint) SavepointInfo {
	in := SavepointInfo{CheckpointInfo: checkpoint.CheckpointInfo{ID: p.dir.id, Savepoint: true, Path: filepath.Join(s.root, p.dir.name),
		Complete: p.err == nil, Damaged: isDamaged(p.err), Err: p.err}}
	if p.md != nil {
		in.Committed = p.md.Committed
		in.Taken = p.md.Timestamp
		in.Bytes = metadataBytes(p.md)
	}
	switch {
	case in.Damaged:
		in.Why = "damaged: " + p.err.Error()
	case p.err != nil:
		in.Why = "incomplete: " + p.err.Error()
	}
	return in
}

// metadataBytes is the size of md's state: its files and inline state.
func metadataBytes(md *checkpoint.Metadata) int64 {
	var n int64
	for _, op := range md.Operators {
		for _, st := range op.Subtasks {
			for _, h := range []*checkpoint.Handle{st.Keyed, st.Operator} {
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
func ListSavepoints(ctx context.Context, st checkpoint.Storage) ([]SavepointInfo, error) {
	s, ok := st.(*dirStorage)
	if !ok {
		return nil, errNoSavepointFiles(st)
	}
	points, err := s.readPoints(ctx)
	if err != nil {
		return nil, err
	}
	restore := newestComplete(points)
	var out []SavepointInfo
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

// PruneSavepoints removes the oldest complete savepoints of st beyond
// opts.Keep, except those a restore may need (see the rules above), and
// returns what it kept, removed and skipped. It runs between checkpoint
// completions (it holds the lock Complete, MarkCommitted, Adopt and
// DiscardAll take), so it may run while the job does. A removal that fails
// ends the prune with an error naming the savepoint; what was removed
// before it is in the result. A keep below 1 is an error, and so is a
// storage that is not this package's or open read-only (StorageOptions.
// ReadOnly: only a DryRun reads one).
func PruneSavepoints(ctx context.Context, st checkpoint.Storage, opts PruneOptions) (PruneResult, error) {
	var res PruneResult
	s, ok := st.(*dirStorage)
	if !ok {
		return res, errNoSavepointFiles(st)
	}
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
			res.Skipped = append([]SavepointInfo{s.savepointInfo(p)}, res.Skipped...)
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
