package s3store

import (
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
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/objstore"
)

// ErrFenced is matched (errors.Is) by the error of a writer that found a
// manifest of a higher epoch than its own: another owner took the job over,
// and this writer must give it up. The error is a *FencedError.
var ErrFenced = errors.New("fenced by a newer owner")

// ErrNotSupported is matched by the error of a Storage method the S3
// backend does not implement yet.
var ErrNotSupported = errors.New("not supported by the S3 checkpoint storage yet")

// FencedError says which manifest fenced a writer and both epochs.
type FencedError struct {
	// Key is the object key of the manifest of the higher epoch.
	Key string
	// Epoch is the writer's own epoch; Newer the manifest's.
	Epoch, Newer int64
	// Err is the refusal of the writer's create-only put of Key (wrapping
	// objstore.ErrExists), or nil when the manifest was found by listing
	// before the put.
	Err error
}

// Error names the manifest key, both epochs and ErrFenced, followed by
// the refusal of the put when there was one.
func (e *FencedError) Error() string {
	msg := fmt.Sprintf("s3 checkpoint storage: %s carries epoch %d, newer than this writer's epoch %d: %v", e.Key, e.Newer, e.Epoch, ErrFenced)
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrFenced) hold.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// Unwrap returns the refused put's error, if any.
func (e *FencedError) Unwrap() error { return e.Err }

// Options configure a Storage.
type Options struct {
	// Prefix is the key prefix of the storage's jobs, without a trailing
	// "/" (may be empty); the job's objects live under <Prefix>/<job>/.
	Prefix string
	// Job is the job's name (required): key segments joined by /, as
	// "<job>/pg-<g>" for a partition group of a distributed job.
	Job string
	// Epoch is the writer's ownership epoch, written into every manifest
	// it publishes (required, > 0). A manifest of a higher epoch fences it.
	Epoch int64
	// Retained is how many completed checkpoints are kept; 0 means 1.
	Retained int
	// OrphanGrace is how old an object no manifest names must be before it
	// is deleted (default DefaultOrphanGrace). Completions look for such
	// objects at most once per quarter of it, the first time a quarter of
	// it after New.
	OrphanGrace time.Duration
	// Now is the clock OrphanGrace is measured with (nil: time.Now); it
	// must agree with the store's LastModified.
	Now func() time.Time
	// Logf receives problems that fail no operation (a deletion that
	// failed, a fence noticed after a publication). nil discards them.
	Logf func(format string, args ...any)
	// SpoolDir is where a file being written goes once it outgrows
	// SpoolThreshold, until Close puts it (default os.TempDir()); the
	// spool file is removed by Close or Abort.
	SpoolDir string
	// SpoolThreshold is how many bytes of a file being written are kept
	// in memory (default DefaultSpoolThreshold).
	SpoolThreshold int
	// CollectInBackground makes Complete return once the manifest is
	// published and hand the deletions the completion allows (see
	// Retention and deletion in the package doc) to a goroutine of the
	// storage, so that a completion, and the notification that follows
	// it, never waits for them. The goroutine decides and deletes the
	// subsumed manifests under the lock Complete takes, then deletes the
	// objects without it, several at a time; it ends when no completion
	// asked for more. Claim, Adopt, Sweep, DiscardAll and PruneSavepoints
	// wait for its deletions first. Off, Complete deletes before it
	// returns.
	CollectInBackground bool
}

// DefaultOrphanGrace is Options.OrphanGrace's default.
const DefaultOrphanGrace = time.Hour

// DefaultSpoolThreshold is Options.SpoolThreshold's default.
const DefaultSpoolThreshold = 4 << 20

