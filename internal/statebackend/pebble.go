package statebackend

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/savepoint"
	"github.com/onceflow/onceflow/state"
)

// PebbleOptions configures the Pebble keyed backend.
type PebbleOptions struct {
	// Dir is the local working directory. Every backend instance opens its
	// database in a fresh sub-directory, removed again by Close; the
	// directory holds no durable state (durability comes from checkpoints).
	Dir string
	// Incremental makes checkpoints upload only the SST files that the last
	// completed checkpoint did not already store (into shared/). Otherwise
	// every checkpoint stores all files privately.
	Incremental bool
	// ChangelogLimit bounds the changelog of incremental checkpoints (see
	// changelog.go): the bytes of writes a restore may have to replay on
	// top of the last materialized Pebble checkpoint; past half of it a
	// new materialization is uploaded beside the checkpoints. 0 means 64 MiB; a
	// negative value turns the changelog off, and every checkpoint flushes
	// the memtable and stores a Pebble checkpoint. Without Incremental
	// there is no changelog.
	ChangelogLimit int64
	// LocalRecovery keeps hard links to the SST files of the backend's
	// incremental checkpoints under Dir/local-recovery, and a restore on
	// this machine takes a stored SST from there when it matches (size and
	// CRC32C) instead of downloading it (see localrecovery.go). Without
	// Incremental there is none.
	LocalRecovery bool
	// MemTableSize is the size of one memtable; 0 means 64 MiB.
	MemTableSize uint64
	// CacheSize is the block cache shared by all backends of the factory; 0
	// means 256 MiB.
	CacheSize int64
	// MaxCompactions is the upper bound of concurrent compactions; 0 means 2
	// (the lower bound is 1).
	MaxCompactions int
	// FS is the filesystem of the local databases and checkpoints; nil
	// means the OS. Tests wrap it with pebble's vfs/errorfs. The backend
	// never fsyncs on it: local files are scratch (see noSyncFS).
	FS vfs.FS
	// Logger receives pebble's log lines and the backend's own failures
	// that cost no correctness (a staged materialization that failed, a
	// file local recovery could not keep) through Errorf; nil discards
	// both (SlogLogger adapts a *slog.Logger).
	Logger pebble.Logger
}

// NewPebbleFactory returns the factory of Pebble backends.
//
// Layout: every entry is one Pebble key
//
//	[key group, uint16 big-endian][state id, uint16 big-endian]
//	[uvarint length of the serialized key][serialized key][user key, map state only]
//
// The length prefix makes the serialized key self-delimiting, so a map user
// key can never make two (key, user key) pairs collide, and a key's entries
// are one contiguous range. Key group 0xFFFF holds the state catalogue (name
// -> id and checkpoint.StateMeta), so a restored database knows its own ids.
// State id 0 is reserved for timers (see timers_pebble.go):
//
//	[key group][0x0000][domain][ts XOR 1<<63, uint64 BE][serialized key]
//
// Checkpoints: the database runs without WAL and never fsyncs (its
// directory is scratch: a restore starts from the stored files). At
// the barrier, on the owning goroutine, Snapshot flushes the memtable and
// calls DB.Checkpoint into a local directory: hard links of the immutable
// SST files plus copies of MANIFEST and OPTIONS, consistent with exactly the
// writes made before the barrier. The state.AsyncSnapshot then copies the files to
// storage while processing goes on, and removes the local directory.
//
// Incremental mode stores SST files under shared/ as "<instance id>-<file
// name>": the instance id is random per opened database, because file
// numbers repeat across databases restored from the same checkpoint. A file
// is not uploaded again when the last checkpoint confirmed complete
// (NotifyCheckpointComplete) contains it and the storage still has it
// (checkpoint.SnapshotWriter.HasShared). MANIFEST, OPTIONS and marker
// files are always stored privately. Files up to inlineLimit bytes are not
// stored at all but kept in the checkpoint metadata
// (checkpoint.FileRef.Inline).
//
// Restore: a single Pebble handle covering exactly this subtask's key groups
// is downloaded into an empty directory and opened, and its SST files
// become the incremental base. Anything else (several handles after a
// rescale, a different range, canonical savepoint handles, memory
// checkpoints) is restored by reading entries and writing those of owned key
// groups, re-mapping state ids by name.
func NewPebbleFactory(opts PebbleOptions) state.KeyedBackendFactory {
	if opts.ChangelogLimit == 0 {
		opts.ChangelogLimit = defaultChangelogLimit
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = 64 << 20
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 256 << 20
	}
	if opts.MaxCompactions <= 0 {
		opts.MaxCompactions = 2
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	opts.FS = noSyncFS{opts.FS}
	if opts.Logger == nil {
		opts.Logger = quietLogger{}
	}
	return &pebbleFactory{opts: opts}
}

type pebbleFactory struct {
	opts PebbleOptions

	mu    sync.Mutex
	cache *pebble.Cache
	open  int
}

func (f *pebbleFactory) Name() string { return checkpoint.BackendPebble }

// dbOptions returns the options of one database and takes a reference on the
// shared block cache for it (released by release).
func (f *pebbleFactory) dbOptions() *pebble.Options {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cache == nil {
		f.cache = pebble.NewCache(f.opts.CacheSize)
	}
	f.open++
	maxC := f.opts.MaxCompactions
	o := &pebble.Options{
		FS:                          f.opts.FS,
		Cache:                       f.cache,
		MemTableSize:                f.opts.MemTableSize,
		MemTableStopWritesThreshold: 4,
		DisableWAL:                  true,
		FormatMajorVersion:          pebble.FormatNewest,
		CompactionConcurrencyRange:  func() (int, int) { return 1, maxC },
		Logger:                      f.opts.Logger,
	}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	o.EnsureDefaults()
	return o
}

// release drops the reference dbOptions took; the cache is freed when the
// last database of the factory is closed.
func (f *pebbleFactory) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open--
	if f.open == 0 && f.cache != nil {
		f.cache.Unref()
		f.cache = nil
	}
}

