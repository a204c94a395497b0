package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// CheckpointMode says whether operators with several inputs align barriers.
type CheckpointMode int

const (
	// ExactlyOnce aligns: an input that delivered barrier n is not read
	// again until barrier n arrived on every input, so a snapshot holds
	// exactly the records before the barrier.
	ExactlyOnce CheckpointMode = iota
	// AtLeastOnce does not align: records after the barrier on a fast
	// input may be in the snapshot, and are processed again after a
	// restore (duplicates, never a loss).
	AtLeastOnce
)

// CheckpointOptions have Flink's meanings.
type CheckpointOptions struct {
	// Interval between checkpoint triggers; 0 disables periodic
	// checkpoints (savepoints and the final checkpoint still happen).
	Interval time.Duration
	Mode     CheckpointMode
	// Timeout aborts a checkpoint not complete by then (default 10m).
	Timeout time.Duration
	// MinPause is the least time between the completion of one
	// checkpoint and the trigger of the next.
	MinPause time.Duration
	// MaxConcurrent checkpoints in flight (default 1).
	MaxConcurrent int
	// TolerableFailures is how many consecutive failed checkpoints the job
	// survives; one more fails the job attempt.
	TolerableFailures int
	// DeleteOnCancel removes the job's checkpoints when it is cancelled
	// (Flink's DELETE_ON_CANCELLATION); otherwise they are retained.
	DeleteOnCancel bool
	// RetainSavepoints bounds the savepoints kept in the storage: once a
	// savepoint completed, the oldest complete ones beyond this many are
	// removed (checkpoint.SavepointPruner, which both storages of this
	// module implement: never the job's newest restore point), each
	// logged; a failure to remove is logged and fails nothing. A storage
	// that does not implement SavepointPruner keeps every savepoint, and
	// Run says so once. 0 keeps every savepoint, as Flink does.
	RetainSavepoints int
}

// Options configure a Job.
type Options struct {
	Checkpoint CheckpointOptions
	// Restart decides after a failure (default NoRestart()).
	Restart RestartStrategy
	// Storage keeps checkpoints (default an in-memory storage, lost with
	// the process).
	Storage checkpoint.Storage
	// Backend creates keyed state backends (default memory).
	Backend state.KeyedBackendFactory
	// MaxParallelism is the number of key groups (default 128).
	MaxParallelism int
	// ChannelCapacity bounds every channel between two subtasks (default
	// 256 records): a slow consumer backpressures its producers.
	ChannelCapacity int
	// DisableChaining runs every subtask on its own goroutine. By default
	// an operator fed by one forward edge (same parallelism, no key, its
	// only input) is chained to its upstream, as in Flink: the upstream's
	// goroutine calls it directly, with no channel in between.
	DisableChaining bool
	// WatermarkInterval is how often a source subtask whose reader
	// generates watermarks (WatermarkReader) asks it for its watermark and
	// sends it downstream when it advanced (default
	// DefaultWatermarkInterval, 200ms, as Flink's autoWatermarkInterval).
	// Event time downstream lags by up to this much; see the package
	// documentation for why watermarks are periodic.
	WatermarkInterval time.Duration
	// RestoreFrom starts the job from that checkpoint or savepoint instead
	// of the latest completed checkpoint (like flink run -s).
	RestoreFrom string
	// AllowNonRestoredState lets a restore drop the state of operators the
	// job no longer has.
	AllowNonRestoredState bool
	// Version is the version of the binary running the job (the
	// processor passes what processor version prints). Every checkpoint
	// records it (checkpoint.Metadata.WriterVersion), and a checkpoint refused
	// for its state formats names it. Default: the main module's version
	// from the build info, or "unknown".
	Version string
	Logger  *slog.Logger
	// Clock is the time of restart pauses, the checkpoint coordinator's
	// timers and the sources' watermark interval (default the real one).
	Clock Clock
	// ProcessingClock is the processing time of keyed functions: their
	// processing-time timers fire once it is past them and
	// KeyedContext.CurrentProcessingTime reads it (default Clock). A test
	// that moves it by hand (package testdriver) fires those timers
	// without moving the rest of the job's time.
	ProcessingClock Clock
}

// defaultVersion is the main module's version from the binary's build
// information ("(devel)" for a build of a working tree without version
// control information), or "unknown" when there is none.
func defaultVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

type nodeKind int

const (
	kindSource nodeKind = iota
	kindOperator
	kindSink
)

// String is the kind as OperatorStats.Kind says it.
func (k nodeKind) String() string {
	switch k {
	case kindSource:
		return "source"
	case kindSink:
		return "sink"
	default:
		return "operator"
	}
}

