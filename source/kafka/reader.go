package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StartPosition says where a job without a checkpoint starts reading.
type StartPosition string

const (
	// StartEarliest reads every partition from its log start.
	StartEarliest StartPosition = "earliest"
	// StartLatest reads only records written after the job started.
	StartLatest StartPosition = "latest"
	// StartCommitted resumes from the consumer group's committed offsets
	// (earliest where the group has none).
	StartCommitted StartPosition = "committed"
	// StartTimestamp reads from the first record at or after a time.
	StartTimestamp StartPosition = "timestamp"
)

// ReaderOptions configure the Reader of one source subtask.
type ReaderOptions struct {
	// ClientOpts connect to the cluster (seed brokers, TLS, SASL). The
	// Reader adds the consuming settings itself.
	ClientOpts []kgo.Opt
	// Topics are read in full: every partition, now and added later.
	Topics []string
	// Start applies only to a job without a checkpoint; a restored job
	// resumes at the checkpointed offsets.
	Start StartPosition
	// StartTime is used with StartTimestamp.
	StartTime time.Time
	// Group names the consumer group for StartCommitted and for committing
	// checkpointed offsets (lag monitoring only; the checkpoint, not the
	// group, decides where a restore resumes). Empty: no commits.
	Group string
	// ReadUncommitted reads records of open and aborted transactions too.
	// The default, read_committed, is what exactly-once pipelines need.
	ReadUncommitted bool
	// DiscoveryInterval is how often the topics' partition counts are
	// checked for new partitions (default 30s; negative disables).
	DiscoveryInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for discovery; nil means time.Now.
	Now func() time.Time
}

// Partition names one topic partition.
type Partition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func (p Partition) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// offsetEntry is how one partition's position is stored in a checkpoint.
type offsetEntry struct {
	Partition
	// Offset is the next offset to read.
	Offset int64 `json:"offset"`
}

// Owner returns the subtask that reads partition p of topic: partitions of
// a topic are dealt out round-robin, starting at a subtask chosen by the
// topic's name so that several small topics do not all start at subtask 0.
func Owner(topic string, partition int32, parallelism int) int {
	h := fnv.New32a()
	h.Write([]byte(topic))
	start := int(h.Sum32() % uint32(parallelism))
	return (start + int(partition)) % parallelism
}

// Reader reads the partitions one source subtask owns, by direct
// assignment: there is no group membership, so no rebalance can move a
// partition in the middle of a checkpoint. It tracks the next offset of
// every partition, which is the source's state in each checkpoint.
//
// A Reader belongs to the subtask's goroutine; none of its methods may be
// called concurrently.
type Reader struct {
	opts        ReaderOptions
	subtask     int
	parallelism int
	cl          *kgo.Client
	adm         *kadm.Client

	// next is the next offset to read of every assigned partition.
	next     map[Partition]int64
	assigned map[Partition]bool
	buf      []*kgo.Record

	lastDiscovery time.Time
	// snapshots keeps the offsets of checkpoints not yet completed, for
	// the group commit on completion.
	snapshots map[int64]map[Partition]int64
}