// catalogPrefix is the key group of the state catalogue; real key groups
// are below 1<<15.
var catalogPrefix = []byte{0xFF, 0xFF}

type catalogEntry struct {
	ID   uint16               `json:"id"`
	Meta checkpoint.StateMeta `json:"meta"`
}

type pebbleBackend struct {
	f        *pebbleFactory
	opts     state.KeyedBackendOptions
	fs       vfs.FS
	instance string
	dir      string // instance directory: db/ and local checkpoints
	db       *pebble.DB

	states map[string]*pebbleState
	byID   map[uint16]*pebbleState
	nextID uint16

	key     []byte
	keyPart []byte // uvarint(len(key)) key
	kg      [2]byte
	keyErr  error

	// dirty holds the writes since the last flush, by database key, so
	// that a hot key costs a map lookup instead of a Pebble Get and a
	// commit per update. It is written to Pebble as one batch at every
	// snapshot (before the barrier's flush, so the snapshot holds exactly
	// the writes before the barrier), before an iteration or a clear, and
	// when it passes dirtyLimit bytes. Owner goroutine only.
	dirty      map[string]dirtyEntry
	dirtyBytes int
	// clean caches values (and absences) known to be in Pebble: the
	// writes of the last flushes and the values read since, so that the
	// hot keys of the next checkpoint interval cost no Pebble Get either.
	// It is consulted after dirty, dropped whole when it passes
	// dirtyLimit bytes, and kept equal to Pebble by Clear. Owner
	// goroutine only.
	clean      map[string]dirtyEntry
	cleanBytes int

	// state.Timers (timers_pebble.go), owner goroutine only: what is known of
	// the earliest timer per domain, timers known to be stored, the
	// FireTimers call in progress (nil outside one), and what timer
	// iterators did.
	timerHints [numTimeDomains]timerHint
	timerKnown map[string]struct{}
	firing     *timerFiring
	timerIters timerIterCounts
	// timerWrites buffers timer writes (timers_pebble.go); owner goroutine.
	timerWrites *pebble.Batch

	// cl is the changelog (changelog.go), nil without one.
	cl *changelog

	// Local recovery (localrecovery.go): the directory of the links ("" when
	// off), the links of each pending checkpoint (under mu), and how many
	// files the restore took from it.
	localDir      string
	localPending  map[int64]map[string]bool
	restoredLocal int

	// bgCtx is the context of the backend's own goroutines (a
	// materialization uploaded beside the checkpoints); Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc

	// mu guards what the AsyncSnapshots share with the owner goroutine.
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
	pending map[int64]map[string]checkpoint.FileRef // checkpoint -> local SST name -> stored ref
	base    map[string]checkpoint.FileRef           // SSTs of the last completed checkpoint
	snaps   map[*pebble.Snapshot]bool               // captured, not yet released
}

// dirtyEntry is a buffered write: a value, or a deletion.
type dirtyEntry struct {
	val []byte
	del bool
}

// dirtyLimit bounds the write buffer of one keyed backend.
const dirtyLimit = 4 << 20

// put buffers a write of key k (ownership of k passes to the buffer).
func (b *pebbleBackend) put(k, v []byte, del bool) error {
	e := dirtyEntry{del: del}
	if !del {
		e.val = bytes.Clone(v)
		if e.val == nil {
			e.val = []byte{}
		}
	}
	old, had := b.dirty[string(k)]
	if had {
		b.dirtyBytes -= len(k) + len(old.val) + 48
	}
	b.dirty[string(k)] = e
	b.dirtyBytes += len(k) + len(e.val) + 48
	if b.dirtyBytes > dirtyLimit {
		return b.flushDirty()
	}
	return nil
}

// flushDirty writes the buffered writes to Pebble as one batch, after the
// buffered timer writes.
func (b *pebbleBackend) flushDirty() error {
	if err := b.flushTimers(); err != nil {
		return err
	}
	if len(b.dirty) == 0 {
		return nil
	}
	batch := b.db.NewBatch()
	for k, e := range b.dirty {
		kb := []byte(k)
		var err error
		if e.del {
			err = batch.Delete(kb, nil)
		} else {
			err = batch.Set(kb, e.val, nil)
		}
		if err != nil {
			batch.Close()
			return fmt.Errorf("buffering state writes: %w", err)
		}
		if b.cl != nil {
			b.cl.record(entryKind(e.del), kb, e.val)
		}
	}
	if err := batch.Commit(pebble.NoSync); err != nil {
		batch.Close()
		return fmt.Errorf("writing buffered state: %w", err)
	}
	if b.cleanBytes+b.dirtyBytes > dirtyLimit {
		clear(b.clean)
		b.cleanBytes = 0
	}
	for k, e := range b.dirty {
		b.remember(k, e)
	}
	clear(b.dirty)
	b.dirtyBytes = 0
	return batch.Close()
}