type node struct {
	uid         string
	parallelism int
	kind        nodeKind
	keyed       bool
	// transactional: a sink whose Sink implements TransactionalSink and
	// says true.
	transactional bool
	// stateFormat is the format version of the operator state, declared
	// by a Source or Sink implementing StateFormatVersioner (0: none).
	stateFormat int
	in          []*edge
	out         []*edge

	newSource   func(context.Context, Scope, [][]byte) (sourceRunner, error)
	newSink     func(context.Context, Scope, [][]byte) (sinkRunner, error)
	newOperator func(*subtask) (operator, error)
}

type operator = *funcOperator

// edge connects two operators. keyOf is set for keyed edges.
type edge struct {
	from, to *node
	input    int // which input of to: 0, or 1 for the second of Connect
	keyOf    func(any) (any, []byte, error)
}

// Job is a dataflow graph and its execution. Build the graph with the
// package functions (FromSource, Map, KeyBy, ...), then Run it.
type Job struct {
	name  string
	opts  Options
	nodes []*node
	uids  map[string]bool
	err   error

	mu    sync.Mutex
	coord *coordinator // of the running attempt
	// coordSet is closed when coord is set or Run has returned, and
	// replaced by an open one when the attempt ends: a savepoint asked
	// for while the job starts or restarts waits on it.
	coordSet chan struct{}
	ran      bool // Run has returned
	status   Status
	restarts atomic.Int64
	history  *history
	// nextID is the first checkpoint id the next attempt may use: ids are
	// never reused within a job, even when an attempt's checkpoint in
	// flight was discarded (the storage refuses an aborted id). Only Run's
	// goroutine touches it, between attempts.
	nextID int64
}