// OpenReader assigns the subtask its partitions and positions them: at the
// offsets in restored (the union of every subtask's entries of the
// checkpoint) when restoredJob is true, partitions missing there from
// their start (they were added after the checkpoint); at opts.Start
// otherwise.
func OpenReader(ctx context.Context, subtask, parallelism int, opts ReaderOptions, restoredJob bool, restored [][]byte) (*Reader, error) {
	if len(opts.Topics) == 0 {
		return nil, errors.New("kafka source: no topic to read")
	}
	if opts.Start == "" {
		opts.Start = StartEarliest
	}
	switch opts.Start {
	case StartEarliest, StartLatest, StartCommitted, StartTimestamp:
	default:
		return nil, fmt.Errorf("kafka source: unknown start position %q (earliest, latest, committed, timestamp)", opts.Start)
	}
	if opts.Start == StartCommitted && opts.Group == "" {
		return nil, errors.New("kafka source: start position committed needs a consumer group")
	}
	if opts.DiscoveryInterval == 0 {
		opts.DiscoveryInterval = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Reader{opts: opts, subtask: subtask, parallelism: parallelism,
		next: map[Partition]int64{}, assigned: map[Partition]bool{}, snapshots: map[int64]map[Partition]int64{}}
	checkpointed := map[Partition]int64{}
	for i, raw := range restored {
		var e offsetEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("kafka source: offset entry %d of the restored checkpoint is malformed: %w", i, err)
		}
		checkpointed[e.Partition] = e.Offset
	}
	copts := slices.Clone(opts.ClientOpts)
	if !opts.ReadUncommitted {
		copts = append(copts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: creating a client: %w", err)
	}
	r.cl, r.adm = cl, kadm.NewClient(cl)
	owned, err := r.ownedPartitions(ctx)
	if err != nil {
		cl.Close()
		return nil, err
	}
	start := map[string]map[int32]kgo.Offset{}
	var fresh []Partition
	for _, p := range owned {
		switch off, ok := checkpointed[p]; {
		case ok:
			r.setStart(start, p, kgo.NewOffset().At(off))
			r.next[p] = off
		case restoredJob:
			r.setStart(start, p, kgo.NewOffset().At(0))
			r.next[p] = 0
			opts.Logger.Info("kafka source: partition not in the checkpoint, reading it from its start", "partition", p.String())
		default:
			fresh = append(fresh, p)
		}
	}
	if err := r.freshOffsets(ctx, fresh, start); err != nil {
		cl.Close()
		return nil, err
	}
	cl.AddConsumePartitions(start)
	r.lastDiscovery = opts.Now()
	return r, nil
}

func (r *Reader) setStart(start map[string]map[int32]kgo.Offset, p Partition, o kgo.Offset) {
	if start[p.Topic] == nil {
		start[p.Topic] = map[int32]kgo.Offset{}
	}
	start[p.Topic][p.Partition] = o
	r.assigned[p] = true
}

// freshOffsets positions the partitions of a job without a checkpoint at
// exact offsets, resolved now, so that every partition has a known
// position from the first checkpoint on: a restore never re-reads records
// from before the start nor skips any after it.
func (r *Reader) freshOffsets(ctx context.Context, ps []Partition, start map[string]map[int32]kgo.Offset) error {
	if len(ps) == 0 {
		return nil
	}
	var listed kadm.ListedOffsets
	var committed kadm.OffsetResponses
	var err error
	switch r.opts.Start {
	case StartEarliest:
		listed, err = r.adm.ListStartOffsets(ctx, r.opts.Topics...)
	case StartLatest:
		if r.opts.ReadUncommitted {
			listed, err = r.adm.ListEndOffsets(ctx, r.opts.Topics...)
		} else {
			listed, err = r.adm.ListCommittedOffsets(ctx, r.opts.Topics...)
		}
	case StartTimestamp:
		listed, err = r.adm.ListOffsetsAfterMilli(ctx, r.opts.StartTime.UnixMilli(), r.opts.Topics...)
	case StartCommitted:
		committed, err = r.adm.FetchOffsets(ctx, r.opts.Group)
		if err == nil {
			listed, err = r.adm.ListStartOffsets(ctx, r.opts.Topics...)
		}
	}
	if err != nil {
		return fmt.Errorf("kafka source: resolving start position %s of %v: %w", r.opts.Start, r.opts.Topics, err)
	}
	for _, p := range ps {
		lo, ok := listed.Lookup(p.Topic, p.Partition)
		if !ok || lo.Err != nil {
			err := errors.New("no offset listed")
			if ok {
				err = lo.Err
			}
			return fmt.Errorf("kafka source: resolving start position %s of %s: %w", r.opts.Start, p, err)
		}
		off := lo.Offset
		if c, ok := committed.Lookup(p.Topic, p.Partition); ok && c.Err == nil && c.At >= 0 {
			off = c.At
		}
		r.setStart(start, p, kgo.NewOffset().At(off))
		r.next[p] = off
	}
	return nil
}

// ownedPartitions lists the partitions of the topics this subtask owns. A
// topic that does not exist is an error naming it.
func (r *Reader) ownedPartitions(ctx context.Context) ([]Partition, error) {
	details, err := r.adm.ListTopics(ctx, r.opts.Topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: listing topics %v: %w", r.opts.Topics, err)
	}
	var out []Partition
	for _, topic := range r.opts.Topics {
		d, ok := details[topic]
		if !ok || d.Err != nil {
			err := errors.New("not found")
			if ok {
				err = d.Err
			}
			return nil, fmt.Errorf("kafka source: topic %s: %w", topic, err)
		}
		for _, p := range slices.Sorted(maps.Keys(d.Partitions)) {
			if Owner(topic, p, r.parallelism) == r.subtask {
				out = append(out, Partition{Topic: topic, Partition: p})
			}
		}
	}
	return out, nil
}

// discover adds partitions created since the last look, read from their
// start. It runs on the subtask's goroutine between records, at most once
// per DiscoveryInterval. A look cut short because ctx ended (the engine
// cancels it to inject a barrier) is not an error: it is tried again at
// the next call.
func (r *Reader) discover(ctx context.Context) error {
	if r.opts.DiscoveryInterval < 0 || r.opts.Now().Sub(r.lastDiscovery) < r.opts.DiscoveryInterval {
		return nil
	}
	r.lastDiscovery = r.opts.Now()
	owned, err := r.ownedPartitions(ctx)
	if err != nil {
		if ctx.Err() != nil {
			r.lastDiscovery = time.Time{}
			return nil
		}
		return err
	}
	start := map[string]map[int32]kgo.Offset{}
	for _, p := range owned {
		if !r.assigned[p] {
			r.setStart(start, p, kgo.NewOffset().At(0))
			r.next[p] = 0
			r.opts.Logger.Info("kafka source: new partition discovered, reading it from its start", "partition", p.String())
		}
	}
	if len(start) > 0 {
		r.cl.AddConsumePartitions(start)
		// The client learns of the new partitions only from fresh metadata.
		r.cl.ForceMetadataRefresh()
	}
	return nil
}

// Next returns the next record of the subtask's partitions, or false when
// ctx ends first (a deadline lets the caller inject a barrier while no
// record arrives). The record's offset counts as read once Next returns it:
// a snapshot taken after this call resumes after it.
func (r *Reader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	for len(r.buf) == 0 {
		if err := r.discover(ctx); err != nil {
			return nil, false, err
		}
		// A poll that ctx cut short may still carry what the client had
		// buffered: its errors count as much as its records (a data loss
		// notice must surface, not vanish with the barrier).
		fs := r.cl.PollFetches(ctx)
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			if ferr == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				ferr = fmt.Errorf("kafka source: fetching %s/%d: %w", topic, p, err)
			}
		})
		if ferr != nil {
			return nil, false, ferr
		}
		fs.EachRecord(func(rec *kgo.Record) { r.buf = append(r.buf, rec) })
		if len(r.buf) == 0 && ctx.Err() != nil {
			return nil, false, nil
		}
	}
	rec := r.buf[0]
	r.buf[0] = nil
	r.buf = r.buf[1:]
	r.next[Partition{Topic: rec.Topic, Partition: rec.Partition}] = rec.Offset + 1
	return rec, true, nil
}