const (
	manifestDir    = "manifest/"
	dataDir        = "data/"
	sharedDir      = "shared/"
	chkPrefix      = "chk-"
	savepointPref  = "savepoint-"
	committedSuf   = ".committed"
	manifestHeader = "onceflow-s3-manifest"
	manifestFormat = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Storage implements checkpoint.Storage over an objstore.Store. It is safe for
// concurrent use.
type Storage struct {
	st    objstore.Store
	root  string // <prefix>/<job>/
	job   string
	opts  Options
	token string

	// completeMu serializes Complete, MarkCommitted and the deletions, so
	// that the check of the ids and epochs and the publication are one step.
	completeMu sync.Mutex

	mu sync.Mutex
	// manifests caches every manifest read, by name (chk-<n>,
	// savepoint-<id>); manifests are immutable until deleted.
	manifests map[string]*manifest
	// retained are the intact checkpoints kept, by id; sharedByName maps a
	// shared file's name to a retained checkpoint's reference to it.
	retained     map[int64]*manifest
	sharedByName map[string]checkpoint.FileRef
	newest       int64
	pending      map[int64]*inflight
	aborted      map[int64]bool
	// staging holds what every unreleased Staging put (Stage), kept like
	// an in-flight checkpoint's objects; stages counts the Stage calls, to
	// give each its own shared/ prefix.
	staging map[*inflight]bool
	stages  int64
	// verified are the files read in full and found intact (verifyFiles).
	verified map[string]bool
	fenced   error

	// orphansSought is when collect last listed data/ and shared/ for
	// orphans (New's time before the first); guarded by completeMu.
	orphansSought time.Time

	// The collector goroutine (Options.CollectInBackground), guarded by
	// mu: collectWanted is set by a completion it has not served yet,
	// collecting while it runs, deleting while it deletes objects
	// without completeMu; deleted is signalled when deleting or
	// collecting ends.
	collectWanted, collecting, deleting bool
	deleted                             *sync.Cond
}

// manifest is one listed manifest.
type manifest struct {
	name      string
	id        int64
	savepoint bool
	key       string
	epoch     int64
	md        *checkpoint.Metadata // nil when damaged
	raw       []byte
	err       error // why it is damaged
	committed bool
}

// inflight is a checkpoint being written in this process.
type inflight struct {
	// written holds the keys of the objects its writers put, or tried
	// to; stored the size of each put that succeeded; reused the shared
	// paths HasShared handed out. Guarded by Storage.mu.
	written map[string]bool
	stored  map[string]int64
	reused  map[string]bool
	aborted bool
	// adopting marks the id Adopt is writing: no writer may join it.
	adopting bool
}

var _ checkpoint.Storage = (*Storage)(nil)

// New opens the checkpoints of opts.Job in st. It lists the manifests and
// rebuilds the retained checkpoints and their shared-file references from
// them.
func New(ctx context.Context, st objstore.Store, opts Options) (*Storage, error) {
	if st == nil {
		return nil, errors.New("s3 checkpoint storage: nil object store")
	}
	for _, seg := range strings.Split(opts.Job, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return nil, fmt.Errorf("s3 checkpoint storage: invalid job name %q: must be key segments joined by /, none empty, . or ..", opts.Job)
		}
	}
	if opts.Epoch <= 0 {
		return nil, fmt.Errorf("s3 checkpoint storage: job %s: epoch %d must be above 0", opts.Job, opts.Epoch)
	}
	if strings.HasSuffix(opts.Prefix, "/") || strings.HasPrefix(opts.Prefix, "/") {
		return nil, fmt.Errorf("s3 checkpoint storage: prefix %q must not start or end with /", opts.Prefix)
	}
	if opts.Retained <= 0 {
		opts.Retained = 1
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = DefaultOrphanGrace
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SpoolThreshold <= 0 {
		opts.SpoolThreshold = DefaultSpoolThreshold
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	root := opts.Job + "/"
	if opts.Prefix != "" {
		root = opts.Prefix + "/" + root
	}
	if err := objstore.ValidateKey(root + manifestDir + "x"); err != nil {
		return nil, fmt.Errorf("s3 checkpoint storage: prefix %q, job %q: %w", opts.Prefix, opts.Job, err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("s3 checkpoint storage: %w", err)
	}
	s := &Storage{
		st: st, root: root, job: opts.Job, opts: opts,
		token:     "e" + strconv.FormatInt(opts.Epoch, 10) + "-" + hex.EncodeToString(rnd[:]),
		manifests: map[string]*manifest{}, retained: map[int64]*manifest{},
		sharedByName: map[string]checkpoint.FileRef{}, pending: map[int64]*inflight{}, aborted: map[int64]bool{},
		staging: map[*inflight]bool{}, verified: map[string]bool{}, orphansSought: opts.Now(),
	}
	s.deleted = sync.NewCond(&s.mu)
	if _, err := s.refresh(ctx); err != nil {
		return nil, s.errorf("open: %w", err)
	}
	return s, nil
}

// NewestEpoch is the highest epoch among the manifests read when the
// Storage opened or last listed them (0 when there were none, or only
// corrupt ones). A process taking the job over opens its own Storage with
// an epoch above it, so that its first manifest fences this one's writer.
func (s *Storage) NewestEpoch() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var e int64
	for _, m := range s.manifests {
		e = max(e, m.epoch)
	}
	return e
}

// Root is the key prefix of the job's objects, ending in "/".
func (s *Storage) Root() string { return s.root }

// Job is the name of the job the storage was opened for (Options.Job).
func (s *Storage) Job() string { return s.job }

func (s *Storage) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func (s *Storage) errorf(format string, args ...any) error {
	return fmt.Errorf("s3 checkpoint storage %s: "+format, append([]any{s.root}, args...)...)
}

func chkName(id int64) string       { return chkPrefix + strconv.FormatInt(id, 10) }
func savepointName(id int64) string { return savepointPref + strconv.FormatInt(id, 10) }

// parseName parses chk-<n> or savepoint-<id>.
func parseName(name string) (id int64, savepoint, ok bool) {
	rest, isChk := strings.CutPrefix(name, chkPrefix)
	if !isChk {
		if rest, ok = strings.CutPrefix(name, savepointPref); !ok {
			return 0, false, false
		}
		savepoint = true
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || id < 0 || strconv.FormatInt(id, 10) != rest {
		return 0, false, false
	}
	return id, savepoint, true
}

// encodeManifest renders md with the writer's epoch.
func encodeManifest(md *checkpoint.Metadata, epoch int64) ([]byte, error) {
	body, err := json.MarshalIndent(md, "", " ")
	if err != nil {
		return nil, err
	}
	head := fmt.Sprintf("%s v%d epoch=%d crc32c=%08x len=%d\n", manifestHeader, manifestFormat, epoch, crc32.Checksum(body, castagnoli), len(body))
	return append([]byte(head), body...), nil
}

// decodeManifest returns the epoch and metadata of a manifest. A manifest
// whose header is readable but whose body is not still returns its epoch
// (epoch >= 0) with the error.
func decodeManifest(b []byte) (int64, *checkpoint.Metadata, error) {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return -1, nil, errors.New("no header line")
	}
	var version, n int
	var epoch int64
	var sum uint32
	if _, err := fmt.Sscanf(string(b[:nl]), manifestHeader+" v%d epoch=%d crc32c=%x len=%d", &version, &epoch, &sum, &n); err != nil {
		return -1, nil, fmt.Errorf("bad header %q: %w", b[:nl], err)
	}
	if version != manifestFormat {
		return -1, nil, fmt.Errorf("unsupported manifest version %d", version)
	}
	body := b[nl+1:]
	if len(body) != n {
		return epoch, nil, fmt.Errorf("body is %d bytes, header says %d (truncated?)", len(body), n)
	}
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return epoch, nil, fmt.Errorf("checksum mismatch: header %08x, body %08x", sum, got)
	}
	var md checkpoint.Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return epoch, nil, fmt.Errorf("decode: %w", err)
	}
	return epoch, &md, nil
}