// remember caches e as the value of k in Pebble, while the cache has room.
func (b *pebbleBackend) remember(k string, e dirtyEntry) {
	if old, had := b.clean[k]; had {
		b.cleanBytes -= len(k) + len(old.val) + 48
	} else if b.cleanBytes+len(k)+len(e.val)+48 > dirtyLimit {
		return
	}
	b.clean[k] = e
	b.cleanBytes += len(k) + len(e.val) + 48
}

// forget drops the cached entries of keys starting with prefix.
func (b *pebbleBackend) forget(prefix []byte) {
	for k, e := range b.clean {
		if strings.HasPrefix(k, string(prefix)) {
			delete(b.clean, k)
			b.cleanBytes -= len(k) + len(e.val) + 48
		}
	}
}

type pebbleState struct {
	b          *pebbleBackend
	id         uint16
	meta       checkpoint.StateMeta
	registered bool
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (f *pebbleFactory) CreateKeyedBackend(ctx context.Context, opts state.KeyedBackendOptions) (_ state.KeyedBackend, err error) {
	if err := normalizeOptions(&opts); err != nil {
		return nil, fmt.Errorf("pebble backend %s/%d: %w", opts.OperatorUID, opts.Subtask, err)
	}
	if f.opts.Dir == "" {
		return nil, errors.New("pebble backend: PebbleOptions.Dir is empty")
	}
	b := &pebbleBackend{
		f: f, opts: opts, fs: f.opts.FS, instance: randomID(),
		states: map[string]*pebbleState{}, byID: map[uint16]*pebbleState{}, nextID: 1, dirty: map[string]dirtyEntry{}, clean: map[string]dirtyEntry{},
		timerKnown: map[string]struct{}{}, pending: map[int64]map[string]checkpoint.FileRef{}, base: map[string]checkpoint.FileRef{}, snaps: map[*pebble.Snapshot]bool{},
	}
	b.bgCtx, b.bgCancel = context.WithCancel(context.Background())
	b.dir = b.fs.PathJoin(f.opts.Dir, fmt.Sprintf("%s-%d-%s", url.PathEscape(opts.OperatorUID), opts.Subtask, b.instance))
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("pebble backend %s/%d: %s", opts.OperatorUID, opts.Subtask, fmt.Errorf(format, args...))
	}
	if err := b.fs.MkdirAll(b.dir, 0o755); err != nil {
		return nil, errorf("%w", err)
	}
	defer func() {
		if err != nil {
			b.bgCancel()
			if b.db != nil {
				_ = b.db.Close()
				f.release()
			}
			_ = b.fs.RemoveAll(b.dir)
		}
	}()
	if f.opts.Incremental && f.opts.ChangelogLimit > 0 {
		b.cl = newChangelog(f.opts.ChangelogLimit)
	}
	if f.opts.Incremental && f.opts.LocalRecovery {
		b.localDir = f.localRecoveryDir(opts.OperatorUID, opts.Subtask)
		b.localPending = map[int64]map[string]bool{}
	}
	dbDir := b.fs.PathJoin(b.dir, "db")
	direct := len(opts.Restore) == 1 && opts.Restore[0] != nil && isPebbleHandle(opts.Restore[0]) &&
		opts.Restore[0].KeyGroups == opts.KeyGroups
	var segs []checkpoint.FileRef
	if direct {
		files, s, err := b.download(ctx, opts.Restore[0], dbDir, true)
		if err != nil {
			return nil, errorf("restore: %w", err)
		}
		if f.opts.Incremental {
			b.base = files
		}
		segs = s
	}
	db, err := pebble.Open(dbDir, f.dbOptions())
	if err != nil {
		f.release()
		return nil, errorf("open %s: %w", dbDir, err)
	}
	b.db = db
	if err := b.replaySegments(ctx, db, segs); err != nil {
		return nil, errorf("restore: %w", err)
	}
	if err := b.loadCatalog(); err != nil {
		return nil, errorf("%w", err)
	}
	if direct {
		if err := b.checkHandleStates(opts.Restore[0]); err != nil {
			return nil, errorf("restore: %w", err)
		}
		if b.cl != nil {
			b.cl.continueFrom(opts.Restore[0])
		}
	} else {
		restored := false
		for i, h := range opts.Restore {
			if h == nil {
				continue
			}
			restored = true
			if err := b.restoreEntries(ctx, h, i); err != nil {
				return nil, errorf("restore handle %d: %w", i, err)
			}
		}
		if !restored {
			// A new, empty database: no timers (a restored one's are
			// found by the first NextTimer or FireTimers).
			for i := range b.timerHints {
				b.timerHints[i] = timerHint{kind: hintNone}
			}
		}
	}
	return b, nil
}

