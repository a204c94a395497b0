package statebackend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// The changelog of the Pebble backend (incremental checkpoints only).
//
// Why: a Pebble checkpoint is consistent only for flushed data, so without
// a changelog every checkpoint flushes the memtable into a new L0 file at
// the barrier. At 100 ms checkpoints that is ten small files a second, and
// compactions rewriting them took 40% of the CPU of a windowed job whose
// windows live a few seconds (Nexmark q5 on 2 cores): most of what they
// rewrote was already deleted. Flink's answer is the changelog state
// backend (FLIP-158); this is the same idea at the level of one database.
//
// How: every write the backend applies to Pebble is also appended to an
// in-memory log. A checkpoint then either
//   - materializes: flushes and stores a Pebble checkpoint as before (every
//     non-inline file shared, so later checkpoints can refer to it), and
//     starts a new, empty chain; or
//   - appends: cuts the log written since the last snapshot into a segment
//     (nothing when there was no write) and refers to the last completed
//     materialization plus every segment cut since it. Only the new segment
//     is written; the memtable is not flushed, so a window that opens and
//     closes between two memtable flushes never reaches a file.
//
// A checkpoint appends when the latest materialization taken is complete
// (NotifyCheckpointComplete), the chain has fewer than maxSegments
// segments and its bytes stay within the factory's ChangelogLimit;
// otherwise it materializes. Restores are therefore bounded: download the
// materialization and replay at most ChangelogLimit bytes of writes, in
// order. A segment stays in memory until a completed
// checkpoint has stored it, so that a checkpoint that failed or was
// aborted takes nothing from the chain: the next one stores what it
// lacked.
//
// Materializing beside the checkpoints. A checkpoint that materializes
// uploads every table file the last materialization did not store: after
// the compactions of a busy interval, most of the state (632 MB of a 1 GB
// word count after 1% of its keys changed), for 2 s. So, as Flink's
// periodic materialization, the chain is normally cut beside the
// checkpoints instead:
//   - when an appending checkpoint leaves the chain past half of
//     ChangelogLimit (or half of maxSegments), the backend starts a flush of the
//     memtable right after it on the owner goroutine (the cut), and in a
//     goroutine of its own waits for the flush, takes a Pebble checkpoint
//     and uploads it through a checkpoint.Staging of the storage, which
//     keeps the files though no checkpoint names them yet;
//   - the checkpoints taken meanwhile keep appending to the old chain;
//   - the first checkpoint after the upload ended adopts it: it refers to
//     the new materialization plus the segments cut after it, and the
//     segments it replaces leave the chain;
//   - once a checkpoint at or after the adopting one completed (it named
//     the files, so the storage holds references), the staging is
//     released. A failed upload is dropped and tried again at the next
//     checkpoint; a crash leaves the staged files to the storage's
//     orphan collection (staging is in memory only).
//
// The Pebble checkpoint holds every write up to the cut, and perhaps some
// after it (memtables flushed meanwhile): the flushed state is always a
// prefix of the writes, in order. That is enough, because every record of
// a segment is absolute (a set, a deletion, a range deletion; no merge):
// replaying in order the writes after the cut, on any state that holds
// every write up to the cut and a prefix of the rest, leaves each key as
// the last of those writes made it, or as the cut left it when none
// touched it. So the cut's barrier waits for no flush.
//
// Only a chain that outgrows the limit (an upload slower than the half
// left), a first checkpoint (no materialization yet), or a storage that
// cannot stage makes a checkpoint materialize itself. Why half: a restore
// replays the chain, at about 50 MB/s on 2 cores, and a chain allowed
// to grow to twice 64 MiB took the first checkpoint after a SIGKILL to
// 2.8 s.
//
// Such a checkpoint has Backend checkpoint.BackendPebbleChangelog, which a
// binary without this code refuses to restore by name instead of ignoring
// the segments (silently older state).

