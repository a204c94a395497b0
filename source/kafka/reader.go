package kafka

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/fetchpool"
	"github.com/onceflow/onceflow/internal/outage"
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

// OnOffsetOutOfRange says what a Reader does with a position its
// partition's log no longer holds: a checkpointed or running offset below
// the log start (retention or DeleteRecords removed records not yet
// read), beyond the log end or past where the log diverged from what was
// read (the log was truncated below it: an unclean leader election, a
// cluster restored from a backup), or of a topic that was deleted and
// recreated since. It is the job's source.on_offset_out_of_range.
type OnOffsetOutOfRange string

const (
	// OutOfRangeFail fails the job without restart, in one error naming
	// the topic, partition, offset and the log's range (and the topic's
	// old and new ids): a restart would meet the same log. Nothing is
	// skipped and nothing read twice; the operator decides.
	OutOfRangeFail OnOffsetOutOfRange = "fail"
	// OutOfRangeEarliest resumes at the log start: nothing the log holds
	// now is skipped, at the cost of reading again what was read before
	// (duplicates downstream). The jump is logged with the range read
	// again, or skipped because it was deleted, and counted.
	OutOfRangeEarliest OnOffsetOutOfRange = "earliest"
	// OutOfRangeLatest resumes at the log end: nothing is read twice, at
	// the cost of skipping whatever the log holds (loss). The jump is
	// logged with the range skipped, and counted.
	OutOfRangeLatest OnOffsetOutOfRange = "latest"
)

// DefaultOnOffsetOutOfRange is the policy of a Reader, and of a job,
// that sets none.
const DefaultOnOffsetOutOfRange = OutOfRangeFail

// ParseOnOffsetOutOfRange checks a configured policy; the error quotes the
// value and lists the choices.
func ParseOnOffsetOutOfRange(s string) (OnOffsetOutOfRange, error) {
	switch p := OnOffsetOutOfRange(s); p {
	case OutOfRangeFail, OutOfRangeEarliest, OutOfRangeLatest:
		return p, nil
	}
	return "", fmt.Errorf("%q is not one of fail, earliest, latest", s)
}

// ReaderOptions configure the Reader of one source subtask.
type ReaderOptions struct {
	// ClientOpts connect to the cluster (seed brokers, TLS, SASL). The
	// Reader adds the consuming settings itself. Its client retries after
	// 100ms doubling to at most 1s, as Kafka's Java clients do, so it
	// fetches again within a second of a broker's return; a
	// kgo.RetryBackoffFn here replaces that.
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
	// checked for new partitions (default DefaultDiscoveryInterval, 30s;
	// negative disables). A
	// discovery that failed because the cluster was away is tried again
	// after discoveryRetry.
	DiscoveryInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for discovery; nil means time.Now.
	Now func() time.Time
	// OnOutOfRange is what happens to a position the log no longer holds
	// (empty: DefaultOnOffsetOutOfRange).
	OnOutOfRange OnOffsetOutOfRange
	// Outage is the job's cluster-outage tracker: every call to the
	// cluster rides out an outage for its tolerance (nil: a tracker of the
	// Reader's own, with outage.DefaultTolerance).
	Outage *outage.Tracker
	// PartitionGroup restricts the Reader to one partition group of the
	// topics (a distributed job's unit of ownership); the zero value reads
	// every partition.
	PartitionGroup PartitionGroup
	// CommitOffsets, when set, commits the checkpointed offsets in place
	// of the Reader's own commit to Group (which needs a group without
	// members): a distributed job commits them as the group member that
	// owns the partitions. Its failures are handled as the Reader's own.
	CommitOffsets func(ctx context.Context, offsets kadm.Offsets) error
	// PurgeInterval, when positive, deletes the records below the offsets
	// of a completed checkpoint (Kafka's DeleteRecords), at most once per
	// interval: for an internal topic only this job reads, such as a
	// distributed job's repartition topic, whose records a completed
	// checkpoint has consumed for good (a restore resumes at the latest
	// checkpoint's offsets, never below them). A failed purge is logged
	// and tried again at a later checkpoint. Zero keeps every record.
	PurgeInterval time.Duration
	// FetchMaxBytes bounds one fetch response of the Reader's client, over
	// all its partitions (kgo.FetchMaxBytes; a partition's share is
	// capped at it too). Default DefaultFetchMaxBytes. The broker still
	// returns a record batch larger than the bound whole. It bounds the
	// memory of the read: the client holds about three fetches (one
	// being read, one buffered, one on the wire), each held again
	// decompressed and as kgo.Records, which live as long as any record
	// of theirs is still in the job (in a sink's produce buffer, say).
	// A kgo.FetchMaxBytes or kgo.FetchMaxPartitionBytes in ClientOpts
	// overrides it.
	FetchMaxBytes int
	// PoolBytes, when positive, has the Reader's client fetch into memory
	// it reuses (kgo.WithPools): a record batch's kgo.Records and its
	// decompressed bytes go back to a pool of the Reader's once every
	// record of the batch was given back with kgo.Record.Recycle, and a
	// later fetch is decoded into them instead of into fresh memory. The
	// pool keeps at most PoolBytes; 0 (the default) pools nothing.
	//
	// Whoever holds a record last recycles it, once nothing reads it any
	// more, its Key, Value and Headers included: a decoder that copies
	// what it keeps, or the Kafka sink once the record is written
	// (sinkkafka recycles every record it produced). A record never
	// recycled is freed by the garbage collector, as without a pool; one
	// recycled too early is overwritten by a later fetch.
	//
	// The trade is memory for CPU: what the pool keeps is live heap, which
	// the garbage collector sizes the heap after (GOGC), so the peak grows
	// by up to about twice PoolBytes, while fetching allocates little and
	// the collector runs less. For a pool to serve most fetches it must
	// hold what the Reader has in flight at once (see FetchMaxBytes).
	PoolBytes int
}

// PartitionGroup is group Index of Count: partition p of every topic
// belongs to group p mod Count, so co-partitioned topics share groups.
// Count 0 or 1 is the one group of every partition.
type PartitionGroup struct {
	Index, Count int
}

// Contains reports whether partition p belongs to the group.
func (g PartitionGroup) Contains(p int32) bool { return g.Count <= 1 || int(p)%g.Count == g.Index }

