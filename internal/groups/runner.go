package groups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/jobs"
)

// Pipeline is one partition group's checkpointed job: *engine.Job
// satisfies it.
type Pipeline interface {
	// Run runs until ctx ends (ctx.Err()), a StopWithSavepoint stopped it
	// (engine.ErrStopped), or it failed for good.
	Run(ctx context.Context) error
	// StopWithSavepoint takes a final savepoint, lets the sinks commit it
	// and stops the pipeline; it returns the savepoint's path.
	StopWithSavepoint(ctx context.Context) (string, error)
	// Status is the pipeline's engine status, for Runner.Status.
	Status() engine.Status
}

// Member is the group membership a Runner drives: *membership.Member
// satisfies it.
type Member interface {
	Join(ctx context.Context) error
	Close(ctx context.Context) error
	CommitOffsets(ctx context.Context, offsets map[string]map[int32]int64) error
	GroupID() string
}

// Options configure a Runner.
type Options struct {
	// G is the job's number of partition groups. Required.
	G int
	// Build builds group g's pipeline, claiming the group (jobs.Build
	// with a jobs.Group); ctx ends when the group is given up while it
	// builds. Required.
	Build func(ctx context.Context, g int) (Pipeline, error)
	// Membership configures the Member: brokers, job, GroupID, topics,
	// timeouts, client options. Its Handler and Groups are set by the
	// Runner (the Runner itself and G); its Logger defaults to Logger.
	Membership membership.Config
	// NewMember creates the Member from Membership; nil is membership.New.
	// Tests replace it to drive the Handler methods without Kafka.
	NewMember func(membership.Config) (Member, error)
	// Logger receives the Runner's events (nil: slog.Default()).
	Logger *slog.Logger
	// BuildAttempts bounds the tries of a group's Build that fails with
	// an error a later try may not meet, such as an S3 service or a Kafka
	// cluster briefly away during the claim (default
	// DefaultBuildAttempts). A build error that no retry fixes
	// (PermanentBuildError) or a fence is not retried.
	BuildAttempts int
	// BuildBackoff is the wait before try n+1 (n from 1); nil is
	// DefaultBuildBackoff.
	BuildBackoff func(n int) time.Duration
}

// DefaultBuildAttempts is Options.BuildAttempts' default: with
// DefaultBuildBackoff a group's build is retried for about 15 seconds.
const DefaultBuildAttempts = 5

// DefaultBuildBackoff waits 1s, 2s, 4s, 8s ... between tries, at most 15s.
func DefaultBuildBackoff(n int) time.Duration { return min(time.Second<<min(n-1, 4), 15*time.Second) }

// PermanentBuildError reports whether a group's build failed in a way
// that no retry fixes: a configuration the cluster or the storage
// refuses (*jobs.ConfigError), a checkpoint the job cannot restore
// (engine.ErrIncompatibleCheckpoint) or one that cannot be claimed
// without an operator's decision (s3store.ErrNotClaimable).
func PermanentBuildError(err error) bool {
	var ce *jobs.ConfigError
	return errors.As(err, &ce) || errors.Is(err, engine.ErrIncompatibleCheckpoint) || errors.Is(err, s3store.ErrNotClaimable)
}

// The states of a group (GroupStatus.State).
const (
	GroupClaiming = "claiming"
	GroupRunning  = "running"
	GroupStopping = "stopping"
)

// The states of a Runner (Status.State).
const (
	StateStarting = "starting" // New returned, Run not called yet
	StateJoining  = "joining"  // Run waits for its first assignment
	StateRunning  = "running"
	StateLeaving  = "leaving"  // Leave: the groups stop with final savepoints
	StateStopping = "stopping" // ctx ended or a group failed
	StateStopped  = "stopped"  // Run returned
)

// Status is the Runner as the API and the metrics show it.
type Status struct {
	State string
	// GroupID is the job's Kafka consumer group ("" before Run).
	GroupID string
	// G is the job's number of partition groups.
	G int
	// Groups are the groups this process holds, ascending.
	Groups []GroupStatus
	// Assignments, Revocations and Losses count the Member's callbacks
	// (rebalances that gave this process groups, took groups back, or
	// told it groups were lost); Fenced counts the groups given up
	// because a newer owner fenced them.
	Assignments, Revocations, Losses, Fenced int64
}