// isPebbleHandle reports whether h is a Pebble checkpoint, with or
// without a changelog.
func isPebbleHandle(h *checkpoint.Handle) bool {
	return h.Backend == checkpoint.BackendPebble || h.Backend == checkpoint.BackendPebbleChangelog
}

// download copies the database files of a Pebble handle into the empty
// directory dir and returns the stored refs of its SST files by local
// name, and its changelog segments in order, for replaySegments once the
// database is open. With local, an SST the local recovery directory holds
// is linked from there instead.
func (b *pebbleBackend) download(ctx context.Context, h *checkpoint.Handle, dir string, local bool) (map[string]checkpoint.FileRef, []checkpoint.FileRef, error) {
	if b.opts.Storage == nil {
		return nil, nil, errors.New("no storage to read the snapshot from")
	}
	if err := b.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	ssts := map[string]checkpoint.FileRef{}
	var segs []checkpoint.FileRef
	for _, ref := range h.Files {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		name := localFileName(ref)
		if name == "" {
			return nil, nil, fmt.Errorf("stored file %s has no usable local name", ref.Path)
		}
		if h.Backend == checkpoint.BackendPebbleChangelog && isSegment(ref) {
			segs = append(segs, ref)
			continue
		}
		dst := b.fs.PathJoin(dir, name)
		if local && isImmutableTable(name) && b.fromLocal(ref, dst) {
			b.restoredLocal++
		} else if err := b.downloadFile(ctx, ref, dst); err != nil {
			return nil, nil, err
		}
		if ref.Shared && isImmutableTable(name) {
			ssts[name] = ref
		}
	}
	return ssts, segs, nil
}

func (b *pebbleBackend) downloadFile(ctx context.Context, ref checkpoint.FileRef, dst string) error {
	rc, err := b.opts.Storage.Open(ref)
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := b.fs.Create(dst, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, ctxReader{ctx, rc}); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy %s to %s: %w", ref.Path, dst, err)
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	return out.Close()
}

// localFileName is the name a stored file has in the database directory:
// shared files carry "<instance id>-" in front of it.
func localFileName(ref checkpoint.FileRef) string {
	name := ref.Path
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if ref.Shared {
		_, rest, ok := strings.Cut(name, "-")
		if !ok {
			return ""
		}
		name = rest
	}
	return name
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func readCatalog(r pebble.Reader) (map[uint16]checkpoint.StateMeta, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: catalogPrefix})
	if err != nil {
		return nil, err
	}
	out := map[uint16]checkpoint.StateMeta{}
	for ok := it.First(); ok; ok = it.Next() {
		var e catalogEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			it.Close()
			return nil, fmt.Errorf("state catalogue entry %q: %w", it.Key(), err)
		}
		out[e.ID] = e.Meta
	}
	if err := it.Error(); err != nil {
		it.Close()
		return nil, err
	}
	return out, it.Close()
}

func (b *pebbleBackend) loadCatalog() error {
	cat, err := readCatalog(b.db)
	if err != nil {
		return err
	}
	for id, meta := range cat {
		s := &pebbleState{b: b, id: id, meta: meta}
		b.states[meta.Name] = s
		b.byID[id] = s
		if id >= b.nextID {
			b.nextID = id + 1
		}
	}
	return nil
}

func (b *pebbleBackend) checkHandleStates(h *checkpoint.Handle) error {
	for _, meta := range h.States {
		s, ok := b.states[meta.Name]
		if !ok {
			return fmt.Errorf("state %q is in the handle but not in the restored database", meta.Name)
		}
		if err := compatible(s.meta, meta); err != nil {
			return err
		}
	}
	return nil
}

func (b *pebbleBackend) writeCatalog(s *pebbleState) error {
	v, err := json.Marshal(catalogEntry{ID: s.id, Meta: s.meta})
	if err != nil {
		return err
	}
	k := append(append([]byte(nil), catalogPrefix...), s.meta.Name...)
	return b.dbWrite(clSet, k, v)
}

// ensureState returns the state named meta.Name, creating it (not yet
// registered) when the database does not know it.
func (b *pebbleBackend) ensureState(meta checkpoint.StateMeta) (*pebbleState, error) {
	if s, ok := b.states[meta.Name]; ok {
		if err := compatible(s.meta, meta); err != nil {
			return nil, err
		}
		return s, nil
	}
	if b.nextID == 0xFFFF {
		return nil, fmt.Errorf("state %q: too many states", meta.Name)
	}
	s := &pebbleState{b: b, id: b.nextID, meta: meta}
	b.nextID++
	if err := b.writeCatalog(s); err != nil {
		return nil, fmt.Errorf("state %q: %w", meta.Name, err)
	}
	b.states[meta.Name] = s
	b.byID[s.id] = s
	return s, nil
}

// batchWriter commits a batch whenever it grows past a few MiB.
type batchWriter struct {
	db    *pebble.DB
	batch *pebble.Batch
}

func (w *batchWriter) set(k, v []byte) error {
	if w.batch == nil {
		w.batch = w.db.NewBatch()
	}
	if err := w.batch.Set(k, v, nil); err != nil {
		return err
	}
	if w.batch.Len() > 4<<20 {
		return w.flush()
	}
	return nil
}

