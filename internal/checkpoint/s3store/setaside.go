package s3store

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/onceflow/onceflow/internal/objstore"
)

// SetAsideResult is what SetAside moved.
type SetAsideResult struct {
	// Keys are the moved objects' keys relative to both roots (past
	// "<from>/" and "<to>/"), in byte order. Empty when the job had no
	// object.
	Keys []string
	// Checkpoints name the checkpoints and savepoints whose manifests
	// moved: chk-<n> and savepoint-<id>, and <sub>/chk-<n> for a job
	// stored under the root (a partition group's pg-<g>/), ordered by
	// <sub>, then id, a checkpoint before the savepoint of the same id.
	Checkpoints []string
}

// setAsideWorkers bounds the copies (and then the deletions) SetAside
// has in flight at once.
const setAsideWorkers = 4

// SetAside moves every object of a job's root to another root of the same
// store, so that the job starts over without checkpoints while nothing of
// the old ones is lost (processor run --fresh): each object under
// "<from>/" is copied to the same relative key under "<to>/", and deleted
// from "<from>/" once every copy is stored. from and to are key prefixes
// without a leading or trailing "/", as <Options.Prefix>/<Options.Job>;
// neither may lie under the other. Objects of other roots, such as
// "<from>.set-aside-<time>/" of an earlier call, are not touched.
//
// Copy first, all of it, then delete: a failure or a crash while copying
// deletes nothing, and leaves the root as it was and a partial copy under
// "<to>/"; a failure or a crash while deleting leaves every object under
// "<to>/" and some still under "<from>/". Either way a later SetAside to
// a new root sets aside again what is left under "<from>/" (the partial
// copies stay where they are). The deletions go in an order that keeps
// what is left a consistent, older-looking job: the manifests first, one
// at a time, the oldest checkpoint first and each one's committed marker
// right after its manifest, so that the checkpoints left are the newest
// ones and each whole; then the data; the record of a DiscardAll
// ("discarded") last. A job left so resumes from its newest checkpoint,
// as without --fresh, or starts over when no manifest is left; only a
// crash between a manifest's deletion and its marker's leaves a marker
// that a new checkpoint of that id, in a run without SetAside, would
// wrongly take as its own: after a failure, set aside again.
//
// The store has no server-side copy: each object is read (Get) and
// written again with a create-only Put, held in memory up to
// DefaultSpoolThreshold and in a spool file under os.TempDir() beyond, a
// few at a time. That moves the bytes through this process: a job's
// retained checkpoints and its savepoints, about its state's size per
// savepoint kept and once more for the checkpoints (their shared files
// are stored once), not the history the state came from. A copy whose
// size differs from the listed object's, or whose key already exists
// under "<to>/" (ErrExists; SetAside refuses a "<to>/" that holds any
// object before it starts), fails.
//
// The job must not be running meanwhile, in this process or any other:
// SetAside does not fence writers; objects written after its listing are
// neither copied nor deleted, and objects they refer to may be deleted.
// Errors name the key and what was done (nothing deleted, or how many
// originals were).
func SetAside(ctx context.Context, st objstore.Store, from, to string) (SetAsideResult, error) {
	for _, root := range []string{from, to} {
		// A root starting or ending with "/" gives a key ValidateKey refuses.
		if err := objstore.ValidateKey(root + "/x"); err != nil {
			return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: root %q must be key segments joined by /: %w", from, to, root, err)
		}
	}
	if from == to || strings.HasPrefix(to+"/", from+"/") || strings.HasPrefix(from+"/", to+"/") {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: one root lies under the other", from, to)
	}
	infos, err := st.List(ctx, from+"/")
	if err != nil {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s: listing the job's objects: %w", from, err)
	}
	if len(infos) == 0 {
		return SetAsideResult{}, nil
	}
	there, err := st.List(ctx, to+"/")
	if err != nil {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: listing the destination: %w", from, to, err)
	}
	if len(there) > 0 {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: the destination already holds %d objects (%s first); nothing was copied",
			from, to, len(there), there[0].Key)
	}
	res := SetAsideResult{Keys: make([]string, len(infos))}
	for i, in := range infos {
		res.Keys[i] = strings.TrimPrefix(in.Key, from+"/")
	}
	res.Checkpoints = checkpointNames(res.Keys)

	err = parallel(ctx, infos, setAsideWorkers, func(ctx context.Context, in objstore.Info) error {
		return copyAside(ctx, st, in, to+"/"+strings.TrimPrefix(in.Key, from+"/"))
	})
	if err != nil {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: %w; nothing was deleted, the job's checkpoints are all still under %s/",
			from, to, err, from)
	}

	manifests, data, last := deletionOrder(infos, from+"/")
	var (
		mu      sync.Mutex
		deleted int
	)
	del := func(ctx context.Context, in objstore.Info) error {
		if err := st.Delete(ctx, in.Key); err != nil {
			return err
		}
		mu.Lock()
		deleted++
		mu.Unlock()
		return nil
	}
	for _, in := range manifests {
		if err = del(ctx, in); err != nil {
			break
		}
	}
	if err == nil {
		err = parallel(ctx, data, setAsideWorkers, del)
	}
	for _, in := range last {
		if err != nil {
			break
		}
		err = del(ctx, in)
	}
	if err != nil {
		return SetAsideResult{}, fmt.Errorf("s3 checkpoint storage: set aside %s to %s: every object is copied to %s/, but deleting the originals failed after %d of %d: %w; set aside again what is left",
			from, to, to, deleted, len(infos), err)
	}
	return res, nil
}

