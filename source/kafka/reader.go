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
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

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
	// checked for new partitions (default 30s; negative disables). A
	// discovery that failed because the cluster was away is tried again
	// after discoveryRetry.
	DiscoveryInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for discovery; nil means time.Now.
	Now func() time.Time
	// Outage is the job's cluster-outage tracker: every call to the
	// cluster rides out an outage for its tolerance (nil: a tracker of the
	// Reader's own, with outage.DefaultTolerance).
	Outage *outage.Tracker
}

// discoveryRetry is how soon a partition discovery that failed because
// the cluster was away is tried again.
const discoveryRetry = time.Second

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
// A cluster that is away (a broker restarting, a leader moving) is waited
// for, through the ReaderOptions.Outage tracker, instead of failing the
// job attempt: opening a reader retries its listings, a failed partition
// discovery is tried again a second later, and retriable fetch errors are
// counted; each fails only once the outage has lasted the tracker's
// tolerance; an idle reader, which kgo's fetching would never tell of an
// outage, probes the cluster when it has heard nothing for a second. The
// Kafka client itself keeps fetching through an outage.
// None of this moves a position: only a record Next returns does. Errors
// that no wait can fix (a missing topic, data loss) fail at once.
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

	// next is the next offset to read of every assigned partition.
	next     map[Partition]int64
	assigned map[Partition]bool
	buf      []*kgo.Record

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
	// commitFailing is set once a group commit failed, so that the
	// warning is not repeated at every checkpoint until one succeeds.
	commitFailing bool
}

// OpenReader assigns the subtask its partitions and positions them: at the
// offsets in restored (the union of every subtask's entries of the
// checkpoint) when restoredJob is true, partitions missing there from
// their start (they were added after the checkpoint); at opts.Start
// otherwise. While the cluster is away it waits, up to the outage
// tolerance, and then fails with an *outage.Error.
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
	if opts.Outage == nil {
		tr, err := outage.NewTracker(outage.Options{Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("kafka source: %w", err)
		}
		opts.Outage = tr
	}
	r := &Reader{opts: opts, subtask: subtask, parallelism: parallelism, tracker: opts.Outage,
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
	var owned []Partition
	what := fmt.Sprintf("kafka source: listing topics %v", opts.Topics)
	err = r.tracker.Do(ctx, what, func(ctx context.Context) error {
		var err error
		owned, err = r.listOwned(ctx)
		return err
	})
	if err != nil {
		cl.Close()
		return nil, opError(what, err)
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
	r.heard = r.tracker.Now()
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
// returns those this subtask owns. A topic that does not exist is an
// outage.Permanent error naming it: no wait brings it back. Other errors
// are returned as they are, for the caller to tell an outage
// (outage.Retriable) from a refusal.
func (r *Reader) listOwned(ctx context.Context) ([]Partition, error) {
	details, err := r.adm.ListTopics(ctx, r.opts.Topics...)
	if err != nil {
		return nil, err
	}
	var out []Partition
	for _, topic := range r.opts.Topics {
		d, ok := details[topic]
		switch {
		case !ok:
			return nil, outage.Permanent(fmt.Errorf("topic %s: not found", topic))
		case errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return nil, outage.Permanent(fmt.Errorf("topic %s: %w", topic, d.Err))
		case d.Err != nil:
			return nil, fmt.Errorf("topic %s: %w", topic, d.Err)
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
	owned, err := r.listOwned(ctx)
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
// a snapshot taken after this call resumes after it. A fetch error fails
// Next, naming the partition, unless it says the cluster is away; those
// fail it only once the outage has lasted the tolerance.
func (r *Reader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	for len(r.buf) == 0 {
		if err := r.discover(ctx); err != nil {
			return nil, false, err
		}
		// A poll that ctx cut short may still carry what the client had
		// buffered: its errors count as much as its records (a data loss
		// notice must surface, not vanish with the barrier).
		if err := r.take(r.cl.PollFetches(ctx)); err != nil {
			return nil, false, err
		}
		if len(r.buf) == 0 {
			if err := r.probeIfIdle(ctx); err != nil {
				return nil, false, err
			}
			if ctx.Err() != nil {
				return nil, false, nil
			}
		}
	}
	rec := r.buf[0]
	r.buf[0] = nil
	r.buf = r.buf[1:]
	r.next[Partition{Topic: rec.Topic, Partition: rec.Partition}] = rec.Offset + 1
	return rec, true, nil
}

// take handles a poll's result: the poll's own context errors are
// ignored, a retriable error is counted by the tracker (an *outage.Error
// once the outage has lasted the tolerance), any other error is returned
// naming its partition; the records are buffered for Next. A poll that
// brought records and no retriable error ends an outage.
func (r *Reader) take(fs kgo.Fetches) error {
	var ferr error
	away := false
	fs.EachError(func(topic string, p int32, err error) {
		if ferr != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		what := fmt.Sprintf("kafka source: fetching %s/%d", topic, p)
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
	fs.EachRecord(func(rec *kgo.Record) { r.buf = append(r.buf, rec) })
	if len(r.buf) > n && !away {
		r.fetchFailing = time.Time{}
		r.heard = r.tracker.Now()
		r.tracker.Succeeded()
	}
	return nil
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
// It is logged once, with a line when commits work again, not at every
// checkpoint: an outage fails them all, and a coordinator away while the
// partitions' leaders answer can fail them for long. Such failures are
// not outages of the job (nothing waits for the commit), so the tracker
// hears of the successes only.
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
	const msg = "kafka source: committing checkpointed offsets to the group failed (lag monitoring only)"
	switch {
	case err == nil:
		if r.commitFailing {
			r.commitFailing = false
			r.opts.Logger.Info("kafka source: committing checkpointed offsets to the group works again", "group", r.opts.Group, "checkpoint", checkpointID)
		}
		r.tracker.Succeeded()
	case r.commitFailing || ctx.Err() != nil:
		r.opts.Logger.Debug(msg, "group", r.opts.Group, "checkpoint", checkpointID, "err", err)
	default:
		r.commitFailing = true
		r.opts.Logger.Warn(msg+"; not logged again until a commit succeeds",
			"group", r.opts.Group, "checkpoint", checkpointID, "err", err)
	}
}

// NotifyCheckpointAborted forgets the offsets of an aborted checkpoint.
func (r *Reader) NotifyCheckpointAborted(checkpointID int64) { delete(r.snapshots, checkpointID) }

// Close closes the client.
func (r *Reader) Close() { r.cl.Close() }