// maxSegments bounds the chain between two materializations: every segment
// is a FileRef in the metadata of every checkpoint of the chain. A
// materialization beside the checkpoints starts at half of it.
const maxSegments = 100

// segmentInlineLimit is the size up to which a segment is kept in the
// checkpoint metadata (checkpoint.FileRef.Inline) instead of being stored:
// lower than inlineLimit, because every checkpoint of the chain repeats it.
const segmentInlineLimit = 2 << 10

// defaultChangelogLimit is PebbleOptions.ChangelogLimit's default.
const defaultChangelogLimit = 64 << 20

// segmentMagic starts every segment: the format and its version.
var segmentMagic = []byte("OFCL\x01")

// Record kinds of a segment: [kind][uvarint len][key][uvarint len][value or
// range end] (a deletion has no second part).
const (
	clSet byte = iota + 1
	clDelete
	clDeleteRange
)

// segmentPrefix starts the local name of a stored segment
// ("<instance>-cl-<checkpoint id, 20 digits>").
const segmentPrefix = "cl-"

// changelog is the state of the backend's changelog; buf belongs to the
// owner goroutine, the rest is guarded by the backend's mu.
type changelog struct {
	limit int64
	buf   []byte // writes since the last snapshot, without the magic

	segs  []*segment // the chain since mat, oldest first
	bytes int64      // the chain's size
	mat   *materialization
	// staged is the materialization being uploaded beside the
	// checkpoints, or uploaded and adopted but not yet released; nil when
	// there is none.
	staged *stagedMat
	// What the AsyncSnapshots stored, until the checkpoint completes.
	pendingMat  map[int64][]checkpoint.FileRef
	pendingSegs map[int64]map[*segment]checkpoint.FileRef
}

// materialization is the Pebble checkpoint a chain starts from.
type materialization struct {
	id       int64
	complete bool
	files    []checkpoint.FileRef // as stored; set on completion
	// ssts and links are its stored SST files (local name -> stored) and
	// its local recovery links, once known: every checkpoint appending
	// on it records them as its own (b.pending, b.localPending), so that
	// whichever of them completes makes them the base, even when the
	// checkpoint that materialized or adopted it was aborted or its
	// notification lost.
	ssts  map[string]checkpoint.FileRef
	links map[string]bool
}

// stagedMat is a materialization uploaded beside the checkpoints: the
// Pebble checkpoint cut right after checkpoint id appended, so that it
// holds the chain's first covers segments (and perhaps later writes, see
// above). Its fields past ended are guarded by the backend's mu.
type stagedMat struct {
	id      int64
	covers  int
	local   string // the Pebble checkpoint's directory
	staging checkpoint.Staging
	cancel  context.CancelFunc
	ended   chan struct{} // closed when the upload ended (tests wait on it)

	done      bool // the upload ended
	err       error
	files     []checkpoint.FileRef          // the handle's files
	ssts      map[string]checkpoint.FileRef // local SST name -> stored
	links     map[string]bool               // local recovery's
	adoptedBy int64                         // the first checkpoint referring to it; 0 before
	dropped   bool                          // not wanted: release once the upload ends
}

// segment is the writes of one checkpoint interval.
type segment struct {
	id   int64
	data []byte              // until a completed checkpoint stored it
	ref  *checkpoint.FileRef // once one did
}

func newChangelog(limit int64) *changelog {
	return &changelog{limit: limit, pendingMat: map[int64][]checkpoint.FileRef{},
		pendingSegs: map[int64]map[*segment]checkpoint.FileRef{}}
}

func (c *changelog) record(kind byte, k, v []byte) {
	c.buf = append(c.buf, kind)
	c.buf = binary.AppendUvarint(c.buf, uint64(len(k)))
	c.buf = append(c.buf, k...)
	if kind != clDelete {
		c.buf = binary.AppendUvarint(c.buf, uint64(len(v)))
		c.buf = append(c.buf, v...)
	}
}

// entryKind is the record kind of a write (false) or a deletion (true).
func entryKind(del bool) byte {
	if del {
		return clDelete
	}
	return clSet
}