func (w *batchWriter) flush() error {
	if w.batch == nil {
		return nil
	}
	err := w.batch.Commit(pebble.NoSync)
	_ = w.batch.Close()
	w.batch = nil
	return err
}

func kgBytes(kg int) []byte { return []byte{byte(kg >> 8), byte(kg)} }

// restoreEntries writes the entries of h that fall in this backend's key
// groups.
func (b *pebbleBackend) restoreEntries(ctx context.Context, h *checkpoint.Handle, n int) error {
	kgs := b.opts.KeyGroups
	bw := &batchWriter{db: b.db}
	switch h.Backend {
	case checkpoint.BackendCanonical, checkpoint.BackendMemory:
		ids := make([]uint16, len(h.States))
		for i, meta := range h.States {
			s, err := b.ensureState(meta)
			if err != nil {
				return err
			}
			ids[i] = s.id
		}
		err := openHandleData(h, b.opts.Storage, func(name string, r io.Reader) error {
			return savepoint.Read(ctxReader{ctx, r}, name, savepoint.Sink{
				State: func(kg, si int, key, uk, val []byte) error {
					if si >= len(ids) {
						return fmt.Errorf("%s: entry names state %d of %d", name, si, len(ids))
					}
					if !kgs.Contains(kg) {
						return nil
					}
					return bw.set(encodeEntryKey(nil, kg, ids[si], key, uk), val)
				},
				Timer: func(kg int, d state.TimeDomain, ts int64, key []byte) error {
					if !kgs.Contains(kg) {
						return nil
					}
					return bw.set(encodeTimerKey(nil, kg, d, ts, key), nil)
				},
			})
		})
		if err != nil {
			return err
		}
		return bw.flush()
	case checkpoint.BackendPebble, checkpoint.BackendPebbleChangelog:
		if h.KeyGroups.Intersect(kgs).Len() == 0 {
			return nil
		}
		tmp := b.fs.PathJoin(b.dir, "restore-"+strconv.Itoa(n))
		defer b.fs.RemoveAll(tmp)
		_, segs, err := b.download(ctx, h, tmp, false)
		if err != nil {
			return err
		}
		o := b.f.dbOptions()
		o.ReadOnly = len(segs) == 0
		src, err := pebble.Open(tmp, o)
		if err != nil {
			b.f.release()
			return fmt.Errorf("open %s: %w", tmp, err)
		}
		defer func() {
			_ = src.Close()
			b.f.release()
		}()
		if err := b.replaySegments(ctx, src, segs); err != nil {
			return err
		}
		cat, err := readCatalog(src)
		if err != nil {
			return err
		}
		idMap := map[uint16]uint16{}
		for id, meta := range cat {
			s, err := b.ensureState(meta)
			if err != nil {
				return err
			}
			idMap[id] = s.id
		}
		it, err := src.NewIter(&pebble.IterOptions{LowerBound: kgBytes(kgs.Start), UpperBound: kgBytes(kgs.End)})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := ctx.Err(); err != nil {
				it.Close()
				return err
			}
			k := append([]byte(nil), it.Key()...)
			if len(k) < 4 {
				it.Close()
				return fmt.Errorf("%s: malformed key %x", tmp, k)
			}
			if isTimerKey(k) {
				// state.Timers are keyed by key group like state: copied as
				// they are.
				if err := bw.set(k, it.Value()); err != nil {
					it.Close()
					return err
				}
				continue
			}
			newID, ok := idMap[binary.BigEndian.Uint16(k[2:4])]
			if !ok {
				it.Close()
				return fmt.Errorf("%s: key %x names an unknown state", tmp, k)
			}
			binary.BigEndian.PutUint16(k[2:4], newID)
			if err := bw.set(k, it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Error(); err != nil {
			it.Close()
			return err
		}
		if err := it.Close(); err != nil {
			return err
		}
		return bw.flush()
	default:
		return fmt.Errorf("cannot restore a %q snapshot into the pebble backend", h.Backend)
	}
}

func encodeEntryKey(dst []byte, kg int, id uint16, key, userKey []byte) []byte {
	dst = append(dst, byte(kg>>8), byte(kg), byte(id>>8), byte(id))
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, userKey...)
}

// decodeEntryKey splits a Pebble key into its parts.
func decodeEntryKey(k []byte) (kg int, id uint16, key, userKey []byte, err error) {
	if len(k) < 5 {
		return 0, 0, nil, nil, fmt.Errorf("malformed key %x", k)
	}
	kg = int(binary.BigEndian.Uint16(k[:2]))
	id = binary.BigEndian.Uint16(k[2:4])
	n, m := binary.Uvarint(k[4:])
	if m <= 0 || uint64(len(k)-4-m) < n {
		return 0, 0, nil, nil, fmt.Errorf("malformed key %x", k)
	}
	rest := k[4+m:]
	return kg, id, rest[:n], rest[n:], nil
}

func (b *pebbleBackend) Now() time.Time                      { return b.opts.Now() }
func (b *pebbleBackend) CurrentKey() []byte                  { return b.key }
func (b *pebbleBackend) KeyGroups() checkpoint.KeyGroupRange { return b.opts.KeyGroups }

