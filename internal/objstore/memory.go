package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"time"
)

// MemoryOptions configure a Memory store. The zero value is usable.
type MemoryOptions struct {
	// Name names the store in errors (mem://<Name>/<key>); default "mem".
	Name string
	// Now stamps LastModified (nil: time.Now); tests pass a fake clock.
	Now func() time.Time
}

// Memory is an in-memory Store for unit tests: goroutine-safe, with
// conditional puts decided atomically under one lock, and ETags like S3's
// for single-part uploads (the quoted MD5 of the content). It keeps its
// own copy of every body. It validates keys as the S3 store does
// (ValidateKey), so a test on it catches keys a real service refuses.
type Memory struct {
	name string
	now  func() time.Time

	mu   sync.Mutex
	objs map[string]memObject
	dirs map[string]int // "a/b" -> how many objects have keys under "a/b/"
}

type memObject struct {
	data []byte
	etag string
	mod  time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.Name == "" {
		opts.Name = "mem"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Memory{name: opts.Name, now: opts.Now, objs: map[string]memObject{}, dirs: map[string]int{}}
}

func (m *Memory) loc(key string) string { return "mem://" + m.name + "/" + key }

// Put implements Store.
func (m *Memory) Put(ctx context.Context, key string, body io.ReadSeeker, opts PutOptions) (Info, error) {
	if err := validatePut(key, opts); err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", m.loc(key), err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("objstore: put %s%s: %w", m.loc(key), opts.Condition(), err)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: reading the body: %w", m.loc(key), err)
	}
	sum := md5.Sum(data)
	obj := memObject{data: data, etag: `"` + hex.EncodeToString(sum[:]) + `"`}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, exists := m.objs[key]
	switch {
	case opts.IfNoneMatch && exists:
		return Info{}, fmt.Errorf("objstore: put %s%s: %w (ETag %s)", m.loc(key), opts.Condition(), ErrExists, cur.etag)
	case opts.IfMatch != "" && !exists:
		return Info{}, fmt.Errorf("objstore: put %s%s: %w: the object does not exist", m.loc(key), opts.Condition(), ErrPreconditionFailed)
	case opts.IfMatch != "" && quoteETag(opts.IfMatch) != cur.etag:
		return Info{}, fmt.Errorf("objstore: put %s%s: %w: the object's ETag is %s", m.loc(key), opts.Condition(), ErrPreconditionFailed, cur.etag)
	}
	if !exists {
		if err := m.conflict(key); err != nil {
			return Info{}, fmt.Errorf("objstore: put %s%s: %w", m.loc(key), opts.Condition(), err)
		}
		for d := range parents(key) {
			m.dirs[d]++
		}
	}
	obj.mod = m.now()
	m.objs[key] = obj
	return Info{Key: key, Size: int64(len(data)), ETag: obj.etag}, nil
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, key string, opts GetOptions) (io.ReadCloser, Info, error) {
	if err := validateGet(key, opts); err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", m.loc(key), err)
	}
	if err := ctx.Err(); err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", m.loc(key), err)
	}
	m.mu.Lock()
	obj, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", m.loc(key), ErrNotFound)
	}
	info := obj.info(key)
	data := obj.data // never modified: a put stores a new slice
	if opts.Offset != 0 || opts.Length != 0 {
		if opts.Offset >= int64(len(data)) {
			return nil, Info{}, fmt.Errorf("objstore: get %s: range from byte %d of an object of %d bytes: nothing to read", m.loc(key), opts.Offset, len(data))
		}
		end := int64(len(data))
		if opts.Length > 0 && opts.Offset+opts.Length < end {
			end = opts.Offset + opts.Length
		}
		data = data[opts.Offset:end]
	}
	return io.NopCloser(bytes.NewReader(data)), info, nil
}

func (o memObject) info(key string) Info {
	return Info{Key: key, Size: int64(len(o.data)), ETag: o.etag, LastModified: o.mod}
}

// Stat implements Store.
func (m *Memory) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s: %w", m.loc(key), err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s: %w", m.loc(key), err)
	}
	m.mu.Lock()
	obj, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return Info{}, fmt.Errorf("objstore: stat %s: %w", m.loc(key), ErrNotFound)
	}
	return obj.info(key), nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("objstore: list %s: %w", m.loc(prefix), err)
	}
	m.mu.Lock()
	out := []Info{}
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, o.info(k))
		}
	}
	m.mu.Unlock()
	sortInfos(out)
	return out, nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", m.loc(key), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: delete %s: %w", m.loc(key), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[key]; ok {
		delete(m.objs, key)
		for d := range parents(key) {
			if m.dirs[d]--; m.dirs[d] == 0 {
				delete(m.dirs, d)
			}
		}
	}
	return nil
}

// conflict refuses a new key that an object's key is a directory of, or
// that is a directory of an object's key, as file-backed servers do.
func (m *Memory) conflict(key string) error {
	if n := m.dirs[key]; n > 0 {
		return fmt.Errorf("%w: %d objects have keys under %s/", ErrKeyConflict, n, key)
	}
	for d := range parents(key) {
		if _, ok := m.objs[d]; ok {
			return fmt.Errorf("%w: %s is an object", ErrKeyConflict, d)
		}
	}
	return nil
}

// parents yields the directories of key: a and a/b for a/b/c.
func parents(key string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := 0; i < len(key); i++ {
			if key[i] == '/' && !yield(key[:i]) {
				return
			}
		}
	}
}

// Close implements Store; the objects stay readable.
func (m *Memory) Close() error { return nil }