// dbWrite applies one write to the database (kind clSet, clDelete, or
// clDeleteRange with v the range's end) and records it in the changelog;
// every write of the backend outside flushDirty and the timer batch goes
// through it.
func (b *pebbleBackend) dbWrite(kind byte, k, v []byte) error {
	var err error
	switch kind {
	case clSet:
		err = b.db.Set(k, v, pebble.NoSync)
	case clDelete:
		err = b.db.Delete(k, pebble.NoSync)
	default:
		err = b.db.DeleteRange(k, v, pebble.NoSync)
	}
	if err == nil && b.cl != nil {
		b.cl.record(kind, k, v)
	}
	return err
}

// appendSnapshot is the changelog's side of Snapshot, on the owner
// goroutine after flushDirty: it reports whether this checkpoint appends
// (then it returns its AsyncSnapshot, having adopted a staged
// materialization whose upload ended, and started the next one when the
// chain is long enough) or materializes (then the chain has been reset to
// start from it).
func (b *pebbleBackend) appendSnapshot(id int64, w checkpoint.SnapshotWriter) (async func(context.Context) (*checkpoint.Handle, error), appends bool) {
	c := b.cl
	b.mu.Lock()
	b.adoptStagedLocked(id)
	if c.mat == nil || !c.mat.complete || len(c.segs) >= maxSegments || c.bytes+int64(len(c.buf)) > c.limit {
		c.buf = c.buf[:0]
		c.segs, c.bytes = nil, 0
		c.mat = &materialization{id: id}
		if s := c.staged; s != nil && s.adoptedBy == 0 {
			b.dropStagedLocked(s)
		}
		b.mu.Unlock()
		return nil, false
	}
	if len(c.buf) > 0 {
		seg := &segment{id: id, data: append(slices.Clip(segmentMagic), c.buf...)}
		c.segs = append(c.segs, seg)
		c.bytes += int64(len(seg.data))
		c.buf = c.buf[:0]
	}
	// The checkpoint refers to the materialization's files (see
	// materialization.ssts).
	if c.mat.ssts != nil {
		b.pending[id] = c.mat.ssts
	}
	if b.localPending != nil && c.mat.links != nil {
		b.localPending[id] = c.mat.links
	}
	segs := slices.Clone(c.segs)
	base := c.mat.files
	states := b.metas()
	cut := c.staged == nil && b.opts.Storage != nil && (c.bytes > c.limit/2 || len(c.segs) >= maxSegments/2)
	b.mu.Unlock()
	if cut {
		b.stageMaterialization(id, len(segs))
	}
	return func(ctx context.Context) (*checkpoint.Handle, error) {
		if err := b.enter(); err != nil {
			return nil, fmt.Errorf("checkpoint %d: %w", id, err)
		}
		defer b.running.Done()
		refs, err := b.storeSegments(ctx, segs, w)
		if err != nil {
			b.mu.Lock()
			if c.mat != nil && c.mat.complete && errors.Is(err, errSegmentGone) {
				c.mat.complete = false // the next checkpoint materializes
			}
			b.mu.Unlock()
			return nil, fmt.Errorf("checkpoint %d of %s/%d: %w", id, b.opts.OperatorUID, b.opts.Subtask, err)
		}
		files := slices.Concat(base, refs)
		b.mu.Lock()
		stored := make(map[*segment]checkpoint.FileRef, len(segs))
		for i, s := range segs {
			stored[s] = refs[i]
		}
		c.pendingSegs[id] = stored
		b.mu.Unlock()
		return &checkpoint.Handle{Backend: checkpoint.BackendPebbleChangelog, KeyGroups: b.opts.KeyGroups, States: states, Files: files}, nil
	}, true
}