// NewJob returns an empty job. Options it cannot run with
// (Options.Validate, and a Storage opened for another job name) are
// reported by Run, before anything runs, each naming the option.
func NewJob(name string, opts Options) *Job {
	optErr := opts.validate(name)
	if opts.Restart == nil {
		opts.Restart = NoRestart()
	}
	if opts.Storage == nil {
		opts.Storage = dirstore.NewMemoryStorage(name, dirstore.StorageOptions{})
	}
	if opts.Backend == nil {
		opts.Backend = statebackend.NewMemoryFactory()
	}
	if opts.MaxParallelism <= 0 {
		opts.MaxParallelism = DefaultMaxParallelism
	}
	if opts.ChannelCapacity <= 0 {
		opts.ChannelCapacity = DefaultChannelCapacity
	}
	if opts.WatermarkInterval <= 0 {
		opts.WatermarkInterval = DefaultWatermarkInterval
	}
	if opts.Checkpoint.Timeout <= 0 {
		opts.Checkpoint.Timeout = DefaultCheckpointTimeout
	}
	if opts.Checkpoint.MaxConcurrent <= 0 {
		opts.Checkpoint.MaxConcurrent = DefaultMaxConcurrentCheckpoints
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Version == "" {
		opts.Version = defaultVersion()
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.ProcessingClock == nil {
		opts.ProcessingClock = opts.Clock
	}
	return &Job{name: name, opts: opts, err: optErr, uids: map[string]bool{}, history: newHistory(100), coordSet: make(chan struct{})}
}

func (j *Job) addNode(uid string, p int, kind nodeKind) *node {
	if j.uids[uid] {
		j.err = errors.Join(j.err, fmt.Errorf("engine: two operators with uid %q", uid))
	}
	if p < 1 || p > j.opts.MaxParallelism {
		j.err = errors.Join(j.err, fmt.Errorf("engine: operator %s: parallelism %d outside 1..%d", uid, p, j.opts.MaxParallelism))
	}
	j.uids[uid] = true
	n := &node{uid: uid, parallelism: p, kind: kind}
	j.nodes = append(j.nodes, n)
	return n
}

func (j *Job) connect(from, to *node, input int, keyOf func(any) (any, []byte, error)) {
	e := &edge{from: from, to: to, input: input, keyOf: keyOf}
	from.out = append(from.out, e)
	to.in = append(to.in, e)
}

// ErrStopped is returned by Run after StopWithSavepoint stopped the job.
var ErrStopped = errors.New("engine: job stopped with a savepoint")

// Run executes the job until its bounded sources are exhausted (nil, after
// a final checkpoint is committed), it is stopped with a savepoint
// (ErrStopped), ctx is cancelled (ctx.Err(); checkpoints are retained or
// deleted as configured), or it fails for good (the failure). A failed
// attempt is restarted as the restart strategy says, from the latest
// completed checkpoint.
func (j *Job) Run(ctx context.Context) error {
	defer j.ranOut()
	if j.err != nil {
		return j.err
	}
	if len(j.nodes) == 0 {
		return errors.New("engine: the job has no operator")
	}
	log := j.opts.Logger.With("job", j.name)
	if _, ok := j.opts.Storage.(checkpoint.SavepointPruner); !ok && j.opts.Checkpoint.RetainSavepoints > 0 {
		log.Warn("the checkpoint storage cannot remove savepoints: every savepoint stays, beyond the retained count",
			"storage", fmt.Sprintf("%T", j.opts.Storage), "retain_savepoints", j.opts.Checkpoint.RetainSavepoints)
	}
	j.sweep(ctx, log)
	restoreFrom := j.opts.RestoreFrom
	for attempt := 0; ; attempt++ {
		md, newer, err := j.restorePoint(ctx, restoreFrom, log)
		if err != nil {
			if ctx.Err() != nil {
				// Cancelled before an attempt could start: the job did not
				// fail, and it is not CREATED any more.
				j.setState(JobCanceled)
			}
			return err
		}
		// The checkpoint asked for is now the job's newest (adopted):
		// later attempts restore the latest like any others.
		restoreFrom = ""
		j.setState(JobRunning)
		res := j.runAttempt(ctx, attempt, md, newer, log)
		if res.err != nil && !errors.Is(res.err, ErrStopped) && ctx.Err() == nil {
			j.setFailure(res.err)
		}
		switch {
		case res.err == nil:
			j.setState(JobFinished)
			return nil
		case errors.Is(res.err, ErrStopped):
			j.setState(JobStopped)
			return ErrStopped
		case ctx.Err() != nil:
			j.setState(JobCanceled)
			if j.opts.Checkpoint.DeleteOnCancel {
				if err := j.opts.Storage.DiscardAll(); err != nil {
					log.Warn("deleting checkpoints on cancellation", "err", err)
				}
			}
			return ctx.Err()
		case IsNonRecoverable(res.err):
			j.setState(JobFailed)
			return fmt.Errorf("engine: job %s failed with a non-recoverable error: %w", j.name, res.err)
		}
		delay, ok := j.opts.Restart.OnFailure(j.opts.Clock.Now())
		if !ok {
			j.setState(JobFailed)
			return fmt.Errorf("engine: job %s failed and the %s restart strategy gives up: %w", j.name, j.opts.Restart, res.err)
		}
		j.restarts.Add(1)
		j.setState(JobRestarting)
		log.Warn("job attempt failed; restarting", "attempt", attempt, "delay", delay, "err", res.err)
		select {
		case <-ctx.Done():
			j.setState(JobCanceled)
			return ctx.Err()
		case <-j.opts.Clock.After(delay):
		}
	}
}

// sweep removes, once before the first attempt, the checkpoint and
// savepoint directories without _metadata that an earlier run left
// (Storage.Sweep): a crash mid-checkpoint, a savepoint whose completion
// failed or was cut short. Each is logged once at Info naming its path;
// without the sweep they were warned about at every start, and an
// incomplete savepoint stayed forever. It runs here because nothing of the
// job is in flight before its first attempt (in the processor the job
// lock keeps every other process off the directory), never while a
// checkpoint or savepoint of this job is being written. New checkpoint ids
// stay above the removed ones. A failure to remove is only disk space:
// logged, the job goes on (Latest skips what is left as before).
func (j *Job) sweep(ctx context.Context, log *slog.Logger) {
	removed, err := j.opts.Storage.Sweep(ctx)
	for _, in := range removed {
		j.nextID = max(j.nextID, in.ID+1)
		log.Info("removed an incomplete checkpoint an earlier run left (no _metadata: it never completed)",
			"path", in.Path, "checkpoint", in.ID, "savepoint", in.Savepoint)
	}
	if err != nil && ctx.Err() == nil {
		log.Warn("removing incomplete checkpoints an earlier run left", "err", err)
	}
}

// restorePoint finds the checkpoint an attempt starts from: the one asked
// for (from, adopted first: see adopt), else the latest complete one,
// skipping incomplete ones with a warning (and a damaged newest one as
// checkDamaged says). When the checkpoint records a newer one it
// superseded (checkpoint.Metadata.Supersedes), that one is returned as newer:
// sinks learn from it which restored transactions were committed since.
// An empty claim (checkpoint.Metadata.Claim) restores nothing: md is nil, and
// the attempt's checkpoint ids start above the claim's.
func (j *Job) restorePoint(ctx context.Context, from string, log *slog.Logger) (md, newer *checkpoint.Metadata, err error) {
	var infos []checkpoint.CheckpointInfo
	// An empty claim (checkpoint.Metadata.Claim: a new owner took a job that
	// had no checkpoint) holds no state: the attempt starts fresh, with
	// checkpoint ids above it, and nothing checks it as a restore.
	unclaimed := func(md *checkpoint.Metadata) *checkpoint.Metadata {
		if md == nil || !md.Claim {
			return md
		}
		j.nextID = max(j.nextID, md.CheckpointID+1)
		log.Info("the newest checkpoint is an empty claim: starting fresh, with checkpoint ids above it", "checkpoint", md.CheckpointID, "path", md.Path)
		return nil
	}
	if from != "" {
		if md, err = j.adopt(ctx, from, log); err != nil {
			return nil, nil, err
		}
		md = unclaimed(md)
	} else {
		md, infos, err = j.opts.Storage.Latest(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: finding the latest checkpoint: %w", err)
		}
		if err := j.checkDamaged(md, infos, log); err != nil {
			return nil, nil, err
		}
		md = unclaimed(md)
		disc, err := j.opts.Storage.Discarded(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: reading what a cancellation deleted: %w", err)
		}
		if err := j.checkDiscarded(md, disc.Through, log); err != nil {
			return nil, nil, err
		}
	}
	for _, in := range infos {
		if in.Err != nil && !in.Damaged {
			log.Warn("skipping an unusable checkpoint", "path", in.Path, "err", in.Err)
		}
	}
	if md == nil {
		return nil, nil, nil
	}
	if err := j.checkRestore(md); err != nil {
		return nil, nil, err
	}
	if s := md.Supersedes; s != nil {
		newer = &checkpoint.Metadata{Job: j.name, CheckpointID: s.CheckpointID, Path: s.Path, Operators: s.Operators}
		log.Info("restoring", "checkpoint", md.CheckpointID, "path", md.Path, "savepoint", md.Savepoint, "committed", md.Committed,
			"restored_from", md.RestoredFrom, "newer_checkpoint", newer.CheckpointID, "newer_path", newer.Path)
	} else {
		log.Info("restoring", "checkpoint", md.CheckpointID, "path", md.Path, "savepoint", md.Savepoint, "committed", md.Committed,
			"restored_from", md.RestoredFrom)
	}
	return md, newer, nil
}

// ErrIncompatibleCheckpoint marks the refusal to restore a checkpoint or
// savepoint that does not fit the job as configured: the state of a keyed
// operator was written with another max parallelism, state of an
// operator the job no longer has would be dropped without
// AllowNonRestoredState, or an operator's state is in a format newer than
// the operator reads (StateFormatVersioner: a newer binary wrote it). Such
// a refusal (errors.Is) comes from Run before any subtask opens, is
// non-recoverable, and is fixed by changing the configuration, the command
// line or the binary, not by retrying: the processor exits with its code
// for bad usage.
var ErrIncompatibleCheckpoint = errors.New("engine: the checkpoint does not fit the job's configuration")

// incompatibleError is a refusal marked ErrIncompatibleCheckpoint; its
// message is err's alone.
type incompatibleError struct{ err error }

func (e *incompatibleError) Error() string        { return e.err.Error() }
func (e *incompatibleError) Unwrap() error        { return e.err }
func (e *incompatibleError) Is(target error) bool { return target == ErrIncompatibleCheckpoint }

// checkRestore refuses a checkpoint the job cannot restore as it is
// configured (ErrIncompatibleCheckpoint, non-recoverable): state of
// operators the job lacks (checkpoint.CheckRestore), operator state in a
// format newer than its operator reads (checkStateFormats), or a keyed
// operator whose state was written with another max parallelism.
//
// Why the max parallelism: it is the number of key groups, and a key's
// group is its hash modulo that number. Restored entries stay under the
// key group they were written in, so with another number a lookup hashes
// to another group and misses them, and the groups beyond the new range
// are not restored at all: on a word count about half the counts started
// over, silently. Flink refuses such a restore too. Operators without
// keyed state (sources, sinks, operator state) do not depend on it.
func (j *Job) checkRestore(md *checkpoint.Metadata) error {
	uids := make([]string, 0, len(j.nodes))
	for _, n := range j.nodes {
		uids = append(uids, n.uid)
	}
	if err := checkpoint.CheckRestore(md, uids, j.opts.AllowNonRestoredState); err != nil {
		return NonRecoverable(&incompatibleError{fmt.Errorf("engine: restoring from %s: %w", md.Path, err)})
	}
	if err := j.checkStateFormats(md); err != nil {
		return err
	}
	var bad []string
	was := 0
	for _, n := range j.nodes {
		op := md.Operator(n.uid)
		if op == nil || op.MaxParallelism == 0 || op.MaxParallelism == j.opts.MaxParallelism || !(n.keyed || hasKeyedState(op)) {
			continue
		}
		if was == 0 {
			was = op.MaxParallelism
		}
		bad = append(bad, fmt.Sprintf("%q with max parallelism %d", n.uid, op.MaxParallelism))
	}
	if len(bad) == 0 {
		return nil
	}
	return NonRecoverable(&incompatibleError{fmt.Errorf("engine: cannot restore %s: it holds the state of keyed operator %s, the job runs with max parallelism %d; "+
		"keyed state cannot move to another number of key groups: run with max parallelism %d again (job.max_parallelism), or start over with --fresh",
		md.Path, strings.Join(bad, " and "), j.opts.MaxParallelism, was)})
}

// checkStateFormats refuses (ErrIncompatibleCheckpoint, non-recoverable) a
// checkpoint holding operator state in a format newer than its operator
// declares it reads (StateFormatVersioner), in md itself or in the newer
// checkpoint md supersedes (whose sink state the sinks read too): an older
// binary restoring state a newer one wrote could misread it, silently
// reading from the wrong offsets or dropping transactions to commit. The
// refusal names the checkpoint, every such operator, both versions and
// the binary that wrote it. Older formats, and checkpoints that recorded
// none, restore.
func (j *Job) checkStateFormats(md *checkpoint.Metadata) error {
	check := func(where, writer string, ops []checkpoint.OperatorSnapshot) []string {
		var bad []string
		for _, n := range j.nodes {
			for i := range ops {
				if op := &ops[i]; op.UID == n.uid && op.StateFormat > n.stateFormat {
					bad = append(bad, fmt.Sprintf("%soperator %q stored its state in format %d, written by version %s, and this binary (version %s) reads format %d at most",
						where, n.uid, op.StateFormat, orUnrecorded(writer), j.opts.Version, n.stateFormat))
				}
			}
		}
		return bad
	}
	bad := check("", md.WriterVersion, md.Operators)
	if s := md.Supersedes; s != nil {
		bad = append(bad, check(fmt.Sprintf("in the newer checkpoint %s it supersedes, ", s.Path), s.WriterVersion, s.Operators)...)
	}
	if len(bad) == 0 {
		return nil
	}
	return NonRecoverable(&incompatibleError{fmt.Errorf("engine: cannot restore %s: %s; "+
		"restore it with the version that wrote it or a newer one, or start over with --fresh",
		md.Path, strings.Join(bad, "; "))})
}

func orUnrecorded(version string) string {
	if version == "" {
		return "unrecorded"
	}
	return version
}

// hasKeyedState reports whether a subtask of op stored keyed state.
func hasKeyedState(op *checkpoint.OperatorSnapshot) bool {
	for _, st := range op.Subtasks {
		if st.Keyed != nil {
			return true
		}
	}
	return false
}

// adopt makes the checkpoint or savepoint at from (Options.RestoreFrom)
// the job's newest checkpoint before anything restores from it, and
// returns the adopted copy.
//
// Why: restoring an older checkpoint fences (aborts) the transactions the
// sinks left open after it, including those of newer checkpoints. Were
// the newer checkpoints still the job's latest, a crash right after the
// restore followed by a plain run would restore the newest one and try to
// commit its fenced transactions (data loss), or replay another history
// than the one chosen. So, as Flink starts a restored job's lineage at a
// new checkpoint id, the chosen checkpoint is first written (Storage.Adopt)
// under an id above every one in the storage, and only once that is
// durable does any subtask open. When the job had a newer complete
// checkpoint, the adopted one records it (Supersedes: its id, path and
// the sinks' operator state, which is inline), and every restore of the
// adopted lineage hands it to the sinks (Scope.NewerCheckpoint), which
// tell the restored transactions committed since from those to commit,
// even once the newer checkpoint's directory is gone. A newer checkpoint
// a cancellation deleted (checkpoint.on_cancel delete) counts too: the
// deletion recorded its operator state (checkpoint.Discard).
func (j *Job) adopt(ctx context.Context, from string, log *slog.Logger) (*checkpoint.Metadata, error) {
	st := j.opts.Storage
	md, err := st.Load(ctx, from)
	if err != nil {
		return nil, NonRecoverable(fmt.Errorf("engine: restoring from %s: %w", from, err))
	}
	if err := j.checkRestore(md); err != nil {
		return nil, err
	}
	latest, _, err := st.Latest(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: finding the latest checkpoint: %w", err)
	}
	disc, err := st.Discarded(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: reading what a cancellation deleted: %w", err)
	}
	// The newest complete checkpoint the job had: the latest one on disk,
	// or the one a cancellation deleted (checkpoint.on_cancel delete),
	// whose operator state the deletion recorded.
	var newest *checkpoint.Superseded
	if latest != nil {
		newest = &checkpoint.Superseded{CheckpointID: latest.CheckpointID, Path: latest.Path, WriterVersion: latest.WriterVersion,
			Operators: latest.Operators}
	}
	if d := disc.Newest; d != nil && (newest == nil || d.CheckpointID > newest.CheckpointID) {
		newest = d
	}
	if newest != nil && newest.CheckpointID > md.CheckpointID &&
		(md.Supersedes == nil || md.Supersedes.CheckpointID < newest.CheckpointID) {
		sup := &checkpoint.Superseded{CheckpointID: newest.CheckpointID, Path: newest.Path, WriterVersion: newest.WriterVersion}
		for _, n := range j.nodes {
			for _, op := range newest.Operators {
				if n.kind == kindSink && op.UID == n.uid {
					sup.Operators = append(sup.Operators, op)
				}
			}
		}
		md.Supersedes = sup
		// The sinks read the newer checkpoint's state too: refuse before
		// adopting what they cannot read.
		if err := j.checkStateFormats(md); err != nil {
			return nil, err
		}
	}
	infos, err := st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: listing checkpoints: %w", err)
	}
	// Above the checkpoints a cancellation deleted too: the adopted
	// lineage is then the job's newest, and checkDiscarded lets it be.
	newID := max(j.nextID, md.CheckpointID+1, disc.Through+1)
	if latest != nil {
		newID = max(newID, latest.CheckpointID+1)
	}
	for _, in := range infos {
		newID = max(newID, in.ID+1)
	}
	adopted, err := st.Adopt(ctx, md, newID)
	if err != nil {
		return nil, NonRecoverable(fmt.Errorf("engine: making %s the job's newest checkpoint (%d) before restoring it: %w", from, newID, err))
	}
	j.nextID = max(j.nextID, newID+1)
	args := []any{"from", md.Path, "checkpoint", adopted.CheckpointID, "path", adopted.Path}
	if s := md.Supersedes; s != nil {
		args = append(args, "supersedes", s.CheckpointID, "supersedes_path", s.Path)
	}
	log.Info("adopted the checkpoint to restore as the job's newest", args...)
	return adopted, nil
}

// checkDamaged decides what a damaged newest checkpoint means when the
// job resumes on its own (no RestoreFrom). md is the newest intact one
// Storage.Latest found (nil: none) and infos what it skipped. When the
// newest checkpoint or savepoint whose _metadata exists is damaged, its
// sinks' transactions may have committed output: with a transactional
// sink, replaying from md would write that output again, so the job
// refuses to start (NonRecoverable), in one line naming the damaged
// checkpoint and the way out (--from the newest intact one, accepting
// those duplicates). Without one, the fallback to md proceeds, logged at
// Error level naming both.
func (j *Job) checkDamaged(md *checkpoint.Metadata, infos []checkpoint.CheckpointInfo, log *slog.Logger) error {
	var newest *checkpoint.CheckpointInfo
	for i := range infos {
		in := &infos[i]
		if (in.Complete || in.Damaged) && (newest == nil || in.ID > newest.ID) {
			newest = in
		}
	}
	if newest == nil || !newest.Damaged || (md != nil && md.CheckpointID >= newest.ID) {
		return nil
	}
	why := "damaged"
	if newest.Err != nil {
		why = strings.ReplaceAll(newest.Err.Error(), "\n", "; ")
	}
	var sinks []string
	for _, n := range j.nodes {
		if n.kind == kindSink && n.transactional {
			sinks = append(sinks, strconv.Quote(n.uid))
		}
	}
	if len(sinks) == 0 {
		fallback := "none: starting from scratch"
		if md != nil {
			fallback = md.Path
		}
		log.Error("the newest checkpoint is damaged; falling back to the one before it (no sink is transactional)",
			"damaged", newest.Path, "err", why, "restoring", fallback)
		return nil
	}
	what := fmt.Sprintf("engine: the newest checkpoint %s is damaged (%s) and sink %s is transactional, so the job does not fall back to an older checkpoint on its own: ",
		newest.Path, why, strings.Join(sinks, ", "))
	if md != nil {
		what += fmt.Sprintf("resume on purpose with --from %s (the newest intact one), knowing that its replay can duplicate output the transactions of %s already committed",
			md.Path, filepath.Base(newest.Path))
	} else {
		what += fmt.Sprintf("no intact checkpoint is left; start over with --fresh, knowing that it can duplicate output the transactions of %s already committed",
			filepath.Base(newest.Path))
	}
	return NonRecoverable(errors.New(what))
}

// checkDiscarded decides what the job resumes from after a cancellation
// deleted its checkpoints (CheckpointOptions.DeleteOnCancel; through is
// the newest id deleted, Storage.Discarded, 0 when none was). md is the
// newest point left (nil: none), usually a savepoint older than through,
// since a cancellation keeps the savepoints.
//
// Why it refuses: the sinks may have committed the transactions of every
// checkpoint up to through. Resuming from an older savepoint replays the
// records after it into new transactions, writing that output again, and
// starting from nothing reads the input as source.start says, which can
// also write it again (or skip input). Flink, whose DELETE_ON_CANCELLATION
// this is, never resumes a cancelled job on its own either: it starts
// fresh or from a savepoint given explicitly. Keeping a restorable
// checkpoint instead would undo what the user asked for (the checkpoints
// gone), and a stop that times out falls back to a cancel, so this can
// happen without anyone choosing it. So with a transactional sink a plain
// run refuses (NonRecoverable), in one line naming the deletion, the
// point left and the two explicit ways on: --from the savepoint,
// accepting the duplicates, or --fresh. Without one (the output is at
// least once anyway) it goes on from md, logged at Error level. Either way
// the ids of the new checkpoints start above through.
func (j *Job) checkDiscarded(md *checkpoint.Metadata, through int64, log *slog.Logger) error {
	if through == 0 || (md != nil && md.CheckpointID >= through) {
		return nil
	}
	j.nextID = max(j.nextID, through+1)
	var sinks []string
	for _, n := range j.nodes {
		if n.kind == kindSink && n.transactional {
			sinks = append(sinks, strconv.Quote(n.uid))
		}
	}
	if len(sinks) == 0 {
		resume := "none: starting from scratch"
		if md != nil {
			resume = md.Path
		}
		log.Error("the job's checkpoints were deleted when it was cancelled (checkpoint.on_cancel: delete); resuming from an older point, so output committed after it comes again (no sink is transactional)",
			"deleted_through", through, "restoring", resume)
		return nil
	}
	what := fmt.Sprintf("engine: the job's checkpoints up to %d were deleted when it was cancelled (checkpoint.on_cancel: delete) and sink %s is transactional, so the job does not resume on its own: ",
		through, strings.Join(sinks, ", "))
	if md != nil {
		what += fmt.Sprintf("the newest point left, %s, is older, and its replay would write again the output those checkpoints committed; "+
			"resume from it on purpose with --from %s, knowing that it can duplicate that output, or start over with --fresh", md.Path, md.Path)
	} else {
		what += "no checkpoint or savepoint is left, and starting over reads the input from source.start, which can duplicate the output they committed (or skip input); " +
			"start over on purpose with --fresh"
	}
	return NonRecoverable(errors.New(what))
}

// Status is a snapshot of the job for the processor's API and metrics.
type Status struct {
	Name     string
	State    JobState
	Restarts int64
	// LastFailure is the error of the newest failed attempt, and
	// LastFailureTime when it failed (Options.Clock); empty and zero
	// while no attempt has failed. It stays after the restart.
	LastFailure     string
	LastFailureTime time.Time
	// LastCheckpoint is the id of the last completed checkpoint (0: none).
	LastCheckpoint int64
	// LastNotified is the newest completed checkpoint that every subtask
	// of the running attempt has been notified of: every sink committed
	// it (0: none yet, or no attempt runs). It trails LastCheckpoint
	// while the notifications are delivered, and starts again from 0 in
	// a new attempt, whose sinks commit the restored checkpoint as they
	// start.
	LastNotified int64
	Checkpoints  []CheckpointStats
	Operators    []OperatorStats
}

// OperatorStats counts the records of one operator, summed over subtasks,
// and tells its place in the graph, its backpressure and its event-time
// progress. The counters are the running attempt's: they start from zero
// when the job restarts.
type OperatorStats struct {
	UID string
	// Kind is "source", "operator" or "sink"; Parallelism its subtasks;
	// Inputs the uids of the operators feeding it, by input (the second
	// input of Connect last), nil for a source.
	Kind        string
	Parallelism int
	Inputs      []string
	RecordsIn   int64
	RecordsOut  int64
	// Backpressured is the time the subtasks waited for room on full
	// channels to their downstream subtasks, summed over subtasks: grown
	// by up to Parallelism seconds a second when the operator is fully
	// backpressured (its consumers are slower). Operators chained
	// together run on one goroutine and wait as one, as a Flink task: each
	// operator of a chain shows the chain's wait, whichever of them sent
	// on the full channel.
	Backpressured time.Duration
	// Watermark is the operator's watermark: the lowest of its subtasks'
	// that are not idle (what a downstream operator combining them all
	// would have), in milliseconds since the Unix epoch. NoWatermark
	// before any came (and for operators whose sources generate none);
	// MaxWatermark once the input is exhausted. When every subtask is
	// idle, WatermarkIdle is true and Watermark is the lowest of all.
	Watermark     int64
	WatermarkIdle bool
}

func (j *Job) setState(s JobState) {
	j.mu.Lock()
	j.status.State = s
	j.mu.Unlock()
}

// setFailure records err as the last failure (Status.LastFailure).
func (j *Job) setFailure(err error) {
	now := j.opts.Clock.Now()
	j.mu.Lock()
	j.status.LastFailure, j.status.LastFailureTime = err.Error(), now
	j.mu.Unlock()
}

// Status returns the job's current status.
func (j *Job) Status() Status {
	j.mu.Lock()
	st := j.status
	c := j.coord
	j.mu.Unlock()
	st.Name = j.name
	st.Restarts = j.restarts.Load()
	st.Checkpoints = j.history.list()
	for _, cs := range st.Checkpoints {
		if cs.Status == CheckpointCompleted && cs.ID > st.LastCheckpoint {
			st.LastCheckpoint = cs.ID
		}
	}
	if c != nil {
		st.Operators = c.operatorStats()
		st.LastNotified = c.notifiedAll.Load()
	}
	return st
}

// TriggerSavepoint takes a savepoint of the running job and returns its
// path once it is complete. Asked while the job starts, restores or
// restarts, it waits for the job to run, until ctx ends; once Run returned
// it fails at once.
func (j *Job) TriggerSavepoint(ctx context.Context) (string, error) {
	return j.savepoint(ctx, false)
}

// StopWithSavepoint takes a savepoint, lets every sink commit it, stops the
// job (Run returns ErrStopped) and returns the savepoint's path. Like
// TriggerSavepoint it waits for a starting or restarting job to run. Sources
// read nothing after the savepoint's barrier, so nothing is left pending.
func (j *Job) StopWithSavepoint(ctx context.Context) (string, error) {
	return j.savepoint(ctx, true)
}

// setCoord installs the running attempt's coordinator (nil when the
// attempt ended).
func (j *Job) setCoord(c *coordinator) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if old := j.coord; old != nil && c == nil {
		close(old.cleared)
	}
	j.coord = c
	if c != nil {
		close(j.coordSet)
	} else if !j.ran {
		j.coordSet = make(chan struct{})
	}
}