// SnapshotState returns the next offset of every partition the subtask
// owns, as its entries of checkpoint id.
func (r *Reader) SnapshotState(checkpointID int64) ([][]byte, error) {
	snap := maps.Clone(r.next)
	r.snapshots[checkpointID] = snap
	out := make([][]byte, 0, len(snap))
	for _, p := range slices.SortedFunc(maps.Keys(snap), func(a, b Partition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	}) {
		b, err := json.Marshal(offsetEntry{Partition: p, Offset: snap[p]})
		if err != nil {
			return nil, fmt.Errorf("kafka source: encoding the offset of %s: %w", p, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// NotifyCheckpointComplete commits the offsets of checkpoint id to the
// consumer group (when one is configured), for lag monitoring only. A
// failed commit is logged, not returned: the checkpoint holds the truth.
func (r *Reader) NotifyCheckpointComplete(ctx context.Context, checkpointID int64) {
	snap, ok := r.snapshots[checkpointID]
	for id := range r.snapshots {
		if id <= checkpointID {
			delete(r.snapshots, id)
		}
	}
	if !ok || r.opts.Group == "" || len(snap) == 0 {
		return
	}
	offs := kadm.Offsets{}
	for p, o := range snap {
		offs.AddOffset(p.Topic, p.Partition, o, -1)
	}
	resp, err := r.adm.CommitOffsets(ctx, r.opts.Group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		r.opts.Logger.Warn("kafka source: committing checkpointed offsets to the group failed (lag monitoring only)",
			"group", r.opts.Group, "checkpoint", checkpointID, "err", err)
	}
}

// NotifyCheckpointAborted forgets the offsets of an aborted checkpoint.
func (r *Reader) NotifyCheckpointAborted(checkpointID int64) { delete(r.snapshots, checkpointID) }

// Close closes the client.
func (r *Reader) Close() { r.cl.Close() }