// copyAside copies the object in to key, create-only, checking that it
// read as many bytes as the listing said the object holds.
func copyAside(ctx context.Context, st objstore.Store, in objstore.Info, key string) error {
	rc, _, err := st.Get(ctx, in.Key, objstore.GetOptions{})
	if err != nil {
		return fmt.Errorf("copying %s: %w", in.Key, err)
	}
	defer rc.Close()
	var body io.ReadSeeker
	var n int64
	if in.Size <= DefaultSpoolThreshold {
		data, err := io.ReadAll(rc)
		if err != nil {
			return fmt.Errorf("copying %s: reading it: %w", in.Key, err)
		}
		body, n = bytes.NewReader(data), int64(len(data))
	} else {
		sp, err := os.CreateTemp("", "onceflow-s3-spool-*")
		if err != nil {
			return fmt.Errorf("copying %s: spooling it to %s: %w", in.Key, os.TempDir(), err)
		}
		defer os.Remove(sp.Name())
		defer sp.Close()
		if n, err = io.Copy(sp, rc); err != nil {
			return fmt.Errorf("copying %s: spooling it to %s: %w", in.Key, sp.Name(), err)
		}
		if _, err := sp.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("copying %s: spooling it to %s: %w", in.Key, sp.Name(), err)
		}
		body = sp
	}
	if n != in.Size {
		return fmt.Errorf("copying %s: read %d bytes of an object listed with %d", in.Key, n, in.Size)
	}
	if _, err := st.Put(ctx, key, body, objstore.PutOptions{IfNoneMatch: true}); err != nil {
		return fmt.Errorf("copying %s to %s: %w", in.Key, key, err)
	}
	return nil
}

// isManifestKey reports whether rel, a key relative to a job's root, is
// a manifest or a marker: the leaf of a manifest/ segment, at the root or
// under a job stored below it.
func isManifestKey(rel string) bool {
	dir, _, ok := cutLast(rel)
	return ok && (dir == "manifest" || strings.HasSuffix(dir, "/manifest"))
}

// cutLast splits key at its last "/".
func cutLast(key string) (dir, leaf string, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", key, false
	}
	return key[:i], key[i+1:], true
}

// deletionOrder splits the listed objects of the root (keys past root)
// into the manifests and markers, to delete one at a time in this order
// (by sub-root, then oldest id first, each manifest before its marker),
// the data (every other object), and the DiscardAll records, to delete
// last.
func deletionOrder(infos []objstore.Info, root string) (manifests, data, last []objstore.Info) {
	type entry struct {
		in     objstore.Info
		sub    string
		id     int64
		sp     bool
		marker bool
	}
	var ms []entry
	for _, in := range infos {
		rel := strings.TrimPrefix(in.Key, root)
		dir, leaf, _ := cutLast(rel)
		if isManifestKey(rel) {
			base, marker := strings.CutSuffix(leaf, committedSuf)
			if id, sp, ok := parseName(base); ok {
				ms = append(ms, entry{in: in, sub: strings.TrimSuffix(dir, "manifest"), id: id, sp: sp, marker: marker})
				continue
			}
		}
		if leaf == discardedKey && !slices.ContainsFunc(strings.Split(dir, "/"), func(seg string) bool {
			return seg+"/" == dataDir || seg+"/" == sharedDir || seg+"/" == manifestDir
		}) {
			last = append(last, in)
			continue
		}
		data = append(data, in)
	}
	slices.SortFunc(ms, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.sub, b.sub), cmp.Compare(a.id, b.id), boolCompare(a.sp, b.sp), boolCompare(a.marker, b.marker))
	})
	for _, e := range ms {
		manifests = append(manifests, e.in)
	}
	return manifests, data, last
}

// boolCompare orders false before true.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// checkpointNames returns the checkpoints and savepoints whose manifests
// rel (keys relative to a job's root) holds, as SetAsideResult.Checkpoints
// names and orders them.
func checkpointNames(rel []string) []string {
	type named struct {
		sub       string
		id        int64
		savepoint bool
		name      string
	}
	var out []named
	for _, k := range rel {
		if !isManifestKey(k) {
			continue
		}
		dir, leaf, _ := cutLast(k)
		id, sp, ok := parseName(leaf)
		if !ok { // a committed marker, or no name of ours
			continue
		}
		sub := strings.TrimSuffix(dir, "manifest")
		out = append(out, named{sub: sub, id: id, savepoint: sp, name: sub + leaf})
	}
	slices.SortFunc(out, func(a, b named) int {
		return cmp.Or(strings.Compare(a.sub, b.sub), cmp.Compare(a.id, b.id), boolCompare(a.savepoint, b.savepoint))
	})
	names := make([]string, len(out))
	for i, n := range out {
		names[i] = n.name
	}
	return names
}
