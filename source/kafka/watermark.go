package kafka

import (
	"math"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// partitionWatermarks generates the watermark of one source subtask from
// the partitions it reads, as Flink's Kafka source does with a
// bounded-out-of-orderness strategy with idleness:
//
//   - A partition's watermark is the highest timestamp read from it minus
//     the bound minus 1 ms (engine.NoWatermark before its first record): a
//     record of it that comes later with a timestamp at or below that is
//     late, one within the bound of the highest is not.
//   - The subtask's watermark is the minimum over its partitions that are
//     not idle.
//   - With an idle timeout, a partition that has produced nothing for that
//     long (since its last record, or since it was assigned) and has been
//     read to the end of its log is idle, left out of the minimum until
//     it produces again. Time is measured at the calls of current: a
//     record counts as produced at the first call after it was read, so a
//     partition goes idle at most one call late, never early.
//   - Silence alone is not idleness. A partition with records fetched and
//     not read yet (pending) is producing, however long they wait behind
//     other partitions' records; and one silent for the timeout goes idle
//     only once a listing of its log's end, asked for after the timeout
//     ran out, shows the reader's position at that end (its last stable
//     offset under read_committed; the reader steps over transaction
//     markers, see Reader.Next). A partition with records in its log that
//     no fetch has brought yet (the first fetch after a restart on a busy
//     machine, a slow leader) is behind, not idle: were it left out, the
//     others would carry the watermark past its records and make them
//     late. Flink's idleness is silence alone and has that flaw on
//     backlogs. Until the listing answers, the partition counts; a
//     listing that shows it behind is asked for again every timeout.
//   - The subtask is idle when every partition is, and when it has none
//     (whatever the timeout): it then holds nobody's watermark back.
//
// The watermark it returns can go back (a partition that produces again
// after being idle, one assigned later); the engine never lets a
// subtask's watermark go back downstream. It belongs to the subtask's
// goroutine.
type partitionWatermarks struct {
	bound       int64 // ms
	idleTimeout time.Duration
	parts       map[Partition]*partitionWatermark
	// last is the partition of the last record, which the next one most
	// likely shares (a fetch brings runs of one partition).
	lastP Partition
	last  *partitionWatermark
}

type partitionWatermark struct {
	maxTS int64
	// produced says a record was read since the last call of current;
	// active is, as of those calls, when the partition last produced or
	// was assigned.
	produced bool
	active   time.Time
}

// newPartitionWatermarks returns a generator with bound (rounded down to
// milliseconds) and idleTimeout (0: partitions never go idle).
func newPartitionWatermarks(bound, idleTimeout time.Duration) *partitionWatermarks {
	return &partitionWatermarks{bound: bound.Milliseconds(), idleTimeout: idleTimeout, parts: map[Partition]*partitionWatermark{}}
}

// assign adds partition p at now, if it is new: it holds the watermark at
// engine.NoWatermark until it produces or goes idle.
func (w *partitionWatermarks) assign(p Partition, now time.Time) {
	if _, ok := w.parts[p]; !ok {
		w.parts[p] = &partitionWatermark{maxTS: engine.NoTimestamp, active: now}
	}
}

// record notes a record of p with timestamp ts (ms); an unknown p is
// assigned at the next call of current.
func (w *partitionWatermarks) record(p Partition, ts int64) {
	pw := w.last
	if pw == nil || p != w.lastP {
		if pw = w.parts[p]; pw == nil {
			pw = &partitionWatermark{maxTS: engine.NoTimestamp}
			w.parts[p] = pw
		}
		w.lastP, w.last = p, pw
	}
	pw.produced = true
	pw.maxTS = max(pw.maxTS, ts)
}

// logEnds is one listing of the ends of a subtask's partitions' logs.
type logEnds struct {
	at   time.Time           // when it was asked for (ReaderOptions.Now)
	ends map[Partition]int64 // a partition missing was not listed
}

// current returns the subtask's watermark at now, whether it is idle, and
// whether it needs a fresher listing of the log ends than ends (nil: none
// yet) to tell if a silent partition is idle. pending (nil: none) says
// which partitions have records fetched and not read yet, pos is the
// reader's position (next offset) of each of its partitions.
func (w *partitionWatermarks) current(now time.Time, pending map[Partition]bool, pos map[Partition]int64, ends *logEnds) (wm int64, idle, list bool) {
	low, active := int64(math.MaxInt64), false
	for p, pw := range w.parts {
		if pw.produced || pending[p] {
			pw.produced, pw.active = false, now
		}
		idle, ask := w.idle(p, pw, now, pos, ends)
		list = list || ask
		if idle {
			continue
		}
		active = true
		low = min(low, pw.watermark(w.bound))
	}
	if !active {
		return engine.NoWatermark, true, list
	}
	return low, false, list
}

// idle says whether partition p is idle at now, and whether telling
// needs a fresher listing of the log ends than ends.
func (w *partitionWatermarks) idle(p Partition, pw *partitionWatermark, now time.Time, pos map[Partition]int64, ends *logEnds) (idle, list bool) {
	if w.idleTimeout <= 0 {
		return false, false
	}
	silent := pw.active.Add(w.idleTimeout)
	if now.Before(silent) {
		return false, false
	}
	next, assigned := pos[p]
	switch {
	case !assigned: // not the reader's any more: silence will do
		return true, false
	case ends == nil || ends.at.Before(silent):
		return false, true
	}
	if end, ok := ends.ends[p]; ok && next >= end {
		return true, false
	}
	// Behind its log's end (or not listed): ask again every timeout.
	return false, now.Sub(ends.at) >= w.idleTimeout
}

// watermark is the partition's own: its highest timestamp minus bound
// minus 1, engine.NoWatermark before a record or where that would
// overflow.
func (pw *partitionWatermark) watermark(bound int64) int64 {
	if pw.maxTS < math.MinInt64+bound+1 {
		return engine.NoWatermark
	}
	return pw.maxTS - bound - 1
}
