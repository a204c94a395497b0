package dirstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

const (
	metadataFile  = "_metadata"
	committedFile = "_committed"
	// discardedFile records, in the job directory, what DiscardAll
	// removed: "<discardedHeader>\n" and the Discard as JSON.
	discardedFile   = "_discarded"
	discardedHeader = "onceflow-discarded"
	sharedDir       = "shared"
	chkPrefix       = "chk-"
	savepointPref   = "savepoint-"
	metadataHeader  = "onceflow-metadata"
	// tmpInfix marks a shared file being written: <name>.tmp-<random>.
	tmpInfix = ".tmp-"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StorageOptions configures a Storage.
type StorageOptions struct {
	// Retained is how many completed checkpoints are kept; older ones are
	// removed when a newer one completes. 0 means 1. Savepoints are never
	// removed.
	Retained int
	// FS, when set, is the filesystem the storage runs on instead of the
	// OS's (NewFileStorage) or a fresh in-memory one (NewMemoryStorage).
	// Tests pass an errorfs.Wrap of one to inject I/O errors or stall an
	// operation, or a vfs.NewCrashableMem to simulate power loss with
	// CrashClone.
	FS vfs.FS
	// Logf receives problems that do not fail an operation, such as a
	// subsumed checkpoint that could not be removed. nil discards them.
	Logf func(format string, args ...any)
	// ReadOnly opens an existing job directory only to read it, as the
	// processor's checkpoints commands do (possibly on a directory they may
	// not write, or of a job that runs): opening creates nothing (no
	// shared/), and no method creates, removes or renames anything. List,
	// Latest, Load, Open and Discarded work as usual; Writer, Complete,
	// Abort, DiscardAll, MarkCommitted, Adopt and Sweep fail naming the
	// directory. Opening fails, naming it, when the job directory does not
	// exist.
	ReadOnly bool
	// RemoveInBackground makes Complete hand the removal of the
	// checkpoints it subsumes (their directories and the shared files no
	// retained checkpoint uses any more) to a goroutine of the storage,
	// instead of removing them before it returns. On ext4, unlinking the
	// tables of a large Pebble materialization (600 MB) took 0.4 to 0.8 s
	// under load, which every completion that subsumed it waited for.
	// Sweep, DiscardAll, Adopt and PruneSavepoints wait for the removals
	// queued before them. Leftovers of a crash mid-removal are what a
	// crash inside Complete leaves too: unreferenced files, which the next
	// completion's sweep of orphans removes.
	RemoveInBackground bool
}

// NewFileStorage returns the storage of job's checkpoints under dir:
// <dir>/<job>/chk-<n>/, <dir>/<job>/shared/, <dir>/<job>/savepoint-<id>/.
// It rebuilds the reference counts of shared files from the metadata of
// every intact checkpoint it finds (counts are never trusted across
// restarts), so a crash between a checkpoint's completion and the removal of
// the ones it subsumed only leaves extra files, never a dangling reference.
func NewFileStorage(dir, job string, opts StorageOptions) (checkpoint.Storage, error) {
	if dir == "" {
		return nil, errors.New("file storage: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file storage: %w", err)
	}
	fsys := opts.FS
	if fsys == nil {
		fsys = vfs.Default
	}
	return newDirStorage(fsys, abs, job, opts)
}

// NewMemoryStorage returns a storage that keeps everything in memory, with
// the same layout, checksums and reference counting as the file storage. It
// is lost with the process: for tests and jobs that need no recovery across
// restarts.
func NewMemoryStorage(job string, opts StorageOptions) checkpoint.Storage {
	fsys := opts.FS
	if fsys == nil {
		fsys = vfs.NewMem()
	}
	s, err := newDirStorage(fsys, "/mem", job, opts)
	if err != nil {
		// A bad job name or an error of opts.FS: a fresh memory
		// filesystem has none.
		return &failedStorage{job: job, err: err}
	}
	return s
}

func validJobName(job string) error {
	if job == "" || job == "." || job == ".." || strings.ContainsAny(job, `/\`) {
		return fmt.Errorf("invalid job name %q: must be a non-empty single path element", job)
	}
	return nil
}

// dirStorage implements Storage over a vfs.FS.
type dirStorage struct {
	fs   storageFS
	root string // <dir>/<job>
	job  string
	opts StorageOptions

	// completeMu serializes Complete, so that the check that a checkpoint is
	// newer than every completed one and its publication are one step.
	completeMu sync.Mutex
	mu         sync.Mutex
	// completed maps the id of every intact completed checkpoint (not
	// savepoint) still on disk to its metadata.
	completed map[int64]*checkpoint.Metadata
	// refs counts, per shared file name, the completed checkpoints that
	// reference it; sharedRefs holds one reference for HasShared.
	refs       map[string]int
	sharedRefs map[string]checkpoint.FileRef
	// pending maps every checkpoint in flight (from its first Writer to
	// Complete or Abort) to what its writers created.
	pending map[int64]*inflight
	// staging holds what every unreleased Staging created (Stage): kept
	// like an in-flight checkpoint's shared files.
	staging map[*inflight]bool
	// aborted holds the ids aborted since the newest completed checkpoint:
	// their late writers are refused.
	aborted map[int64]bool
	newest  int64

	// removals are the subsumed checkpoints and shared files queued for
	// the remover goroutine (StorageOptions.RemoveInBackground), queued
	// names their shared files (the sweep of orphans leaves them to it);
	// removing is true while the goroutine runs, and removed is broadcast
	// when it stops. All guarded by mu.
	removals []removal
	queued   map[string]bool
	removing bool
	removed  *sync.Cond
}

// removal is one subsumed checkpoint directory or shared file to remove.
type removal struct {
	rel string // under the root
	id  int64  // the checkpoint, for a directory
	dir bool
}

// inflight is a checkpoint being written.
//
// Abort may come while its uploads still run (a timeout, a failed
// subtask): their later steps must neither recreate its directory nor
// publish a shared file nothing will reference. So every step of a writer
// that adds to the storage (creating the directory or a file, renaming a
// shared file into place, syncing its directory) holds mu shared and
// checks aborted first, and Abort holds mu exclusively while it sets
// aborted and removes what was written: a step either finished before
// Abort, which then removes its result, or sees aborted and undoes
// itself. Writes into a file already created need no lock: they land in
// a file Abort removed.
type inflight struct {
	mu      sync.RWMutex
	aborted bool // guarded by mu
	// shared names the shared files its writers created, tmps the
	// temporary names they are written under until Close; both guarded by
	// the storage's mu.
	shared map[string]bool
	tmps   map[string]bool
	// dirs holds the directories of the checkpoint its writers create
	// (see snapshotWriter.mkdirLocked); dirMu guards the map.
	dirMu sync.Mutex
	dirs  map[string]*newDir
	// adopting marks the id Adopt is writing: no writer may join it.
	adopting bool
}

// newDir is a directory of an in-flight checkpoint. The first writer that
// needs it creates it; the first that closes a file in it or below syncs
// its parent, so that it survives a power loss. The others wait on mu.
//
// The parent is synced after the file's own fsync, not when the directory
// is created: a journaling filesystem (ext4) commits the directory's
// creation with the file's fsync, and the directory syncs after it cost
// next to nothing, where each one before it would commit the journal
// again. Either way they are done before the file's reference is
// returned, so before any _metadata names it.
type newDir struct {
	mu      sync.Mutex
	path    string
	created bool
	synced  bool // its entry in its parent is durable
}

func (d *newDir) create(fs storageFS) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.created {
		return nil
	}
	if err := fs.MkdirAll(d.path, 0o755); err != nil {
		return err
	}
	d.created = true
	return nil
}

func (d *newDir) syncParent(fs storageFS) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.synced {
		return nil
	}
	if err := fs.syncDir(filepath.Dir(d.path)); err != nil {
		return fmt.Errorf("sync %s after creating %s: %w", filepath.Dir(d.path), d.path, err)
	}
	d.synced = true
	return nil
}

func newInflight() *inflight {
	return &inflight{shared: map[string]bool{}, tmps: map[string]bool{}, dirs: map[string]*newDir{}}
}

// Job is the name of the job the storage was opened for.
func (s *dirStorage) Job() string { return s.job }

// abortedError is what the writers of an aborted checkpoint get.
func (s *dirStorage) abortedError(id int64) error {
	return fmt.Errorf("storage %s: checkpoint %d was aborted", s.root, id)
}

// inflightLocked returns the in-flight record of checkpoint id, creating it
// for the first writer. Checkpoints that were aborted, or that are not
// newer than the newest completed one (they can never complete), get none.
func (s *dirStorage) inflightLocked(id int64) (*inflight, error) {
	if inf := s.pending[id]; inf != nil {
		if inf.adopting {
			return nil, fmt.Errorf("storage %s: checkpoint %d is being adopted", s.root, id)
		}
		return inf, nil
	}
	if s.aborted[id] {
		return nil, s.abortedError(id)
	}
	if id <= s.newest {
		return nil, fmt.Errorf("storage %s: checkpoint %d is not newer than completed checkpoint %d", s.root, id, s.newest)
	}
	inf := newInflight()
	s.pending[id] = inf
	return inf, nil
}

func newDirStorage(fsys vfs.FS, dir, job string, opts StorageOptions) (*dirStorage, error) {
	if err := validJobName(job); err != nil {
		return nil, err
	}
	if opts.Retained <= 0 {
		opts.Retained = 1
	}
	s := &dirStorage{
		fs: storageFS{fsys}, root: filepath.Join(dir, job), job: job, opts: opts,
		completed: map[int64]*checkpoint.Metadata{}, refs: map[string]int{},
		sharedRefs: map[string]checkpoint.FileRef{}, pending: map[int64]*inflight{}, staging: map[*inflight]bool{}, aborted: map[int64]bool{},
		queued: map[string]bool{},
	}
	s.removed = sync.NewCond(&s.mu)
	if opts.ReadOnly {
		// Every mutating call of the filesystem fails, whichever path of
		// the storage it comes from: the methods refuse up front, this
		// makes sure nothing slips through.
		s.fs = storageFS{readOnlyFS{FS: fsys, root: s.root}}
		fi, err := fsys.Stat(s.root)
		if err != nil {
			return nil, fmt.Errorf("storage %s (read-only): %w", s.root, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("storage %s (read-only): not a directory", s.root)
		}
	} else if err := s.fs.mkdirs(filepath.Join(s.root, sharedDir)); err != nil {
		return nil, fmt.Errorf("storage %s: %w", s.root, err)
	}
	names, err := s.fs.list(s.root)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", s.root, err)
	}
	for _, name := range names {
		id, ok := parseDirID(name, chkPrefix)
		if !ok {
			continue
		}
		md, err := s.readMetadata(filepath.Join(s.root, name))
		if err != nil {
			continue // reported by Latest/List
		}
		s.addCompletedLocked(id, md)
	}
	return s, nil
}

// readOnly refuses a writing method of a read-only storage, naming the
// directory and what was asked; nil when the storage may write.
func (s *dirStorage) readOnly(what string) error {
	if !s.opts.ReadOnly {
		return nil
	}
	return fmt.Errorf("storage %s: %s: %w", s.root, what, errReadOnly)
}

func (s *dirStorage) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func parseDirID(name, prefix string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil && id >= 0
}

func chkDirName(id int64) string       { return chkPrefix + strconv.FormatInt(id, 10) }
func savepointDirName(id int64) string { return savepointPref + strconv.FormatInt(id, 10) }

// addCompletedLocked records md as a completed checkpoint and takes its
// shared-file references.
func (s *dirStorage) addCompletedLocked(id int64, md *checkpoint.Metadata) {
	if _, ok := s.completed[id]; ok {
		return
	}
	s.completed[id] = md
	forEachRef(md, func(r checkpoint.FileRef) {
		if r.Shared {
			s.refs[r.Path]++
			s.sharedRefs[r.Path] = r
		}
	})
	s.newest = max(s.newest, id)
}

// forEachRef calls fn with every stored file md names (not the inline
// ones: they live in md itself).
func forEachRef(md *checkpoint.Metadata, fn func(checkpoint.FileRef)) {
	for _, op := range md.Operators {
		for _, st := range op.Subtasks {
			for _, h := range []*checkpoint.Handle{st.Keyed, st.Operator} {
				if h == nil {
					continue
				}
				for _, r := range h.Files {
					if !r.Inline {
						fn(r)
					}
				}
			}
		}
	}
}

// Writer implements Storage. It fails for a checkpoint that was aborted
// or is not newer than the newest completed one. It does no I/O (it runs
// at the barrier): the subtask's directory is created with its first
// private file.
func (s *dirStorage) Writer(checkpointID int64, operatorUID string, subtask int) (checkpoint.SnapshotWriter, error) {
	if err := s.readOnly(fmt.Sprintf("writer for checkpoint %d", checkpointID)); err != nil {
		return nil, err
	}
	if operatorUID == "" {
		return nil, fmt.Errorf("storage %s: checkpoint %d: empty operator uid", s.root, checkpointID)
	}
	rel := filepath.Join(chkDirName(checkpointID), "op-"+url.PathEscape(operatorUID), strconv.Itoa(subtask))
	// Mark the checkpoint in flight before its directory exists, so that
	// a concurrent subsumption does not take it for a stale leftover.
	s.mu.Lock()
	inf, err := s.inflightLocked(checkpointID)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("writer for %s/%d: %w", operatorUID, subtask, err)
	}
	return &snapshotWriter{s: s, id: checkpointID, rel: rel, inf: inf}, nil
}

type snapshotWriter struct {
	s   *dirStorage
	id  int64
	rel string
	inf *inflight
	// staged names the subtask of a Staging ("" for a checkpoint's
	// writer).
	staged string
	// dirs are the checkpoint's, the operator's and the subtask's
	// directory, set once by the first private file (files are created
	// concurrently); dirsReady and dirsSynced spare later files the locks.
	dirsMu     sync.Mutex
	dirs       []*newDir
	dirsReady  atomic.Bool
	dirsSynced atomic.Bool
}

// mkdirLocked creates the subtask's directory and the checkpoint's and
// operator's above it, once per checkpoint. w.inf.mu is held (shared) and
// the checkpoint is not aborted.
func (w *snapshotWriter) mkdirLocked() error {
	if w.dirsReady.Load() {
		return nil
	}
	w.dirsMu.Lock()
	defer w.dirsMu.Unlock()
	if w.dirs == nil {
		op := filepath.Dir(w.rel)
		w.inf.dirMu.Lock()
		for _, rel := range []string{filepath.Dir(op), op, w.rel} {
			d := w.inf.dirs[rel]
			if d == nil {
				d = &newDir{path: filepath.Join(w.s.root, rel)}
				w.inf.dirs[rel] = d
			}
			w.dirs = append(w.dirs, d)
		}
		w.inf.dirMu.Unlock()
	}
	for _, d := range w.dirs {
		if err := d.create(w.s.fs); err != nil {
			return err
		}
	}
	w.dirsReady.Store(true)
	return nil
}

// syncDirsLocked makes the directories of mkdirLocked durable in their
// parents. w.inf.mu is held (shared).
func (w *snapshotWriter) syncDirsLocked() error {
	if w.dirsSynced.Load() {
		return nil
	}
	w.dirsMu.Lock()
	defer w.dirsMu.Unlock()
	for _, d := range w.dirs {
		if err := d.syncParent(w.s.fs); err != nil {
			return err
		}
	}
	w.dirsSynced.Store(true)
	return nil
}

func validFileName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." || name == metadataFile {
		return fmt.Errorf("invalid snapshot file name %q", name)
	}
	return nil
}

// Create implements SnapshotWriter. It fails once the checkpoint was
// aborted.
func (w *snapshotWriter) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	if err := validFileName(name); err != nil {
		return nil, err
	}
	rel := filepath.Join(w.rel, name)
	if shared {
		rel = filepath.Join(sharedDir, name)
	}
	final := filepath.Join(w.s.root, rel)
	tmp := final
	if shared {
		// Shared files are written under a temporary name and renamed, so
		// that a file another checkpoint already references is replaced
		// atomically (with the same content) and never seen half-written.
		tmp = final + tmpInfix + randomSuffix()
	}
	w.inf.mu.RLock()
	defer w.inf.mu.RUnlock()
	if w.inf.aborted {
		return nil, w.goneError()
	}
	if !shared {
		if err := w.mkdirLocked(); err != nil {
			return nil, fmt.Errorf("storage: create %s: %w", final, err)
		}
	}
	if shared {
		w.s.mu.Lock()
		w.inf.shared[rel] = true
		w.inf.tmps[tmp] = true
		w.s.mu.Unlock()
	}
	f, err := w.s.fs.create(tmp)
	if err != nil {
		w.s.forgetTmp(w.inf, tmp)
		return nil, fmt.Errorf("storage: create %s: %w", final, err)
	}
	return &fileWriter{s: w.s, w: w, id: w.id, inf: w.inf, f: f, tmp: tmp, final: final, ref: checkpoint.FileRef{Path: rel, Shared: shared}, crc: crc32.New(castagnoli)}, nil
}

// goneError is what Create and Close fail with once the checkpoint was
// aborted or the staging released.
func (w *snapshotWriter) goneError() error {
	if w.staged != "" {
		return fmt.Errorf("storage %s: the staging of %s was released", w.s.root, w.staged)
	}
	return w.s.abortedError(w.id)
}

// Stage implements Storage. What its writer creates is recorded as an
// in-flight checkpoint's shared files are (inflight.shared), in s.staging
// instead of s.pending, so that no completion takes it for an orphan
// until Release.
func (s *dirStorage) Stage(operatorUID string, subtask int) (checkpoint.Staging, error) {
	who := operatorUID + "/" + strconv.Itoa(subtask)
	if err := s.readOnly("staging for " + who); err != nil {
		return nil, err
	}
	if operatorUID == "" {
		return nil, fmt.Errorf("storage %s: staging: empty operator uid", s.root)
	}
	inf := newInflight()
	s.mu.Lock()
	s.staging[inf] = true
	s.mu.Unlock()
	return stagingWriter{&snapshotWriter{s: s, inf: inf, staged: who}}, nil
}

// stagingWriter is a Staging of the directory storage.
type stagingWriter struct{ *snapshotWriter }

// Create implements checkpoint.Staging: shared files only.
func (w stagingWriter) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	if !shared {
		return nil, fmt.Errorf("storage %s: staging of %s: %q: a staged file must be shared", w.s.root, w.staged, name)
	}
	return w.snapshotWriter.Create(name, true)
}

// Release implements checkpoint.Staging. Files still being written fail
// their Close.
func (w stagingWriter) Release() {
	w.inf.mu.Lock()
	w.inf.aborted = true
	w.inf.mu.Unlock()
	w.s.mu.Lock()
	delete(w.s.staging, w.inf)
	w.s.mu.Unlock()
}

// forgetTmp drops a temporary name from inf once it is renamed or removed.
func (s *dirStorage) forgetTmp(inf *inflight, tmp string) {
	s.mu.Lock()
	delete(inf.tmps, tmp)
	s.mu.Unlock()
}

func (w *snapshotWriter) HasShared(name string) (checkpoint.FileRef, bool) {
	rel := filepath.Join(sharedDir, name)
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.refs[rel] > 0 {
		return w.s.sharedRefs[rel], true
	}
	return checkpoint.FileRef{}, false
}

type fileWriter struct {
	s          *dirStorage
	w          *snapshotWriter
	id         int64
	inf        *inflight
	f          vfs.File
	tmp, final string
	ref        checkpoint.FileRef
	crc        hash.Hash32
	err        error
	done       bool
	// buf is what the file is written from: a vfs.File may modify the
	// slice it writes (Pebble's MemFS does under its invariants), and an
	// io.Writer must not.
	buf []byte
}

// writeChunk is the largest piece fileWriter hands the file at once.
const writeChunk = 128 << 10

// Write implements io.Writer.
func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		if len(w.buf) < len(chunk) {
			w.buf = make([]byte, max(len(chunk), min(2*len(w.buf), writeChunk)))
		}
		b := w.buf[:copy(w.buf, chunk)]
		n, err := w.f.Write(b)
		w.crc.Write(chunk[:n])
		w.ref.Size += int64(n)
		written += n
		if err == nil && n < len(chunk) {
			err = io.ErrShortWrite
		}
		if err != nil {
			w.err = fmt.Errorf("storage: write %s: %w", w.final, err)
			return written, w.err
		}
		p = p[len(chunk):]
	}
	return written, nil
}

// Close implements FileWriter: the file is fsynced, a shared one renamed
// to its name, and its directory fsynced, unless the checkpoint was
// aborted meanwhile (then the file is removed and Close fails saying so).
func (w *fileWriter) Close() (checkpoint.FileRef, error) {
	if w.done {
		return checkpoint.FileRef{}, fmt.Errorf("storage: %s closed twice", w.final)
	}
	w.done = true
	err := w.err
	if err == nil {
		if serr := w.f.Sync(); serr != nil {
			err = fmt.Errorf("storage: sync %s: %w", w.final, serr)
		}
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("storage: close %s: %w", w.final, cerr)
	}
	if err == nil {
		err = w.publish()
	}
	if err != nil {
		_ = w.s.fs.Remove(w.tmp)
	}
	if w.tmp != w.final {
		w.s.forgetTmp(w.inf, w.tmp)
	}
	if err != nil {
		return checkpoint.FileRef{}, err
	}
	w.ref.CRC32C = w.crc.Sum32()
	return w.ref, nil
}

// publish renames a shared file into place and makes its directory entry
// durable, unless the checkpoint was aborted.
func (w *fileWriter) publish() error {
	w.inf.mu.RLock()
	defer w.inf.mu.RUnlock()
	if w.inf.aborted {
		return fmt.Errorf("%w: %s is not kept", w.w.goneError(), w.final)
	}
	if w.tmp != w.final {
		if err := w.s.fs.Rename(w.tmp, w.final); err != nil {
			return fmt.Errorf("storage: rename %s: %w", w.final, err)
		}
	}
	if err := w.s.fs.syncDir(filepath.Dir(w.final)); err != nil {
		return fmt.Errorf("storage: sync dir of %s: %w", w.final, err)
	}
	if !w.ref.Shared {
		if err := w.w.syncDirsLocked(); err != nil {
			return fmt.Errorf("storage: %s: %w", w.final, err)
		}
	}
	return nil
}

func (w *fileWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	_ = w.f.Close()
	_ = w.s.fs.Remove(w.tmp)
	if w.tmp != w.final {
		w.s.forgetTmp(w.inf, w.tmp)
	}
}

// encodeMetadata renders md as a header line carrying the CRC32C and length
// of the JSON body that follows it.
func encodeMetadata(md *checkpoint.Metadata) ([]byte, error) {
	body, err := json.MarshalIndent(md, "", " ")
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("%s v%d crc32c=%08x len=%d\n", metadataHeader, checkpoint.MetadataVersion, crc32.Checksum(body, castagnoli), len(body))
	return append([]byte(head), body...), nil
}

func decodeMetadata(b []byte) (*checkpoint.Metadata, error) {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return nil, errors.New("no header line")
	}
	var version int
	var sum uint32
	var n int
	if _, err := fmt.Sscanf(string(b[:nl]), metadataHeader+" v%d crc32c=%x len=%d", &version, &sum, &n); err != nil {
		return nil, fmt.Errorf("bad header %q: %w", b[:nl], err)
	}
	if version != checkpoint.MetadataVersion {
		return nil, fmt.Errorf("unsupported metadata version %d", version)
	}
	body := b[nl+1:]
	if len(body) != n {
		return nil, fmt.Errorf("body is %d bytes, header says %d (truncated?)", len(body), n)
	}
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("checksum mismatch: header %08x, body %08x", sum, got)
	}
	var md checkpoint.Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &md, nil
}

// damagedError marks a checkpoint or savepoint whose _metadata exists but
// cannot be used (unreadable, corrupt) or whose state files are missing,
// truncated or corrupt: CheckpointInfo.Damaged. A directory without
// _metadata is incomplete, not damaged.
type damagedError struct{ err error }

func (e *damagedError) Error() string { return e.err.Error() }
func (e *damagedError) Unwrap() error { return e.err }

// notFoundError marks a checkpoint directory that does not exist.
type notFoundError struct{ err error }

func (e *notFoundError) Error() string { return e.err.Error() }
func (e *notFoundError) Unwrap() error { return e.err }

func isNotFound(err error) bool {
	var n *notFoundError
	return errors.As(err, &n)
}

func isDamaged(err error) bool {
	var d *damagedError
	return errors.As(err, &d)
}

// readMetadata reads and verifies <dir>/_metadata; errors name the path. A
// missing _metadata is an incomplete (or missing) checkpoint; an existing
// one that cannot be read or decoded is a *damagedError. md.Committed
// tells whether the committed marker is present.
func (s *dirStorage) readMetadata(dir string) (*checkpoint.Metadata, error) {
	p := filepath.Join(dir, metadataFile)
	r, err := s.fs.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if names, _ := s.fs.list(dir); len(names) == 0 {
				return nil, &notFoundError{fmt.Errorf("checkpoint %s does not exist: %w", dir, err)}
			}
			return nil, fmt.Errorf("checkpoint %s is incomplete: no %s: %w", dir, metadataFile, err)
		}
		return nil, &damagedError{fmt.Errorf("checkpoint metadata %s is unreadable: %w", p, err)}
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, &damagedError{fmt.Errorf("checkpoint metadata %s is unreadable: %w", p, err)}
	}
	md, err := decodeMetadata(b)
	if err != nil {
		return nil, &damagedError{fmt.Errorf("checkpoint metadata %s is corrupt: %w", p, err)}
	}
	md.Path = dir
	md.Committed = s.hasMarker(dir)
	return md, nil
}

// hasMarker reports whether dir carries the committed marker.
func (s *dirStorage) hasMarker(dir string) bool {
	_, err := s.fs.Stat(filepath.Join(dir, committedFile))
	return err == nil
}

// Complete implements Storage.
func (s *dirStorage) Complete(ctx context.Context, md *checkpoint.Metadata) error {
	if md == nil {
		return errors.New("storage: complete: nil metadata")
	}
	if err := s.readOnly(fmt.Sprintf("complete checkpoint %d", md.CheckpointID)); err != nil {
		return err
	}
	if md.Job != "" && md.Job != s.job {
		return fmt.Errorf("storage %s: complete checkpoint %d of job %q", s.root, md.CheckpointID, md.Job)
	}
	md.Job = s.job
	if md.Version == 0 {
		md.Version = checkpoint.MetadataVersion
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: complete checkpoint %d: %w", md.CheckpointID, err)
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	// Hold the checkpoint in flight, so that an Abort waits for the
	// outcome and then refuses (completed) or finds nothing left to race.
	s.mu.Lock()
	if s.aborted[md.CheckpointID] {
		s.mu.Unlock()
		return fmt.Errorf("storage %s: complete: %w", s.root, s.abortedError(md.CheckpointID))
	}
	inf := s.pending[md.CheckpointID]
	if inf == nil {
		// No writer (the state is inline, or there is none): held only
		// for this call.
		inf = newInflight()
		s.pending[md.CheckpointID] = inf
		defer func() {
			s.mu.Lock()
			if s.pending[md.CheckpointID] == inf {
				delete(s.pending, md.CheckpointID)
			}
			s.mu.Unlock()
		}()
	}
	s.mu.Unlock()
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	chkRel := chkDirName(md.CheckpointID)
	dirRel := chkRel
	if md.Savepoint {
		dirRel = savepointDirName(md.CheckpointID)
		if err := s.moveToSavepoint(md, chkRel, dirRel); err != nil {
			return err
		}
	} else {
		s.mu.Lock()
		newest := s.newest
		s.mu.Unlock()
		if md.CheckpointID <= newest {
			return fmt.Errorf("storage %s: checkpoint %d is not newer than completed checkpoint %d", s.root, md.CheckpointID, newest)
		}
	}
	// Every file the metadata names must be there in full before the
	// metadata makes the checkpoint exist.
	var missing error
	forEachRef(md, func(r checkpoint.FileRef) {
		if missing != nil {
			return
		}
		p, err := s.resolve(r.Path)
		if err != nil {
			missing = err
			return
		}
		size, err := s.fs.size(p)
		if err != nil {
			missing = fmt.Errorf("storage: checkpoint %d names %s: %w", md.CheckpointID, p, err)
		} else if size != r.Size {
			missing = fmt.Errorf("storage: checkpoint %d names %s of %d bytes, found %d", md.CheckpointID, p, r.Size, size)
		}
	})
	if missing != nil {
		return missing
	}
	dir := filepath.Join(s.root, dirRel)
	if err := s.writeMetadata(dir, md); err != nil {
		return fmt.Errorf("storage: complete checkpoint %d: %w", md.CheckpointID, err)
	}
	md.Path = dir
	if md.Savepoint {
		s.mu.Lock()
		delete(s.pending, md.CheckpointID)
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	delete(s.pending, md.CheckpointID)
	s.addCompletedLocked(md.CheckpointID, md)
	for id := range s.aborted {
		// Writers of these are refused as not newer than s.newest now.
		if id < s.newest {
			delete(s.aborted, id)
		}
	}
	s.subsumeLocked()
	s.mu.Unlock()
	return nil
}

// writeMetadata writes md as <dir>/_metadata (writeAtomic), creating dir
// if no writer did; then a new dir is synced in its parent. Until then a
// power loss can take the whole directory back (the checkpoint does not
// exist before the caller returns), never part of it.
func (s *dirStorage) writeMetadata(dir string, md *checkpoint.Metadata) error {
	b, err := encodeMetadata(md)
	if err != nil {
		return err
	}
	parents, err := s.fs.mkdirsUnsynced(dir)
	if err != nil {
		return err
	}
	if err := s.writeAtomic(dir, metadataFile, b); err != nil {
		return err
	}
	return s.fs.syncDirs(parents)
}

// writeAtomic makes <dir>/<name> hold data durably and atomically: it
// writes a temporary file, fsyncs it, renames it to name and fsyncs dir.
// After a crash the name holds all of data or whatever it held before.
func (s *dirStorage) writeAtomic(dir, name string, data []byte) error {
	final := filepath.Join(dir, name)
	tmp := final + ".inprogress"
	f, err := s.fs.create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = s.fs.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		_ = s.fs.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		_ = s.fs.Remove(tmp)
		return err
	}
	if err := s.fs.Rename(tmp, final); err != nil {
		_ = s.fs.Remove(tmp)
		return err
	}
	return s.fs.syncDir(dir)
}

// moveToSavepoint makes a savepoint self-contained: the private files of
// checkpoint directory chkRel move to savepoint directory spRel, and shared
// files are copied into it, so that removing checkpoints never touches a
// savepoint. md's references are rewritten accordingly. The rename and the
// copies are durable (their directories fsynced) when it returns: a
// durable _metadata of the savepoint never names a file a power loss can
// take back.
func (s *dirStorage) moveToSavepoint(md *checkpoint.Metadata, chkRel, spRel string) error {
	src, dst := filepath.Join(s.root, chkRel), filepath.Join(s.root, spRel)
	fail := func(err error) error {
		return fmt.Errorf("storage %s: savepoint %d: %w", s.root, md.CheckpointID, err)
	}
	var syncs []string // after the copies' fsyncs, which commit the rest
	if names, _ := s.fs.list(src); len(names) > 0 {
		if err := s.fs.Rename(src, dst); err != nil {
			return fail(fmt.Errorf("move %s: %w", src, err))
		}
		// Before _metadata: else a power loss could bring back chk-<n>
		// holding a savepoint's _metadata whose files are not there.
		syncs = append(syncs, s.root)
	}
	sharedCopies := filepath.Join(dst, sharedDir)
	parents, err := s.fs.mkdirsUnsynced(sharedCopies)
	if err != nil {
		return fail(err)
	}
	syncs = append(syncs, parents...)
	copied := false
	err = md.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
		if rest, ok := strings.CutPrefix(r.Path, chkRel+string(filepath.Separator)); ok {
			r.Path = filepath.Join(spRel, rest)
			return r, nil
		}
		if !r.Shared {
			return r, nil
		}
		copied = true
		return s.copyIn(r, filepath.Join(spRel, sharedDir, filepath.Base(r.Path)), false)
	})
	if err != nil {
		return fail(err)
	}
	if copied {
		syncs = append(syncs, sharedCopies)
	}
	if err := s.fs.syncDirs(dedupe(syncs)); err != nil {
		return fail(err)
	}
	return nil
}

// dedupe returns dirs without repeats, in their first order.
func dedupe(dirs []string) []string {
	seen := map[string]bool{}
	out := dirs[:0:0]
	for _, d := range dirs {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// subsumeLocked removes the completed checkpoints beyond the retained count,
// their shared files that no retained checkpoint (and no in-flight one)
// uses, orphaned shared files, and incomplete checkpoint directories older
// than the newest completed one. An in-flight checkpoint older than the
// newest completed one can no longer complete, so removing files it reused
// is safe. Failures are logged: the new checkpoint is complete either
// way, and leftovers are only disk space.
func (s *dirStorage) subsumeLocked() {
	ids := make([]int64, 0, len(s.completed))
	for id := range s.completed {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for len(ids) > s.opts.Retained {
		id := ids[0]
		ids = ids[1:]
		md := s.completed[id]
		delete(s.completed, id)
		var drop []string
		forEachRef(md, func(r checkpoint.FileRef) {
			if !r.Shared {
				return
			}
			s.refs[r.Path]--
			if s.refs[r.Path] <= 0 {
				delete(s.refs, r.Path)
				delete(s.sharedRefs, r.Path)
				drop = append(drop, r.Path)
			}
		})
		// The checkpoint goes first, so that an interruption leaves
		// unreferenced files rather than a checkpoint missing some.
		if s.opts.RemoveInBackground {
			s.removals = append(s.removals, removal{rel: chkDirName(id), id: id, dir: true})
			s.queued[chkDirName(id)] = true
			for _, rel := range drop {
				s.removals = append(s.removals, removal{rel: rel})
				s.queued[rel] = true
			}
			continue
		}
		if err := s.removeCheckpointDir(filepath.Join(s.root, chkDirName(id))); err != nil {
			s.logf("storage %s: remove subsumed checkpoint %d: %v", s.root, id, err)
		}
		for _, rel := range drop {
			if s.pendingUsesLocked(rel) {
				continue
			}
			if err := s.fs.Remove(filepath.Join(s.root, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.logf("storage %s: remove subsumed shared file %s: %v", s.root, rel, err)
			}
		}
	}
	// Shared files no completed checkpoint references and no in-flight one
	// wrote are leftovers of checkpoints that never completed (a crash
	// mid-checkpoint, a failed upload): remove them.
	shared, err := s.fs.list(filepath.Join(s.root, sharedDir))
	if err != nil {
		s.logf("storage %s: list shared files: %v", s.root, err)
	}
	for _, name := range shared {
		rel := filepath.Join(sharedDir, name)
		base := rel
		if i := strings.Index(base, tmpInfix); i >= 0 {
			base = base[:i]
		}
		if s.refs[base] > 0 || s.pendingUsesLocked(base) || s.queued[rel] {
			continue
		}
		if err := s.fs.Remove(filepath.Join(s.root, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.logf("storage %s: remove orphaned shared file %s: %v", s.root, rel, err)
		}
	}
	names, err := s.fs.list(s.root)
	if err != nil {
		s.logf("storage %s: list: %v", s.root, err)
		return
	}
	for _, name := range names {
		id, ok := parseDirID(name, chkPrefix)
		if !ok || id >= s.newest || s.completed[id] != nil {
			continue
		}
		if s.pending[id] != nil || s.queued[name] {
			continue
		}
		if err := s.removeCheckpointDir(filepath.Join(s.root, name)); err != nil {
			s.logf("storage %s: remove stale %s: %v", s.root, name, err)
		}
	}
	s.startRemovalsLocked()
}

// startRemovalsLocked starts the remover goroutine when removals are
// queued and it is not running (mu held).
func (s *dirStorage) startRemovalsLocked() {
	if len(s.removals) == 0 || s.removing {
		return
	}
	s.removing = true
	go s.runRemovals() // owned by the storage; it ends when the queue is empty
}

// runRemovals removes the queued subsumed checkpoints and shared files, in
// order (a checkpoint's directory before its files), until none is left.
// A shared file some checkpoint came to use since it was queued stays.
func (s *dirStorage) runRemovals() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.removals) > 0 {
		r := s.removals[0]
		s.removals = s.removals[1:]
		if !r.dir && (s.refs[r.rel] > 0 || s.pendingUsesLocked(r.rel)) {
			delete(s.queued, r.rel)
			continue
		}
		s.mu.Unlock()
		var err error
		if r.dir {
			err = s.removeCheckpointDir(filepath.Join(s.root, r.rel))
		} else if err = s.fs.Remove(filepath.Join(s.root, r.rel)); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		s.mu.Lock()
		delete(s.queued, r.rel) // only now: the sweep of orphans left it alone meanwhile
		if err != nil {
			if r.dir {
				s.logf("storage %s: remove subsumed checkpoint %d: %v", s.root, r.id, err)
			} else {
				s.logf("storage %s: remove subsumed shared file %s: %v", s.root, r.rel, err)
			}
		}
	}
	s.removing = false
	s.removed.Broadcast()
}

// waitRemovals waits until the remover goroutine has nothing left.
func (s *dirStorage) waitRemovals() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.removing {
		s.removed.Wait()
	}
}

// removeCheckpointDir removes a checkpoint's directory, its _metadata
// first: interrupted, it leaves an incomplete checkpoint, never one that
// looks complete and misses files.
func (s *dirStorage) removeCheckpointDir(dir string) error {
	if err := s.fs.Remove(filepath.Join(dir, metadataFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return s.fs.RemoveAll(dir)
}

func (s *dirStorage) pendingUsesLocked(rel string) bool {
	for _, inf := range s.pending {
		if inf.shared[rel] {
			return true
		}
	}
	for inf := range s.staging {
		if inf.shared[rel] {
			return true
		}
	}
	return false
}

// Abort implements Storage. Writers of the checkpoint still running fail
// from then on, and what they finish is removed (see inflight).
func (s *dirStorage) Abort(checkpointID int64) error {
	if err := s.readOnly(fmt.Sprintf("abort checkpoint %d", checkpointID)); err != nil {
		return err
	}
	for {
		s.mu.Lock()
		inf := s.pending[checkpointID]
		s.mu.Unlock()
		if inf != nil {
			// Wait for the writers' steps under way, or for Complete.
			inf.mu.Lock()
		}
		s.mu.Lock()
		if s.pending[checkpointID] != inf {
			// A first writer came, or Complete finished: look again.
			s.mu.Unlock()
			if inf != nil {
				inf.mu.Unlock()
			}
			continue
		}
		if s.completed[checkpointID] != nil || inf != nil && inf.adopting {
			s.mu.Unlock()
			if inf != nil {
				inf.mu.Unlock()
			}
			return fmt.Errorf("storage %s: abort of completed (or adopted) checkpoint %d", s.root, checkpointID)
		}
		errs := s.abortLocked(checkpointID, inf)
		s.mu.Unlock()
		// Still under inf.mu: later writers see aborted.
		if err := s.fs.RemoveAll(filepath.Join(s.root, chkDirName(checkpointID))); err != nil {
			errs = append(errs, err)
		}
		// A savepoint whose Complete failed after moving its files.
		sp := filepath.Join(s.root, savepointDirName(checkpointID))
		if _, err := s.fs.Stat(filepath.Join(sp, metadataFile)); errors.Is(err, fs.ErrNotExist) && s.fs.isDir(sp) {
			if err := s.fs.RemoveAll(sp); err != nil {
				errs = append(errs, err)
			}
		}
		if inf != nil {
			inf.mu.Unlock()
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("storage %s: abort checkpoint %d: %w", s.root, checkpointID, err)
		}
		return nil
	}
}

// abortLocked marks checkpoint id aborted, with its in-flight record inf
// (nil if no writer came), and removes the shared files only it wrote;
// the caller removes its directory. s.mu and inf.mu are held.
func (s *dirStorage) abortLocked(id int64, inf *inflight) []error {
	delete(s.pending, id)
	s.aborted[id] = true
	if inf == nil {
		return nil
	}
	inf.aborted = true
	var errs []error
	for rel := range inf.shared {
		if s.refs[rel] > 0 || s.pendingUsesLocked(rel) {
			continue
		}
		if err := s.fs.Remove(filepath.Join(s.root, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for tmp := range inf.tmps {
		if err := s.fs.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkpointDir is a chk-<n> or savepoint-<id> directory of the job.
type checkpointDir struct {
	id        int64
	name      string
	savepoint bool
}

// checkpointDirs lists the chk-<n> and savepoint-<id> directories of the
// job, by name.
func (s *dirStorage) checkpointDirs() ([]checkpointDir, error) {
	names, err := s.fs.list(s.root)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", s.root, err)
	}
	var out []checkpointDir
	for _, name := range names {
		c := checkpointDir{name: name}
		var ok bool
		if c.id, ok = parseDirID(name, chkPrefix); !ok {
			if c.id, ok = parseDirID(name, savepointPref); !ok {
				continue
			}
			c.savepoint = true
		}
		if s.fs.isDir(filepath.Join(s.root, name)) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Latest implements Storage. Savepoints of the job directory are
// candidates like checkpoints (ids are unique across both). It verifies
// the metadata and the size and checksum of every file of a candidate
// before returning it.
func (s *dirStorage) Latest(ctx context.Context) (*checkpoint.Metadata, []checkpoint.CheckpointInfo, error) {
	cands, err := s.checkpointDirs()
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].id > cands[j].id })
	var infos []checkpoint.CheckpointInfo
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return nil, infos, err
		}
		dir := filepath.Join(s.root, c.name)
		info := checkpoint.CheckpointInfo{ID: c.id, Path: dir, Savepoint: c.savepoint}
		md, err := s.readMetadata(dir)
		if err == nil {
			info.Complete = true
			info.Committed = md.Committed
			err = s.verifyFiles(md)
		}
		info.Err = err
		info.Damaged = isDamaged(err)
		infos = append(infos, info)
		if err == nil {
			return md, infos, nil
		}
	}
	return nil, infos, nil
}

// verifyFiles reads every file md names to the end, checking size and
// checksum. A failure is a *damagedError naming the checkpoint and the file.
func (s *dirStorage) verifyFiles(md *checkpoint.Metadata) error {
	var errs []error
	forEachRef(md, func(r checkpoint.FileRef) {
		if len(errs) > 0 {
			return
		}
		rc, err := s.Open(r)
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("checkpoint %s: %w", md.Path, err))
		}
	})
	if len(errs) > 0 {
		return &damagedError{errors.Join(errs...)}
	}
	return nil
}

// Load implements Storage. path is a chk-<n> or savepoint-<id> directory
// (absolute, or relative to the job directory) or its _metadata file. Its
// files are verified like Latest's; a checkpoint of another storage
// location gets absolute file paths so that Open finds them.
func (s *dirStorage) Load(ctx context.Context, path string) (*checkpoint.Metadata, error) {
	if path == "" {
		return nil, errors.New("storage: load: empty path")
	}
	p := filepath.Clean(path)
	if filepath.Base(p) == metadataFile {
		p = filepath.Dir(p)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.root, p)
	}
	md, err := s.readMetadata(p)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if jobRoot := filepath.Dir(p); jobRoot != s.root {
		_ = md.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
			if !filepath.IsAbs(r.Path) {
				r.Path = filepath.Join(jobRoot, r.Path)
			}
			return r, nil
		})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.verifyFiles(md); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return md, nil
}

// List implements Storage. It checks metadata, not state files: a
// checkpoint whose state files are damaged lists as complete (Load tells).
func (s *dirStorage) List(ctx context.Context) ([]checkpoint.CheckpointInfo, error) {
	cands, err := s.checkpointDirs()
	if err != nil {
		return nil, err
	}
	var infos []checkpoint.CheckpointInfo
	for _, c := range cands {
		dir := filepath.Join(s.root, c.name)
		md, err := s.readMetadata(dir)
		info := checkpoint.CheckpointInfo{ID: c.id, Savepoint: c.savepoint, Path: dir, Complete: err == nil, Err: err, Damaged: isDamaged(err)}
		if md != nil {
			info.Committed = md.Committed
		}
		infos = append(infos, info)
	}
	sort.SliceStable(infos, func(i, j int) bool { return infos[i].ID < infos[j].ID })
	return infos, ctx.Err()
}

// Sweep implements Storage. It holds completeMu (no Complete or Adopt
// runs meanwhile) and mu (no writer registers a checkpoint in flight).
func (s *dirStorage) Sweep(ctx context.Context) ([]checkpoint.CheckpointInfo, error) {
	if err := s.readOnly("sweep incomplete checkpoints"); err != nil {
		return nil, err
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.waitRemovals() // the queued removals of earlier completions first
	s.mu.Lock()
	defer s.mu.Unlock()
	cands, err := s.checkpointDirs()
	if err != nil {
		return nil, err
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].id < cands[j].id })
	var removed []checkpoint.CheckpointInfo
	var errs []error
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if s.pending[c.id] != nil {
			continue // being written by this job
		}
		dir := filepath.Join(s.root, c.name)
		meta := filepath.Join(dir, metadataFile)
		if _, err := s.fs.Stat(meta); !errors.Is(err, fs.ErrNotExist) {
			continue // complete, damaged, or unknown: not ours to judge
		}
		if err := s.fs.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove incomplete %s: %w", dir, err))
			continue
		}
		removed = append(removed, checkpoint.CheckpointInfo{ID: c.id, Savepoint: c.savepoint, Path: dir,
			Err: fmt.Errorf("checkpoint %s is incomplete: no %s", dir, metadataFile)})
	}
	if len(removed) > 0 {
		if err := s.fs.syncDir(s.root); err != nil {
			errs = append(errs, fmt.Errorf("sync %s after removing incomplete checkpoints: %w", s.root, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("storage %s: sweep: %w", s.root, err)
	}
	return removed, nil
}

func (s *dirStorage) resolve(rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return filepath.Clean(rel), nil
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("storage %s: file path %q escapes the job directory", s.root, rel)
	}
	return filepath.Join(s.root, rel), nil
}

// Open implements Storage.
func (s *dirStorage) Open(ref checkpoint.FileRef) (io.ReadCloser, error) {
	if ref.Inline {
		return checkpoint.OpenInline(ref)
	}
	p, err := s.resolve(ref.Path)
	if err != nil {
		return nil, err
	}
	size, err := s.fs.size(p)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	if size != ref.Size {
		return nil, fmt.Errorf("state file %s is %d bytes, expected %d (truncated or overwritten)", p, size, ref.Size)
	}
	rc, err := s.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", p, err)
	}
	return checkpoint.VerifyReader(bufio.NewReaderSize(rc, 256<<10), rc, p, ref, true), nil
}

// DiscardAll implements Storage. The record of what it discarded is the
// file _discarded in the job directory, written like _metadata (temp
// file, fsync, rename, fsync of the directory) before anything is
// removed: a crash in between leaves the record and some checkpoints,
// which is safe (a restore of the newest one left is exact).
func (s *dirStorage) DiscardAll() error {
	if err := s.readOnly("discard"); err != nil {
		return err
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.waitRemovals() // the queued removals of earlier completions first
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.fs.list(s.root)
	if err != nil {
		return fmt.Errorf("storage %s: %w", s.root, err)
	}
	rec, err := s.discarded()
	if err != nil {
		return fmt.Errorf("storage %s: discard: %w", s.root, err)
	}
	through := rec.Through
	var newestDir string
	for _, name := range names {
		id, ok := parseDirID(name, chkPrefix)
		if !ok {
			id, ok = parseDirID(name, savepointPref)
		}
		if !ok || id <= through {
			continue
		}
		if _, err := s.fs.Stat(filepath.Join(s.root, name, metadataFile)); err == nil {
			through, newestDir = id, name
		}
	}
	if through > rec.Through {
		rec = checkpoint.Discard{Through: through}
		if _, ok := parseDirID(newestDir, chkPrefix); ok {
			// Its operator state, for a restore of an older savepoint to
			// tell the transactions committed since; a damaged one records
			// only its id.
			if md, err := s.readMetadata(filepath.Join(s.root, newestDir)); err == nil {
				rec.Newest = operatorStateOf(md)
			}
		}
	}
	if through > 0 {
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("storage %s: discard: encoding what it discards: %w", s.root, err)
		}
		if err := s.writeAtomic(s.root, discardedFile, append([]byte(discardedHeader+"\n"), append(b, '\n')...)); err != nil {
			return fmt.Errorf("storage %s: discard: recording the newest checkpoint (%d) before removing it: %w", s.root, through, err)
		}
	}
	// Every checkpoint loses its _metadata durably before a file it names
	// goes: a power loss in between leaves incomplete checkpoints, never
	// a damaged one.
	var errs []error
	var dirs []string
	for _, name := range names {
		if _, ok := parseDirID(name, chkPrefix); !ok {
			continue
		}
		dir := filepath.Join(s.root, name)
		if err := s.fs.Remove(filepath.Join(dir, metadataFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if err := s.fs.syncDir(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		dirs = append(dirs, dir)
	}
	if len(errs) > 0 {
		return fmt.Errorf("storage %s: discard: %w", s.root, errors.Join(errs...))
	}
	for _, dir := range dirs {
		if err := s.fs.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	// Then the files they shared.
	if err := s.fs.RemoveAll(filepath.Join(s.root, sharedDir)); err != nil {
		errs = append(errs, err)
	}
	s.completed = map[int64]*checkpoint.Metadata{}
	s.newest = 0
	s.refs = map[string]int{}
	s.sharedRefs = map[string]checkpoint.FileRef{}
	if err := s.fs.mkdirs(filepath.Join(s.root, sharedDir)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("storage %s: discard: %w", s.root, err)
	}
	return nil
}

// Discarded implements Storage.
func (s *dirStorage) Discarded(ctx context.Context) (checkpoint.Discard, error) {
	if err := ctx.Err(); err != nil {
		return checkpoint.Discard{}, err
	}
	rec, err := s.discarded()
	if err != nil {
		return checkpoint.Discard{}, fmt.Errorf("storage %s: %w", s.root, err)
	}
	return rec, nil
}

// discarded reads the record DiscardAll leaves (the zero Discard without
// one).
func (s *dirStorage) discarded() (checkpoint.Discard, error) {
	p := filepath.Join(s.root, discardedFile)
	f, err := s.fs.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return checkpoint.Discard{}, nil
	}
	if err != nil {
		return checkpoint.Discard{}, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return checkpoint.Discard{}, fmt.Errorf("reading %s: %w", p, err)
	}
	var rec checkpoint.Discard
	body, ok := bytes.CutPrefix(b, []byte(discardedHeader+"\n"))
	if !ok || json.Unmarshal(body, &rec) != nil || rec.Through <= 0 {
		return checkpoint.Discard{}, fmt.Errorf("%s is corrupt: %q", p, b)
	}
	return rec, nil
}

// operatorStateOf is md as a Superseded: its id, path and every
// operator with its operator state only (keyed state dropped).
func operatorStateOf(md *checkpoint.Metadata) *checkpoint.Superseded {
	sup := &checkpoint.Superseded{CheckpointID: md.CheckpointID, Path: md.Path, WriterVersion: md.WriterVersion}
	for _, op := range cloneOperators(md.Operators) {
		for i := range op.Subtasks {
			op.Subtasks[i].Keyed = nil
		}
		sup.Operators = append(sup.Operators, op)
	}
	return sup
}

// failedStorage is returned by NewMemoryStorage when opts.FS failed its
// setup; every call reports that error.
type failedStorage struct {
	job string
	err error
}

func (f *failedStorage) Job() string { return f.job }

func (f *failedStorage) Writer(int64, string, int) (checkpoint.SnapshotWriter, error) {
	return nil, f.err
}
func (f *failedStorage) Stage(string, int) (checkpoint.Staging, error)        { return nil, f.err }
func (f *failedStorage) Complete(context.Context, *checkpoint.Metadata) error { return f.err }
func (f *failedStorage) Abort(int64) error                                    { return f.err }
func (f *failedStorage) Latest(context.Context) (*checkpoint.Metadata, []checkpoint.CheckpointInfo, error) {
	return nil, nil, f.err
}
func (f *failedStorage) Load(context.Context, string) (*checkpoint.Metadata, error) {
	return nil, f.err
}
func (f *failedStorage) List(context.Context) ([]checkpoint.CheckpointInfo, error) { return nil, f.err }
func (f *failedStorage) Open(checkpoint.FileRef) (io.ReadCloser, error)            { return nil, f.err }
func (f *failedStorage) DiscardAll() error                                         { return f.err }
func (f *failedStorage) Discarded(context.Context) (checkpoint.Discard, error) {
	return checkpoint.Discard{}, f.err
}
func (f *failedStorage) MarkCommitted(context.Context, int64) error { return f.err }
func (f *failedStorage) Sweep(context.Context) ([]checkpoint.CheckpointInfo, error) {
	return nil, f.err
}
func (f *failedStorage) Adopt(context.Context, *checkpoint.Metadata, int64) (*checkpoint.Metadata, error) {
	return nil, f.err
}

// MarkCommitted implements Storage. The marker is the file _committed in
// the checkpoint's or savepoint's directory, written like _metadata (temp
// file, fsync, rename, fsync of the directory); its presence is what
// counts. Marking twice is harmless.
func (s *dirStorage) MarkCommitted(ctx context.Context, checkpointID int64) error {
	fail := func(err error) error {
		return fmt.Errorf("storage %s: mark checkpoint %d committed: %w", s.root, checkpointID, err)
	}
	if err := s.readOnly(fmt.Sprintf("mark checkpoint %d committed", checkpointID)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	// Under completeMu no subsumption removes the directory meanwhile.
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.waitRemovals() // the queued removals of earlier completions first
	var errs []error
	for _, name := range []string{savepointDirName(checkpointID), chkDirName(checkpointID)} {
		dir := filepath.Join(s.root, name)
		md, err := s.readMetadata(dir)
		if err == nil && md.CheckpointID != checkpointID {
			err = &damagedError{fmt.Errorf("checkpoint %s holds id %d", dir, md.CheckpointID)}
		}
		if err == nil {
			if err := s.writeAtomic(dir, committedFile, []byte(fmt.Sprintf("committed %d\n", checkpointID))); err != nil {
				return fail(err)
			}
			return nil
		}
		if !isNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return fail(fmt.Errorf("no checkpoint or savepoint %d in %s", checkpointID, s.root))
	}
	return fail(errors.Join(errs...))
}

// reserveAbove registers inf as checkpoint id in flight if id is above
// every checkpoint or savepoint id the storage knows: on disk (complete or
// not), completed or in flight. It returns the highest known id. completeMu
// must be held.
func (s *dirStorage) reserveAbove(id int64, inf *inflight) (top int64, ok bool, err error) {
	names, err := s.fs.list(s.root)
	if err != nil {
		return 0, false, err
	}
	for _, name := range names {
		if n, ok := parseDirID(name, chkPrefix); ok {
			top = max(top, n)
		} else if n, ok := parseDirID(name, savepointPref); ok {
			top = max(top, n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	top = max(top, s.newest)
	for n := range s.pending {
		top = max(top, n)
	}
	for n := range s.aborted {
		top = max(top, n)
	}
	if id <= top {
		return top, false, nil
	}
	s.pending[id] = inf
	return top, true, nil
}

func cloneOperators(ops []checkpoint.OperatorSnapshot) []checkpoint.OperatorSnapshot {
	out := make([]checkpoint.OperatorSnapshot, len(ops))
	for i, op := range ops {
		op.Subtasks = append([]checkpoint.SubtaskSnapshot(nil), op.Subtasks...)
		for j := range op.Subtasks {
			st := &op.Subtasks[j]
			st.Keyed, st.Operator = cloneHandle(st.Keyed), cloneHandle(st.Operator)
		}
		out[i] = op
	}
	return out
}

func cloneHandle(h *checkpoint.Handle) *checkpoint.Handle {
	if h == nil {
		return nil
	}
	c := *h
	c.Files = append([]checkpoint.FileRef(nil), h.Files...)
	return &c
}

// Adopt implements Storage.
//
// Its files are placed as follows: a private file of md (and every file of
// a savepoint) is copied to the same place under chk-<newID>; a shared
// file of this storage is referenced where it is; a shared file of another
// storage is copied into this storage's shared/ under its name (names are
// unique per instance), or referenced if this storage already holds it
// with the same size and checksum. Every copy is verified against its
// FileRef as it is read. The committed marker, then _metadata, are
// written last, so a crash leaves at most an incomplete chk-<newID> that
// the next completion sweeps away.
func (s *dirStorage) Adopt(ctx context.Context, md *checkpoint.Metadata, newID int64) (*checkpoint.Metadata, error) {
	if md == nil {
		return nil, fmt.Errorf("storage %s: adopt: nil metadata", s.root)
	}
	if err := s.readOnly(fmt.Sprintf("adopt %s as checkpoint %d", md.Path, newID)); err != nil {
		return nil, err
	}
	fail := func(err error) (*checkpoint.Metadata, error) {
		return nil, fmt.Errorf("storage %s: adopt %s as checkpoint %d: %w", s.root, md.Path, newID, err)
	}
	if md.Path == "" || !filepath.IsAbs(md.Path) {
		return fail(errors.New("metadata without an absolute path (not returned by Load)"))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	s.completeMu.Lock()
	defer s.completeMu.Unlock()
	s.waitRemovals() // the queued removals of earlier completions first
	// Register the adoption like a checkpoint in flight: the shared files
	// it references or copies stay through a concurrent Abort, and no
	// writer joins it.
	adopting := newInflight()
	adopting.adopting = true
	uses := adopting.shared
	top, ok, err := s.reserveAbove(newID, adopting)
	if err != nil {
		return fail(err)
	}
	if !ok {
		return fail(fmt.Errorf("id %d is not above checkpoint %d, the highest in the storage", newID, top))
	}
	chkRel := chkDirName(newID)
	dir := filepath.Join(s.root, chkRel)
	out := &checkpoint.Metadata{Version: checkpoint.MetadataVersion, Job: s.job, CheckpointID: newID, Timestamp: md.Timestamp,
		Operators: cloneOperators(md.Operators), RestoredFrom: md.Path, Supersedes: md.Supersedes, WriterVersion: md.WriterVersion}

	var copiedShared []string
	done := false
	defer func() {
		s.mu.Lock()
		delete(s.pending, newID)
		if !done {
			for _, rel := range copiedShared {
				if s.refs[rel] == 0 && !s.pendingUsesLocked(rel) {
					_ = s.fs.Remove(filepath.Join(s.root, rel))
				}
			}
		}
		s.mu.Unlock()
		if !done {
			_ = s.fs.RemoveAll(dir)
		}
	}()

	sharedAbs := filepath.Join(s.root, sharedDir)
	// The directories to sync before the marker and _metadata: those the
	// copies created (in their parents) and those the copies are in. They
	// are synced after the copies' fsyncs, which commit most of them.
	var syncs []string
	err = out.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
		if r.Inline {
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return r, err
		}
		src, err := s.resolve(r.Path)
		if err != nil {
			return r, err
		}
		if r.Shared {
			rel := filepath.Join(sharedDir, filepath.Base(src))
			s.mu.Lock()
			uses[rel] = true
			held, isHeld := s.sharedRefs[rel]
			isHeld = isHeld && s.refs[rel] > 0
			s.mu.Unlock()
			if filepath.Dir(src) == sharedAbs {
				// This storage's own: reference it, once it is there.
				size, err := s.fs.size(src)
				if err != nil {
					return r, fmt.Errorf("shared file %s: %w", src, err)
				}
				if size != r.Size {
					return r, fmt.Errorf("shared file %s is %d bytes, expected %d", src, size, r.Size)
				}
				return checkpoint.FileRef{Path: rel, Size: r.Size, CRC32C: r.CRC32C, Shared: true}, nil
			}
			if isHeld {
				if held.Size != r.Size || held.CRC32C != r.CRC32C {
					return r, fmt.Errorf("shared file %s differs from %s of the same name", src, filepath.Join(s.root, rel))
				}
				return held, nil
			}
			nr, err := s.copyIn(r, rel, true)
			if err == nil {
				copiedShared = append(copiedShared, rel)
				syncs = append(syncs, sharedAbs)
			}
			return nr, err
		}
		rest, err := filepath.Rel(md.Path, src)
		if err != nil || !filepath.IsLocal(rest) || filepath.Dir(rest) == "." {
			return r, fmt.Errorf("state file %s is not inside a subdirectory of checkpoint %s", src, md.Path)
		}
		rel := filepath.Join(chkRel, rest)
		parent := filepath.Dir(filepath.Join(s.root, rel))
		parents, err := s.fs.mkdirsUnsynced(parent)
		if err != nil {
			return r, err
		}
		syncs = append(syncs, parents...)
		nr, err := s.copyIn(r, rel, false)
		if err == nil {
			syncs = append(syncs, parent)
		}
		return nr, err
	})
	if err != nil {
		return fail(err)
	}
	// The copies' entries become durable before _metadata names them.
	parents, err := s.fs.mkdirsUnsynced(dir)
	if err != nil {
		return fail(err)
	}
	if err := s.fs.syncDirs(dedupe(append(syncs, parents...))); err != nil {
		return fail(err)
	}
	if md.Committed {
		// Before _metadata: an adopted checkpoint is never seen without
		// the marker of the transactions its original already committed.
		if err := s.writeAtomic(dir, committedFile, []byte(fmt.Sprintf("committed %d (adopted from %s)\n", newID, md.Path))); err != nil {
			return fail(err)
		}
	}
	if err := s.writeMetadata(dir, out); err != nil {
		return fail(err)
	}
	done = true
	out.Path = dir
	out.Committed = md.Committed
	s.mu.Lock()
	delete(s.pending, newID)
	s.addCompletedLocked(newID, out)
	s.subsumeLocked()
	s.mu.Unlock()
	return out, nil
}

// copyIn copies the stored file r (of this storage or, by absolute path,
// another) to rel in this storage, verifying size and checksum as it
// reads, and fsyncs the copy. A shared copy is written under a temporary
// name and renamed, like a shared file a writer creates.
func (s *dirStorage) copyIn(r checkpoint.FileRef, rel string, shared bool) (checkpoint.FileRef, error) {
	in, err := s.Open(r)
	if err != nil {
		return r, err
	}
	defer in.Close()
	final := filepath.Join(s.root, rel)
	tmp := final
	if shared {
		tmp = final + tmpInfix + randomSuffix()
	}
	out, err := s.fs.create(tmp)
	if err != nil {
		return r, fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		_ = s.fs.Remove(tmp)
		return r, fmt.Errorf("copy %s to %s: %w", r.Path, final, err)
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		_ = s.fs.Remove(tmp)
		return r, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := out.Close(); err != nil {
		_ = s.fs.Remove(tmp)
		return r, fmt.Errorf("close %s: %w", tmp, err)
	}
	if tmp != final {
		if err := s.fs.Rename(tmp, final); err != nil {
			_ = s.fs.Remove(tmp)
			return r, fmt.Errorf("rename %s: %w", final, err)
		}
	}
	return checkpoint.FileRef{Path: rel, Size: r.Size, CRC32C: r.CRC32C, Shared: shared}, nil
}

func randomSuffix() string {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return hex.EncodeToString(rnd[:])
}