// stageMaterialization cuts the chain after checkpoint id appended (its
// first covers segments): it starts a memtable flush on the owner
// goroutine, and a goroutine of its own waits for it, takes the Pebble
// checkpoint and uploads it (see the top of this file). A failure is
// logged: the chain goes on, and the next checkpoint adopts nothing.
func (b *pebbleBackend) stageMaterialization(id int64, covers int) {
	logf := b.f.opts.Logger.Errorf
	staging, err := b.opts.Storage.Stage(b.opts.OperatorUID, b.opts.Subtask)
	if err != nil {
		logf("pebble backend %s/%d: materialization after checkpoint %d not started: %v", b.opts.OperatorUID, b.opts.Subtask, id, err)
		return
	}
	flushed, err := b.db.AsyncFlush()
	if err != nil {
		staging.Release()
		logf("pebble backend %s/%d: materialization after checkpoint %d: flush: %v", b.opts.OperatorUID, b.opts.Subtask, id, err)
		return
	}
	if err := b.enter(); err != nil { // closed meanwhile
		staging.Release()
		return
	}
	local := b.fs.PathJoin(b.dir, "mat-"+strconv.FormatInt(id, 10))
	ctx, cancel := context.WithCancel(b.bgCtx)
	s := &stagedMat{id: id, covers: covers, local: local, staging: staging, cancel: cancel, ended: make(chan struct{})}
	b.mu.Lock()
	b.cl.staged = s
	b.mu.Unlock()
	go func() { // owned by the backend: Close cancels it and waits (running)
		defer b.running.Done()
		defer close(s.ended)
		defer cancel()
		h, ssts, links, err := b.materializeStaged(ctx, s, flushed)
		b.mu.Lock()
		defer b.mu.Unlock()
		s.done, s.err = true, err
		if err == nil {
			s.files, s.ssts, s.links = h.Files, ssts, links
		}
		if s.dropped {
			staging.Release()
		}
	}()
}

// materializeStaged is the goroutine's part of stageMaterialization: once
// the flush ended, the Pebble checkpoint into s.local, its upload through
// s.staging, and the local recovery links.
func (b *pebbleBackend) materializeStaged(ctx context.Context, s *stagedMat, flushed <-chan struct{}) (*checkpoint.Handle, map[string]checkpoint.FileRef, map[string]bool, error) {
	select {
	case <-flushed:
	case <-ctx.Done():
		return nil, nil, nil, ctx.Err()
	}
	_ = b.fs.RemoveAll(s.local)
	defer b.fs.RemoveAll(s.local)
	if err := b.db.Checkpoint(s.local); err != nil {
		return nil, nil, nil, fmt.Errorf("pebble checkpoint into %s: %w", s.local, err)
	}
	h, ssts, err := b.upload(ctx, s.id, s.local, s.staging, true, stagedUploadParallelism)
	if err != nil {
		return nil, nil, nil, err
	}
	return h, ssts, b.linkLocal(s.local, ssts), nil
}

// adoptStagedLocked makes checkpoint id adopt the staged materialization
// when its upload ended: the chain then starts from it (b.mu held). A
// failed upload is logged and dropped.
func (b *pebbleBackend) adoptStagedLocked(id int64) {
	c := b.cl
	s := c.staged
	if s == nil || !s.done || s.adoptedBy != 0 {
		return
	}
	if s.err != nil {
		b.f.opts.Logger.Errorf("pebble backend %s/%d: materialization after checkpoint %d: %v; the chain goes on", b.opts.OperatorUID, b.opts.Subtask, s.id, s.err)
		b.dropStagedLocked(s)
		return
	}
	c.mat = &materialization{id: s.id, complete: true, files: s.files, ssts: s.ssts, links: s.links}
	c.segs = slices.Clone(c.segs[s.covers:])
	c.bytes = 0
	for _, seg := range c.segs {
		c.bytes += seg.size()
	}
	s.adoptedBy = id
}

// dropStagedLocked gives up a staged materialization no checkpoint
// adopted (b.mu held): its upload is cancelled, and its staging released
// once the upload ended.
func (b *pebbleBackend) dropStagedLocked(s *stagedMat) {
	b.cl.staged = nil
	if s.done {
		s.staging.Release()
		return
	}
	s.dropped = true
	s.cancel()
}

