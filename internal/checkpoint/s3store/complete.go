package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/objstore"
)

// Complete implements checkpoint.Storage: see the package doc for the protocol.
// Until it returns nil the checkpoint does not exist; after a failure the
// previous checkpoints are untouched. A nil error with a fence noticed
// after the publication is possible (the checkpoint exists); the fence is
// logged and refuses the next writer.
func (s *Storage) Complete(ctx context.Context, md *checkpoint.Metadata) error {
	if md == nil {
		return s.errorf("complete: nil metadata")
	}
	id := md.CheckpointID
	if md.Job != "" && md.Job != s.job {
		return s.errorf("complete checkpoint %d of job %q", id, md.Job)
	}
	md.Job = s.job
	if md.Version == 0 {
		md.Version = checkpoint.MetadataVersion
	}
	fail := func(err error) error {
		return fmt.Errorf("s3 checkpoint storage %s: complete checkpoint %d: %w", s.root, id, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.mu.Lock()
	if s.fenced != nil {
		s.mu.Unlock()
		return fail(s.fenced)
	}
	if s.aborted[id] {
		s.mu.Unlock()
		return fail(errors.New("it was aborted"))
	}
	inf := s.pending[id]
	s.mu.Unlock()
	if err := s.current(ctx); err != nil {
		return fail(err)
	}
	s.mu.Lock()
	newest := s.newest
	s.mu.Unlock()
	if id <= newest {
		return fail(fmt.Errorf("not newer than checkpoint or savepoint %d", newest))
	}
	if err := s.checkStored(ctx, md, inf); err != nil {
		return fail(err)
	}
	name := chkName(id)
	if md.Savepoint {
		name = savepointName(id)
		if err := s.copyToSavepoint(ctx, md, inf); err != nil {
			return fail(err)
		}
	}
	m, err := s.publish(ctx, name, md)
	if err != nil {
		return fail(err)
	}
	md.Path = m.key
	s.mu.Lock()
	s.manifests[name] = m
	delete(s.pending, id)
	for a := range s.aborted {
		if a < id {
			delete(s.aborted, a)
		}
	}
	s.rebuildLocked()
	s.mu.Unlock()
	if md.Savepoint {
		// The checkpoint's private originals and shared files: the
		// savepoint has copies.
		s.deleteWritten(ctx, inf, func(key string) bool {
			return !strings.HasPrefix(key, s.root+dataDir+name+"/")
		})
		return nil
	}
	if s.opts.CollectInBackground {
		s.collectLater()
		return nil
	}
	s.collect(ctx)
	return nil
}

// requestParallelism bounds the requests inParallel has in flight.
const requestParallelism = 16

// inParallel calls fn(i) for every i below n on goroutines of its own,
// at most requestParallelism at a time, and returns once every call has.
func inParallel(n int, fn func(i int)) {
	sem := make(chan struct{}, requestParallelism)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() { // owned by inParallel, which waits for it
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

// checkStored makes sure every object md names is stored in full before
// the manifest makes the checkpoint exist. What this process knows is
// stored costs no round trip (knownSizeLocked); the store is asked about
// the rest, requestParallelism objects at a time. Its error names the first
// missing object, or the first whose size differs, in md's order.
func (s *Storage) checkStored(ctx context.Context, md *checkpoint.Metadata, inf *inflight) error {
	type ask struct {
		path, key string
		size      int64
	}
	var asks []ask
	var bad error
	s.mu.Lock()
	forEachRef(md, func(r checkpoint.FileRef) {
		if bad != nil {
			return
		}
		key, err := s.resolve(r.Path)
		if err != nil {
			bad = fmt.Errorf("names %s: %w", r.Path, err)
			return
		}
		if size, ok := s.knownSizeLocked(r, key, inf); ok && size == r.Size {
			return
		}
		asks = append(asks, ask{r.Path, key, r.Size})
	})
	s.mu.Unlock()
	if bad != nil {
		return bad
	}
	errs := make([]error, len(asks))
	inParallel(len(asks), func(i int) {
		a := asks[i]
		in, err := s.st.Stat(ctx, a.key)
		if err == nil && in.Size != a.size {
			err = fmt.Errorf("%s is %d bytes, the metadata says %d", a.key, in.Size, a.size)
		}
		if err != nil {
			errs[i] = fmt.Errorf("names %s: %w", a.path, err)
		}
	})
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// knownSizeLocked returns the size this process knows the object of r
// (at key) to have in the store, if it knows one: what a writer of inf
// or of an unreleased staging put, or what a retained checkpoint names
// for a shared object (stored in full when that checkpoint completed,
// and kept since: collect deletes nothing a retained manifest names).
// mu held.
func (s *Storage) knownSizeLocked(r checkpoint.FileRef, key string, inf *inflight) (int64, bool) {
	if inf != nil {
		if size, ok := inf.stored[key]; ok {
			return size, true
		}
	}
	for sg := range s.staging {
		if size, ok := sg.stored[key]; ok {
			return size, true
		}
	}
	if r.Shared {
		if known, ok := s.sharedByName[sharedBase(r.Path)]; ok && known.Path == r.Path {
			return known.Size, true
		}
	}
	return 0, false
}

// publish puts manifest name create-only and settles a refusal or an
// unknown outcome by reading it back.
func (s *Storage) publish(ctx context.Context, name string, md *checkpoint.Metadata) (*manifest, error) {
	id, sp, _ := parseName(name)
	b, err := encodeManifest(md, s.opts.Epoch)
	if err != nil {
		return nil, err
	}
	key := s.root + manifestDir + name
	// The cache holds its own copy: the caller may change md later.
	_, cp, err := decodeManifest(b)
	if err != nil {
		return nil, err
	}
	cp.Path = key
	m := &manifest{name: name, id: id, savepoint: sp, key: key, epoch: s.opts.Epoch, md: cp, raw: b}
	_, perr := s.st.Put(ctx, key, bytes.NewReader(b), objstore.PutOptions{IfNoneMatch: true})
	if perr == nil {
		return m, nil
	}
	// Refused, or the outcome is unknown: who holds the name?
	got, rerr := s.readAll(ctx, key)
	if rerr != nil {
		if errors.Is(perr, objstore.ErrExists) {
			return nil, fmt.Errorf("%w; reading it back: %v", perr, rerr)
		}
		return nil, perr // not applied, or unknown: not published either way
	}
	if bytes.Equal(got, b) {
		return m, nil // ours: the response was lost
	}
	epoch, _, derr := decodeManifest(got)
	if epoch > s.opts.Epoch {
		f := &FencedError{Key: key, Epoch: s.opts.Epoch, Newer: epoch, Err: perr}
		s.mu.Lock()
		s.fenced = f
		s.mu.Unlock()
		s.logf("%v", f)
		return nil, f
	}
	if derr != nil {
		return nil, fmt.Errorf("%s exists and is unreadable (%v); put: %w", key, derr, perr)
	}
	return nil, fmt.Errorf("%s already exists, written at epoch %d (this writer's is %d) with other content: %w", key, epoch, s.opts.Epoch, perr)
}

// copyToSavepoint copies every stored file md names into the savepoint's
// own objects and rewrites md's references to them. The copies are
// recorded in inf (when a writer wrote for the savepoint), so that an
// Abort after a failed completion deletes them too.
func (s *Storage) copyToSavepoint(ctx context.Context, md *checkpoint.Metadata, inf *inflight) error {
	base := dataDir + savepointName(md.CheckpointID) + "/" + s.token + "/"
	chkBase := dataDir + chkName(md.CheckpointID) + "/"
	return md.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
		if r.Inline {
			return r, nil
		}
		var rel string
		if r.Shared {
			rel = base + "shared/" + sharedBase(r.Path)
		} else if rest, ok := strings.CutPrefix(r.Path, chkBase); ok {
			_, after, _ := strings.Cut(rest, "/") // past the token
			rel = base + after
		} else {
			rel = base + "other/" + sharedBase(r.Path)
		}
		if err := s.copyObject(ctx, r, s.root+rel, inf); err != nil {
			return r, fmt.Errorf("copy %s for savepoint %d: %w", r.Path, md.CheckpointID, err)
		}
		r.Path, r.Shared = rel, false
		return r, nil
	})
}

// copyObject copies the stored file r to key (create-only), reading it
// through its size and CRC32C check, in memory up to the spool threshold
// and through a spool file beyond. key is recorded in inf, when set,
// before the put.
func (s *Storage) copyObject(ctx context.Context, r checkpoint.FileRef, key string, inf *inflight) error {
	rc, err := s.Open(r)
	if err != nil {
		return err
	}
	defer rc.Close()
	var body io.ReadSeeker
	if r.Size <= int64(s.opts.SpoolThreshold) {
		data, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	} else {
		sp, err := os.CreateTemp(s.opts.SpoolDir, "onceflow-s3-spool-*")
		if err != nil {
			return fmt.Errorf("spooling %s to %s: %w", r.Path, s.opts.SpoolDir, err)
		}
		defer os.Remove(sp.Name())
		defer sp.Close()
		if _, err := io.Copy(sp, rc); err != nil {
			return err
		}
		if _, err := sp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		body = sp
	}
	if inf != nil {
		s.mu.Lock()
		inf.written[key] = true
		s.mu.Unlock()
	}
	if _, err = s.st.Put(ctx, key, body, objstore.PutOptions{IfNoneMatch: true}); err != nil {
		return err
	}
	// Both were read in full through the size and CRC32C check (Open):
	// the original, and the copy's bytes.
	dst := r
	dst.Path = strings.TrimPrefix(key, s.root)
	s.mu.Lock()
	s.verified[verifiedKey(r)], s.verified[verifiedKey(dst)] = true, true
	s.mu.Unlock()
	return nil
}

// deleteWritten deletes the objects inf's writers put that keep accepts.
func (s *Storage) deleteWritten(ctx context.Context, inf *inflight, keep func(string) bool) []error {
	if inf == nil {
		return nil
	}
	s.mu.Lock()
	var keys []string
	for k := range inf.written {
		if keep(k) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, k := range keys {
		if err := s.st.Delete(ctx, k); err != nil {
			errs = append(errs, err)
			s.logf("s3 checkpoint storage: %v", err)
		}
	}
	return errs
}

// collect deletes what no retained manifest names: the subsumed
// checkpoints (manifest and marker first), then their objects, then,
// when a quarter of the grace period passed since it last looked for
// them (or since New), orphans older than the grace period. It does
// nothing once fenced. Failures are logged; the next completion tries
// again. The caller holds completeMu.
func (s *Storage) collect(ctx context.Context) {
	s.deleteObjects(ctx, s.collectManifests(ctx))
}

// collectLater asks the collector goroutine for a collect, starting it
// when it does not run (Options.CollectInBackground; completeMu held).
func (s *Storage) collectLater() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.collectWanted = true
	if !s.collecting {
		s.collecting = true
		go s.runCollector() // owned by the storage; it ends when no collect is wanted
	}
}

// runCollector serves the collects completions asked for, one at a
// time: collectManifests under completeMu, then the objects' deletions
// without it, so that the next Complete need not wait for them. It ends
// when none is wanted.
func (s *Storage) runCollector() {
	ctx := context.Background() // the deletions are bounded; a crash leaves orphans
	for {
		s.completeMu.Lock()
		s.mu.Lock()
		if !s.collectWanted {
			s.collecting = false
			s.deleted.Broadcast()
			s.mu.Unlock()
			s.completeMu.Unlock()
			return
		}
		s.collectWanted = false
		s.mu.Unlock()
		keys := s.collectManifests(ctx)
		s.mu.Lock()
		s.deleting = true
		s.mu.Unlock()
		s.completeMu.Unlock()
		s.deleteObjects(ctx, keys)
		s.mu.Lock()
		s.deleting = false
		s.deleted.Broadcast()
		s.mu.Unlock()
	}
}

// lockExclusive takes completeMu and waits for the collector's deletions
// in progress, for the operations that must not overlap them (Claim,
// Adopt, Sweep, DiscardAll, PruneSavepoints). Complete does not wait:
// what the collector deletes is named by no retained checkpoint and by
// no checkpoint in flight, and no later checkpoint can come to name it
// (HasShared answers from the retained ones, and new objects get keys
// of their own).
func (s *Storage) lockExclusive() {
	s.completeMu.Lock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.deleting {
		s.deleted.Wait()
	}
}

// deleteObjects deletes keys, requestParallelism at a time, and logs the
// failures: an object left is an orphan a later collect deletes.
func (s *Storage) deleteObjects(ctx context.Context, keys []string) {
	inParallel(len(keys), func(i int) {
		if err := s.st.Delete(ctx, keys[i]); err != nil {
			s.logf("s3 checkpoint storage %s: remove %s: %v", s.root, keys[i], err)
		}
	})
}

// collectManifests is collect's part under completeMu: it deletes the
// subsumed checkpoints' manifests and markers and returns the objects to
// delete after them: those of the subsumed checkpoints that no retained
// checkpoint or checkpoint in flight names, and the orphans.
func (s *Storage) collectManifests(ctx context.Context) []string {
	fence, err := s.refresh(ctx)
	if err != nil {
		s.logf("s3 checkpoint storage %s: deletions skipped: %v", s.root, err)
		return nil
	}
	if fence != nil {
		return nil
	}
	s.mu.Lock()
	var subsumed []*manifest
	referenced := map[string]bool{}
	damaged := map[string]bool{} // data/<name>/ of damaged manifests
	anyDamaged := false
	for _, m := range s.manifests {
		switch {
		case m.md == nil:
			anyDamaged = true
			damaged[s.root+dataDir+m.name+"/"] = true
		case m.savepoint || s.retained[m.id] != nil:
			forEachRef(m.md, func(r checkpoint.FileRef) { referenced[s.root+r.Path] = true })
		default:
			subsumed = append(subsumed, m)
		}
	}
	inUse := map[string]bool{}
	for _, inf := range s.pending {
		s.addInUse(inUse, inf)
	}
	for inf := range s.staging {
		s.addInUse(inUse, inf)
	}
	s.mu.Unlock()
	gone := map[string]bool{}
	var keys []string
	for _, m := range subsumed {
		if err := s.st.Delete(ctx, m.key+committedSuf); err != nil {
			s.logf("s3 checkpoint storage %s: remove subsumed checkpoint %d: %v", s.root, m.id, err)
			continue
		}
		if err := s.st.Delete(ctx, m.key); err != nil {
			s.logf("s3 checkpoint storage %s: remove subsumed checkpoint %d: %v", s.root, m.id, err)
			continue
		}
		s.mu.Lock()
		delete(s.manifests, m.name)
		s.mu.Unlock()
		forEachRef(m.md, func(r checkpoint.FileRef) {
			if k := s.root + r.Path; !referenced[k] && !inUse[k] && !gone[k] {
				gone[k] = true
				keys = append(keys, k)
			}
		})
	}
	// Orphans: data no manifest names, older than the grace period. Two
	// listings of everything the job stores, to find objects at least
	// that old: not at every completion.
	now := s.opts.Now()
	if now.Sub(s.orphansSought) < s.opts.OrphanGrace/4 {
		return keys
	}
	s.orphansSought = now
	cutoff := now.Add(-s.opts.OrphanGrace)
	for _, dir := range []string{dataDir, sharedDir} {
		if dir == sharedDir && anyDamaged {
			continue
		}
		infos, err := s.st.List(ctx, s.root+dir)
		if err != nil {
			s.logf("s3 checkpoint storage %s: orphans not removed: %v", s.root, err)
			return keys
		}
		for _, in := range infos {
			if referenced[in.Key] || inUse[in.Key] || gone[in.Key] || !in.LastModified.Before(cutoff) || s.underDamaged(in.Key, damaged) {
				continue
			}
			if s.inflightData(in.Key) {
				continue
			}
			keys = append(keys, in.Key)
		}
	}
	return keys
}

// addInUse adds the keys of the objects inf's writers put or reused to
// inUse (mu held).
func (s *Storage) addInUse(inUse map[string]bool, inf *inflight) {
	for k := range inf.written {
		inUse[k] = true
	}
	for p := range inf.reused {
		inUse[s.root+p] = true
	}
}

func (s *Storage) underDamaged(key string, damaged map[string]bool) bool {
	for p := range damaged {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// inflightData reports whether key is under the data of a checkpoint in
// flight in this process (its objects are not recorded before Close).
func (s *Storage) inflightData(key string) bool {
	rest, ok := strings.CutPrefix(key, s.root+dataDir)
	if !ok {
		return false
	}
	name, _, _ := strings.Cut(rest, "/")
	id, _, ok := parseName(name)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending[id] != nil
}

// Abort implements checkpoint.Storage: the objects the checkpoint's writers
// put are deleted, and writers still running fail and delete theirs.
// Because a Complete whose outcome was unknown (a lost response it could
// not read back) may have published the manifest, Abort first asks the
// store: when the manifest exists, or the store cannot say, it deletes
// nothing and fails naming the manifest.
func (s *Storage) Abort(checkpointID int64) error {
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.mu.Lock()
	if m := s.manifests[chkName(checkpointID)]; m != nil {
		s.mu.Unlock()
		return s.errorf("abort of completed checkpoint %d", checkpointID)
	}
	if m := s.manifests[savepointName(checkpointID)]; m != nil {
		s.mu.Unlock()
		return s.errorf("abort of completed savepoint %d", checkpointID)
	}
	inf := s.pending[checkpointID]
	s.mu.Unlock()
	// Only a checkpoint some writer wrote for has objects to delete.
	var keep error
	if inf != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, name := range []string{chkName(checkpointID), savepointName(checkpointID)} {
			key := s.root + manifestDir + name
			_, err := s.st.Stat(ctx, key)
			if err == nil {
				s.mu.Lock()
				delete(s.pending, checkpointID)
				s.mu.Unlock()
				return s.errorf("abort of checkpoint %d: its manifest %s exists (an earlier Complete was applied); nothing deleted", checkpointID, key)
			}
			if !errors.Is(err, objstore.ErrNotFound) && keep == nil {
				keep = fmt.Errorf("cannot tell whether %s was published, so its objects are kept (deleted after the orphan grace period if it was not): %w", key, err)
			}
		}
	}
	s.mu.Lock()
	delete(s.pending, checkpointID)
	s.aborted[checkpointID] = true
	if inf != nil {
		inf.aborted = true
	}
	s.mu.Unlock()
	if keep != nil {
		return s.errorf("abort checkpoint %d: %w", checkpointID, keep)
	}
	errs := s.deleteWritten(context.Background(), inf, func(string) bool { return true })
	if err := errors.Join(errs...); err != nil {
		return s.errorf("abort checkpoint %d: %w", checkpointID, err)
	}
	return nil
}

// resolve returns the object key of a file reference's path.
func (s *Storage) resolve(rel string) (string, error) {
	if err := objstore.ValidateKey(rel); err != nil || !(strings.HasPrefix(rel, dataDir) || strings.HasPrefix(rel, sharedDir)) {
		return "", s.errorf("file path %q is not an object of this storage", rel)
	}
	return s.root + rel, nil
}

// Open implements checkpoint.Storage: size and CRC32C are verified as the file
// is read to its end.
func (s *Storage) Open(ref checkpoint.FileRef) (io.ReadCloser, error) {
	if ref.Inline {
		return checkpoint.OpenInline(ref)
	}
	key, err := s.resolve(ref.Path)
	if err != nil {
		return nil, err
	}
	rc, in, err := s.st.Get(context.Background(), key, objstore.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", key, err)
	}
	if in.Size != ref.Size {
		rc.Close()
		return nil, checkpoint.Integrityf("state file %s is %d bytes, expected %d (truncated or overwritten)", key, in.Size, ref.Size)
	}
	return checkpoint.VerifyReader(rc, rc, key, ref, false), nil
}

// isDamage reports whether a read error shows the checkpoint damaged (a
// missing object, a wrong size or checksum) rather than the store failing.
func isDamage(err error) bool {
	return errors.Is(err, checkpoint.ErrIntegrity) || errors.Is(err, objstore.ErrNotFound)
}