// ranOut marks that Run returned: savepoints waiting for an attempt fail.
func (j *Job) ranOut() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.ran {
		j.ran = true
		if j.coord == nil {
			close(j.coordSet)
		}
	}
}

// runningCoord returns the running attempt's coordinator, waiting while
// the job starts, restores or restarts, until ctx ends. ended, when not
// nil, is an attempt that ended before it took a request: its successor
// is waited for.
func (j *Job) runningCoord(ctx context.Context, ended *coordinator) (*coordinator, error) {
	for {
		j.mu.Lock()
		c, set, ran, st := j.coord, j.coordSet, j.ran, j.status.State
		j.mu.Unlock()
		wait := set
		switch {
		case c != nil && c != ended:
			return c, nil
		case c != nil:
			wait = c.cleared
		case ran:
			return nil, fmt.Errorf("engine: the job is not running (%s)", st)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("engine: the job did not start running: %w", ctx.Err())
		}
	}
}

// savepoint hands a request to the running attempt's coordinator and
// waits for its answer. An attempt that ends before its loop took the
// request passes it on to the next attempt (or fails it when Run
// returns); once taken, every request is answered, whatever ends the
// attempt (see coordinator.abortAll and end).
func (j *Job) savepoint(ctx context.Context, stop bool) (string, error) {
	req := savepointRequest{stop: stop, done: make(chan savepointResult, 1)}
	var ended *coordinator
	for {
		c, err := j.runningCoord(ctx, ended)
		if err != nil {
			return "", err
		}
		select {
		case c.savepoints <- req:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-c.ctx.Done():
			ended = c
			continue
		}
		break
	}
	select {
	case r := <-req.done:
		return r.path, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