// rank is p's position among the group's partitions (p itself for the
// group of every partition): the subtasks deal out ranks, so that the
// group's partitions spread over them.
func (g PartitionGroup) rank(p int32) int32 {
	if g.Count <= 1 {
		return p
	}
	return p / int32(g.Count)
}

// discoveryRetry is how soon a partition discovery that failed because
// the cluster was away is tried again.
const discoveryRetry = time.Second

// Partition names one topic partition.
type Partition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// String renders p as "topic/partition", as errors and logs name it.
func (p Partition) String() string { return fmt.Sprintf("%s/%d", p.Topic, p.Partition) }

// offsetEntry is how one partition's position is stored in a checkpoint.
type offsetEntry struct {
	Partition
	// Offset is the next offset to read.
	Offset int64 `json:"offset"`
	// TopicID is the id of the topic the offset is of (topicIDString), so
	// that a topic deleted and recreated under the same name is told
	// apart; empty in checkpoints written before ids were stored, and on
	// clusters without topic ids.
	TopicID string `json:"topic_id,omitempty"`
	// LeaderEpoch is the leader epoch of the last record read before
	// Offset, when known: a restore asks the partition's leader where that
	// epoch ends in its log as it is now (OffsetForLeaderEpoch, KIP-320),
	// which finds a log truncated below Offset even after new records grew
	// it past Offset again. Absent in checkpoints written before epochs
	// were stored, and after a jump.
	LeaderEpoch *int32 `json:"leader_epoch,omitempty"`
}