func (b *pebbleBackend) SetCurrentKey(key []byte) {
	b.key = append(b.key[:0], key...)
	kg := state.KeyGroupOf(key, b.opts.MaxParallelism)
	if !b.opts.KeyGroups.Contains(kg) {
		b.keyErr = fmt.Errorf("key %q is in key group %d, outside this subtask's range %v", key, kg, b.opts.KeyGroups)
		return
	}
	b.keyErr = nil
	b.kg = [2]byte{byte(kg >> 8), byte(kg)}
	b.keyPart = binary.AppendUvarint(b.keyPart[:0], uint64(len(key)))
	b.keyPart = append(b.keyPart, key...)
}

func (b *pebbleBackend) Register(meta checkpoint.StateMeta) (state.RawState, error) {
	if err := validateMeta(meta); err != nil {
		return nil, err
	}
	if s, ok := b.states[meta.Name]; ok {
		if err := compatible(s.meta, meta); err != nil {
			return nil, err
		}
		if s.registered && s.meta != meta {
			return nil, fmt.Errorf("state %q: registered again with different settings (%+v, was %+v)", meta.Name, meta, s.meta)
		}
		if s.meta != meta {
			s.meta = meta
			if err := b.writeCatalog(s); err != nil {
				return nil, fmt.Errorf("state %q: %w", meta.Name, err)
			}
		}
		s.registered = true
		return s, nil
	}
	s, err := b.ensureState(meta)
	if err != nil {
		return nil, err
	}
	s.registered = true
	return s, nil
}

func (s *pebbleState) dbKey(userKey []byte) ([]byte, error) {
	b := s.b
	if b.keyErr != nil {
		return nil, b.keyErr
	}
	if b.key == nil {
		return nil, fmt.Errorf("state %q: no current key", s.meta.Name)
	}
	k := make([]byte, 0, 4+len(b.keyPart)+len(userKey))
	k = append(k, b.kg[0], b.kg[1], byte(s.id>>8), byte(s.id))
	k = append(k, b.keyPart...)
	return append(k, userKey...), nil
}

func (s *pebbleState) Get(userKey []byte) ([]byte, bool, error) {
	k, err := s.dbKey(userKey)
	if err != nil {
		return nil, false, err
	}
	e, ok := s.b.dirty[string(k)]
	if !ok {
		e, ok = s.b.clean[string(k)]
	}
	if ok {
		if e.del {
			return nil, false, nil
		}
		return bytes.Clone(e.val), true, nil
	}
	v, closer, err := s.b.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		s.b.remember(string(k), dirtyEntry{del: true})
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	if err := closer.Close(); err != nil {
		return nil, false, err
	}
	s.b.remember(string(k), dirtyEntry{val: bytes.Clone(out)})
	return out, true, nil
}

func (s *pebbleState) Put(userKey, value []byte) error {
	k, err := s.dbKey(userKey)
	if err != nil {
		return err
	}
	return s.b.put(k, value, false)
}

func (s *pebbleState) Delete(userKey []byte) error {
	k, err := s.dbKey(userKey)
	if err != nil {
		return err
	}
	return s.b.put(k, nil, true)
}

func (s *pebbleState) Iterate(fn func(userKey, value []byte) bool) error {
	prefix, err := s.dbKey(nil)
	if err != nil {
		return err
	}
	if err := s.b.flushDirty(); err != nil {
		return err
	}
	it, err := s.b.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: successor(prefix)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !fn(it.Key()[len(prefix):], it.Value()) {
			break
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

func (s *pebbleState) Clear() error {
	prefix, err := s.dbKey(nil)
	if err != nil {
		return err
	}
	if s.meta.Kind != checkpoint.KindMap {
		// One key: a buffered deletion, as Delete is.
		return s.b.put(prefix, nil, true)
	}
	// A range: the buffered writes under it go first, or they would
	// land after the deletion.
	if err := s.b.flushDirty(); err != nil {
		return err
	}
	s.b.forget(prefix)
	return s.b.dbWrite(clDeleteRange, prefix, successor(prefix))
}

// successor returns the smallest key greater than every key with prefix p.
func successor(p []byte) []byte {
	out := bytes.Clone(p)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] != 0xFF {
			out[i]++
			return out[:i+1]
		}
	}
	return nil
}

func (b *pebbleBackend) metas() []checkpoint.StateMeta {
	out := make([]checkpoint.StateMeta, 0, len(b.states))
	for _, s := range b.states {
		out = append(out, s.meta)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// enter marks an state.AsyncSnapshot as running, so Close waits for it; it fails
// once the backend is closed.
func (b *pebbleBackend) enter() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("pebble backend closed")
	}
	b.running.Add(1)
	return nil
}

