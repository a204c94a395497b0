package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
)

// SourceOptions configure a Source.
type SourceOptions[T any] struct {
	// Reader configures the Reader of every subtask: cluster, topics,
	// start position, consumer group, isolation, partition discovery, the
	// outage tracker (nil: one the Source makes and its readers share).
	Reader ReaderOptions
	// Decode turns a record into the job's input (required).
	Decode Decoder[T]
	// OnDecodeError is what happens to a record Decode refuses (default
	// DecodeFail).
	OnDecodeError OnDecodeError
	// DeadLetterTopic receives refused records under DecodeDeadLetter.
	DeadLetterTopic string
	// LagInterval is the least time between two refreshes of a subtask's
	// consumer lag (default DefaultLagInterval, 5s; negative: lag stays
	// unknown). A refresh
	// lists the partitions' end offsets from a goroutine of the subtask's
	// reader, off the record path. A failed refresh leaves the lag unknown
	// and is logged at debug level only (an outage is reported by the
	// tracker); a good one ends an outage.
	LagInterval time.Duration
	// Timestamp returns a record's event time, given the record and its
	// decoded value (nil: the Kafka record's timestamp, CreateTime or
	// LogAppendTime as the topic says). A failure is handled as a record
	// that cannot be decoded, under OnDecodeError (the DecodeError names
	// the record's topic, partition and offset).
	Timestamp func(r *kgo.Record, v T) (time.Time, error)
	// MaxOutOfOrderness is how far behind the newest record of its
	// partition a record may come without being late: each partition's
	// watermark is its highest timestamp minus MaxOutOfOrderness minus 1
	// ms (Flink's bounded out-of-orderness), and a subtask's is the
	// minimum over its partitions. Rounded down to milliseconds; 0 for
	// partitions in timestamp order.
	MaxOutOfOrderness time.Duration
	// IdleTimeout leaves a partition out of its subtask's watermark once
	// it has produced nothing for that long and has been read to the end
	// of its log, until it produces again, so that a silent partition
	// does not stall event time for the whole job. Records it brings
	// after that may be late. A partition with records not fetched yet is
	// behind, not idle: the end is listed (the subtask's listing
	// goroutine, as for LagInterval) after the timeout ran out, and the
	// partition counts until the listing shows it at its end (see
	// partitionWatermarks). 0: partitions never go idle, so an empty
	// partition holds the watermark back until it produces. A subtask
	// that owns no partition is idle from the start whatever this says.
	// Measured on ReaderOptions.Now, checked every
	// engine.Options.WatermarkInterval.
	IdleTimeout time.Duration
}

// Source is the Kafka source of a job (engine.Source): every subtask
// reads the partitions Owner assigns it through a Reader, decodes them
// under the configured policy, and stores the next offset of each of its
// partitions in every checkpoint. Its records carry event timestamps
// (SourceOptions.Timestamp), and its readers generate watermarks per
// partition (engine.WatermarkReader; see MaxOutOfOrderness and
// IdleTimeout). Watermarks are not checkpointed: after a restore each
// partition's starts again from its first record read. A completed checkpoint's offsets are
// committed to the consumer group, for lag monitoring only: a restore
// resumes at the checkpoint's offsets, never at the group's.
//
// Stats may be called from any goroutine.
type Source[T any] struct {
	opts SourceOptions[T]

	mu   sync.Mutex
	live map[*sourceReader[T]]struct{}
	// parallelism is the subtask count of the latest reader opened: the
	// lag is known only while that many readers are live.
	parallelism int
	// done holds the counters of readers already closed, so that the
	// totals never go down across job attempts.
	done SourceStats
}