// topicIDString prints a topic id as Kafka does (kafka-topics.sh
// --describe): URL-safe base64 without padding.
func topicIDString(id kadm.TopicID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

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
// A cluster that is away (a broker restarting, a leader moving) is waited
// for, through the ReaderOptions.Outage tracker, instead of failing the
// job attempt: opening a reader retries its listings, a failed partition
// discovery is tried again a second later, and retriable fetch errors are
// counted; each fails only once the outage has lasted the tracker's
// tolerance; an idle reader, which kgo's fetching would never tell of an
// outage, probes the cluster when it has heard nothing for a second. The
// Kafka client itself keeps fetching through an outage.
// None of this moves a position: only a record Next returns does. Errors
// that no wait can fix (a missing topic) fail at once.
//
// Nor does the client move a position by itself: a position its log no
// longer holds (below the log start, past where the log ends or diverged
// from what was read, of a topic deleted and recreated since), found at
// the restore or while reading, is refused or jumped as
// ReaderOptions.OnOutOfRange says, never followed silently. Each snapshot
// stores, with each partition's offset, the topic's id and the leader
// epoch of the last record read, so that a restore can tell.
//
// A Reader belongs to the subtask's goroutine; none of its methods may be
// called concurrently.
type Reader struct {
	opts        ReaderOptions
	subtask     int
	parallelism int
	cl          *kgo.Client
	adm         *kadm.Client
	tracker     *outage.Tracker
	pool        *fetchpool.Pool // nil unless ReaderOptions.PoolBytes

	// next is the next offset to read of every assigned partition.
	next map[Partition]int64
	// epochs are the leader epochs of the last records read (see
	// offsetEntry.LeaderEpoch); a partition missing here has none known.
	epochs map[Partition]int32
	// unread are the restored partitions still at their checkpointed
	// offsets: nothing read from them and no jump yet. A position of
	// theirs out of the log is the checkpoint's.
	unread map[Partition]bool
	// ids are the ids of the topics as the reader found them, stored in
	// every snapshot; a topic missing here has no id (an old cluster).
	ids      map[string]kadm.TopicID
	assigned map[Partition]bool
	// buf holds the records of the last poll; Next returns buf[head]
	// next. runs are buf's runs of records of one partition (a poll
	// brings each partition's records together), for pending.
	buf  []*kgo.Record
	head int
	runs []bufRun
	// cur is the position after the last record Next returned, not yet
	// written to next, epochs and unread: Next writes it when it moves to
	// another partition, and sync before anything reads those maps, so
	// that a run of records of one partition costs no map write per
	// record.
	cur position

	lastDiscovery time.Time
	// discoveryFailing and fetchFailing are when (on the tracker's
	// clock) the discoveries, or the polls, began to fail in the ongoing
	// outage; zero while they succeed. They are the start of the call's
	// run that tracker.Failed is given: a run begun before a call gave up
	// belongs to the failed attempt, and starts no new bound.
	discoveryFailing, fetchFailing time.Time
	// snapshots keeps the offsets of checkpoints not yet completed, for
	// the group commit on completion.
	snapshots map[int64]map[Partition]int64
	// heard is when (on the tracker's clock) the reader last heard from
	// the cluster: a poll that brought records, or a probe that was
	// answered; probed is when it last probed, and probeFailing when its
	// probes began to fail in the ongoing outage (zero while answered).
	heard, probed, probeFailing time.Time
	// resets counts the jumps OnOutOfRange made.
	resets atomic.Int64
	// handed counts the records Next returned (control records are not
	// returned); sync publishes it to read, for RecordsRead on other
	// goroutines. It is published with the position, once per run of one
	// partition's records and before every poll, rather than per record:
	// an atomic add per record was a measurable part of a copy's CPU.
	handed int64
	read   atomic.Int64
	// purged is when (on opts.Now) the records below a checkpoint's
	// offsets were last deleted (PurgeInterval), and purgedTo below
	// which offset of each partition.
	purged   time.Time
	purgedTo map[Partition]int64
	// committer commits completed checkpoints' offsets to the group; nil
	// without ReaderOptions.Group and CommitOffsets. Close stops it.
	committer *groupCommitter
}

// bufRun is a run of buffered records of partition p, up to index end
// (exclusive) of Reader.buf.
type bufRun struct {
	p   Partition
	end int
}

// position is the next offset of partition p and the leader epoch of the
// record before it; set says it is still to be written (Reader.sync).
type position struct {
	p     Partition
	next  int64
	epoch int32
	set   bool
}

// sync writes the position of the last record Next returned to next,
// epochs and unread. Every reader of those maps calls it first.
func (r *Reader) sync() {
	r.publishRead()
	if !r.cur.set {
		return
	}
	p := r.cur.p
	r.next[p] = r.cur.next
	r.epochs[p] = r.cur.epoch
	delete(r.unread, p)
	r.cur.set = false
}

// positions returns the next offset of every assigned partition (the
// Reader's own map: the caller must not keep or change it).
func (r *Reader) positions() map[Partition]int64 {
	r.sync()
	return r.next
}

// OpenReader assigns the subtask its partitions and positions them: at the
// offsets in restored (the union of every subtask's entries of the
// checkpoint) when restoredJob is true, partitions missing there from
// their start (they were added after the checkpoint); at opts.Start
// otherwise. While the cluster is away it waits, up to the outage
// tolerance, and then fails with an *outage.Error.
func OpenReader(ctx context.Context, subtask, parallelism int, opts ReaderOptions, restoredJob bool, restored [][]byte) (*Reader, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Start == "" {
		opts.Start = StartEarliest
	}
	if opts.OnOutOfRange == "" {
		opts.OnOutOfRange = DefaultOnOffsetOutOfRange
	}
	if opts.DiscoveryInterval == 0 {
		opts.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if opts.FetchMaxBytes == 0 {
		opts.FetchMaxBytes = DefaultFetchMaxBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Outage == nil {
		tr, err := outage.NewTracker(outage.Options{Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("kafka source: %w", err)
		}
		opts.Outage = tr
	}
	r := &Reader{opts: opts, subtask: subtask, parallelism: parallelism, tracker: opts.Outage,
		next: map[Partition]int64{}, epochs: map[Partition]int32{}, unread: map[Partition]bool{},
		assigned: map[Partition]bool{}, snapshots: map[int64]map[Partition]int64{}}
	checkpointed := map[Partition]offsetEntry{}
	for i, raw := range restored {
		var e offsetEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("kafka source: offset entry %d of the restored checkpoint is malformed: %w", i, err)
		}
		checkpointed[e.Partition] = e
	}
	// The client never moves a position by itself: an offset out of
	// range is a fetch error (see outOfLog), which the reader turns into
	// a refusal or a logged jump.
	fetchMax := int32(opts.FetchMaxBytes) // Validate keeps it within int32
	copts := append(outage.ClientOpts(), kgo.FetchMaxBytes(fetchMax), kgo.FetchMaxPartitionBytes(fetchMax))
	copts = append(copts, opts.ClientOpts...)
	copts = append(copts, kgo.ConsumeResetOffset(kgo.NoResetOffset()), kgo.KeepControlRecords())
	if opts.PoolBytes > 0 {
		r.pool = fetchpool.New(opts.PoolBytes)
		copts = append(copts, kgo.WithPools(r.pool))
	}
	if !opts.ReadUncommitted {
		copts = append(copts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: creating a client: %w", err)
	}
	r.cl, r.adm = cl, kadm.NewClient(cl)
	var owned []Partition
	what := fmt.Sprintf("kafka source: listing topics %v", opts.Topics)
	err = r.tracker.Do(ctx, what, func(ctx context.Context) error {
		var err error
		owned, r.ids, err = r.listOwned(ctx)
		return err
	})
	if err != nil {
		cl.Close()
		return nil, opError(what, err)
	}
	start := map[string]map[int32]kgo.Offset{}
	var fresh, restoredParts []Partition
	for _, p := range owned {
		if restoredJob {
			restoredParts = append(restoredParts, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	if err := r.restoredOffsets(ctx, restoredParts, checkpointed, start); err != nil {
		cl.Close()
		return nil, err
	}
	if err := r.freshOffsets(ctx, fresh, start); err != nil {
		cl.Close()
		return nil, err
	}
	cl.AddConsumePartitions(start)
	r.lastDiscovery = opts.Now()
	r.heard = r.tracker.Now()
	switch {
	case opts.CommitOffsets != nil:
		r.committer = newGroupCommitter(opts.CommitOffsets, opts.Group, opts.Logger, r.tracker)
	case opts.Group != "":
		r.committer = newGroupCommitter(r.commitToGroup, opts.Group, opts.Logger, r.tracker)
	}
	return r, nil
}

func (r *Reader) setStart(start map[string]map[int32]kgo.Offset, p Partition, o kgo.Offset) {
	if start[p.Topic] == nil {
		start[p.Topic] = map[int32]kgo.Offset{}
	}
	start[p.Topic][p.Partition] = o
	r.assigned[p] = true
}

// restoredOffsets positions the partitions of a restored job: at their
// checkpointed offsets, checked against the logs as they are now, and
// partitions missing from the checkpoint (added since) at their log
// start. ReaderOptions.OnOutOfRange (see resolveOutOfRange) handles at once
// a checkpointed offset below the log start, one of a topic that was
// deleted and recreated since (its id differs), and one past the end of
// its leader epoch in the log as it is now (the log was truncated below
// it, whatever was written since; see epochEnds).
//
// Without a checkpointed epoch, an offset beyond the listed end is left
// to the broker: the end listed is the high watermark, which a leader
// elected a moment ago may still have below what was read (a cleanly
// elected leader holds every record read, only its watermark lags), while
// a fetch is refused only past the leader's log end. The first fetch then
// reports OFFSET_OUT_OF_RANGE, and take applies the policy to the
// checkpointed offset, naming it as such. An offset equal to the end is in
// range.
func (r *Reader) restoredOffsets(ctx context.Context, ps []Partition, checkpointed map[Partition]offsetEntry, start map[string]map[int32]kgo.Offset) error {
	if len(ps) == 0 {
		return nil
	}
	ranges, err := r.listRanges(ctx, ps)
	if err != nil {
		return err
	}
	var oors []*OffsetOutOfRangeError
	epochs := kadm.OffsetForLeaderEpochRequest{}
	for _, p := range ps {
		rg := ranges[p]
		e, ok := checkpointed[p]
		if !ok {
			r.setStart(start, p, kgo.NewOffset().At(rg.start))
			r.next[p] = rg.start
			r.opts.Logger.Info("kafka source: partition not in the checkpoint, reading it from its start", "partition", p.String(), "offset", rg.start)
			continue
		}
		oor := &OffsetOutOfRangeError{Partition: p, Offset: e.Offset, Start: rg.start, End: rg.end}
		if id, ok := r.ids[p.Topic]; ok && e.TopicID != "" && e.TopicID != topicIDString(id) {
			oor.OldTopicID, oor.NewTopicID = e.TopicID, topicIDString(id)
		}
		if oor.OldTopicID != "" || e.Offset < rg.start {
			oors = append(oors, oor)
			continue
		}
		r.setStart(start, p, kgo.NewOffset().At(e.Offset))
		r.next[p] = e.Offset
		r.unread[p] = true
		if e.LeaderEpoch != nil && *e.LeaderEpoch >= 0 {
			r.epochs[p] = *e.LeaderEpoch
			epochs.Add(p.Topic, p.Partition, *e.LeaderEpoch)
		}
	}
	ends, err := r.epochEnds(ctx, epochs)
	if err != nil {
		return err
	}
	for _, p := range slices.SortedFunc(maps.Keys(ends), comparePartitions) {
		if end := ends[p]; end < r.next[p] {
			rg := ranges[p]
			oors = append(oors, &OffsetOutOfRangeError{Partition: p, Offset: r.next[p], Start: rg.start, End: rg.end, Diverged: &end})
		}
	}
	for _, oor := range oors {
		off, err := r.resolveOutOfRange(oor)
		if err != nil {
			return err
		}
		p := oor.Partition
		r.setStart(start, p, kgo.NewOffset().At(off))
		r.next[p] = off
		delete(r.epochs, p)
		delete(r.unread, p)
	}
	return nil
}

// epochEnds asks the partitions' leaders where the leader epochs of req
// end in their logs (OffsetForLeaderEpoch), waiting out an outage: the end
// of an epoch is the first offset of the next one, or the log end for the
// current one. An answer without an end (the leader knows nothing of the
// epoch) is left out: nothing is concluded from it.
func (r *Reader) epochEnds(ctx context.Context, req kadm.OffsetForLeaderEpochRequest) (map[Partition]int64, error) {
	out := map[Partition]int64{}
	if len(req) == 0 {
		return out, nil
	}
	var resp kadm.OffsetsForLeaderEpochs
	what := fmt.Sprintf("kafka source: asking where the checkpointed leader epochs end (%d partitions)", len(req))
	err := r.tracker.Do(ctx, what, func(ctx context.Context) error {
		var err error
		if resp, err = r.adm.OffsetForLeaderEpoch(ctx, req); err != nil {
			return err
		}
		for _, ps := range resp {
			for _, o := range ps {
				if outage.Retriable(o.Err) {
					return fmt.Errorf("%s/%d: %w", o.Topic, o.Partition, o.Err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, opError(what, err)
	}
	for topic, ps := range req {
		for p := range ps {
			o, ok := resp[topic][p]
			switch {
			case !ok:
				return nil, fmt.Errorf("%s: %s/%d: no answer", what, topic, p)
			case o.Err != nil:
				return nil, fmt.Errorf("%s: %s/%d: %w", what, topic, p, o.Err)
			case o.EndOffset >= 0:
				out[Partition{Topic: topic, Partition: p}] = o.EndOffset
			}
		}
	}
	return out, nil
}

// logRange is the offsets a partition's log holds: [start, end), end
// being the high watermark.
type logRange struct{ start, end int64 }

// listRanges lists the log start and end of every partition of ps,
// waiting out an outage.
func (r *Reader) listRanges(ctx context.Context, ps []Partition) (map[Partition]logRange, error) {
	var topics []string
	for _, p := range ps {
		if !slices.Contains(topics, p.Topic) {
			topics = append(topics, p.Topic)
		}
	}
	var starts, ends kadm.ListedOffsets
	what := fmt.Sprintf("kafka source: listing the log start and end offsets of %v", topics)
	err := r.tracker.Do(ctx, what, func(ctx context.Context) error {
		var err error
		if starts, err = r.adm.ListStartOffsets(ctx, topics...); err != nil {
			return err
		}
		if ends, err = r.adm.ListEndOffsets(ctx, topics...); err != nil {
			return err
		}
		// A partition whose leader is moving is listed with a retriable
		// error: list again.
		for _, p := range ps {
			for _, l := range []kadm.ListedOffsets{starts, ends} {
				if lo, ok := l.Lookup(p.Topic, p.Partition); ok && outage.Retriable(lo.Err) {
					return fmt.Errorf("%s: %w", p, lo.Err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, opError(what, err)
	}
	out := make(map[Partition]logRange, len(ps))
	for _, p := range ps {
		var rg logRange
		for i, l := range []kadm.ListedOffsets{starts, ends} {
			lo, ok := l.Lookup(p.Topic, p.Partition)
			if !ok || lo.Err != nil {
				err := errors.New("no offset listed")
				if ok {
					err = lo.Err
				}
				return nil, fmt.Errorf("%s: %s: %w", what, p, err)
			}
			if i == 0 {
				rg.start = lo.Offset
			} else {
				rg.end = lo.Offset
			}
		}
		out[p] = rg
	}
	return out, nil
}

// OffsetOutOfRangeError is a partition's position that its log no longer
// holds, refused under OutOfRangeFail. It is non-recoverable: a restart
// would meet the same log.
type OffsetOutOfRangeError struct {
	Partition Partition
	// Offset is the position: the next offset to read, as checkpointed or
	// (Running) as reached while reading.
	Offset int64
	// Start and End are the log's range when it was checked: it holds
	// the offsets [Start, End).
	Start, End int64
	// OldTopicID and NewTopicID are set when the topic was deleted and
	// recreated since Offset was taken: the offset belongs to the old
	// topic, the range to the new one.
	OldTopicID, NewTopicID string
	// Diverged, when set, is where the log diverged from what was read,
	// below Offset: the end, in the log as it is now, of the leader epoch
	// of the last record read. The records read from there on are gone
	// (others may have taken their offsets).
	Diverged *int64
	// Running says the position fell out of the log while the reader ran
	// (Err says how the client found out), not at the restore.
	Running bool
	Err     error
}

// Error names the partition and the offset, says how the log moved away
// from it (records deleted before they were read, the log truncated below
// it, the topic recreated) with the log's current range, and that
// source.on_offset_out_of_range is fail; the client's error follows.
func (e *OffsetOutOfRangeError) Error() string {
	pos := fmt.Sprintf("the checkpointed offset %d", e.Offset)
	if e.Running {
		pos = fmt.Sprintf("offset %d (the next to read)", e.Offset)
	}
	var why string
	switch {
	case e.Diverged != nil && e.OldTopicID == "":
		why = fmt.Sprintf("%s is past where the log diverged from what was read (offset %d; the log's range is now [%d, %d)): the log was truncated below it, and records [%d, %d) counted as read are gone (others may take their offsets)",
			pos, *e.Diverged, e.Start, e.End, *e.Diverged, e.Offset)
	case e.OldTopicID != "":
		why = fmt.Sprintf("topic %s was deleted and recreated (id %s, was %s): %s belongs to the old topic; the new one holds [%d, %d)",
			e.Partition.Topic, e.NewTopicID, e.OldTopicID, pos, e.Start, e.End)
	case e.Offset < e.Start:
		why = fmt.Sprintf("%s is out of the log's range [%d, %d): records [%d, %d) were deleted before they were read",
			pos, e.Start, e.End, e.Offset, e.Start)
	case e.Offset > e.End:
		why = fmt.Sprintf("%s is out of the log's range [%d, %d): the log was truncated below it (records counted as read are gone, and others may take their offsets)",
			pos, e.Start, e.End)
	default:
		why = fmt.Sprintf("%s was refused by the broker as out of range; the log's range is now [%d, %d)", pos, e.Start, e.End)
	}
	msg := fmt.Sprintf("kafka source: %s: %s; source.on_offset_out_of_range is fail (earliest or latest would jump, and log it)", e.Partition, why)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the client's error that reported the position out of
// range, or nil when it was found out of range by comparing it with the
// log's range.
func (e *OffsetOutOfRangeError) Unwrap() error { return e.Err }

// NonRecoverable: a restart meets the same log.
func (e *OffsetOutOfRangeError) NonRecoverable() bool { return true }

// resolveOutOfRange applies OnOutOfRange to a position out of its log:
// under OutOfRangeFail it returns e; under OutOfRangeEarliest or
// OutOfRangeLatest it returns the log's start or end, logs the jump at
// Warn (the partition, the offset, the log's range, where it resumes and
// which offsets it skips, reads again, or counted as read and are gone)
// and counts it.
func (r *Reader) resolveOutOfRange(e *OffsetOutOfRangeError) (int64, error) {
	if r.opts.OnOutOfRange == OutOfRangeFail {
		return 0, e
	}
	to := e.Start
	if r.opts.OnOutOfRange == OutOfRangeLatest {
		to = e.End
	}
	span := func(a, b int64) string { return fmt.Sprintf("[%d,%d)", a, b) }
	attrs := []any{"partition", e.Partition.String(), "offset", e.Offset, "log_start", e.Start, "log_end", e.End,
		"resumed_at", to, "policy", string(r.opts.OnOutOfRange)}
	if e.OldTopicID != "" {
		attrs = append(attrs, "why", "topic recreated", "old_topic_id", e.OldTopicID, "new_topic_id", e.NewTopicID)
		if to > e.Start {
			attrs = append(attrs, "skipped", span(e.Start, to))
		}
	} else {
		// unread is the first offset of the log as it is now that was not
		// read: the position, or where the log ends or diverged below it
		// (the records read from there on are gone).
		unread := e.Offset
		if e.Diverged != nil {
			unread = min(*e.Diverged, e.End)
		} else if e.End < e.Offset {
			unread = e.End
		}
		if unread < e.Offset {
			attrs = append(attrs, "gone", span(unread, e.Offset))
		}
		if to > unread {
			attrs = append(attrs, "skipped", span(unread, to))
		} else if to < unread {
			attrs = append(attrs, "read_again", span(to, unread))
		}
	}
	if e.Running {
		attrs = append(attrs, "while_reading", true)
	}
	if e.Err != nil {
		attrs = append(attrs, "err", e.Err)
	}
	r.opts.Logger.Warn("kafka source: a position out of the log's range; jumping as source.on_offset_out_of_range says", attrs...)
	r.resets.Add(1)
	return to, nil
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
	what := fmt.Sprintf("kafka source: resolving start position %s of %v", r.opts.Start, r.opts.Topics)
	err := r.tracker.Do(ctx, what, func(ctx context.Context) error {
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
			return err
		}
		// A partition whose leader is moving is listed with a retriable
		// error: list again.
		for _, p := range ps {
			if lo, ok := listed.Lookup(p.Topic, p.Partition); ok && outage.Retriable(lo.Err) {
				return fmt.Errorf("%s: %w", p, lo.Err)
			}
		}
		return nil
	})
	if err != nil {
		return opError(what, err)
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

// opError names the call that failed, unless err is an *outage.Error,
// which does already.
func opError(what string, err error) error {
	if _, ok := errors.AsType[*outage.Error](err); ok {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// listOwned asks the cluster once for the partitions of the topics and
// returns those of the partition group this subtask owns. A topic that does not exist is an
// outage.Permanent error naming it: no wait brings it back. Other errors
// are returned as they are, for the caller to tell an outage
// (outage.Retriable) from a refusal.
func (r *Reader) listOwned(ctx context.Context) ([]Partition, map[string]kadm.TopicID, error) {
	details, err := r.adm.ListTopics(ctx, r.opts.Topics...)
	if err != nil {
		return nil, nil, err
	}
	var out []Partition
	ids := map[string]kadm.TopicID{}
	for _, topic := range r.opts.Topics {
		d, ok := details[topic]
		switch {
		case !ok:
			return nil, nil, outage.Permanent(fmt.Errorf("topic %s: not found", topic))
		case errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return nil, nil, outage.Permanent(fmt.Errorf("topic %s: %w", topic, d.Err))
		case d.Err != nil:
			return nil, nil, fmt.Errorf("topic %s: %w", topic, d.Err)
		}
		if d.ID != (kadm.TopicID{}) {
			ids[topic] = d.ID
		}
		for _, p := range slices.Sorted(maps.Keys(d.Partitions)) {
			if g := r.opts.PartitionGroup; g.Contains(p) && Owner(topic, g.rank(p), r.parallelism) == r.subtask {
				out = append(out, Partition{Topic: topic, Partition: p})
			}
		}
	}
	return out, ids, nil
}

// discover adds partitions created since the last look, read from their
// start. It runs on the subtask's goroutine between records, at most once
// per DiscoveryInterval. A look cut short because ctx ended (the engine
// cancels it to inject a barrier) is not an error: it is tried again at
// the next call. A look that failed because the cluster is away is not an
// error either while the discoveries have failed for less than the outage
// tolerance: it is tried again after discoveryRetry, one attempt per call
// so that records and barriers keep flowing meanwhile.
func (r *Reader) discover(ctx context.Context) error {
	interval := r.opts.DiscoveryInterval
	if interval < 0 {
		return nil
	}
	if !r.discoveryFailing.IsZero() {
		interval = min(interval, discoveryRetry)
	}
	if r.opts.Now().Sub(r.lastDiscovery) < interval {
		return nil
	}
	r.lastDiscovery = r.opts.Now()
	owned, ids, err := r.listOwned(ctx)
	if err != nil {
		if ctx.Err() != nil {
			r.lastDiscovery = time.Time{}
			return nil
		}
		what := fmt.Sprintf("kafka source: discovering partitions of %v", r.opts.Topics)
		if !outage.Retriable(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		r.discoveryFailing = r.failingSince(r.discoveryFailing)
		return r.tracker.Failed(what, err, r.discoveryFailing)
	}
	// No tracker.Succeeded here: the Kafka client may have answered from
	// its cached metadata, which proves nothing about the cluster.
	r.discoveryFailing = time.Time{}
	for _, topic := range r.opts.Topics {
		if err := r.checkTopicID(ctx, topic, ids); err != nil {
			return err
		}
	}
	var added []Partition
	for _, p := range owned {
		if !r.assigned[p] {
			added = append(added, p)
		}
	}
	if len(added) == 0 {
		return nil
	}
	// A new partition is read from its log start, listed so that its
	// position is exact from the first snapshot on.
	ranges, err := r.listRanges(ctx, added)
	if err != nil {
		if ctx.Err() != nil {
			r.lastDiscovery = time.Time{}
			return nil
		}
		return err
	}
	start := map[string]map[int32]kgo.Offset{}
	for _, p := range added {
		off := ranges[p].start
		r.setStart(start, p, kgo.NewOffset().At(off))
		r.next[p] = off
		r.opts.Logger.Info("kafka source: new partition discovered, reading it from its start", "partition", p.String(), "offset", off)
	}
	if len(start) > 0 {
		r.cl.AddConsumePartitions(start)
		// The client learns of the new partitions only from fresh metadata.
		r.cl.ForceMetadataRefresh()
	}
	return nil
}

// checkTopicID compares the id of topic the cluster now lists (in ids)
// with the one the reader has read: a different id is a topic deleted and
// recreated under the same name, which the client will not read on (it
// fails its fetches with UNKNOWN_TOPIC_ID). Under OutOfRangeFail that is
// an *OffsetOutOfRangeError of the topic's first assigned partition;
// otherwise an error that fails the attempt, so that the restart applies
// the policy to the checkpoint's positions, which name the old id.
func (r *Reader) checkTopicID(ctx context.Context, topic string, ids map[string]kadm.TopicID) error {
	old, had := r.ids[topic]
	cur, has := ids[topic]
	if !had || !has || old == cur {
		return nil
	}
	var first *Partition
	for _, p := range slices.SortedFunc(maps.Keys(r.next), comparePartitions) {
		if p.Topic == topic {
			first = &p
			break
		}
	}
	if r.opts.OnOutOfRange == OutOfRangeFail && first != nil {
		e := &OffsetOutOfRangeError{Partition: *first, Offset: r.next[*first], Start: -1, End: -1,
			OldTopicID: topicIDString(old), NewTopicID: topicIDString(cur), Running: !r.unread[*first]}
		if rgs, err := r.listRanges(context.WithoutCancel(ctx), []Partition{*first}); err == nil {
			e.Start, e.End = rgs[*first].start, rgs[*first].end
		}
		return e
	}
	return fmt.Errorf("kafka source: topic %s was deleted and recreated while it was read (id %s, was %s); "+
		"the restart resumes from the last checkpoint, where source.on_offset_out_of_range %s applies", topic, topicIDString(cur), topicIDString(old), r.opts.OnOutOfRange)
}

func comparePartitions(a, b Partition) int {
	if a.Topic != b.Topic {
		if a.Topic < b.Topic {
			return -1
		}
		return 1
	}
	return int(a.Partition - b.Partition)
}

// Next returns the next record of the subtask's partitions, or false when
// ctx ends first (a deadline lets the caller inject a barrier while no
// record arrives). The record's offset counts as read once Next returns it:
// a snapshot taken after this call resumes after it. A fetch error fails
// Next, naming the partition, unless it says the cluster is away; those
// fail it only once the outage has lasted the tolerance.
//
// A transaction's marker (a control record, which the client keeps for
// the Reader: kgo.KeepControlRecords) is never returned: Next moves the
// position past it and goes on. So a partition read to its end is at its
// log's end (or last stable offset), markers included, which is how the
// watermark tells a partition read to its end from one behind (see
// partitionWatermarks).
func (r *Reader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	for {
		if ok, err := r.fill(ctx); !ok {
			return nil, false, err
		}
		rec := r.buf[r.head]
		r.buf[r.head] = nil
		r.head++
		if !r.cur.set || r.cur.p.Partition != rec.Partition || r.cur.p.Topic != rec.Topic {
			// The partition (a string: a pointer the collector's write
			// barrier sees) is written once per run, not per record.
			r.sync()
			r.cur.p, r.cur.set = Partition{Topic: rec.Topic, Partition: rec.Partition}, true
		}
		r.cur.next, r.cur.epoch = rec.Offset+1, rec.LeaderEpoch
		if rec.Attrs.IsControl() {
			rec.Recycle()
			continue
		}
		r.handed++
		return rec, true, nil
	}
}

// fill polls until the buffer holds a record not read yet (true), an
// error, or ctx ends (false, nil).
func (r *Reader) fill(ctx context.Context) (bool, error) {
	for r.head >= len(r.buf) {
		r.sync()
		if err := r.discover(ctx); err != nil {
			return false, err
		}
		// A poll that ctx cut short may still carry what the client had
		// buffered: its errors count as much as its records (a data loss
		// notice must surface, not vanish with the barrier).
		if err := r.take(ctx, r.cl.PollFetches(ctx)); err != nil {
			return false, err
		}
		if r.head >= len(r.buf) {
			if err := r.probeIfIdle(ctx); err != nil {
				return false, err
			}
			if ctx.Err() != nil {
				return false, nil
			}
		}
	}
	return true, nil
}

// take handles a poll's result: the poll's own context errors are
// ignored, a retriable error is counted by the tracker (an *outage.Error
// once the outage has lasted the tolerance), any other error is returned
// naming its partition; the records are buffered for Next. A poll that
// brought records and no retriable error ends an outage.
//
// A partition whose position fell out of its log (outOfLog) goes to
// offsetLost, and its records in this poll are dropped: under
// OutOfRangeFail the read fails, otherwise the partition is moved to its
// log start or end, and the records of the other partitions are kept. An
// UNKNOWN_TOPIC_ID, which the client reports once it saw a topic's id
// change, has the topic's id checked (checkTopicID) before it counts as
// an outage.
func (r *Reader) take(ctx context.Context, fs kgo.Fetches) error {
	r.sync()
	if r.head >= len(r.buf) {
		// Everything buffered was read: the buffer's room is reused.
		clear(r.buf)
		r.buf, r.head, r.runs = r.buf[:0], 0, r.runs[:0]
	}
	var ferr error
	away := false
	lost := map[Partition]error{}
	fs.EachError(func(topic string, p int32, err error) {
		if ferr != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		what := fmt.Sprintf("kafka source: fetching %s/%d", topic, p)
		if outOfLog(err) {
			if _, ok := lost[Partition{topic, p}]; !ok {
				lost[Partition{topic, p}] = err
			}
			return
		}
		if errors.Is(err, kerr.UnknownTopicID) {
			if ferr = r.recheckTopicID(ctx, topic); ferr != nil {
				return
			}
		}
		if !outage.Retriable(err) {
			ferr = fmt.Errorf("%s: %w", what, err)
			return
		}
		away = true
		r.fetchFailing = r.failingSince(r.fetchFailing)
		ferr = r.tracker.Failed(what, err, r.fetchFailing)
	})
	if ferr != nil {
		return ferr
	}
	n := len(r.buf)
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		p := Partition{ftp.Topic, ftp.Partition}
		if _, ok := lost[p]; ok {
			return
		}
		r.buf = append(r.buf, ftp.Records...)
		r.runs = append(r.runs, bufRun{p: p, end: len(r.buf)})
	})
	if len(r.buf) > n && !away {
		r.fetchFailing = time.Time{}
		r.heard = r.tracker.Now()
		r.tracker.Succeeded()
	}
	for _, p := range slices.SortedFunc(maps.Keys(lost), comparePartitions) {
		if err := r.offsetLost(ctx, p, lost[p]); err != nil {
			return err
		}
	}
	return nil
}

// outOfLog reports whether a fetch error says the partition's position
// is no longer in its log: OFFSET_OUT_OF_RANGE (the client, with no reset
// offset, reports it instead of moving), or a data loss the client
// detected through leader epochs (it moved to where the log diverged).
func outOfLog(err error) bool {
	if errors.Is(err, kerr.OffsetOutOfRange) {
		return true
	}
	_, ok := errors.AsType[*kgo.ErrDataLoss](err)
	return ok
}

// offsetLost handles partition p, whose position fell out of its log
// (the client said so with cause, at the first fetch of a restored
// position or while the reader ran): it lists the log's range now and
// applies OnOutOfRange to the position (the offset after the last record
// Next returned, or the checkpointed one). A jump moves the client's
// position of p, dropping whatever it had fetched of p, and forgets p's
// leader epoch.
//
// The listing waits out an outage, also while ctx is cancelled by a
// barrier: the jump must not be lost with the poll.
func (r *Reader) offsetLost(ctx context.Context, p Partition, cause error) error {
	ranges, err := r.listRanges(context.WithoutCancel(ctx), []Partition{p})
	if err != nil {
		return fmt.Errorf("kafka source: fetching %s: %w; listing its log's range: %w", p, cause, err)
	}
	rg := ranges[p]
	e := &OffsetOutOfRangeError{Partition: p, Offset: r.next[p], Start: rg.start, End: rg.end, Running: !r.unread[p], Err: cause}
	// The client located where the log diverged through leader epochs
	// (and moved there).
	if dl, ok := errors.AsType[*kgo.ErrDataLoss](cause); ok && dl.ResetTo >= 0 && dl.ResetTo < e.Offset {
		e.Diverged = &dl.ResetTo
	}
	to, err := r.resolveOutOfRange(e)
	if err != nil {
		return err
	}
	r.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{p.Topic: {p.Partition: {Epoch: -1, Offset: to}}})
	r.next[p] = to
	delete(r.epochs, p)
	delete(r.unread, p)
	return nil
}

// recheckTopicID lists topic afresh and compares its id (checkTopicID).
// A listing that fails leaves the fetch error to the outage handling.
func (r *Reader) recheckTopicID(ctx context.Context, topic string) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idleProbeTimeout)
	defer cancel()
	details, err := r.adm.ListTopics(lctx, topic)
	if err != nil {
		return nil
	}
	d, ok := details[topic]
	if !ok || d.Err != nil || d.ID == (kadm.TopicID{}) {
		return nil
	}
	return r.checkTopicID(ctx, topic, map[string]kadm.TopicID{topic: d.ID})
}

// idleProbeInterval is how long a reader that hears nothing from the
// cluster waits before it asks whether the cluster is there.
const idleProbeInterval = time.Second

// idleProbeTimeout bounds one probe; a cluster that does not answer it in
// time counts as away.
const idleProbeTimeout = time.Second

// probeIfIdle asks the cluster whether it answers (a broker-only metadata
// request to any broker) when the reader has heard nothing from it for
// idleProbeInterval and has not asked since. kgo retries the connections
// of its fetches without surfacing their failures, so without the probe
// an idle reader would never see an outage: the job would say the cluster
// is reachable while it is not, and a source cut off for longer than the
// tolerance would wait forever. A retriable failure of the probe is
// counted by the tracker and fails the read past the tolerance; its
// success ends only an outage the probes saw.
func (r *Reader) probeIfIdle(ctx context.Context) error {
	now := r.tracker.Now()
	if now.Sub(r.heard) < idleProbeInterval || now.Sub(r.probed) < idleProbeInterval {
		return nil
	}
	r.probed = now
	// The poll's context usually ended already (a barrier cut the poll
	// short, which is how an idle reader returns): the probe has its own
	// short bound instead, which a barrier waits for at most.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idleProbeTimeout)
	err := r.cl.Ping(pctx)
	cancel()
	switch {
	case err == nil:
		r.heard = r.tracker.Now()
		if !r.probeFailing.IsZero() {
			// Only an outage the probes saw is ended by a probe: one a
			// call saw that the probe does not make (a partition's leader
			// away, a coordinator loading) ends with that call's success,
			// instead of flapping with every probe.
			r.probeFailing = time.Time{}
			r.tracker.Succeeded()
		}
		return nil
	case !outage.Retriable(err):
		return fmt.Errorf("kafka source: reaching the cluster: %w", err)
	}
	r.probeFailing = r.failingSince(r.probeFailing)
	return r.tracker.Failed("kafka source: reaching the cluster", err, r.probeFailing)
}

// failingSince returns when a run of failures began that one more failure
// continues: since, unless since is unset or older than the ongoing
// outage (a run that was cut short and never saw a success), now.
func (r *Reader) failingSince(since time.Time) time.Time {
	if st := r.tracker.Status(); since.IsZero() || !st.Down || since.Before(st.Since) {
		return r.tracker.Now()
	}
	return since
}

// SnapshotState returns the next offset of every partition the subtask
// owns, as its entries of checkpoint id.
func (r *Reader) SnapshotState(checkpointID int64) ([][]byte, error) {
	snap := maps.Clone(r.positions())
	r.snapshots[checkpointID] = snap
	out := make([][]byte, 0, len(snap))
	for _, p := range slices.SortedFunc(maps.Keys(snap), comparePartitions) {
		e := offsetEntry{Partition: p, Offset: snap[p]}
		if id, ok := r.ids[p.Topic]; ok {
			e.TopicID = topicIDString(id)
		}
		if ep, ok := r.epochs[p]; ok && ep >= 0 {
			e.LeaderEpoch = &ep
		}
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("kafka source: encoding the offset of %s: %w", p, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// NotifyCheckpointComplete hands the offsets of checkpoint id to the
// group committer (when a group or ReaderOptions.CommitOffsets is
// configured), which commits them on a goroutine of its own, for lag
// monitoring and start=committed only: it returns without waiting for the
// cluster (see groupCommitter for coalescing and how failures are logged).
func (r *Reader) NotifyCheckpointComplete(ctx context.Context, checkpointID int64) {
	snap, ok := r.snapshots[checkpointID]
	for id := range r.snapshots {
		if id <= checkpointID {
			delete(r.snapshots, id)
		}
	}
	if !ok || len(snap) == 0 {
		return
	}
	r.purge(ctx, checkpointID, snap)
	if r.committer == nil {
		return
	}
	offs := kadm.Offsets{}
	for p, o := range snap {
		offs.AddOffset(p.Topic, p.Partition, o, -1)
	}
	r.committer.offer(checkpointID, offs)
}

// commitToGroup commits offsets to ReaderOptions.Group as a client
// outside the group (the group must have no members).
func (r *Reader) commitToGroup(ctx context.Context, offs kadm.Offsets) error {
	resp, err := r.adm.CommitOffsets(ctx, r.opts.Group, offs)
	if err == nil {
		err = resp.Error()
	}
	return err
}

// purge deletes the records below the offsets of completed checkpoint id
// when PurgeInterval says it is time and a partition moved past what was
// deleted before.
func (r *Reader) purge(ctx context.Context, id int64, snap map[Partition]int64) {
	if r.opts.PurgeInterval <= 0 {
		return
	}
	now := r.opts.Now()
	if !r.purged.IsZero() && now.Sub(r.purged) < r.opts.PurgeInterval {
		return
	}
	offs := kadm.Offsets{}
	for p, o := range snap {
		if o > r.purgedTo[p] {
			offs.AddOffset(p.Topic, p.Partition, o, -1)
		}
	}
	if len(offs) == 0 {
		return
	}
	resp, err := r.adm.DeleteRecords(ctx, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		r.opts.Logger.Warn("kafka source: deleting the records a checkpoint consumed failed; tried again at a later checkpoint",
			"topics", r.opts.Topics, "checkpoint", id, "err", err)
		return
	}
	if r.purgedTo == nil {
		r.purgedTo = map[Partition]int64{}
	}
	offs.Each(func(o kadm.Offset) { r.purgedTo[Partition{o.Topic, o.Partition}] = o.At })
	r.purged = now
}

// pending returns the partitions with records fetched and not returned by
// Next yet (nil when none): the partitions a backlog keeps waiting. It
// reads the buffer's runs, not its records.
func (r *Reader) pending() map[Partition]bool {
	if r.head >= len(r.buf) {
		return nil
	}
	out := map[Partition]bool{}
	for _, run := range r.runs {
		if run.end > r.head {
			out[run.p] = true
		}
	}
	return out
}

// OffsetResets counts the jumps the reader made under OutOfRangeEarliest
// or OutOfRangeLatest; safe for concurrent use.
func (r *Reader) OffsetResets() int64 { return r.resets.Load() }

// publishRead makes handed what RecordsRead returns.
func (r *Reader) publishRead() {
	if r.read.Load() != r.handed {
		r.read.Store(r.handed)
	}
}

// RecordsRead is how many records Next has returned, control records
// not included. It is safe to call from any goroutine and lags Next by
// at most the records of one partition's run in the last poll: the
// count is published when Next moves to another partition, before every
// poll (so it is exact whenever the reader waits for records), when the
// positions are read (SnapshotState, CurrentWatermark) and by Close.
func (r *Reader) RecordsRead() int64 { return r.read.Load() }

// NotifyCheckpointAborted forgets the offsets of an aborted checkpoint.
func (r *Reader) NotifyCheckpointAborted(checkpointID int64) { delete(r.snapshots, checkpointID) }

// Close sends the last completed checkpoint's offsets to the group if
// they are not sent yet (waiting at most closeCommitTimeout), then closes
// the client. Safe to call more than once.
func (r *Reader) Close() {
	r.publishRead()
	if r.committer != nil {
		r.committer.close()
	}
	r.cl.Close()
}