// size is a segment's stored size.
func (s *segment) size() int64 {
	if s.ref != nil {
		return s.ref.Size
	}
	return int64(len(s.data))
}

// errSegmentGone: a segment a completed checkpoint stored is no longer in
// the storage (and its bytes are no longer in memory).
var errSegmentGone = errors.New("a changelog segment is gone from the storage")

// storeSegments returns the stored refs of segs, in order: the ref a
// completed checkpoint stored when the storage still has it, else a new
// copy of the bytes (inline when small).
func (b *pebbleBackend) storeSegments(ctx context.Context, segs []*segment, w checkpoint.SnapshotWriter) ([]checkpoint.FileRef, error) {
	refs := make([]checkpoint.FileRef, len(segs))
	for i, s := range segs {
		b.mu.Lock()
		ref, data := s.ref, s.data
		b.mu.Unlock()
		if ref != nil {
			if ref.Inline {
				refs[i] = *ref
				continue
			}
			if stored, ok := w.HasShared(localBaseName(ref.Path)); ok && stored.Size == ref.Size && stored.CRC32C == ref.CRC32C {
				refs[i] = stored
				continue
			}
			if data == nil {
				return nil, fmt.Errorf("%w: %s", errSegmentGone, ref.Path)
			}
		}
		name := segmentPrefix + fmt.Sprintf("%020d", s.id)
		if len(data) <= segmentInlineLimit {
			refs[i] = checkpoint.FileRef{Path: name, Size: int64(len(data)), CRC32C: crc32.Checksum(data, castagnoli), Inline: true, Data: data}
			continue
		}
		out, err := w.Create(b.instance+"-"+name, true)
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(out, ctxReader{ctx, bytes.NewReader(data)}); err != nil {
			out.Abort()
			return nil, fmt.Errorf("storing changelog segment %s: %w", name, err)
		}
		if refs[i], err = out.Close(); err != nil {
			return nil, fmt.Errorf("storing changelog segment %s: %w", name, err)
		}
	}
	return refs, nil
}

// continueFrom makes a backend restored directly from h (its database
// opened from h's files, h's segments replayed) go on with h's chain, so
// that its first checkpoint appends instead of materializing: the
// database holds exactly h's materialization plus its segments, as it
// did in the backend that wrote h. Only when every stored file of h is
// shared: a savepoint's own files (copies, not shared) belong to the user
// and may be removed with it, so a checkpoint must not come to refer to
// them; then the first checkpoint materializes as without this.
func (c *changelog) continueFrom(h *checkpoint.Handle) {
	for _, ref := range h.Files {
		if !ref.Inline && !ref.Shared {
			return
		}
	}
	var mat []checkpoint.FileRef
	var segs []*segment
	var n int64
	for _, ref := range h.Files {
		if h.Backend == checkpoint.BackendPebbleChangelog && isSegment(ref) {
			r := ref
			segs = append(segs, &segment{ref: &r})
			n += ref.Size
			continue
		}
		mat = append(mat, ref)
	}
	c.mat = &materialization{complete: true, files: mat}
	c.segs, c.bytes = segs, n
}

// materialized records what the AsyncSnapshot of materialization id
// stored (b.mu held).
func (c *changelog) materialized(id int64, files []checkpoint.FileRef) {
	c.pendingMat[id] = files
}