func (b *pebbleBackend) Snapshot(checkpointID int64, w checkpoint.SnapshotWriter) (state.AsyncSnapshot, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	b.running.Done()
	if err := b.flushDirty(); err != nil {
		return nil, fmt.Errorf("checkpoint %d: %w", checkpointID, err)
	}
	if b.cl != nil {
		if async, ok := b.appendSnapshot(checkpointID, w); ok {
			return async, nil
		}
	}
	if err := b.db.Flush(); err != nil {
		return nil, fmt.Errorf("checkpoint %d: flush: %w", checkpointID, err)
	}
	local := b.fs.PathJoin(b.dir, "chk-"+strconv.FormatInt(checkpointID, 10))
	_ = b.fs.RemoveAll(local) // left by an earlier attempt with this id
	if err := b.db.Checkpoint(local); err != nil {
		_ = b.fs.RemoveAll(local)
		return nil, fmt.Errorf("checkpoint %d: pebble checkpoint into %s: %w", checkpointID, local, err)
	}
	states := b.metas()
	incremental := b.f.opts.Incremental
	return func(ctx context.Context) (*checkpoint.Handle, error) {
		if err := b.enter(); err != nil {
			return nil, fmt.Errorf("checkpoint %d: %w", checkpointID, err)
		}
		defer b.running.Done()
		defer b.fs.RemoveAll(local)
		h, ssts, err := b.upload(ctx, checkpointID, local, w, incremental, uploadParallelism)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %d of %s/%d: %w", checkpointID, b.opts.OperatorUID, b.opts.Subtask, err)
		}
		h.States = states
		b.keepLocal(checkpointID, local, ssts)
		b.mu.Lock()
		b.pending[checkpointID] = ssts
		if b.cl != nil {
			b.cl.materialized(checkpointID, h.Files)
		}
		b.mu.Unlock()
		return h, nil
	}, nil
}

