package dirstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// storageFS is the checkpoint storage's filesystem: a Pebble vfs.FS (the
// OS's, an in-memory one, or a test's errorfs or crashable MemFS) with the
// few helpers the storage protocol needs, the directory syncs among them.
//
// On POSIX filesystems a file's fsync does not make its directory entry
// durable, nor does creating a directory make it durable in its parent: a
// power loss can drop either, and with it a file a durable _metadata
// names. So the storage fsyncs a directory after adding an entry that a
// later _metadata or marker depends on, and before that metadata is
// written: every new directory in its parent (mkdirs), every published
// file in its directory, every rename in its directory.
type storageFS struct {
	vfs.FS
}

func (f storageFS) create(name string) (vfs.File, error) {
	return f.Create(name, vfs.WriteCategoryUnspecified)
}

// size returns the size of a file; an error wrapping fs.ErrNotExist when it
// is missing.
func (f storageFS) size(name string) (int64, error) {
	fi, err := f.Stat(name)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f storageFS) isDir(name string) bool {
	fi, err := f.Stat(name)
	return err == nil && fi.IsDir()
}

// list returns the names in dir, sorted; a missing dir lists as empty.
func (f storageFS) list(dir string) ([]string, error) {
	names, err := f.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// syncDir makes the entries of dir (creations, renames, removals) durable.
func (f storageFS) syncDir(dir string) error {
	d, err := f.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirs creates dir and its missing parents, and fsyncs the parent of
// each directory it created, top down, so that the new directories survive
// a power loss. An existing dir costs one stat.
func (f storageFS) mkdirs(dir string) error {
	parents, err := f.mkdirsUnsynced(dir)
	if err != nil {
		return err
	}
	return f.syncDirs(parents)
}

// mkdirsUnsynced is mkdirs without the syncs: it returns the directories
// the caller must sync (syncDirs) before anything depends on the new ones.
func (f storageFS) mkdirsUnsynced(dir string) (parents []string, err error) {
	var missing []string
	for d := dir; !f.isDir(d); {
		missing = append(missing, d)
		parent := f.PathDir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if err := f.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if parent := f.PathDir(missing[i]); parent != missing[i] {
			parents = append(parents, parent)
		}
	}
	return parents, nil
}

// syncDirs syncs each of dirs.
func (f storageFS) syncDirs(dirs []string) error {
	for _, d := range dirs {
		if err := f.syncDir(d); err != nil {
			return fmt.Errorf("sync dir %s: %w", d, err)
		}
	}
	return nil
}

// errReadOnly is wrapped by every refusal of a read-only storage
// (StorageOptions.ReadOnly).
var errReadOnly = errors.New("the storage is open read-only")

// readOnlyFS is the filesystem of a read-only storage: reads pass, every
// call that would create, remove, rename, lock or open for writing fails
// naming the path, so that no code path of the storage can change the
// directory it only reads.
type readOnlyFS struct {
	vfs.FS
	root string
}

func (f readOnlyFS) refuse(op, name string) error {
	return fmt.Errorf("storage %s: %s %s: %w", f.root, op, name, errReadOnly)
}

func (f readOnlyFS) Create(name string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	return nil, f.refuse("create", name)
}
func (f readOnlyFS) Link(oldname, _ string) error { return f.refuse("link", oldname) }
func (f readOnlyFS) OpenReadWrite(name string, _ vfs.DiskWriteCategory, _ ...vfs.OpenOption) (vfs.File, error) {
	return nil, f.refuse("open for writing", name)
}
func (f readOnlyFS) Remove(name string) error       { return f.refuse("remove", name) }
func (f readOnlyFS) RemoveAll(name string) error    { return f.refuse("remove", name) }
func (f readOnlyFS) Rename(oldname, _ string) error { return f.refuse("rename", oldname) }
func (f readOnlyFS) ReuseForWrite(oldname, _ string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	return nil, f.refuse("reuse", oldname)
}
func (f readOnlyFS) MkdirAll(dir string, _ os.FileMode) error {
	return f.refuse("create directory", dir)
}
func (f readOnlyFS) Lock(name string) (io.Closer, error) { return nil, f.refuse("lock", name) }
func (f readOnlyFS) Unwrap() vfs.FS                      { return f.FS }
