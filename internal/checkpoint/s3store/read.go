package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/objstore"
)

// info describes a cached manifest for List and Latest.
func (m *manifest) info() checkpoint.CheckpointInfo {
	return checkpoint.CheckpointInfo{ID: m.id, Savepoint: m.savepoint, Path: m.key, Complete: m.md != nil,
		Damaged: m.md == nil, Committed: m.committed, Err: m.err}
}

// snapshot refreshes the cache and returns copies of the manifests,
// oldest first: a refresh or MarkCommitted meanwhile updates the cached
// ones (their committed flag) under s.mu, which the caller does not hold.
func (s *Storage) snapshot(ctx context.Context) ([]*manifest, error) {
	if _, err := s.refresh(ctx); err != nil {
		return nil, s.errorf("%w", err)
	}
	return s.cached(), nil
}

// cached returns copies of the cached manifests, oldest first, as they
// are (snapshot without the refresh).
func (s *Storage) cached() []*manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.sortedLocked()
	for i, m := range ms {
		cp := *m
		ms[i] = &cp
	}
	return ms
}

// cloneMetadata returns a deep copy of md (through JSON, as stored), so
// that callers never share the cache's.
func cloneMetadata(m *manifest) (*checkpoint.Metadata, error) {
	_, md, err := decodeManifest(m.raw)
	if err != nil {
		return nil, err
	}
	md.Path = m.key
	md.Committed = m.committed
	return md, nil
}

// List implements checkpoint.Storage: every manifest found, oldest first. It
// reads the manifests, not the state files (Load and Latest verify those),
// and lists no checkpoint that never completed (see the package doc).
func (s *Storage) List(ctx context.Context) ([]checkpoint.CheckpointInfo, error) {
	ms, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]checkpoint.CheckpointInfo, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.info())
	}
	return out, ctx.Err()
}

// Latest implements checkpoint.Storage: the newest intact checkpoint or
// savepoint, every file of it read through its size and CRC32C check;
// the damaged ones it skipped are reported in the infos.
func (s *Storage) Latest(ctx context.Context) (*checkpoint.Metadata, []checkpoint.CheckpointInfo, error) {
	ms, err := s.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s.latestOf(ctx, ms)
}

// latestOf is Latest over the manifests ms (oldest first, copies: see
// snapshot).
func (s *Storage) latestOf(ctx context.Context, ms []*manifest) (*checkpoint.Metadata, []checkpoint.CheckpointInfo, error) {
	var infos []checkpoint.CheckpointInfo
	for i := len(ms) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, infos, err
		}
		m := ms[i]
		info := m.info()
		if m.md == nil {
			infos = append(infos, info)
			continue
		}
		md, err := cloneMetadata(m)
		if err == nil {
			err = s.verifyFiles(ctx, md)
		}
		if err != nil && !isDamage(err) {
			// The store failing is not damage: falling back to an older
			// checkpoint would replay what this one committed.
			return nil, infos, s.errorf("latest: reading %s: %w", m.key, err)
		}
		if err != nil {
			info.Damaged, info.Err = true, err
			infos = append(infos, info)
			continue
		}
		infos = append(infos, info)
		return md, infos, nil
	}
	return nil, infos, nil
}

// verifyFiles reads every file md names to its end. An error for which
// isDamage holds shows the checkpoint damaged; any other is the store's.
//
// Files are read verifyParallelism at a time, and a file this Storage has
// read in full once (same key, size and checksum) is not read again:
// objects are put create-only under names no other writer uses, so a
// verified object only changes by being deleted, which the restore's own
// reads (Open checks the size and CRC32C too) would still find. A claim
// verifies the checkpoint it adopts and the restore that follows verifies
// the claim: without the memory every file was read twice on a handover.
func (s *Storage) verifyFiles(ctx context.Context, md *checkpoint.Metadata) error {
	var todo []checkpoint.FileRef
	s.mu.Lock()
	forEachRef(md, func(r checkpoint.FileRef) {
		if !s.verified[verifiedKey(r)] {
			todo = append(todo, r)
		}
	})
	s.mu.Unlock()
	return parallel(ctx, todo, verifyParallelism, func(ctx context.Context, r checkpoint.FileRef) error {
		err := ctx.Err()
		if err == nil {
			var rc io.ReadCloser
			if rc, err = s.Open(r); err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", md.Path, err)
		}
		s.mu.Lock()
		s.verified[verifiedKey(r)] = true
		s.mu.Unlock()
		return nil
	})
}