// GroupStatus is one group this process holds.
type GroupStatus struct {
	Group int
	// State is GroupClaiming, GroupRunning or GroupStopping.
	State string
	// Since is when the group entered State.
	Since time.Time
	// PipelineState is the engine's state of the group's job ("" while
	// claiming).
	PipelineState string
	// LastCheckpoint is the id of the pipeline's last completed checkpoint
	// or savepoint in this process (0: none yet), LastCheckpointTime when
	// it completed.
	LastCheckpoint     int64
	LastCheckpointTime time.Time
	// Restarts counts the pipeline's restarts after failed attempts.
	Restarts int64
}

// IsFenced reports whether err says that another owner has taken the
// group over: the S3 checkpoint storage refused a write because of a
// newer owner's epoch (s3store.ErrFenced), or Kafka fenced the group's
// transactional producers (kerr.ProducerFenced, kerr.InvalidProducerEpoch),
// wrapped or not (engine.NonRecoverable, twophase.ErrTransactionLost).
func IsFenced(err error) bool {
	return errors.Is(err, s3store.ErrFenced) || errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// Runner runs the partition groups this process owns; see the package
// documentation for the contract. It implements membership.Handler.
type Runner struct {
	opts Options
	log  *slog.Logger

	// base is the parent of every group's context; cancelBase ends them
	// all (Run's ctx ended, Run returns).
	base       context.Context
	cancelBase context.CancelFunc
	// fatal ends with the first fatal group error as its cause.
	fatal     context.Context
	failWith  context.CancelCauseFunc
	leaveReq  context.Context // ends when Leave is called
	askLeave  context.CancelFunc
	ended     chan struct{} // closed when Run returned
	endedOnce sync.Once

	wg sync.WaitGroup // the group goroutines

	mu       sync.Mutex // guards everything below and every group's mutable fields
	state    string
	ran      bool
	closed   bool // no group starts any more
	member   Member
	groups   map[int]*group
	leaveCtx context.Context
	leaveErr error
	counts   struct{ assigned, revoked, lost, fenced int64 }
}

// group is one group's goroutine and what stops it.
type group struct {
	index  int
	ctx    context.Context // Build's and Run's
	cancel context.CancelFunc
	// done ends when the goroutine has classified its end.
	done     context.Context
	markDone context.CancelFunc

	// Guarded by Runner.mu.
	state         string
	since         time.Time
	pipeline      Pipeline // nil while claiming
	stopRequested bool     // Revoked, Lost or the Runner's end gave it up
}

// New checks o and returns a Runner that has not joined yet.
func New(o Options) (*Runner, error) {
	if o.G < 1 {
		return nil, fmt.Errorf("groups: partition groups must be at least 1, got %d", o.G)
	}
	if o.Build == nil {
		return nil, errors.New("groups: Options.Build is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BuildAttempts <= 0 {
		o.BuildAttempts = DefaultBuildAttempts
	}
	if o.BuildBackoff == nil {
		o.BuildBackoff = DefaultBuildBackoff
	}
	if o.NewMember == nil {
		o.NewMember = func(c membership.Config) (Member, error) { return membership.New(c) }
	}
	r := &Runner{opts: o, log: o.Logger, state: StateStarting, groups: map[int]*group{}, ended: make(chan struct{})}
	r.base, r.cancelBase = context.WithCancel(context.Background())
	r.fatal, r.failWith = context.WithCancelCause(context.Background())
	r.leaveReq, r.askLeave = context.WithCancel(context.Background())
	return r, nil
}

// revokeTimeout is the Member's bound on Revoked (membership's default
// when unset).
func (r *Runner) revokeTimeout() time.Duration {
	if d := r.opts.Membership.RevokeTimeout; d > 0 {
		return d
	}
	return 30 * time.Second
}

// Run joins the job's consumer group and runs the groups assigned to this
// process until ctx ends, a group fails (the error), or Leave was called
// (nil). See the package documentation. Join failures (the input topic
// missing, G differing from the other instances', no assignment before
// ctx ended) are returned as they are.
func (r *Runner) Run(ctx context.Context) (err error) {
	r.mu.Lock()
	if r.ran {
		r.mu.Unlock()
		return errors.New("groups: Run called twice")
	}
	r.ran, r.state = true, StateJoining
	r.mu.Unlock()
	defer r.finish()
	// Whatever Run is doing when ctx ends, the pipelines are cancelled:
	// a stop with a savepoint then ends at once too.
	defer context.AfterFunc(ctx, r.cancelBase)()

	cfg := r.opts.Membership
	cfg.Handler, cfg.Groups = r, r.opts.G
	if cfg.Logger == nil {
		cfg.Logger = r.log
	}
	m, err := r.opts.NewMember(cfg)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.member = m
	r.mu.Unlock()

	var joinErr error
	if r.leaveReq.Err() == nil {
		joinCtx, cancelJoin := context.WithCancel(ctx)
		stopFatal := context.AfterFunc(r.fatal, cancelJoin)
		stopLeave := context.AfterFunc(r.leaveReq, cancelJoin)
		joinErr = m.Join(joinCtx)
		stopFatal()
		stopLeave()
		cancelJoin()
	}
	if joinErr == nil {
		r.mu.Lock()
		if r.state == StateJoining {
			r.state = StateRunning
		}
		r.mu.Unlock()
		r.log.Info("joined the job's consumer group", "consumer_group", m.GroupID(), "partition_groups", r.opts.G)
		select {
		case <-ctx.Done():
		case <-r.fatal.Done():
		case <-r.leaveReq.Done():
		}
	}

	switch {
	case ctx.Err() != nil:
		// Cancel: no final savepoints. The pipelines end first, so that
		// the leave hands over groups nothing of this process runs.
		r.setState(StateStopping)
		r.stopStarting()
		r.cancelBase()
		r.wg.Wait()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.revokeTimeout())
		defer cancel()
		if err := m.Close(closeCtx); err != nil {
			r.log.Warn("leaving the consumer group after cancellation", "err", err)
		}
		return fmt.Errorf("groups: cancelled: %w", context.Cause(ctx))
	case r.fatal.Err() != nil:
		// The other groups stop with final savepoints (the Member revokes
		// them on Close) and move.
		r.setState(StateStopping)
		r.stopStarting()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.revokeTimeout()+30*time.Second)
		defer cancel()
		if err := m.Close(closeCtx); err != nil {
			r.log.Warn("leaving the consumer group after a failed partition group", "err", err)
		}
		return context.Cause(r.fatal)
	case r.leaveReq.Err() != nil:
		r.setState(StateLeaving)
		r.stopStarting()
		r.mu.Lock()
		leaveCtx := r.leaveCtx
		r.mu.Unlock()
		start := time.Now()
		err := m.Close(leaveCtx)
		r.mu.Lock()
		r.leaveErr = err
		r.mu.Unlock()
		if err != nil {
			r.log.Warn("leaving the consumer group", "err", err)
		} else {
			r.log.Info("left the consumer group: every partition group stopped", "took", time.Since(start).Round(time.Millisecond))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("groups: cancelled while leaving: %w", context.Cause(ctx))
		}
		return nil
	default: // Join failed by itself
		r.setState(StateStopping)
		r.stopStarting()
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.revokeTimeout()+30*time.Second)
		defer cancel()
		_ = m.Close(closeCtx)
		return joinErr
	}
}

