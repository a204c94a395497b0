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
// A checkpoint appends only when the latest materialization taken is
// complete (NotifyCheckpointComplete), the chain has fewer than
// maxSegments segments and its bytes stay within the factory's
// ChangelogLimit; otherwise it materializes. Restores are therefore
// bounded: download the materialization and replay at most
// ChangelogLimit bytes of writes, in order. A segment stays in memory
// until a completed checkpoint has stored it, so that a checkpoint that
// failed or was aborted takes nothing from the chain: the next one stores
// what it lacked.
//
// Such a checkpoint has Backend checkpoint.BackendPebbleChangelog, which a
// binary without this code refuses to restore by name instead of ignoring
// the segments (silently older state).

// maxSegments bounds the chain between two materializations: every segment
// is a FileRef in the metadata of every checkpoint of the chain.
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
	// What the AsyncSnapshots stored, until the checkpoint completes.
	pendingMat  map[int64][]checkpoint.FileRef
	pendingSegs map[int64]map[*segment]checkpoint.FileRef
}

// materialization is the Pebble checkpoint a chain starts from.
type materialization struct {
	id       int64
	complete bool
	files    []checkpoint.FileRef // as stored; set on completion
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
// (then it returns its AsyncSnapshot) or materializes (then the chain has
// been reset to start from it).
func (b *pebbleBackend) appendSnapshot(id int64, w checkpoint.SnapshotWriter) (async func(context.Context) (*checkpoint.Handle, error), appends bool) {
	c := b.cl
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.mat == nil || !c.mat.complete || len(c.segs) >= maxSegments || c.bytes+int64(len(c.buf)) > c.limit {
		c.buf = c.buf[:0]
		c.segs, c.bytes = nil, 0
		c.mat = &materialization{id: id}
		return nil, false
	}
	if len(c.buf) > 0 {
		seg := &segment{id: id, data: append(slices.Clip(segmentMagic), c.buf...)}
		c.segs = append(c.segs, seg)
		c.bytes += int64(len(seg.data))
		c.buf = c.buf[:0]
	}
	segs := slices.Clone(c.segs)
	base := c.mat.files
	states := b.metas()
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

// materialized records what the AsyncSnapshot of materialization id
// stored (b.mu held).
func (c *changelog) materialized(id int64, files []checkpoint.FileRef) {
	c.pendingMat[id] = files
}

// complete is NotifyCheckpointComplete's part (b.mu held): the chain's
// materialization becomes its base, and the segments the checkpoint stored
// are stored for good (their bytes are dropped).
func (c *changelog) complete(id int64) {
	if files, ok := c.pendingMat[id]; ok && c.mat != nil && c.mat.id == id {
		c.mat.files, c.mat.complete = files, true
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