// verifyParallelism bounds the reads of one verifyFiles.
const verifyParallelism = 8

func verifiedKey(r checkpoint.FileRef) string {
	return fmt.Sprintf("%s|%d|%x", r.Path, r.Size, r.CRC32C)
}

// nameOf turns what Load accepts into a manifest name: chk-<n> or
// savepoint-<id>, optionally under manifest/ and the root, or the Path
// of a Metadata or CheckpointInfo of this Storage.
func (s *Storage) nameOf(path string) (string, error) {
	p := strings.TrimPrefix(path, s.root)
	p = strings.TrimPrefix(p, manifestDir)
	p = strings.TrimSuffix(p, "/_metadata")
	if _, _, ok := parseName(p); !ok {
		return "", s.errorf("load %q: not a checkpoint or savepoint of this storage (chk-<n>, savepoint-<id> or %s%s<name>)", path, s.root, manifestDir)
	}
	return p, nil
}

// Load implements checkpoint.Storage. path names a checkpoint or savepoint of
// this Storage (see nameOf); its files are verified like Latest's.
func (s *Storage) Load(ctx context.Context, path string) (*checkpoint.Metadata, error) {
	name, err := s.nameOf(path)
	if err != nil {
		return nil, err
	}
	m, err := s.readManifest(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if m.err != nil {
		return nil, fmt.Errorf("load %s: %w", path, m.err)
	}
	if _, err := s.st.Stat(ctx, m.key+committedSuf); err == nil {
		m.committed = true
		m.md.Committed = true
	} else if !errors.Is(err, objstore.ErrNotFound) {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := s.verifyFiles(ctx, m.md); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return m.md, nil
}

// MarkCommitted implements checkpoint.Storage: it puts the marker
// manifest/<name>.committed beside the manifest.
func (s *Storage) MarkCommitted(ctx context.Context, checkpointID int64) error {
	fail := func(err error) error {
		return fmt.Errorf("s3 checkpoint storage %s: mark checkpoint %d committed: %w", s.root, checkpointID, err)
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	if err := s.current(ctx); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	var m *manifest
	for _, name := range []string{savepointName(checkpointID), chkName(checkpointID)} {
		if c := s.manifests[name]; c != nil && (m == nil || m.md == nil) {
			m = c
		}
	}
	s.mu.Unlock()
	if m == nil {
		return fail(fmt.Errorf("no checkpoint or savepoint %d in %s", checkpointID, s.root+manifestDir))
	}
	if m.md == nil {
		return fail(m.err)
	}
	body := fmt.Sprintf("committed %d epoch=%d\n", checkpointID, s.opts.Epoch)
	if _, err := s.st.Put(ctx, m.key+committedSuf, bytes.NewReader([]byte(body)), objstore.PutOptions{}); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	if cur := s.manifests[m.name]; cur != nil && cur.key == m.key && cur.md != nil {
		s.manifests[m.name] = cur.withCommitted(true)
	}
	s.mu.Unlock()
	return nil
}

// discardedKey (under the root) records what DiscardAll discarded:
// "<discardedHeader>\n" and the checkpoint.Discard as JSON.
const (
	discardedKey    = "discarded"
	discardedHeader = "onceflow-discarded"
)

// DiscardAll implements checkpoint.Storage: it records what it discards in
// <root>discarded, then deletes every checkpoint's manifest and marker,
// then their data and the shared objects; savepoints stay. A failure to
// record deletes nothing. A fenced writer discards nothing.
func (s *Storage) DiscardAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fail := func(err error) error { return s.errorf("discard: %w", err) }
	s.lockExclusive()
	defer s.completeMu.Unlock()
	if err := s.current(ctx); err != nil {
		return fail(err)
	}
	rec, err := s.discarded(ctx)
	if err != nil {
		return fail(err)
	}
	s.mu.Lock()
	all := s.sortedLocked()
	s.mu.Unlock()
	if n := len(all); n > 0 && all[n-1].id > rec.Through {
		newest := all[n-1]
		rec = checkpoint.Discard{Through: newest.id}
		if !newest.savepoint && newest.md != nil {
			if md, err := cloneMetadata(newest); err == nil {
				sup := &checkpoint.Superseded{CheckpointID: md.CheckpointID, Path: md.Path, WriterVersion: md.WriterVersion}
				for _, op := range md.Operators {
					for i := range op.Subtasks {
						op.Subtasks[i].Keyed = nil
					}
					sup.Operators = append(sup.Operators, op)
				}
				rec.Newest = sup
			}
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return fail(fmt.Errorf("encoding what it discards: %w", err))
		}
		body := append([]byte(discardedHeader+"\n"), append(b, '\n')...)
		if _, err := s.st.Put(ctx, s.root+discardedKey, bytes.NewReader(body), objstore.PutOptions{}); err != nil {
			return fail(fmt.Errorf("recording the newest checkpoint (%d) before deleting it: %w", rec.Through, err))
		}
	}
	// Every manifest and marker before any object it names.
	var errs []error
	for _, m := range all {
		if m.savepoint {
			continue
		}
		for _, k := range []string{m.key + committedSuf, m.key} {
			if err := s.st.Delete(ctx, k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fail(errors.Join(errs...))
	}
	for _, prefix := range []string{s.root + dataDir + chkPrefix, s.root + sharedDir} {
		infos, err := s.st.List(ctx, prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, in := range infos {
			if err := s.st.Delete(ctx, in.Key); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.mu.Lock()
	s.newest = 0
	s.mu.Unlock()
	if _, err := s.refresh(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	return nil
}

// Discarded implements checkpoint.Storage.
func (s *Storage) Discarded(ctx context.Context) (checkpoint.Discard, error) {
	rec, err := s.discarded(ctx)
	if err != nil {
		return checkpoint.Discard{}, s.errorf("%w", err)
	}
	return rec, nil
}

// discarded reads DiscardAll's record (the zero Discard without one).
func (s *Storage) discarded(ctx context.Context) (checkpoint.Discard, error) {
	key := s.root + discardedKey
	b, err := s.readAll(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return checkpoint.Discard{}, nil
	}
	if err != nil {
		return checkpoint.Discard{}, fmt.Errorf("reading %s: %w", key, err)
	}
	var rec checkpoint.Discard
	body, ok := bytes.CutPrefix(b, []byte(discardedHeader+"\n"))
	if !ok || json.Unmarshal(body, &rec) != nil || rec.Through <= 0 {
		return checkpoint.Discard{}, fmt.Errorf("%s is corrupt: %q", key, b)
	}
	return rec, nil
}

// Adopt implements checkpoint.Storage for checkpoints and savepoints of this
// Storage (md as Load returned it; another location's fails naming its
// path). Private files are copied under data/chk-<newID>/; shared objects
// are referenced where they are (the new manifest's reference keeps them).
// The committed marker, when md was committed, is put before the manifest,
// which is put create-only like Complete's (a higher epoch fences). On a
// failure the copies are deleted, unless the manifest's fate is unknown.
func (s *Storage) Adopt(ctx context.Context, md *checkpoint.Metadata, newID int64) (*checkpoint.Metadata, error) {
	return s.adopt(ctx, md, newID, true)
}

// adopt is Adopt. Claim, which has just listed the manifests, calls it
// with standalone false: then it neither lists them again before the
// create-only put (which refuses an id taken meanwhile anyway) nor
// collects after it (the next completion does).
func (s *Storage) adopt(ctx context.Context, md *checkpoint.Metadata, newID int64, standalone bool) (*checkpoint.Metadata, error) {
	if md == nil {
		return nil, s.errorf("adopt: nil metadata")
	}
	fail := func(err error) (*checkpoint.Metadata, error) {
		return nil, s.errorf("adopt %s as checkpoint %d: %w", md.Path, newID, err)
	}
	srcName, err := s.nameOf(md.Path)
	if err != nil || md.Path == "" {
		return fail(fmt.Errorf("not a checkpoint or savepoint of this storage (as Load returns it): %w", ErrNotSupported))
	}
	s.lockExclusive()
	defer s.completeMu.Unlock()
	if standalone {
		if err := s.current(ctx); err != nil {
			return fail(err)
		}
	}
	s.mu.Lock()
	if newID <= s.newest || s.pending[newID] != nil || s.aborted[newID] {
		top := s.newest
		s.mu.Unlock()
		return fail(fmt.Errorf("id %d is not above %d, the highest in the storage, or is in flight", newID, top))
	}
	inf := newInflight()
	inf.adopting = true
	s.pending[newID] = inf
	s.mu.Unlock()
	done := false
	defer func() {
		s.mu.Lock()
		delete(s.pending, newID)
		s.mu.Unlock()
		if !done {
			s.deleteWritten(context.Background(), inf, func(string) bool { return true })
		}
	}()
	raw, err := json.Marshal(md)
	if err != nil {
		return fail(err)
	}
	var out checkpoint.Metadata
	if err := json.Unmarshal(raw, &out); err != nil {
		return fail(err)
	}
	out.Version, out.Job, out.CheckpointID, out.Savepoint = checkpoint.MetadataVersion, s.job, newID, false
	out.RestoredFrom, out.Supersedes, out.WriterVersion = md.Path, md.Supersedes, md.WriterVersion
	srcData := dataDir + srcName + "/"
	dst := dataDir + chkName(newID) + "/" + s.token + "/"
	err = out.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
		if r.Inline {
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
		key, err := s.resolve(r.Path)
		if err != nil {
			return r, err
		}
		if r.Shared {
			in, err := s.st.Stat(ctx, key)
			if err == nil && in.Size != r.Size {
				err = fmt.Errorf("%s is %d bytes, the metadata says %d", key, in.Size, r.Size)
			}
			if err != nil {
				return r, fmt.Errorf("shared file %s: %w", r.Path, err)
			}
			s.mu.Lock()
			inf.reused[r.Path] = true
			s.mu.Unlock()
			return r, nil
		}
		rest, ok := strings.CutPrefix(r.Path, srcData)
		if _, after, cut := strings.Cut(rest, "/"); ok && cut { // past the token
			rest = after
		} else {
			return r, fmt.Errorf("state file %s is not under %s<token>/", r.Path, srcData)
		}
		if err := s.copyObject(ctx, r, s.root+dst+rest, inf); err != nil {
			return r, err
		}
		return checkpoint.FileRef{Path: dst + rest, Size: r.Size, CRC32C: r.CRC32C}, nil
	})
	if err != nil {
		return fail(err)
	}
	name := chkName(newID)
	if md.Committed {
		key := s.root + manifestDir + name + committedSuf
		s.mu.Lock()
		inf.written[key] = true
		s.mu.Unlock()
		body := fmt.Sprintf("committed %d (adopted from %s) epoch=%d\n", newID, md.Path, s.opts.Epoch)
		if _, err := s.st.Put(ctx, key, bytes.NewReader([]byte(body)), objstore.PutOptions{}); err != nil {
			return fail(err)
		}
	}
	m, err := s.publish(ctx, name, &out)
	if err != nil {
		if _, serr := s.st.Stat(ctx, s.root+manifestDir+name); !errors.Is(serr, objstore.ErrNotFound) {
			done = true // published, or cannot tell: keep the copies
		}
		return fail(err)
	}
	done = true
	m.committed = md.Committed
	m.md.Committed = md.Committed
	out.Path, out.Committed = m.key, md.Committed
	s.mu.Lock()
	s.manifests[name] = m
	s.rebuildLocked()
	s.mu.Unlock()
	if standalone {
		s.collect(ctx)
	}
	return &out, nil
}

// Sweep implements checkpoint.Storage: it deletes the data objects of every
// checkpoint and savepoint without a manifest (one that never completed,
// a savepoint whose completion failed), never those of one whose manifest
// exists, intact or damaged, nor those of the ids in flight in this
// Storage, which it keeps from starting meanwhile. Objects a writer of a
// higher epoch put are not touched: Sweep then fails with ErrFenced after
// deleting the rest. Like the directory backend's it is meant for the
// job's start: it cannot see another process of the same epoch writing.
// Later ids stay above the ones it removed. It returns what it removed,
// oldest first; an error names what it could not delete, after deleting
// what it could.
func (s *Storage) Sweep(ctx context.Context) ([]checkpoint.CheckpointInfo, error) {
	s.lockExclusive()
	defer s.completeMu.Unlock()
	fence, err := s.refresh(ctx)
	if err != nil {
		return nil, s.errorf("sweep: %w", err)
	}
	if fence != nil {
		return nil, s.errorf("sweep: %w", fence)
	}
	infos, err := s.st.List(ctx, s.root+dataDir)
	if err != nil {
		return nil, s.errorf("sweep: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	byName := map[string][]string{}
	var errs []error
	for _, in := range infos {
		rest := strings.TrimPrefix(in.Key, s.root+dataDir)
		name, after, _ := strings.Cut(rest, "/")
		id, _, ok := parseName(name)
		if !ok || s.manifests[name] != nil || s.pending[id] != nil {
			continue
		}
		token, _, _ := strings.Cut(after, "/")
		if e, ok := tokenEpoch(token); ok && e > s.opts.Epoch {
			errs = append(errs, &FencedError{Key: in.Key, Epoch: s.opts.Epoch, Newer: e})
			byName[name] = nil // not this one: a newer writer's
			continue
		}
		if keys, seen := byName[name]; !seen || keys != nil {
			byName[name] = append(keys, in.Key)
		}
	}
	var removed []checkpoint.CheckpointInfo
	for name, keys := range byName {
		if keys == nil {
			continue
		}
		id, sp, _ := parseName(name)
		failed := false
		for _, k := range keys {
			if err := s.st.Delete(ctx, k); err != nil {
				errs = append(errs, fmt.Errorf("delete incomplete %s: %w", k, err))
				failed = true
			}
		}
		s.newest = max(s.newest, id)
		if !failed {
			removed = append(removed, checkpoint.CheckpointInfo{ID: id, Savepoint: sp, Path: s.root + dataDir + name,
				Err: fmt.Errorf("checkpoint %s%s is incomplete: no manifest %s%s%s", s.root, dataDir+name, s.root, manifestDir, name)})
		}
	}
	sort.Slice(removed, func(i, j int) bool { return removed[i].ID < removed[j].ID })
	if err := errors.Join(errs...); err != nil {
		return removed, s.errorf("sweep: %w", err)
	}
	return removed, nil
}

// tokenEpoch returns the epoch of a writer token e<epoch>-<hex>.
func tokenEpoch(token string) (int64, bool) {
	rest, ok := strings.CutPrefix(token, "e")
	if !ok {
		return 0, false
	}
	num, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	e, err := strconv.ParseInt(num, 10, 64)
	return e, err == nil
}
