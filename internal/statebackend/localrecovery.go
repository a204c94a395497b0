package statebackend

import (
	"errors"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"strconv"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// Local recovery (PebbleOptions.LocalRecovery), as Flink's
// state.backend.local-recovery: a restore on the same machine takes the
// SST files of the restored checkpoint from the local disk instead of
// downloading them.
//
// Every backend keeps hard links to the SST files of its checkpoints in
// <Dir>/local-recovery/<operator uid>-<subtask>/, named as stored
// ("<instance>-<file>.sst"): a link costs no space while the database
// still holds the file, and keeps it after a compaction deleted it. The
// directory is outside every instance directory, so a killed process's
// CleanPebbleDir leaves it. After a checkpoint completes, links that
// neither it nor a newer pending checkpoint refers to are removed.
//
// A restore links a stored SST from there when a file of that name exists
// with the size and CRC32C the handle records (the whole file is read to
// check it), and downloads it otherwise. A damaged, stale or missing local
// file therefore costs a download, never wrong state.

// localRecoveryDir is the directory of the links of one operator subtask.
func (f *pebbleFactory) localRecoveryDir(uid string, subtask int) string {
	return f.opts.FS.PathJoin(f.opts.Dir, "local-recovery", url.PathEscape(uid)+"-"+strconv.Itoa(subtask))
}

// keepLocal links the SST files of a checkpoint's local directory (local,
// as stored in refs: shared ones only) into the local recovery directory,
// and records them as checkpoint id's. Failures only cost local recovery:
// they are logged, not returned.
func (b *pebbleBackend) keepLocal(id int64, local string, ssts map[string]checkpoint.FileRef) {
	if names := b.linkLocal(local, ssts); names != nil {
		b.mu.Lock()
		b.localPending[id] = names
		b.mu.Unlock()
	}
}

// linkLocal is keepLocal's linking: it returns the stored names linked
// (nil without local recovery), for the caller to record under the
// checkpoint that will refer to them.
func (b *pebbleBackend) linkLocal(local string, ssts map[string]checkpoint.FileRef) map[string]bool {
	if b.localDir == "" {
		return nil
	}
	names := make(map[string]bool, len(ssts))
	if err := b.fs.MkdirAll(b.localDir, 0o755); err != nil {
		b.f.opts.Logger.Errorf("local recovery: %v", err)
		return nil
	}
	for name, ref := range ssts {
		if ref.Inline {
			continue // in the metadata
		}
		stored := localBaseName(ref.Path)
		dst := b.fs.PathJoin(b.localDir, stored)
		names[stored] = true
		if _, err := b.fs.Stat(dst); err == nil {
			continue
		}
		if err := b.fs.Link(b.fs.PathJoin(local, name), dst); err != nil {
			b.f.opts.Logger.Errorf("local recovery: keeping %s: %v", name, err)
			delete(names, stored)
		}
	}
	return names
}

// pruneLocal removes the links that neither checkpoint id, now complete,
// nor a newer pending one, nor a staged materialization refers to (b.mu
// held); it waits for the next completion while a staged upload runs.
func (b *pebbleBackend) pruneLocal(id int64) {
	if b.localDir == "" {
		return
	}
	if _, ok := b.localPending[id]; !ok {
		return
	}
	all := map[string]bool{}
	if c := b.cl; c != nil && c.staged != nil {
		// A staged materialization's links are no checkpoint's until one
		// adopts it; while its upload runs they may be in the making.
		if !c.staged.done {
			return
		}
		for n := range c.staged.links {
			all[n] = true
		}
	}
	for pid, names := range b.localPending {
		if pid >= id {
			for n := range names {
				all[n] = true
			}
		}
		if pid <= id {
			delete(b.localPending, pid)
		}
	}
	list, err := b.fs.List(b.localDir)
	if err != nil {
		return
	}
	for _, n := range list {
		if !all[n] {
			_ = b.fs.Remove(b.fs.PathJoin(b.localDir, n))
		}
	}
}

// fromLocal links the stored file ref into dst from the local recovery
// directory, when a file of its name there has its size and CRC32C; it
// reports whether it did.
func (b *pebbleBackend) fromLocal(ref checkpoint.FileRef, dst string) bool {
	if b.localDir == "" || !ref.Shared || ref.Inline {
		return false
	}
	src := b.fs.PathJoin(b.localDir, localBaseName(ref.Path))
	fi, err := b.fs.Stat(src)
	if err != nil || fi.Size() != ref.Size {
		return false
	}
	f, err := b.fs.Open(src)
	if err != nil {
		return false
	}
	h := crc32.New(castagnoli)
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil || h.Sum32() != ref.CRC32C {
		return false
	}
	if err := b.fs.Link(src, dst); err != nil {
		if !errors.Is(err, os.ErrExist) {
			b.f.opts.Logger.Errorf("local recovery: linking %s: %v", src, err)
		}
		return false
	}
	return true
}