// SourceStats are the counters of a Source, summed over its subtasks and
// every job attempt of the process.
type SourceStats struct {
	// RecordsRead counts every record read from Kafka, including those
	// skipped or dead-lettered. Records read again after a restore count
	// again.
	RecordsRead int64
	// DecodeSkipped counts records dropped under DecodeSkip.
	DecodeSkipped int64
	// DeadLettered counts records written to the dead-letter topic.
	DeadLettered int64
	// OffsetResets counts the jumps of positions out of their logs under
	// the earliest and latest on_offset_out_of_range policies (each one is
	// logged with what it skipped or reads again).
	OffsetResets int64
	// ConsumerLag is how many records the running subtasks have yet to
	// read (end offset, or last stable offset under read_committed, minus
	// the next offset to read, summed over partitions), as of each
	// subtask's last refresh; -1 while unknown (a subtask whose reader is
	// not open, or one that has not measured it yet). Under read_committed a transaction
	// marker at the end of a partition may count as one record.
	ConsumerLag int64
}

// NewSource checks opts (SourceOptions.Validate, which checks the
// Reader's too: every refusal names the option) and returns the source.
// Nothing connects to the cluster until a subtask's reader is created.
func NewSource[T any](opts SourceOptions[T]) (*Source[T], error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.OnDecodeError == "" {
		opts.OnDecodeError = DecodeFail
	}
	if opts.LagInterval == 0 {
		opts.LagInterval = DefaultLagInterval
	}
	if opts.Reader.Logger == nil {
		opts.Reader.Logger = slog.Default()
	}
	if opts.Reader.Outage == nil {
		// One tracker for every subtask and attempt: an outage is the
		// cluster's, not a reader's.
		tr, err := outage.NewTracker(outage.Options{Logger: opts.Reader.Logger})
		if err != nil {
			return nil, fmt.Errorf("kafka source: %w", err)
		}
		opts.Reader.Outage = tr
	}
	return &Source[T]{opts: opts, live: map[*sourceReader[T]]struct{}{}}, nil
}

// NewReader opens the reader of one subtask: its partitions positioned at
// the offsets in restored when the job was restored (scope.Restored), at
// the configured start position otherwise. See OpenReader.
func (s *Source[T]) NewReader(ctx context.Context, scope engine.Scope, restored [][]byte) (engine.SourceReader[T], error) {
	r, err := OpenReader(ctx, scope.Subtask, scope.Parallelism, s.opts.Reader, scope.Restored, restored)
	if err != nil {
		return nil, err
	}
	var dlq *kgo.Client
	if s.opts.OnDecodeError == DecodeDeadLetter {
		if dlq, err = kgo.NewClient(append(outage.ClientOpts(), s.opts.Reader.ClientOpts...)...); err != nil {
			r.Close()
			return nil, fmt.Errorf("kafka source: creating the dead-letter producer for %s: %w", s.opts.DeadLetterTopic, err)
		}
	}
	sr := &sourceReader[T]{src: s, r: r, dlq: dlq, wms: newPartitionWatermarks(s.opts.MaxOutOfOrderness, s.opts.IdleTimeout)}
	d, err := NewDecoding(r, sr.decode, s.opts.OnDecodeError, dlq, s.opts.DeadLetterTopic)
	if err != nil {
		r.Close()
		if dlq != nil {
			dlq.Close()
		}
		return nil, err
	}
	sr.d = d
	sr.lag.Store(-1)
	if s.opts.LagInterval > 0 || s.opts.IdleTimeout > 0 {
		lctx, stop := context.WithCancel(context.Background())
		sr.endsReq = make(chan endsRequest, 1)
		sr.endsStop, sr.endsDone = stop, make(chan struct{})
		go sr.listEnds(lctx) // owned by sr: Close stops and waits for it
		if s.opts.LagInterval > 0 {
			sr.requestEnds()
		}
	}
	s.mu.Lock()
	s.live[sr] = struct{}{}
	s.parallelism = scope.Parallelism
	s.mu.Unlock()
	return sr, nil
}

// Stats returns the source's counters; safe for concurrent use.
func (s *Source[T]) Stats() SourceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.done
	st.ConsumerLag = -1
	if len(s.live) > 0 && len(s.live) >= s.parallelism {
		st.ConsumerLag = 0
	}
	for r := range s.live {
		c := r.counters()
		st.RecordsRead += c.RecordsRead
		st.DecodeSkipped += c.DecodeSkipped
		st.DeadLettered += c.DeadLettered
		st.OffsetResets += c.OffsetResets
		if lag := r.lag.Load(); lag < 0 || st.ConsumerLag < 0 {
			st.ConsumerLag = -1
		} else {
			st.ConsumerLag += lag
		}
	}
	return st
}

