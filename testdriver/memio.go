package testdriver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
)

// world is what the driver's in-memory Kafka holds: the input topic's
// partitions, the output's transactions and committed records, and what
// the running job's readers have consumed. It outlives every engine job
// of a Driver (a crash replaces the job, not the world). Every field is
// guarded by mu; wake is closed and replaced whenever something changes,
// so that waiters (readers, the driver's steps) look again.
type world struct {
	mu   sync.Mutex
	wake chan struct{}

	topic     string
	sinkTopic string
	// parts are the input partitions; seq numbers every piped record, so
	// that a reader returns its partitions' records in the order they
	// were piped.
	parts [][]*kgo.Record
	seqs  [][]int64
	seq   int64
	// pos is, per partition, the offset the current job's reader will
	// read next (-1: no reader of the current job has opened it yet).
	pos []int64
	// advances are the watermarks asked for, in order, each with the
	// partitions' lengths when it was asked: a reader reports it once it
	// has read its partitions up to there.
	advances []advance

	// gen is the engine job the driver runs (1, then one more per crash).
	gen       int
	txns      map[string]*txn
	committed []*kgo.Record
}

type advance struct {
	ts   int64
	lens []int64
}

type txnState int

const (
	txnOpen txnState = iota
	txnPrepared
	txnCommitted
	txnAborted
)

// txn is one transaction of the in-memory sink: the records a sink
// subtask wrote between two barriers.
type txn struct {
	id         string
	gen        int
	checkpoint int64 // the checkpoint whose barrier prepared it (0: open)
	state      txnState
	records    []*kgo.Record
}

func newWorld(topic, sinkTopic string, partitions int) *world {
	w := &world{wake: make(chan struct{}), topic: topic, sinkTopic: sinkTopic,
		parts: make([][]*kgo.Record, partitions), seqs: make([][]int64, partitions),
		pos: make([]int64, partitions), txns: map[string]*txn{}}
	w.resetPositions()
	return w
}

// changedLocked wakes every waiter.
func (w *world) changedLocked() {
	close(w.wake)
	w.wake = make(chan struct{})
}

func (w *world) resetPositions() {
	for p := range w.pos {
		w.pos[p] = -1
	}
}

// append adds r (already a copy) to its partition, at the next offset.
func (w *world) append(r *kgo.Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := r.Partition
	r.Topic = w.topic
	r.Offset = int64(len(w.parts[p]))
	w.parts[p] = append(w.parts[p], r)
	w.seq++
	w.seqs[p] = append(w.seqs[p], w.seq)
	w.changedLocked()
}

// consumed reports whether the current job's readers have read every
// record piped so far.
func (w *world) consumedLocked() bool {
	for p, recs := range w.parts {
		if w.pos[p] < int64(len(recs)) {
			return false
		}
	}
	return true
}

// source is the in-memory stand-in for the job's input topic.
type source struct{ w *world }

// position is a reader's checkpointed state: a partition's next offset.
type position struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

func (s source) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[*kgo.Record], error) {
	r := &reader{w: s.w}
	offsets := map[int32]int64{}
	for _, raw := range restored {
		var p position
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("testdriver: source %s: restored state %q: %w", sc.UID, raw, err)
		}
		offsets[p.Partition] = p.Offset
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	for p := range s.w.parts {
		if p%sc.Parallelism != sc.Subtask {
			continue
		}
		r.parts = append(r.parts, int32(p))
		s.w.pos[p] = offsets[int32(p)]
	}
	s.w.changedLocked()
	return r, nil
}

// reader reads the partitions p with p mod parallelism = its subtask,
// each record in the order it was piped. Its positions live in the
// world (pos), where the driver sees them.
type reader struct {
	w     *world
	parts []int32
}

var _ engine.TimestampedReader[*kgo.Record] = (*reader)(nil)
var _ engine.WatermarkReader = (*reader)(nil)

func (r *reader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	v, _, ok, err := r.NextTimestamped(ctx)
	return v, ok, err
}

// NextTimestamped returns the earliest piped record not yet read among
// the reader's partitions, waiting for one until ctx ends.
func (r *reader) NextTimestamped(ctx context.Context) (*kgo.Record, int64, bool, error) {
	for {
		r.w.mu.Lock()
		best := int32(-1)
		var bestSeq int64
		for _, p := range r.parts {
			off := r.w.pos[p]
			if off < int64(len(r.w.parts[p])) && (best < 0 || r.w.seqs[p][off] < bestSeq) {
				best, bestSeq = p, r.w.seqs[p][off]
			}
		}
		if best >= 0 {
			rec := copyRecord(r.w.parts[best][r.w.pos[best]])
			r.w.pos[best]++
			r.w.changedLocked()
			r.w.mu.Unlock()
			ts := engine.NoTimestamp
			if !rec.Timestamp.IsZero() {
				ts = rec.Timestamp.UnixMilli()
			}
			return rec, ts, true, nil
		}
		wake := r.w.wake
		r.w.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, 0, false, nil
		}
	}
}