// finish ends whatever still runs and marks the Runner stopped.
func (r *Runner) finish() {
	r.stopStarting()
	r.cancelBase()
	r.wg.Wait()
	r.mu.Lock()
	r.state = StateStopped
	r.mu.Unlock()
	r.endedOnce.Do(func() { close(r.ended) })
}

// stopStarting makes Assigned start nothing more.
func (r *Runner) stopStarting() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

func (r *Runner) setState(s string) {
	r.mu.Lock()
	r.state = s
	r.mu.Unlock()
}

// Leave is the graceful exit (SIGTERM): it makes Run close the Member,
// which revokes every group (final savepoints, bounded by the revoke
// timeout) and leaves the consumer group, after which Run returns nil.
// Leave returns the leave's error once that is done, or ctx's error when
// ctx ends first (the leave goes on under ctx: Member.Close then closes
// the client without waiting for the coordinator). Called before Run, it
// makes Run return nil without joining. Only the first call's ctx is used.
func (r *Runner) Leave(ctx context.Context) error {
	r.mu.Lock()
	if r.leaveCtx == nil {
		r.leaveCtx = ctx
	}
	r.mu.Unlock()
	r.askLeave()
	select {
	case <-r.ended:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.leaveErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CommitOffsets commits input offsets of groups this process owns to the
// job's consumer group, through the Member (Member.CommitOffsets); it
// fails before Run created the Member.
func (r *Runner) CommitOffsets(ctx context.Context, offsets map[string]map[int32]int64) error {
	r.mu.Lock()
	m := r.member
	r.mu.Unlock()
	if m == nil {
		return errors.New("groups: commit: the consumer group is not joined yet")
	}
	return m.CommitOffsets(ctx, offsets)
}

// Assigned starts the goroutine of each group: build (claim), then run.
// It returns at once. Once Run is ending it starts nothing (the Member
// then revokes what it assigned, a no-op).
func (r *Runner) Assigned(_ context.Context, gs []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.assigned++
	if r.state == StateJoining {
		// An assignment is the end of the join, whether or not Join
		// has returned to Run yet.
		r.state = StateRunning
	}
	for _, g := range gs {
		switch {
		case r.closed:
			r.log.Info("partition group assigned while this instance stops: not started", "partition_group", g)
			continue
		case g < 0 || g >= r.opts.G:
			r.log.Error("partition group assigned that does not exist: ignored", "partition_group", g, "partition_groups", r.opts.G)
			continue
		case r.groups[g] != nil:
			r.log.Error("partition group assigned again while this instance holds it: ignored", "partition_group", g, "state", r.groups[g].state)
			continue
		}
		gr := &group{index: g, state: GroupClaiming, since: time.Now()}
		gr.ctx, gr.cancel = context.WithCancel(r.base)
		gr.done, gr.markDone = context.WithCancel(context.Background())
		r.groups[g] = gr
		r.wg.Add(1)
		go r.runGroup(gr)
	}
}

// Revoked stops each group with a final savepoint, concurrently, within
// ctx (else cancels it), and returns once none of them runs.
func (r *Runner) Revoked(ctx context.Context, gs []int) {
	r.mu.Lock()
	r.counts.revoked++
	r.mu.Unlock()
	r.stopGroups(ctx, gs, true)
}

// Lost cancels each group at once, without a final checkpoint, and
// returns once none of them runs.
func (r *Runner) Lost(ctx context.Context, gs []int) {
	r.mu.Lock()
	r.counts.lost++
	var held []int
	for _, g := range gs {
		if r.groups[g] != nil {
			held = append(held, g)
		}
	}
	r.mu.Unlock()
	if len(held) > 0 {
		// The zombie's notice: a process paused or cut off past its
		// session timeout hears first from the coordinator, before any
		// write of its groups is refused.
		r.log.Warn("fenced out: the group coordinator no longer counts this instance as the owner of these partition groups "+
			"(it was removed from the group: its session timed out, say because the process was paused, or a rejoin failed); "+
			"they may run on another instance already, so they stop here without a final checkpoint, and whatever they still "+
			"write is refused by the new owner's claim and producer fencing", "partition_groups", held)
	}
	r.stopGroups(ctx, gs, false)
}

func (r *Runner) stopGroups(ctx context.Context, gs []int, savepoint bool) {
	var wg sync.WaitGroup
	for _, g := range gs {
		r.mu.Lock()
		gr := r.groups[g]
		var p Pipeline
		if gr != nil {
			gr.stopRequested = true
			gr.state, gr.since = GroupStopping, time.Now()
			p = gr.pipeline
		}
		r.mu.Unlock()
		if gr == nil {
			continue // never held, fenced or ended: nothing runs
		}
		wg.Go(func() { r.stop(ctx, gr, p, savepoint) })
	}
	wg.Wait()
}

// stop ends gr: with a final savepoint of p when savepoint is set and p
// runs, else (or when that fails or ctx ends) by cancelling; it returns
// once gr's goroutine ended.
func (r *Runner) stop(ctx context.Context, gr *group, p Pipeline, savepoint bool) {
	log := r.log.With("partition_group", gr.index)
	start := time.Now()
	switch {
	case p == nil:
		// Still claiming: its goroutine, seeing stopRequested, will not
		// run what Build returns.
		log.Info("partition group given up while claiming: cancelling the claim")
		gr.cancel()
	case !savepoint:
		log.Info("partition group lost: cancelling its pipeline without a final checkpoint (it may run elsewhere already)")
		gr.cancel()
	default:
		sctx, cancel := context.WithCancel(ctx)
		stopWaiting := context.AfterFunc(gr.done, cancel)
		path, err := p.StopWithSavepoint(sctx)
		stopWaiting()
		cancel()
		if err != nil {
			if gr.done.Err() == nil {
				log.Warn("partition group revoked: no final savepoint, cancelling its pipeline; the next owner restores its last checkpoint and commits what that holds",
					"err", err)
			}
			gr.cancel()
		} else {
			log.Info("partition group revoked: stopped with a final savepoint", "savepoint", path, "took", time.Since(start).Round(time.Millisecond))
		}
	}
	select {
	case <-gr.done.Done():
	case <-ctx.Done():
		gr.cancel()
		<-gr.done.Done()
	}
}

// runGroup is a group's goroutine: build, run, classify the end.
func (r *Runner) runGroup(gr *group) {
	defer r.wg.Done()
	defer gr.markDone()
	err := r.buildAndRun(gr)
	r.groupEnded(gr, err)
}

// errGivenUp ends a group whose Build returned after it was given up.
var errGivenUp = errors.New("given up while claiming")

func (r *Runner) buildAndRun(gr *group) error {
	start := time.Now()
	p, err := r.build(gr)
	if err != nil {
		return fmt.Errorf("claiming and building: %w", err)
	}
	r.mu.Lock()
	if gr.stopRequested {
		r.mu.Unlock()
		return errGivenUp
	}
	gr.pipeline, gr.state, gr.since = p, GroupRunning, time.Now()
	r.mu.Unlock()
	r.log.Info("partition group running", "partition_group", gr.index, "built_in", time.Since(start).Round(time.Millisecond))
	return p.Run(gr.ctx)
}

// build builds gr's pipeline, retrying up to Options.BuildAttempts tries
// while the group is still held: a fence, a PermanentBuildError and the
// group's end are not retried.
func (r *Runner) build(gr *group) (Pipeline, error) {
	for n := 1; ; n++ {
		p, err := r.opts.Build(gr.ctx, gr.index)
		if err == nil && p == nil {
			err = errors.New("the build returned no pipeline")
		}
		if err == nil || gr.ctx.Err() != nil || IsFenced(err) || PermanentBuildError(err) || n >= r.opts.BuildAttempts {
			return p, err
		}
		wait := r.opts.BuildBackoff(n)
		r.log.Warn("claiming and building the partition group failed; trying again", "partition_group", gr.index,
			"attempt", n, "of", r.opts.BuildAttempts, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-gr.ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// groupEnded forgets gr and decides what its end means (see the package
// documentation).
func (r *Runner) groupEnded(gr *group, err error) {
	log := r.log.With("partition_group", gr.index)
	r.mu.Lock()
	requested := gr.stopRequested
	if r.groups[gr.index] == gr {
		delete(r.groups, gr.index)
	}
	fenced := !requested && gr.ctx.Err() == nil && IsFenced(err)
	if fenced {
		r.counts.fenced++
	}
	r.mu.Unlock()
	switch {
	case requested || gr.ctx.Err() != nil:
		switch {
		case errors.Is(err, engine.ErrStopped):
			log.Info("partition group stopped with its final savepoint")
		case err == nil, errors.Is(err, context.Canceled), errors.Is(err, errGivenUp):
			log.Info("partition group stopped without a final savepoint")
		default:
			log.Warn("partition group ended with an error while it was being stopped", "err", err)
		}
	case fenced:
		log.Warn(fmt.Sprintf("fenced: another instance owns partition group %d now; giving it up", gr.index), "err", err)
	case err == nil:
		log.Warn("partition group's pipeline finished by itself (its input ended); the group stays idle until it is revoked")
	case errors.Is(err, engine.ErrStopped):
		log.Warn("partition group's pipeline was stopped with a savepoint by someone else; the group stays idle until it is revoked")
	default:
		err = fmt.Errorf("partition group %d: %w", gr.index, err)
		log.Error("partition group failed: this instance stops (its other groups with final savepoints) and exits", "err", err)
		r.failWith(err)
	}
}

// Status returns the Runner's state, the groups it holds and its counters.
func (r *Runner) Status() Status {
	type held struct {
		g     int
		state string
		since time.Time
		p     Pipeline
	}
	r.mu.Lock()
	st := Status{State: r.state, G: r.opts.G, Assignments: r.counts.assigned, Revocations: r.counts.revoked,
		Losses: r.counts.lost, Fenced: r.counts.fenced}
	st.GroupID = r.opts.Membership.GroupID
	if r.member != nil {
		st.GroupID = r.member.GroupID()
	}
	hs := make([]held, 0, len(r.groups))
	for _, g := range slices.Sorted(maps.Keys(r.groups)) {
		gr := r.groups[g]
		hs = append(hs, held{g, gr.state, gr.since, gr.pipeline})
	}
	r.mu.Unlock()
	// Pipelines' statuses are read outside the lock: they take their own.
	for _, h := range hs {
		gs := GroupStatus{Group: h.g, State: h.state, Since: h.since}
		if h.p != nil {
			es := h.p.Status()
			gs.PipelineState, gs.Restarts, gs.LastCheckpoint = es.State.String(), es.Restarts, es.LastCheckpoint
			if last, ok := engine.LastCompleted(es.Checkpoints); ok {
				gs.LastCheckpoint = last.ID
				gs.LastCheckpointTime = last.Triggered.Add(last.Duration)
			}
		}
		st.Groups = append(st.Groups, gs)
	}
	return st
}