// sourceReader is one subtask's engine.SourceReader, TimestampedReader
// and WatermarkReader. Its methods run on the subtask's goroutine; its
// counters and lag are atomics read by Stats.
type sourceReader[T any] struct {
	src *Source[T]
	r   *Reader
	d   *Decoding[T]
	dlq *kgo.Client

	// wms generates the watermarks; ts and part are the timestamp and
	// partition of the record decode accepted last (the one Next returns).
	wms  *partitionWatermarks
	ts   int64
	part Partition

	lag atomic.Int64

	// The listing goroutine (listEnds) answers endsReq with the log ends
	// in ends, for the lag and the watermark's idleness; listing is set
	// while a request waits for its answer.
	endsReq  chan endsRequest
	endsStop context.CancelFunc
	endsDone chan struct{}
	ends     atomic.Pointer[logEnds]
	listing  atomic.Bool
	lastLag  time.Time
	closed   bool
}

// endsRequest asks listEnds for the log ends, at (ReaderOptions.Now) with
// the reader's positions next.
type endsRequest struct {
	at   time.Time
	next map[Partition]int64
}

func (sr *sourceReader[T]) counters() SourceStats {
	skipped, dead := sr.d.Skipped(), sr.d.DeadLettered()
	return SourceStats{RecordsRead: sr.r.RecordsRead(), DecodeSkipped: skipped, DeadLettered: dead,
		OffsetResets: sr.r.OffsetResets()}
}

// Next returns the next decoded record; see Decoding.Next.
func (sr *sourceReader[T]) Next(ctx context.Context) (T, bool, error) {
	v, _, ok, err := sr.NextTimestamped(ctx)
	return v, ok, err
}

// NextTimestamped returns the next decoded record and its event
// timestamp (engine.TimestampedReader), which its partition's watermark
// takes in.
func (sr *sourceReader[T]) NextTimestamped(ctx context.Context) (T, int64, bool, error) {
	v, ok, err := sr.d.Next(ctx)
	if !ok {
		return v, engine.NoTimestamp, ok, err
	}
	sr.wms.record(sr.part, sr.ts)
	return v, sr.ts, ok, err
}

// decode is the Decoder of the subtask's Decoding: the configured one,
// then the record's event timestamp, kept with its partition for
// NextTimestamped. A failure of either is a decode failure.
func (sr *sourceReader[T]) decode(rec *kgo.Record) (T, error) {
	f := sr.src.opts.Timestamp
	// Read before Decode, which may reuse rec (Decoder); with a Timestamp
	// function, rec goes to it after Decode, so Decode must leave it be.
	ts, part := rec.Timestamp.UnixMilli(), Partition{Topic: rec.Topic, Partition: rec.Partition}
	v, err := sr.src.opts.Decode(rec)
	if err != nil {
		return v, err
	}
	if f != nil {
		t, err := f(rec, v)
		if err != nil {
			var zero T
			return zero, fmt.Errorf("event timestamp: %w", err)
		}
		ts = t.UnixMilli()
	}
	sr.ts = ts
	if part != sr.part { // a pointer write (and barrier) per run, not per record
		sr.part = part
	}
	return v, nil
}

// CurrentWatermark returns the subtask's watermark
// (engine.WatermarkReader): the minimum over its partitions that are not
// idle, on ReaderOptions.Now; idle when all are, or there are none.
//
// A partition silent for the idle timeout is idle only once a listing of
// its log's end, asked for after the timeout ran out, shows it read to
// that end (see partitionWatermarks); CurrentWatermark asks for one from
// the listing goroutine and does not wait for it.
func (sr *sourceReader[T]) CurrentWatermark() (int64, bool) {
	now := sr.r.opts.Now()
	pos := sr.r.positions()
	for p := range pos {
		sr.wms.assign(p, now)
	}
	wm, idle, list := sr.wms.current(now, sr.r.pending(), pos, sr.ends.Load())
	if list {
		sr.requestEnds()
	}
	return wm, idle
}

