package s3store

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

var _ checkpoint.SavepointPruner = (*Storage)(nil)

// PruneSavepoints implements checkpoint.SavepointPruner: it removes the
// oldest complete savepoints beyond opts.Keep, keeping the job's newest
// restore point and every savepoint an object of which a manifest that
// stays names (a checkpoint's, a kept savepoint's, or one in flight in
// this Storage), and returns what it kept, removed and skipped, oldest
// first. A savepoint goes manifest first, then its committed marker, then
// the objects its manifest names under data/savepoint-<id>/: an
// interruption leaves objects no manifest names, which Sweep and the
// collection of orphans delete, never a manifest that names missing
// objects. Objects its manifest names elsewhere are not deleted (no
// savepoint this package writes has any; what no manifest names is an
// orphan).
//
// A savepoint whose manifest is corrupt is skipped, and nothing under its
// data/savepoint-<id>/ is deleted: the manifest cannot say which objects
// are its. Objects under data/savepoint-<id>/ without a manifest (a
// savepoint that never completed, a removal cut short) are skipped as
// incomplete. Both are reported (PruneResult.Skipped, Why saying which).
//
// It is serialized with Complete, MarkCommitted, Adopt and DiscardAll,
// and lists the manifests first: a Storage fenced by a manifest of a
// higher epoch refuses with ErrFenced and deletes nothing (a DryRun still
// answers). A deletion that fails ends the prune with an error naming the
// savepoint and the object; a savepoint whose manifest is deleted counts
// as removed. opts.Keep below 1 is an error.
func (s *Storage) PruneSavepoints(ctx context.Context, opts checkpoint.PruneOptions) (checkpoint.PruneResult, error) {
	var res checkpoint.PruneResult
	fail := func(err error) (checkpoint.PruneResult, error) {
		return res, s.errorf("prune savepoints: %w", err)
	}
	if opts.Keep < 1 {
		return fail(fmt.Errorf("keep %d: at least 1 savepoint must be kept (the newest may be the job's restore point)", opts.Keep))
	}
	s.lockExclusive()
	defer s.completeMu.Unlock()
	fence, err := s.refresh(ctx)
	if err != nil {
		return fail(err)
	}
	if fence != nil && !opts.DryRun {
		return fail(fence)
	}
	restore := int64(-1) // none
	if opts.Verify {
		md, _, err := s.Latest(ctx)
		if err != nil {
			return fail(fmt.Errorf("finding the newest restore point: %w", err))
		}
		if md != nil {
			restore = md.CheckpointID
		}
	}
	// Objects under data/savepoint-<id>/, for the savepoints without a
	// manifest.
	dataObjects, err := s.st.List(ctx, s.root+dataDir+savepointPref)
	if err != nil {
		return fail(fmt.Errorf("list the savepoints' objects: %w", err))
	}

	type removal struct {
		m    *manifest
		info checkpoint.SavepointInfo
		refs []checkpoint.FileRef // its objects, under data/savepoint-<id>/
	}
	var plan []removal
	s.mu.Lock()
	all := s.sortedLocked()
	if !opts.Verify {
		for _, m := range all {
			if m.md != nil {
				restore = max(restore, m.id)
			}
		}
	}
	// The complete savepoints, newest first; the damaged are skipped.
	var complete []*manifest
	for i := len(all) - 1; i >= 0; i-- {
		m := all[i]
		if !m.savepoint {
			continue
		}
		if m.md == nil {
			in := checkpoint.SavepointInfo{CheckpointInfo: m.info()}
			in.Why = fmt.Sprintf("damaged: %v; nothing under %s%s/ is deleted, since the manifest cannot say which objects are its", m.err, s.root+dataDir, m.name)
			res.Skipped = append(res.Skipped, in)
			continue
		}
		complete = append(complete, m)
	}
	remove := map[int64]bool{}
	why := map[int64]string{} // the kept beyond the bound
	for i, m := range complete {
		switch {
		case i < opts.Keep:
		case m.id == restore:
			why[m.id] = "the job's newest restore point"
		default:
			remove[m.id] = true
		}
	}
	// Whatever stays keeps the savepoints whose objects it names, until
	// nothing changes (a kept savepoint may name another's).
	keep := func(by, path string) bool {
		id, ok := savepointOfObject(path)
		if !ok || !remove[id] {
			return false
		}
		delete(remove, id)
		why[id] = fmt.Sprintf("%s names its object %s", by, path)
		return true
	}
	for changed := true; changed; {
		changed = false
		for _, m := range all {
			if m.md == nil || m.savepoint && remove[m.id] {
				continue
			}
			forEachRef(m.md, func(r checkpoint.FileRef) {
				if own, ok := savepointOfObject(r.Path); ok && m.savepoint && own == m.id {
					return
				}
				changed = keep(m.name, r.Path) || changed
			})
		}
		for id, inf := range s.pending {
			for p := range inf.reused {
				changed = keep(fmt.Sprintf("checkpoint %d in flight", id), p) || changed
			}
		}
	}
	for i := len(complete) - 1; i >= 0; i-- {
		m := complete[i]
		in := checkpoint.SavepointInfo{CheckpointInfo: m.info(), Taken: m.md.Timestamp, Bytes: m.md.StateBytes(), RestorePoint: m.id == restore}
		if !remove[m.id] {
			in.Why = why[m.id]
			res.Kept = append(res.Kept, in)
			continue
		}
		r := removal{m: m, info: in}
		seen := map[string]bool{}
		forEachRef(m.md, func(f checkpoint.FileRef) {
			if strings.HasPrefix(f.Path, dataDir+m.name+"/") && !seen[f.Path] {
				seen[f.Path] = true
				r.refs = append(r.refs, f)
			}
		})
		plan = append(plan, r)
	}
	incomplete := map[string]bool{}
	for _, in := range dataObjects {
		name, _, _ := strings.Cut(strings.TrimPrefix(in.Key, s.root+dataDir), "/")
		if id, sp, ok := parseName(name); ok && sp && s.manifests[name] == nil && !incomplete[name] {
			incomplete[name] = true
			key := s.root + manifestDir + name
			in := checkpoint.SavepointInfo{CheckpointInfo: checkpoint.CheckpointInfo{ID: id, Savepoint: true, Path: s.root + dataDir + name,
				Err: fmt.Errorf("savepoint %s%s is incomplete: no manifest %s", s.root+dataDir, name, key)}}
			in.Why = fmt.Sprintf("incomplete: objects under %s%s/ but no manifest %s (a savepoint that never completed, or whose removal was cut short); Sweep and the collection of orphans delete them",
				s.root+dataDir, name, key)
			res.Skipped = append(res.Skipped, in)
		}
	}
	s.mu.Unlock()
	sort.Slice(res.Skipped, func(i, j int) bool { return res.Skipped[i].ID < res.Skipped[j].ID })

	for _, r := range plan {
		if opts.DryRun {
			res.Removed = append(res.Removed, r.info)
			continue
		}
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if err := s.st.Delete(ctx, r.m.key); err != nil {
			return fail(fmt.Errorf("removing savepoint %d: deleting its manifest: %w", r.m.id, err))
		}
		s.mu.Lock()
		delete(s.manifests, r.m.name)
		for _, f := range r.refs {
			delete(s.verified, verifiedKey(f))
		}
		s.mu.Unlock()
		res.Removed = append(res.Removed, r.info)
		keys := []string{r.m.key + committedSuf}
		for _, f := range r.refs {
			keys = append(keys, s.root+f.Path)
		}
		for _, k := range keys {
			if err := s.st.Delete(ctx, k); err != nil {
				return fail(fmt.Errorf("savepoint %d is removed (its manifest %s is deleted) but %s is left, for Sweep or the collection of orphans: %w",
					r.m.id, r.m.key, k, err))
			}
		}
	}
	return res, nil
}

// savepointOfObject returns the id of the savepoint whose objects live
// under data/savepoint-<id>/, when path (relative to the root) is one.
func savepointOfObject(path string) (int64, bool) {
	rest, ok := strings.CutPrefix(path, dataDir)
	if !ok {
		return 0, false
	}
	name, _, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	id, sp, ok := parseName(name)
	return id, ok && sp
}