func isImmutableTable(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

// inlineLimit is the size up to which a file of a snapshot is kept in the
// checkpoint metadata instead of being stored (checkpoint.FileRef.Inline):
// MANIFEST, OPTIONS, markers and the small SST of a quiet interval. In a
// checkpoint of little state they were most of the files, and every stored
// one waits for two fsyncs.
const inlineLimit = 16 << 10

// castagnoli is the CRC32C table of the checksums in inline FileRefs.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// uploadParallelism is how many files of one snapshot are copied to the
// storage at once: each ends with an fsync of the file and its directory,
// and overlapping those waits is most of what parallel copies win.
const uploadParallelism = 4

// stagedUploadParallelism is uploadParallelism for a materialization
// uploaded beside the checkpoints (changelog.go): no checkpoint waits for
// it, and one file at a time leaves the disk to the checkpoints' own
// writes.
const stagedUploadParallelism = 1

// upload stores the files of the local checkpoint directory, parallelism
// at a time. The handle lists them in name order whatever order they
// finish in.
func (b *pebbleBackend) upload(ctx context.Context, id int64, local string, w checkpoint.SnapshotWriter, incremental bool, parallelism int) (*checkpoint.Handle, map[string]checkpoint.FileRef, error) {
	names, err := b.fs.List(local)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", local, err)
	}
	sort.Strings(names)
	b.mu.Lock()
	base := b.base
	b.mu.Unlock()
	refs := make([]checkpoint.FileRef, len(names))
	shared := make([]bool, len(names))
	var todo []int
	for i, name := range names {
		p := b.fs.PathJoin(local, name)
		fi, err := b.fs.Stat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("stat %s: %w", p, err)
		}
		if fi.IsDir() {
			return nil, nil, fmt.Errorf("unexpected directory %s in pebble checkpoint", p)
		}
		// With a changelog, the later checkpoints of the chain refer to
		// every file of this one: all are shared.
		shared[i] = incremental && (isImmutableTable(name) || b.cl != nil)
		if shared[i] {
			if ref, ok := base[name]; ok {
				if stored, ok := w.HasShared(localBaseName(ref.Path)); ok && stored.Size == ref.Size && stored.CRC32C == ref.CRC32C {
					refs[i] = stored
					continue
				}
			}
		}
		if fi.Size() <= inlineLimit {
			data, err := b.readLocal(p)
			if err != nil {
				return nil, nil, err
			}
			refs[i] = checkpoint.FileRef{Path: name, Size: int64(len(data)), CRC32C: crc32.Checksum(data, castagnoli), Inline: true, Data: data}
			continue
		}
		todo = append(todo, i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(names))
	sem := make(chan struct{}, parallelism)
	var wg sync.WaitGroup
	for _, i := range todo {
		storedName := names[i]
		switch {
		case shared[i] && isImmutableTable(names[i]):
			storedName = b.instance + "-" + names[i]
		case shared[i]:
			storedName = b.materializedName(id, names[i])
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			break
		}
		wg.Add(1)
		go func() { // owned by upload, which waits for it
			defer wg.Done()
			defer func() { <-sem }()
			refs[i], errs[i] = b.copyOut(ctx, b.fs.PathJoin(local, names[i]), storedName, shared[i], w)
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// The first failure in name order, but a real one over the
	// cancellations it caused.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		return nil, nil, first
	}
	h := &checkpoint.Handle{Backend: checkpoint.BackendPebble, KeyGroups: b.opts.KeyGroups, Files: refs}
	ssts := map[string]checkpoint.FileRef{}
	for i, name := range names {
		if shared[i] && isImmutableTable(name) {
			ssts[name] = refs[i]
		}
	}
	return h, ssts, nil
}

func localBaseName(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// readLocal reads a whole local file.
func (b *pebbleBackend) readLocal(p string) ([]byte, error) {
	f, err := b.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

func (b *pebbleBackend) copyOut(ctx context.Context, src, name string, shared bool, w checkpoint.SnapshotWriter) (checkpoint.FileRef, error) {
	in, err := b.fs.Open(src)
	if err != nil {
		return checkpoint.FileRef{}, fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := w.Create(name, shared)
	if err != nil {
		return checkpoint.FileRef{}, err
	}
	if _, err := io.Copy(out, ctxReader{ctx, in}); err != nil {
		out.Abort()
		return checkpoint.FileRef{}, fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

func (b *pebbleBackend) NotifyCheckpointComplete(id int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.pending[id]; ok {
		b.base = p
	}
	if b.cl != nil {
		b.cl.complete(id, b.pending[id], b.localPending[id])
	}
	b.pruneLocal(id)
	for pid := range b.pending {
		if pid <= id {
			delete(b.pending, pid)
		}
	}
}

func (b *pebbleBackend) NotifyCheckpointAborted(id int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, id)
	if b.cl != nil {
		b.cl.aborted(id)
	}
	delete(b.localPending, id)
}

// captureEntries takes a Pebble snapshot for a canonical (savepoint)
// snapshot; the iteration reads it in key order.
func (b *pebbleBackend) captureEntries() ([]checkpoint.StateMeta, func(context.Context, savepoint.Sink) error, func(), error) {
	if err := b.enter(); err != nil {
		return nil, nil, nil, err
	}
	b.running.Done()
	if err := b.flushDirty(); err != nil {
		return nil, nil, nil, err
	}
	snap := b.db.NewSnapshot()
	b.mu.Lock()
	b.snaps[snap] = true
	b.mu.Unlock()
	metas := b.metas()
	idx := map[uint16]int{}
	for i, m := range metas {
		idx[b.states[m.Name].id] = i
	}
	kgs := b.opts.KeyGroups
	release := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.snaps[snap] {
			delete(b.snaps, snap)
			_ = snap.Close()
		}
	}
	iterate := func(ctx context.Context, sink savepoint.Sink) error {
		if err := b.enter(); err != nil {
			return err
		}
		defer b.running.Done()
		b.mu.Lock()
		live := b.snaps[snap]
		b.mu.Unlock()
		if !live {
			return errors.New("pebble snapshot already released")
		}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: kgBytes(kgs.Start), UpperBound: kgBytes(kgs.End)})
		if err != nil {
			return err
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if isTimerKey(it.Key()) {
				kg, d, ts, key, err := decodeTimerKey(it.Key())
				if err != nil {
					return err
				}
				if err := sink.Timer(kg, d, ts, key); err != nil {
					return err
				}
				continue
			}
			kg, id, key, uk, err := decodeEntryKey(it.Key())
			if err != nil {
				return err
			}
			si, ok := idx[id]
			if !ok {
				return fmt.Errorf("key %x names unknown state id %d", it.Key(), id)
			}
			if err := sink.State(kg, si, key, uk, it.Value()); err != nil {
				return err
			}
		}
		return it.Error()
	}
	return metas, iterate, release, nil
}

// Close waits for running AsyncSnapshots, closes the database and removes
// its local directory. AsyncSnapshots not yet started fail.
func (b *pebbleBackend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.bgCancel()
	b.running.Wait()
	b.mu.Lock()
	for s := range b.snaps {
		_ = s.Close()
	}
	b.snaps = nil
	if b.cl != nil && b.cl.staged != nil {
		b.cl.staged.staging.Release()
		b.cl.staged = nil
	}
	b.mu.Unlock()
	if b.timerWrites != nil {
		_ = b.timerWrites.Close() // never committed: the state is scratch
	}
	err := b.db.Close()
	b.f.release()
	if rerr := b.fs.RemoveAll(b.dir); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("pebble backend %s/%d: close: %w", b.opts.OperatorUID, b.opts.Subtask, err)
	}
	return nil
}

// CleanPebbleDir removes the database directories that backends of a
// crashed process left in dir (PebbleOptions.Dir): a backend removes its own
// directory on Close, but not when the process is killed. A directory whose
// database lock is held (by this or another live process) is kept. Call it
// at process start, before creating backends on dir; fs nil means the OS.
func CleanPebbleDir(fs vfs.FS, dir string) error {
	if fs == nil {
		fs = vfs.Default
	}
	names, err := fs.List(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("clean pebble dir %s: %w", dir, err)
	}
	var errs []error
	for _, name := range names {
		i := strings.LastIndexByte(name, '-')
		if i < 0 || len(name)-i-1 != 16 {
			continue // not an instance directory
		}
		if _, err := hex.DecodeString(name[i+1:]); err != nil {
			continue
		}
		inst := fs.PathJoin(dir, name)
		dbDir := fs.PathJoin(inst, "db")
		if _, err := fs.Stat(dbDir); err == nil {
			lock, err := fs.Lock(fs.PathJoin(dbDir, "LOCK"))
			if err != nil {
				continue // in use
			}
			_ = lock.Close()
		}
		if err := fs.RemoveAll(inst); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean pebble dir %s: %w", dir, err)
	}
	return nil
}