// readAll gets the whole object key.
func (s *Storage) readAll(ctx context.Context, key string) ([]byte, error) {
	rc, _, err := s.st.Get(ctx, key, objstore.GetOptions{})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// readManifest reads and decodes manifest name. A missing one is an error
// wrapping objstore.ErrNotFound, and so is a read that failed: the store
// not answering is not damage (a checkpoint taken for damaged would make
// Latest fall back to an older one). A corrupt one is returned with m.err
// set (damaged).
func (s *Storage) readManifest(ctx context.Context, name string) (*manifest, error) {
	id, sp, ok := parseName(name)
	if !ok {
		return nil, s.errorf("%q names no checkpoint or savepoint (chk-<n>, savepoint-<id>)", name)
	}
	key := s.root + manifestDir + name
	m := &manifest{name: name, id: id, savepoint: sp, key: key, epoch: -1}
	b, err := s.readAll(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("checkpoint manifest %s: %w", key, err)
	}
	m.raw = b
	m.epoch, m.md, err = decodeManifest(b)
	if err == nil && m.md.CheckpointID != id {
		err = fmt.Errorf("holds checkpoint id %d", m.md.CheckpointID)
	}
	if err == nil && m.md.Savepoint != sp {
		err = fmt.Errorf("savepoint flag %t does not match its name", m.md.Savepoint)
	}
	if err != nil {
		m.md = nil
		m.err = fmt.Errorf("checkpoint manifest %s is corrupt: %w", key, err)
		return m, nil
	}
	m.md.Path = key
	return m, nil
}

// current brings the view of the manifests up to date (refresh) before
// a write: it returns the refresh's failure or, when a newer owner wrote,
// the fence.
func (s *Storage) current(ctx context.Context) error {
	fence, err := s.refresh(ctx)
	if err != nil {
		return err
	}
	return fence
}

// refresh lists manifest/, reads the manifests not cached yet, drops the
// ones gone, and recomputes the retained checkpoints and shared references.
// It applies its listing only to the cache entries it saw before listing:
// a refresh running beside a completion (a List while the job
// checkpoints) must not drop the checkpoint published after its listing.
// It returns the fence, if a manifest of a higher epoch exists (also
// recorded in s.fenced). Its errors do not name the storage (callers
// do). The caller must not hold s.mu.
func (s *Storage) refresh(ctx context.Context) (fence, err error) {
	// The cache as the listing begins: an entry put or changed since
	// (a publication, a marker, a concurrent refresh's newer listing) is
	// not this listing's to judge.
	s.mu.Lock()
	before := make(map[string]*manifest, len(s.manifests))
	for name, m := range s.manifests {
		before[name] = m
	}
	s.mu.Unlock()
	infos, err := s.st.List(ctx, s.root+manifestDir)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	names := map[string]bool{}
	committed := map[string]bool{}
	for _, in := range infos {
		name := strings.TrimPrefix(in.Key, s.root+manifestDir)
		if base, ok := strings.CutSuffix(name, committedSuf); ok {
			committed[base] = true
			continue
		}
		if _, _, ok := parseName(name); ok {
			names[name] = true
		}
	}
	s.mu.Lock()
	var toRead []string
	for name := range names {
		if m := s.manifests[name]; m == nil || m.err != nil {
			toRead = append(toRead, name)
		}
	}
	s.mu.Unlock()
	read, gone, err := s.readManifests(ctx, toRead)
	if err != nil {
		return nil, err
	}
	for _, name := range gone {
		delete(names, name) // deleted since the listing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, m := range s.manifests {
		switch {
		case before[name] != m:
		case !names[name]:
			delete(s.manifests, name)
		case m.committed != committed[name]:
			s.manifests[name] = m.withCommitted(committed[name])
		}
	}
	for name, m := range read {
		if s.manifests[name] == before[name] {
			s.manifests[name] = m.withCommitted(committed[name])
		}
	}
	s.rebuildLocked()
	return s.fenceLocked(), nil
}

// readManifests reads the manifests names, readParallelism at a time: a
// new owner opening a job reads every retained checkpoint's and
// savepoint's, and one after another they added up on the path of every
// takeover. It returns those read (damaged ones included, with their
// error set) and those gone since the listing; any other failure is
// returned, the first one met.
func (s *Storage) readManifests(ctx context.Context, names []string) (read map[string]*manifest, gone []string, err error) {
	read = make(map[string]*manifest, len(names))
	var mu sync.Mutex
	err = parallel(ctx, names, readParallelism, func(ctx context.Context, name string) error {
		m, err := s.readManifest(ctx, name)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			gone = append(gone, name)
		case err != nil:
			return err
		default:
			read[name] = m
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return read, gone, nil
}

// parallel calls fn for every item, n at a time, until the first
// failure: the calls in flight then see their context cancelled and
// finish, no other starts, and the first failure is returned (or ctx's
// error when it ended before every item was handed out).
func parallel[T any](ctx context.Context, items []T, n int, fn func(context.Context, T) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan T)
	for range min(n, len(items)) {
		wg.Go(func() {
			for it := range next {
				if err := fn(wctx, it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
	fed := 0
feed:
	for _, it := range items {
		select {
		case next <- it:
			fed++
		case <-wctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	if fed < len(items) {
		return ctx.Err()
	}
	return nil
}

// readParallelism bounds the manifest reads of one refresh.
const readParallelism = 8

// withCommitted returns a copy of m with its committed flag set to c.
// Cached manifests are never changed in place: List, Latest and the
// deletions read them without holding s.mu.
func (m *manifest) withCommitted(c bool) *manifest {
	cp := *m
	cp.committed = c
	if m.md != nil {
		md := *m.md
		md.Committed = c
		cp.md = &md
	}
	return &cp
}

// fenceLocked returns (and records) the fence of a manifest of a higher
// epoch than the writer's, or nil.
func (s *Storage) fenceLocked() error {
	if s.fenced != nil {
		return s.fenced
	}
	for _, m := range s.sortedLocked() {
		if m.epoch > s.opts.Epoch {
			s.fenced = &FencedError{Key: m.key, Epoch: s.opts.Epoch, Newer: m.epoch}
			s.logf("%v", s.fenced)
			return s.fenced
		}
	}
	return nil
}

// sortedLocked returns the cached manifests by id, then checkpoint before
// savepoint.
func (s *Storage) sortedLocked() []*manifest {
	out := make([]*manifest, 0, len(s.manifests))
	for _, m := range s.manifests {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].id != out[j].id {
			return out[i].id < out[j].id
		}
		return !out[i].savepoint && out[j].savepoint
	})
	return out
}

// rebuildLocked recomputes the retained checkpoints (the newest
// opts.Retained intact ones), the shared references HasShared answers from,
// and the newest id.
func (s *Storage) rebuildLocked() {
	s.retained = map[int64]*manifest{}
	s.sharedByName = map[string]checkpoint.FileRef{}
	all := s.sortedLocked()
	for i := len(all) - 1; i >= 0; i-- {
		m := all[i]
		s.newest = max(s.newest, m.id)
		if m.savepoint || m.md == nil || len(s.retained) >= s.opts.Retained {
			continue
		}
		s.retained[m.id] = m
		forEachRef(m.md, func(r checkpoint.FileRef) {
			if r.Shared {
				s.sharedByName[sharedBase(r.Path)] = r
			}
		})
	}
}

// sharedBase is the file name of a shared object's key.
func sharedBase(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// forEachRef calls fn with every stored (not inline) file md names.
func forEachRef(md *checkpoint.Metadata, fn func(checkpoint.FileRef)) {
	_ = md.MapFileRefs(func(r checkpoint.FileRef) (checkpoint.FileRef, error) {
		if !r.Inline {
			fn(r)
		}
		return r, nil
	})
}

func newInflight() *inflight {
	return &inflight{written: map[string]bool{}, stored: map[string]int64{}, reused: map[string]bool{}}
}

// inflightLocked returns checkpoint id's in-flight record, creating it for
// the first writer.
func (s *Storage) inflightLocked(id int64) (*inflight, error) {
	if s.fenced != nil {
		return nil, s.fenced
	}
	if inf := s.pending[id]; inf != nil {
		if inf.adopting {
			return nil, s.errorf("checkpoint %d is being adopted", id)
		}
		return inf, nil
	}
	if s.aborted[id] {
		return nil, s.errorf("checkpoint %d was aborted", id)
	}
	if id <= s.newest {
		return nil, s.errorf("checkpoint %d is not newer than checkpoint or savepoint %d", id, s.newest)
	}
	inf := newInflight()
	s.pending[id] = inf
	return inf, nil
}

// Writer implements checkpoint.Storage. It does no I/O.
func (s *Storage) Writer(checkpointID int64, operatorUID string, subtask int) (checkpoint.SnapshotWriter, error) {
	if operatorUID == "" {
		return nil, s.errorf("checkpoint %d: empty operator uid", checkpointID)
	}
	s.mu.Lock()
	inf, err := s.inflightLocked(checkpointID)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("writer for %s/%d: %w", operatorUID, subtask, err)
	}
	rel := dataDir + chkName(checkpointID) + "/" + s.token + "/op-" + url.PathEscape(operatorUID) + "/" + strconv.Itoa(subtask) + "/"
	// Shared files per checkpoint: two checkpoints in flight may both
	// write a file of the same name, and an Abort of one deletes its own.
	shared := sharedDir + s.token + "-" + strconv.FormatInt(checkpointID, 10) + "/"
	return &snapshotWriter{s: s, id: checkpointID, what: fmt.Sprintf("checkpoint %d", checkpointID), rel: rel, shared: shared, inf: inf}, nil
}

// Stage implements checkpoint.Storage. Its objects go under a shared/
// prefix of their own and are recorded in s.staging, which collect
// counts as in use, until Release.
func (s *Storage) Stage(operatorUID string, subtask int) (checkpoint.Staging, error) {
	who := operatorUID + "/" + strconv.Itoa(subtask)
	if operatorUID == "" {
		return nil, s.errorf("staging: empty operator uid")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fenced != nil {
		return nil, fmt.Errorf("staging for %s: %w", who, s.fenced)
	}
	s.stages++
	inf := newInflight()
	s.staging[inf] = true
	shared := sharedDir + s.token + "-stage" + strconv.FormatInt(s.stages, 10) + "/"
	return stagingWriter{&snapshotWriter{s: s, what: "the staging of " + who, shared: shared, inf: inf, staged: true}}, nil
}

// stagingWriter is a Staging of the S3 storage.
type stagingWriter struct{ *snapshotWriter }

// Create implements checkpoint.Staging: shared files only.
func (w stagingWriter) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	if !shared {
		return nil, w.s.errorf("%s: %q: a staged file must be shared", w.what, name)
	}
	return w.snapshotWriter.Create(name, true)
}

// Release implements checkpoint.Staging.
func (w stagingWriter) Release() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.inf.aborted = true
	delete(w.s.staging, w.inf)
}

type snapshotWriter struct {
	s  *Storage
	id int64
	// what names the writer in errors: "checkpoint <id>", or "the
	// staging of <operator>/<subtask>".
	what string
	// rel is the prefix of private files, shared that of shared ones.
	rel, shared string
	inf         *inflight
	staged      bool // a Staging's
}

func validFileName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("invalid snapshot file name %q", name)
	}
	return nil
}

// Create implements checkpoint.SnapshotWriter. The file is buffered in memory
// and put, create-only, by Close.
func (w *snapshotWriter) Create(name string, shared bool) (checkpoint.FileWriter, error) {
	if err := validFileName(name); err != nil {
		return nil, w.s.errorf("%s: %v", w.what, err)
	}
	rel := w.rel + name
	if shared {
		rel = w.shared + name
	}
	if err := objstore.ValidateKey(w.s.root + rel); err != nil {
		return nil, w.s.errorf("%s: %v", w.what, err)
	}
	w.s.mu.Lock()
	aborted := w.inf.aborted
	w.s.mu.Unlock()
	if aborted {
		return nil, w.s.errorf("create %s: %s", rel, w.goneReason())
	}
	return &fileWriter{w: w, ref: checkpoint.FileRef{Path: rel, Shared: shared}, crc: crc32.New(castagnoli)}, nil
}

// goneReason says why the writer's files are no longer wanted.
func (w *snapshotWriter) goneReason() string {
	if w.staged {
		return w.what + " was released"
	}
	return w.what + " was aborted"
}

// HasShared implements checkpoint.SnapshotWriter: a shared file of that name a
// retained checkpoint names.
func (w *snapshotWriter) HasShared(name string) (checkpoint.FileRef, bool) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	r, ok := w.s.sharedByName[name]
	if ok {
		w.inf.reused[r.Path] = true
	}
	return r, ok
}

type fileWriter struct {
	w   *snapshotWriter
	ref checkpoint.FileRef
	buf bytes.Buffer
	// spool holds the file once it outgrew Options.SpoolThreshold.
	spool *os.File
	size  int64
	crc   hash.Hash32
	err   error
	done  bool
}

func (f *fileWriter) Write(p []byte) (int, error) {
	if f.done {
		return 0, f.w.s.errorf("write %s: closed", f.ref.Path)
	}
	if f.err != nil {
		return 0, f.err
	}
	if f.spool == nil && f.buf.Len()+len(p) > f.w.s.opts.SpoolThreshold {
		sp, err := os.CreateTemp(f.w.s.opts.SpoolDir, "onceflow-s3-spool-*")
		if err == nil {
			_, err = sp.Write(f.buf.Bytes())
			if err != nil {
				sp.Close()
				os.Remove(sp.Name())
			}
		}
		if err != nil {
			f.err = f.w.s.errorf("write %s: spooling to %s: %w", f.ref.Path, f.w.s.opts.SpoolDir, err)
			return 0, f.err
		}
		f.spool = sp
		f.buf = bytes.Buffer{}
	}
	var n int
	var err error
	if f.spool != nil {
		n, err = f.spool.Write(p)
	} else {
		n, err = f.buf.Write(p)
	}
	f.crc.Write(p[:n])
	f.size += int64(n)
	if err != nil {
		f.err = f.w.s.errorf("write %s: %w", f.ref.Path, err)
		return n, f.err
	}
	return n, nil
}

// body returns what Close puts.
func (f *fileWriter) body() (io.ReadSeeker, error) {
	if f.spool == nil {
		return bytes.NewReader(f.buf.Bytes()), nil
	}
	if _, err := f.spool.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.spool, nil
}

// release drops the buffer and removes the spool file.
func (f *fileWriter) release() {
	f.buf = bytes.Buffer{}
	if f.spool != nil {
		f.spool.Close()
		os.Remove(f.spool.Name())
		f.spool = nil
	}
}

// Close implements checkpoint.FileWriter: it puts the file create-only and
// returns its reference, or fails when the checkpoint was aborted (the
// object is then deleted).
func (f *fileWriter) Close() (checkpoint.FileRef, error) {
	s := f.w.s
	if f.done {
		return checkpoint.FileRef{}, s.errorf("%s closed twice", f.ref.Path)
	}
	f.done = true
	defer f.release()
	if f.err != nil {
		return checkpoint.FileRef{}, f.err
	}
	key := s.root + f.ref.Path
	data, err := f.body()
	if err != nil {
		return checkpoint.FileRef{}, s.errorf("put %s: %w", key, err)
	}
	s.mu.Lock()
	aborted := f.w.inf.aborted
	s.mu.Unlock()
	if aborted {
		return checkpoint.FileRef{}, s.errorf("put %s: %s", key, f.w.goneReason())
	}
	// A failed put may have been applied (a lost response): recorded
	// before, so that Abort deletes it either way.
	s.mu.Lock()
	f.w.inf.written[key] = true
	s.mu.Unlock()
	if _, err := s.st.Put(context.Background(), key, data, objstore.PutOptions{IfNoneMatch: true}); err != nil {
		return checkpoint.FileRef{}, fmt.Errorf("%s: %w", f.w.what, err)
	}
	s.mu.Lock()
	aborted = f.w.inf.aborted
	s.mu.Unlock()
	if aborted {
		if err := s.st.Delete(context.Background(), key); err != nil {
			s.logf("s3 checkpoint storage: delete %s (%s): %v", key, f.w.goneReason(), err)
		}
		return checkpoint.FileRef{}, s.errorf("put %s: %s; the object is deleted", key, f.w.goneReason())
	}
	s.mu.Lock()
	f.w.inf.stored[key] = f.size
	s.mu.Unlock()
	f.ref.Size = f.size
	f.ref.CRC32C = f.crc.Sum32()
	return f.ref, nil
}

// Abort implements checkpoint.FileWriter: nothing was put yet; the buffer and
// the spool file go.
func (f *fileWriter) Abort() {
	f.done = true
	f.release()
}