// SnapshotState returns the next offset of every partition of the
// subtask; see Reader.SnapshotState.
func (sr *sourceReader[T]) SnapshotState(checkpointID int64) ([][]byte, error) {
	entries, err := sr.r.SnapshotState(checkpointID)
	if err != nil {
		return nil, err
	}
	if sr.src.opts.LagInterval > 0 && time.Since(sr.lastLag) >= sr.src.opts.LagInterval {
		sr.lastLag = time.Now()
		sr.requestEnds()
	}
	return entries, nil
}

// NotifyCheckpointComplete commits the checkpoint's offsets to the
// consumer group, for monitoring only. A failed commit is logged by the
// Reader and not returned: the checkpoint, not the group, is the truth.
func (sr *sourceReader[T]) NotifyCheckpointComplete(ctx context.Context, checkpointID int64) error {
	sr.r.NotifyCheckpointComplete(ctx, checkpointID)
	return nil
}

// Close stops the lag goroutine, folds the counters into the Source's
// totals and closes the clients. It never fails; a second call does
// nothing.
func (sr *sourceReader[T]) Close() error {
	if sr.closed {
		return nil
	}
	sr.closed = true
	if sr.endsStop != nil {
		sr.endsStop()
		<-sr.endsDone
	}
	sr.r.publishRead() // the count of the records read last, before it is totalled
	s := sr.src
	s.mu.Lock()
	c := sr.counters()
	s.done.RecordsRead += c.RecordsRead
	s.done.DecodeSkipped += c.DecodeSkipped
	s.done.DeadLettered += c.DeadLettered
	s.done.OffsetResets += c.OffsetResets
	delete(s.live, sr)
	s.mu.Unlock()
	if sr.dlq != nil {
		sr.dlq.Close() // dead-letter writes are synchronous: nothing is buffered
	}
	sr.r.Close()
	return nil
}

// requestEnds hands the current positions to the listing goroutine,
// unless a request is still waiting for its answer.
func (sr *sourceReader[T]) requestEnds() {
	if sr.listing.Load() {
		return
	}
	sr.listing.Store(true)
	sr.endsReq <- endsRequest{at: sr.r.opts.Now(), next: maps.Clone(sr.r.positions())}
}

// listEnds answers requests until ctx ends: it lists the end offsets
// (last stable offsets under read_committed) of the source's topics,
// keeps them for the watermark (ends) and, with a LagInterval, stores the
// sum of what is left to read (lag). A failed listing keeps the last good
// one and leaves the lag unknown.
func (sr *sourceReader[T]) listEnds(ctx context.Context) {
	defer close(sr.endsDone)
	log := sr.src.opts.Reader.Logger
	for {
		var req endsRequest
		select {
		case <-ctx.Done():
			return
		case req = <-sr.endsReq:
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var ends kadm.ListedOffsets
		var err error
		topics := sr.src.opts.Reader.Topics
		if sr.src.opts.Reader.ReadUncommitted {
			ends, err = sr.r.adm.ListEndOffsets(lctx, topics...)
		} else {
			ends, err = sr.r.adm.ListCommittedOffsets(lctx, topics...)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("kafka source: listing the end offsets", "topics", topics, "err", err)
			}
			sr.lag.Store(-1)
			sr.listing.Store(false)
			continue
		}
		sr.r.tracker.Succeeded()
		listed := &logEnds{at: req.at, ends: map[Partition]int64{}}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				listed.ends[Partition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
			}
		})
		sr.ends.Store(listed)
		if sr.src.opts.LagInterval > 0 {
			sr.lag.Store(lagOf(req.next, listed.ends))
		}
		sr.listing.Store(false)
	}
}

// lagOf sums end - next over the partitions of next; -1 when an end is
// missing (not listed, or listed with an error).
func lagOf(next, ends map[Partition]int64) int64 {
	var sum int64
	for p, off := range next {
		end, ok := ends[p]
		if !ok {
			return -1
		}
		sum += max(0, end-off)
	}
	return sum
}