// complete is NotifyCheckpointComplete's part (b.mu held): the chain's
// materialization becomes its base (with ssts and links, the checkpoint's
// SST files and local recovery links, which the chain's checkpoints to
// come refer to), and the segments the checkpoint stored are stored for
// good (their bytes are dropped).
func (c *changelog) complete(id int64, ssts map[string]checkpoint.FileRef, links map[string]bool) {
	if files, ok := c.pendingMat[id]; ok && c.mat != nil && c.mat.id == id {
		c.mat.files, c.mat.complete = files, true
		c.mat.ssts, c.mat.links = ssts, links
	}
	if s := c.staged; s != nil && s.adoptedBy != 0 && id >= s.adoptedBy {
		// The storage holds references to the files now.
		s.staging.Release()
		c.staged = nil
	}
	for s, ref := range c.pendingSegs[id] {
		if s.ref == nil {
			r := ref
			s.ref, s.data = &r, nil
		}
	}
	for pid := range c.pendingMat {
		if pid <= id {
			delete(c.pendingMat, pid)
		}
	}
	for pid := range c.pendingSegs {
		if pid <= id {
			delete(c.pendingSegs, pid)
		}
	}
}

// aborted is NotifyCheckpointAborted's part (b.mu held).
func (c *changelog) aborted(id int64) {
	delete(c.pendingMat, id)
	delete(c.pendingSegs, id)
}

// isSegment reports whether a stored file of a handle is a changelog
// segment.
func isSegment(ref checkpoint.FileRef) bool {
	return strings.HasPrefix(localFileName(ref), segmentPrefix)
}

// materializedName is the stored name of a non-table file of the
// materialization of checkpoint id (MANIFEST, OPTIONS): shared, so that the
// chain's later checkpoints may refer to it, and unique per checkpoint,
// because Pebble reuses those names in every checkpoint directory. Its
// local name (localFileName) is name.
func (b *pebbleBackend) materializedName(id int64, name string) string {
	return b.instance + "." + strconv.FormatInt(id, 10) + "-" + name
}

// replaySegments applies the segments of a restored handle to db, in
// order.
func (b *pebbleBackend) replaySegments(ctx context.Context, db *pebble.DB, segs []checkpoint.FileRef) error {
	for _, ref := range segs {
		data := ref.Data
		if !ref.Inline {
			if b.opts.Storage == nil {
				return errors.New("no storage to read the snapshot from")
			}
			rc, err := b.opts.Storage.Open(ref)
			if err != nil {
				return err
			}
			data, err = io.ReadAll(ctxReader{ctx, rc})
			rc.Close()
			if err != nil {
				return fmt.Errorf("reading changelog segment %s: %w", ref.Path, err)
			}
		} else if crc32.Checksum(data, castagnoli) != ref.CRC32C {
			return fmt.Errorf("changelog segment %s: checksum mismatch", ref.Path)
		}
		if err := replaySegment(db, data); err != nil {
			return fmt.Errorf("changelog segment %s: %w", ref.Path, err)
		}
	}
	return nil
}

// replaySegment applies the writes of one segment to db.
func replaySegment(db *pebble.DB, data []byte) error {
	if !bytes.HasPrefix(data, segmentMagic) {
		return errors.New("not a changelog segment of a known version")
	}
	data = data[len(segmentMagic):]
	batch := db.NewBatch()
	defer func() { _ = batch.Close() }()
	field := func() ([]byte, error) {
		n, w := binary.Uvarint(data)
		if w <= 0 || uint64(len(data)-w) < n {
			return nil, errors.New("truncated record")
		}
		f := data[w : w+int(n)]
		data = data[w+int(n):]
		return f, nil
	}
	for len(data) > 0 {
		kind := data[0]
		data = data[1:]
		k, err := field()
		if err != nil {
			return err
		}
		switch kind {
		case clSet:
			v, err := field()
			if err != nil {
				return err
			}
			err = batch.Set(k, v, nil)
		case clDelete:
			err = batch.Delete(k, nil)
		case clDeleteRange:
			end, err2 := field()
			if err2 != nil {
				return err2
			}
			err = batch.DeleteRange(k, end, nil)
		default:
			return fmt.Errorf("unknown record kind %d", kind)
		}
		if err != nil {
			return err
		}
		if batch.Len() > 4<<20 {
			if err := batch.Commit(pebble.NoSync); err != nil {
				return err
			}
			batch.Reset()
		}
	}
	return batch.Commit(pebble.NoSync)
}
