package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// storageFS is the little filesystem the checkpoint storage needs. It is
// implemented by the OS (file storage) and by a map (memory storage), and
// wrapped by faultFS for fault injection, so both storages share one
// implementation of the checkpoint protocol.
type storageFS interface {
	MkdirAll(dir string) error
	// Create creates or truncates a file for writing.
	Create(name string) (storageFile, error)
	Open(name string) (io.ReadCloser, error)
	// Size returns the size of a file; fs.ErrNotExist when it is missing.
	Size(name string) (int64, error)
	Rename(from, to string) error
	Remove(name string) error
	RemoveAll(dir string) error
	// ReadDir lists the names of the entries of dir, sorted; a missing dir
	// lists as empty.
	ReadDir(dir string) ([]dirEntry, error)
	// SyncDir makes the entries of dir (creations, renames) durable.
	SyncDir(dir string) error
}

type dirEntry struct {
	Name  string
	IsDir bool
}

type storageFile interface {
	io.Writer
	Sync() error
	Close() error
}

// osFS is the real filesystem.
type osFS struct{}

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }
func (osFS) Create(name string) (storageFile, error) {
	return os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
}
func (osFS) Open(name string) (io.ReadCloser, error) { return os.Open(name) }
func (osFS) Size(name string) (int64, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) Remove(name string) error     { return os.Remove(name) }
func (osFS) RemoveAll(dir string) error   { return os.RemoveAll(dir) }
func (osFS) ReadDir(dir string) ([]dirEntry, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(es))
	for _, e := range es {
		out = append(out, dirEntry{Name: e.Name(), IsDir: e.IsDir()})
	}
	return out, nil
}
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// memFS keeps files in a map. Paths are cleaned slash paths.
type memFS struct {
	mu    sync.Mutex
	files map[string][]byte
	dirs  map[string]bool
}

func newMemFS() *memFS {
	return &memFS{files: map[string][]byte{}, dirs: map[string]bool{"/": true}}
}

func (m *memFS) MkdirAll(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		m.dirs[d] = true
		if d == "/" || d == "." {
			return nil
		}
	}
}

type memFile struct {
	m    *memFS
	name string
	buf  bytes.Buffer
}

func (f *memFile) Write(p []byte) (int, error) { return f.buf.Write(p) }
func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.m.files[f.name] = bytes.Clone(f.buf.Bytes())
	return nil
}
func (f *memFile) Close() error { return f.Sync() }

func (m *memFS) Create(name string) (storageFile, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[filepath.Dir(name)] {
		return nil, &fs.PathError{Op: "create", Path: name, Err: fs.ErrNotExist}
	}
	m.files[name] = nil
	return &memFile{m: m, name: name}, nil
}

func (m *memFS) Open(name string) (io.ReadCloser, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memFS) Size(name string) (int64, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	if !ok {
		return 0, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return int64(len(b)), nil
}

func (m *memFS) Rename(from, to string) error {
	from, to = filepath.Clean(from), filepath.Clean(to)
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.files[from]; ok {
		delete(m.files, from)
		m.files[to] = b
		return nil
	}
	if !m.dirs[from] {
		return &fs.PathError{Op: "rename", Path: from, Err: fs.ErrNotExist}
	}
	prefix := from + "/"
	for name, b := range m.files {
		if strings.HasPrefix(name, prefix) {
			delete(m.files, name)
			m.files[to+"/"+strings.TrimPrefix(name, prefix)] = b
		}
	}
	for d := range m.dirs {
		if d == from || strings.HasPrefix(d, prefix) {
			delete(m.dirs, d)
			m.dirs[to+strings.TrimPrefix(d, from)] = true
		}
	}
	return nil
}

func (m *memFS) Remove(name string) error {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	delete(m.files, name)
	return nil
}

func (m *memFS) RemoveAll(dir string) error {
	dir = filepath.Clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := dir + "/"
	for name := range m.files {
		if name == dir || strings.HasPrefix(name, prefix) {
			delete(m.files, name)
		}
	}
	for d := range m.dirs {
		if d == dir || strings.HasPrefix(d, prefix) {
			delete(m.dirs, d)
		}
	}
	return nil
}

func (m *memFS) ReadDir(dir string) ([]dirEntry, error) {
	dir = filepath.Clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := dir + "/"
	seen := map[string]bool{}
	for name := range m.files {
		if rest, ok := strings.CutPrefix(name, prefix); ok && !strings.Contains(rest, "/") {
			seen[rest] = false
		}
	}
	for d := range m.dirs {
		if rest, ok := strings.CutPrefix(d, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
			seen[rest] = true
		}
	}
	out := make([]dirEntry, 0, len(seen))
	for n, isDir := range seen {
		out = append(out, dirEntry{Name: n, IsDir: isDir})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *memFS) SyncDir(string) error { return nil }

// faultFS calls hook before every operation; a non-nil result fails the
// operation with that error. Writes report op "write" (once per Write call)
// and "sync" on the file's path.
type faultFS struct {
	inner storageFS
	hook  func(op, path string) error
}

func (f faultFS) check(op, path string) error {
	if err := f.hook(op, path); err != nil {
		return fmt.Errorf("%s %s: %w", op, path, err)
	}
	return nil
}

func (f faultFS) MkdirAll(dir string) error {
	if err := f.check("mkdir", dir); err != nil {
		return err
	}
	return f.inner.MkdirAll(dir)
}
func (f faultFS) Create(name string) (storageFile, error) {
	if err := f.check("create", name); err != nil {
		return nil, err
	}
	file, err := f.inner.Create(name)
	if err != nil {
		return nil, err
	}
	return &faultFile{f: f, name: name, inner: file}, nil
}
func (f faultFS) Open(name string) (io.ReadCloser, error) {
	if err := f.check("open", name); err != nil {
		return nil, err
	}
	return f.inner.Open(name)
}
func (f faultFS) Size(name string) (int64, error) {
	if err := f.check("stat", name); err != nil {
		return 0, err
	}
	return f.inner.Size(name)
}
func (f faultFS) Rename(from, to string) error {
	if err := f.check("rename", to); err != nil {
		return err
	}
	return f.inner.Rename(from, to)
}
func (f faultFS) Remove(name string) error {
	if err := f.check("remove", name); err != nil {
		return err
	}
	return f.inner.Remove(name)
}
func (f faultFS) RemoveAll(dir string) error {
	if err := f.check("removeall", dir); err != nil {
		return err
	}
	return f.inner.RemoveAll(dir)
}
func (f faultFS) ReadDir(dir string) ([]dirEntry, error) {
	if err := f.check("readdir", dir); err != nil {
		return nil, err
	}
	return f.inner.ReadDir(dir)
}
func (f faultFS) SyncDir(dir string) error {
	if err := f.check("syncdir", dir); err != nil {
		return err
	}
	return f.inner.SyncDir(dir)
}

type faultFile struct {
	f     faultFS
	name  string
	inner storageFile
}

func (w *faultFile) Write(p []byte) (int, error) {
	if err := w.f.check("write", w.name); err != nil {
		return 0, err
	}
	return w.inner.Write(p)
}
func (w *faultFile) Sync() error {
	if err := w.f.check("sync", w.name); err != nil {
		return err
	}
	return w.inner.Sync()
}
func (w *faultFile) Close() error { return w.inner.Close() }