// CurrentWatermark is the newest watermark the driver advanced to whose
// records (those piped before it) the reader has all read: it never
// overtakes a record piped before it.
func (r *reader) CurrentWatermark() (int64, bool) {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	wm := engine.NoWatermark
	for _, a := range r.w.advances {
		caughtUp := true
		for _, p := range r.parts {
			if r.w.pos[p] < a.lens[p] {
				caughtUp = false
				break
			}
		}
		if caughtUp {
			wm = max(wm, a.ts)
		}
	}
	return wm, false
}

func (r *reader) SnapshotState(int64) ([][]byte, error) {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	out := make([][]byte, 0, len(r.parts))
	for _, p := range r.parts {
		b, err := json.Marshal(position{Partition: p, Offset: r.w.pos[p]})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (r *reader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *reader) Close() error                                          { return nil }

// sink is the in-memory stand-in for the job's exactly-once Kafka sink:
// a transaction per subtask and checkpoint, prepared at the barrier and
// committed when the checkpoint completes; a restore commits the
// transactions its checkpoint holds and aborts every other one an
// earlier job left.
type sink struct{ w *world }

func (s sink) Transactional() bool { return true }

func (s sink) NewWriter(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[*kgo.Record], error) {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := map[string]bool{}
	for _, raw := range restored {
		id := string(raw)
		t, ok := w.txns[id]
		if !ok {
			return nil, fmt.Errorf("testdriver: sink %s: the restored checkpoint names transaction %s, which the driver never saw", sc.UID, id)
		}
		keep[id] = true
		if t.state == txnPrepared {
			w.commitLocked(t)
		}
	}
	// Fence what earlier jobs left: their open transactions and those
	// prepared for checkpoints that never completed.
	for _, t := range w.txns {
		if t.gen < w.gen && !keep[t.id] && (t.state == txnOpen || t.state == txnPrepared) {
			t.state = txnAborted
		}
	}
	wr := &writer{w: w, subtask: sc.Subtask, gen: w.gen}
	wr.begin()
	w.changedLocked()
	return wr, nil
}

func (w *world) commitLocked(t *txn) {
	for _, r := range t.records {
		c := copyRecord(r)
		if c.Topic == "" {
			c.Topic = w.sinkTopic
		}
		c.Offset = int64(len(w.committed))
		w.committed = append(w.committed, c)
	}
	t.state = txnCommitted
}

// writer is one sink subtask of one job.
type writer struct {
	w       *world
	subtask int
	gen     int
	n       int
	open    *txn
	pending []*txn
}

// begin opens the writer's next transaction; w.w.mu is held.
func (wr *writer) begin() {
	wr.n++
	t := &txn{id: "g" + strconv.Itoa(wr.gen) + "-s" + strconv.Itoa(wr.subtask) + "-t" + strconv.Itoa(wr.n), gen: wr.gen}
	wr.w.txns[t.id] = t
	wr.open = t
}

func (wr *writer) Write(_ context.Context, r *kgo.Record) error {
	if r == nil {
		return fmt.Errorf("testdriver: sink subtask %d: a nil record", wr.subtask)
	}
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	wr.open.records = append(wr.open.records, copyRecord(r))
	return nil
}

func (wr *writer) SnapshotState(_ context.Context, id int64) ([][]byte, error) {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	t := wr.open
	if t.state != txnOpen {
		return nil, fmt.Errorf("testdriver: sink subtask %d: transaction %s was fenced by a newer job", wr.subtask, t.id)
	}
	t.state, t.checkpoint = txnPrepared, id
	wr.pending = append(wr.pending, t)
	wr.begin()
	out := make([][]byte, len(wr.pending))
	for i, p := range wr.pending {
		out[i] = []byte(p.id)
	}
	wr.w.changedLocked()
	return out, nil
}

func (wr *writer) NotifyCheckpointComplete(_ context.Context, id int64) error {
	wr.w.mu.Lock()
	defer wr.w.mu.Unlock()
	wr.pending = slices.DeleteFunc(wr.pending, func(t *txn) bool {
		if t.checkpoint > id {
			return false
		}
		if t.state == txnPrepared {
			wr.w.commitLocked(t)
		}
		return true
	})
	wr.w.changedLocked()
	return nil
}

// NotifyCheckpointAborted keeps the checkpoint's transaction pending: the
// next checkpoint to complete commits it (its records precede that
// checkpoint's barrier too).
func (wr *writer) NotifyCheckpointAborted(context.Context, int64) error { return nil }

// Close leaves the open transaction as it is: the next job's writers
// abort it, as a crashed producer's transaction is fenced.
func (wr *writer) Close(context.Context) error { return nil }

func copyRecord(r *kgo.Record) *kgo.Record {
	c := *r
	c.Key = slices.Clone(r.Key)
	c.Value = slices.Clone(r.Value)
	c.Headers = slices.Clone(r.Headers)
	c.Context = nil
	return &c
}

// describe is a record as the driver's messages show it.
func describe(r *kgo.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q=%q", r.Topic, r.Key, r.Value)
	return b.String()
}
