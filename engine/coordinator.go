package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

type ackMsg struct {
	id       int64
	st       *subtask
	keyed    *checkpoint.Handle
	operator *checkpoint.Handle
	err      error
	// sync and async are how long the subtask's synchronous and
	// asynchronous snapshot parts took; at is when it acked.
	sync, async time.Duration
	at          time.Time
}

type savepointRequest struct {
	stop bool
	done chan savepointResult
}

type savepointResult struct {
	path string
	err  error
}

type pendingCheckpoint struct {
	id        int64
	savepoint bool
	stop      bool
	final     bool
	triggered time.Time
	acks      []ackMsg
	req       *savepointRequest
	alignment time.Duration
}

// coordinator is the checkpoint coordinator of one attempt. Its run loop
// owns every field not marked otherwise; subtasks talk to it through
// channels and read completed/aborted atomically.
type coordinator struct {
	j        *Job
	ctx      context.Context
	opts     CheckpointOptions
	storage  checkpoint.Storage
	log      *slog.Logger
	clock    Clock
	restored bool
	// restoredCommitted: every transaction of the restored checkpoint is
	// known to be committed (checkpoint.Metadata.Committed).
	restoredCommitted bool
	fail              func(error)
	subtasks          []*subtask // set before run
	srcs              []*subtask // the sources among them, see sources

	// cleared is closed when the job no longer runs this attempt
	// (Job.setCoord): a savepoint request it did not take moves on.
	cleared    chan struct{}
	acks       chan ackMsg
	savepoints chan savepointRequest
	finishedCh chan struct{}
	notifiedCh chan notifiedMsg
	alignCh    chan alignMsg

	// completed and aborted are the latest ids; read by subtasks.
	completed atomic.Int64
	aborted   atomic.Int64
	// notifiedAll is the newest completed id every subtask has been told
	// of (its sinks committed it); read by Job.Status.
	notifiedAll atomic.Int64

	nextID         int64
	pending        map[int64]*pendingCheckpoint
	lastTrigger    time.Time
	lastCompletion time.Time
	failures       int
	finished       int
	finalPending   bool
	completedAny   bool
	// waitID is the newest completed stop-with-savepoint or final
	// checkpoint whose notifications are still being delivered (0: none):
	// the attempt ends once every subtask was notified of it. stops are
	// the completed stops, whose callers are answered then.
	waitID      int64
	stops       []completedStop
	notifiedIDs map[*subtask]int64
	// leftovers are the checkpoints in flight when the attempt ended.
	leftovers []int64
}

// completedStop is a stop-with-savepoint that completed: its path and
// caller, answered once every sink committed it (or the attempt ended).
type completedStop struct {
	id   int64
	path string
	req  *savepointRequest
}

type notifiedMsg struct {
	st *subtask
	id int64
}

type alignMsg struct {
	id int64
	d  time.Duration
}

func newCoordinator(ctx context.Context, j *Job, md *checkpoint.Metadata, log *slog.Logger) (*coordinator, error) {
	c := &coordinator{j: j, ctx: ctx, opts: j.opts.Checkpoint, storage: j.opts.Storage, log: log, clock: j.opts.Clock, restored: md != nil,
		cleared: make(chan struct{}), acks: make(chan ackMsg, 64), savepoints: make(chan savepointRequest), finishedCh: make(chan struct{}, 64),
		notifiedCh: make(chan notifiedMsg, 64), alignCh: make(chan alignMsg, 64),
		pending: map[int64]*pendingCheckpoint{}, notifiedIDs: map[*subtask]int64{}}
	infos, err := j.opts.Storage.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("engine: listing checkpoints: %w", err)
	}
	c.nextID = max(1, j.nextID)
	if md != nil {
		c.restoredCommitted = md.Committed
		c.nextID = max(c.nextID, md.CheckpointID+1)
		c.completed.Store(0)
	}
	for _, in := range infos {
		c.nextID = max(c.nextID, in.ID+1)
	}
	c.lastCompletion = c.clock.Now()
	c.lastTrigger = c.lastCompletion
	return c, nil
}

// ack is called by a subtask's snapshot goroutine.
func (c *coordinator) ack(a ackMsg) {
	select {
	case c.acks <- a:
	case <-c.ctx.Done():
	}
}

func (c *coordinator) sourceFinished() {
	select {
	case c.finishedCh <- struct{}{}:
	case <-c.ctx.Done():
	}
}

func (c *coordinator) notified(st *subtask, id int64) {
	select {
	case c.notifiedCh <- notifiedMsg{st, id}:
	case <-c.ctx.Done():
	}
}

func (c *coordinator) alignment(id int64, d time.Duration) {
	select {
	case c.alignCh <- alignMsg{id, d}:
	default: // statistics only
	}
}

// sources returns the source subtasks (computed once: subtasks is set
// before run).
func (c *coordinator) sources() []*subtask {
	if c.srcs == nil {
		for _, st := range c.subtasks {
			if st.n.kind == kindSource {
				c.srcs = append(c.srcs, st)
			}
		}
	}
	return c.srcs
}

// run is the coordinator loop. It returns nil when a final checkpoint was
// committed everywhere, ErrStopped after a stop-with-savepoint, or the
// error that fails the attempt.
//
// Its timers (the periodic trigger, held back by the min pause, and the
// timeouts of checkpoints in flight) run on the job's Clock: before each
// wait the loop computes the next instant one is due (nextDeadline) and
// waits for it with Clock.After, re-armed whenever that instant changes.
func (c *coordinator) run() error {
	nSources := len(c.sources())
	var timer <-chan time.Time
	var timerAt time.Time
	for {
		// An ended attempt (cancelled, or failed by this loop) wins over
		// whatever else is ready: select would pick at random.
		if c.ctx.Err() != nil {
			c.abortAll(errors.New("the job attempt ended"))
			return nil
		}
		if at, ok := c.nextDeadline(); !ok {
			timer = nil
		} else if timer == nil || !at.Equal(timerAt) {
			timer, timerAt = c.clock.After(at.Sub(c.clock.Now())), at
		}
		select {
		case <-c.ctx.Done():
			c.abortAll(errors.New("the job attempt ended"))
			return nil
		case <-timer:
			timer = nil
			c.onTimers(c.clock.Now())
		case a := <-c.acks:
			if err := c.onAck(a); err != nil {
				return err
			}
			if done, err := c.checkWaiting(); done {
				return c.end(err)
			}
		case m := <-c.alignCh:
			if p := c.pending[m.id]; p != nil {
				p.alignment = max(p.alignment, m.d)
			}
		case req := <-c.savepoints:
			c.trigger(&pendingCheckpoint{savepoint: true, stop: req.stop, req: &req})
		case <-c.finishedCh:
			c.finished++
			if c.finished == nSources && !c.finalPending {
				c.finalPending = true
				c.trigger(&pendingCheckpoint{final: true})
			}
		case m := <-c.notifiedCh:
			c.notifiedIDs[m.st] = max(c.notifiedIDs[m.st], m.id)
			c.updateNotifiedAll()
			if done, err := c.checkWaiting(); done {
				return c.end(err)
			}
		}
	}
}

// nextTrigger returns when the next periodic checkpoint is due: an
// interval after the last trigger and a min pause after the last
// checkpoint ended (completed or failed). False when none may start now
// (periodic checkpoints are off, the final checkpoint or a stop is under
// way, or MaxConcurrent are in flight); an event changes that, and the
// loop asks again.
func (c *coordinator) nextTrigger() (time.Time, bool) {
	if c.opts.Interval <= 0 || c.finalPending || c.waitID != 0 || c.stopPending() || len(c.pending) >= c.opts.MaxConcurrent {
		return time.Time{}, false
	}
	at := c.lastTrigger.Add(c.opts.Interval)
	if p := c.lastCompletion.Add(c.opts.MinPause); p.After(at) {
		at = p
	}
	return at, true
}

// nextDeadline returns the earliest instant a timer is due: the next
// periodic trigger or the timeout of a checkpoint in flight.
func (c *coordinator) nextDeadline() (time.Time, bool) {
	at, ok := c.nextTrigger()
	for _, p := range c.pending {
		if exp := p.triggered.Add(c.opts.Timeout); !ok || exp.Before(at) {
			at, ok = exp, true
		}
	}
	return at, ok
}

// onTimers runs what is due at now: expire checkpoints past their
// timeout, then trigger a periodic checkpoint if one is due.
func (c *coordinator) onTimers(now time.Time) {
	c.expire(now)
	if at, ok := c.nextTrigger(); ok && !now.Before(at) {
		c.trigger(&pendingCheckpoint{})
	}
}

// stopPending reports whether a stop-with-savepoint is in flight: no
// periodic checkpoint starts meanwhile, so that an abort with a larger id
// always means the stop failed.
func (c *coordinator) stopPending() bool {
	for _, p := range c.pending {
		if p.stop {
			return true
		}
	}
	return false
}

// trigger starts checkpoint p unless the attempt has ended (a failure
// this loop just reported cancels it): then a savepoint asked for is
// answered with an error and nothing is sent.
func (c *coordinator) trigger(p *pendingCheckpoint) {
	if err := c.ctx.Err(); err != nil {
		if p.req != nil {
			p.req.done <- savepointResult{err: fmt.Errorf("engine: the job attempt ended before the savepoint was taken: %w", err)}
		}
		return
	}
	p.id = c.nextID
	c.nextID++
	p.triggered = c.clock.Now()
	c.lastTrigger = p.triggered
	c.pending[p.id] = p
	c.j.history.add(CheckpointStats{ID: p.id, Savepoint: p.savepoint, Status: CheckpointInProgress, Triggered: p.triggered})
	// A barrier reaches every source or none: were it queued at some
	// sources only, their barrier n would meet barrier n+1 of the others
	// downstream. The coordinator is the only sender on the queues, so
	// room seen here is still there for the sends below.
	srcs := c.sources()
	for _, st := range srcs {
		if len(st.triggers) == cap(st.triggers) {
			c.abort(p.id, fmt.Errorf("source %s subtask %d has too many checkpoints queued", st.n.uid, st.index), true)
			return
		}
	}
	b := barrier{id: p.id, savepoint: p.savepoint, stop: p.stop}
	for _, st := range srcs {
		st.triggers <- b
		st.interrupt()
	}
}

// expire aborts checkpoints that reached their timeout, each a failure
// counted against the tolerable failures.
func (c *coordinator) expire(now time.Time) {
	for id, p := range c.pending {
		if now.Sub(p.triggered) >= c.opts.Timeout {
			c.abort(id, fmt.Errorf("checkpoint %d expired after %s", id, c.opts.Timeout), true)
		}
	}
}

func (c *coordinator) onAck(a ackMsg) error {
	p := c.pending[a.id]
	if p == nil {
		return nil // aborted or subsumed meanwhile
	}
	if a.err != nil {
		c.abort(a.id, a.err, true)
		return nil
	}
	p.acks = append(p.acks, a)
	if len(p.acks) < len(c.subtasks) {
		return nil
	}
	return c.complete(p)
}

func (c *coordinator) complete(p *pendingCheckpoint) error {
	md := &checkpoint.Metadata{Version: checkpoint.MetadataVersion, Job: c.j.name, CheckpointID: p.id, Savepoint: p.savepoint, Timestamp: p.triggered,
		WriterVersion: c.j.opts.Version}
	var size int64
	var cur *checkpoint.OperatorSnapshot
	for _, a := range sortedAcks(p.acks) {
		if cur == nil || cur.UID != a.st.n.uid {
			md.Operators = append(md.Operators, checkpoint.OperatorSnapshot{UID: a.st.n.uid, Parallelism: a.st.n.parallelism, MaxParallelism: c.j.opts.MaxParallelism,
				StateFormat: a.st.n.stateFormat})
			cur = &md.Operators[len(md.Operators)-1]
		}
		cur.Subtasks = append(cur.Subtasks, checkpoint.SubtaskSnapshot{Subtask: a.st.index, Keyed: a.keyed, Operator: a.operator})
		size += handleSize(a.keyed) + handleSize(a.operator)
	}
	persistStart := time.Now()
	if err := c.storage.Complete(c.ctx, md); err != nil {
		c.abort(p.id, fmt.Errorf("completing checkpoint %d: %w", p.id, err), true)
		return nil
	}
	persist := time.Since(persistStart)
	var syncMax, asyncMax time.Duration
	last := p.acks[0]
	for _, a := range p.acks {
		syncMax, asyncMax = max(syncMax, a.sync), max(asyncMax, a.async)
		if a.at.After(last.at) {
			last = a
		}
	}
	delete(c.pending, p.id)
	// One reading of the clock: the min pause counts from the end the
	// statistics report.
	done := c.clock.Now()
	c.lastCompletion = done
	c.failures = 0
	c.completedAny = true
	c.completed.Store(p.id)
	c.j.history.update(p.id, func(cs *CheckpointStats) {
		cs.Status, cs.Duration, cs.Size, cs.Alignment, cs.Path = CheckpointCompleted, done.Sub(p.triggered), size, p.alignment, md.Path
		cs.SyncMax, cs.AsyncMax, cs.Persist = syncMax, asyncMax, persist
		cs.LastAck, cs.LastAckAfter = fmt.Sprintf("%s/%d", last.st.n.uid, last.st.index), last.at.Sub(p.triggered)
	})
	// Older checkpoints still in flight are subsumed.
	for id := range c.pending {
		if id < p.id {
			c.abort(id, fmt.Errorf("subsumed by checkpoint %d", p.id), false)
		}
	}
	for _, st := range c.subtasks {
		st.interrupt()
	}
	c.log.Debug("checkpoint complete", "checkpoint", p.id, "duration", done.Sub(p.triggered), "bytes", size)
	if pr, ok := c.storage.(checkpoint.SavepointPruner); ok && p.savepoint && c.j.opts.Checkpoint.RetainSavepoints > 0 {
		// Before the answer: whoever asked finds the bound kept.
		keep := c.j.opts.Checkpoint.RetainSavepoints
		res, err := pr.PruneSavepoints(c.ctx, checkpoint.PruneOptions{Keep: keep})
		for _, r := range res.Removed {
			c.log.Info("removed an old savepoint beyond the retained count", "savepoint", r.ID, "path", r.Path, "retain_savepoints", keep)
		}
		for _, r := range res.Skipped {
			c.log.Debug("a savepoint is not counted towards the retained count", "savepoint", r.ID, "path", r.Path, "why", r.Why)
		}
		if err != nil {
			c.log.Warn("removing old savepoints beyond the retained count failed; they stay in the checkpoint storage", "retain_savepoints", keep, "err", err)
		}
	}
	if p.req != nil && !p.stop {
		p.req.done <- savepointResult{path: md.Path}
	}
	if p.stop || p.final {
		c.waitID = max(c.waitID, p.id)
		if p.stop {
			c.stops = append(c.stops, completedStop{id: p.id, path: md.Path, req: p.req})
		}
	}
	return nil
}

func handleSize(h *checkpoint.Handle) int64 {
	if h == nil {
		return 0
	}
	n := int64(len(h.Inline))
	for _, f := range h.Files {
		n += f.Size
	}
	return n
}

// updateNotifiedAll sets notifiedAll to the lowest id the subtasks were
// notified of.
func (c *coordinator) updateNotifiedAll() {
	low := int64(-1)
	for _, st := range c.subtasks {
		if id := c.notifiedIDs[st]; low < 0 || id < low {
			low = id
		}
	}
	c.notifiedAll.Store(max(low, 0))
}

// checkWaiting reports whether every subtask has been notified of the
// checkpoint the attempt is waiting for (a stop-with-savepoint or the
// final checkpoint), and with what the attempt ends: ErrStopped (every
// stop's caller answered with its savepoint) or nil (finished).
func (c *coordinator) checkWaiting() (bool, error) {
	if c.waitID == 0 {
		return false, nil
	}
	for _, st := range c.subtasks {
		if c.notifiedIDs[st] < c.waitID {
			return false, nil
		}
	}
	c.waitID = 0
	if len(c.stops) == 0 {
		return true, nil
	}
	// Every sink committed (and drained) the stops' transactions: say so
	// in the storage, so that a restore does not commit them again (the
	// broker may have expired their transactional ids by then). A failure
	// only costs that: the restore commits again, as without the marker.
	for _, s := range c.stops {
		if err := c.storage.MarkCommitted(c.ctx, s.id); err != nil {
			c.log.Warn("marking a stop's savepoint committed failed; a restore from it will commit its transactions again",
				"checkpoint", s.id, "path", s.path, "err", err)
		}
	}
	for _, s := range c.stops {
		if s.req != nil {
			s.req.done <- savepointResult{path: s.path}
		}
	}
	c.stops = nil
	return true, ErrStopped
}

// end answers every savepoint still in flight when the attempt ends by
// finishing (err nil) or stopping (ErrStopped), and returns err.
func (c *coordinator) end(err error) error {
	reason := errors.New("the job finished first")
	if err != nil {
		reason = errors.New("the job stopped first")
	}
	c.abortAll(reason)
	return err
}

// abort gives up checkpoint id. A failure (not a subsumption) counts
// against the tolerable failures; one too many fails the attempt.
func (c *coordinator) abort(id int64, reason error, failure bool) {
	p := c.pending[id]
	if p == nil {
		return
	}
	delete(c.pending, id)
	if err := c.storage.Abort(id); err != nil {
		c.log.Warn("removing an aborted checkpoint", "checkpoint", id, "err", err)
	}
	if id > c.aborted.Load() {
		c.aborted.Store(id)
	}
	status := CheckpointFailed
	if !failure {
		status = CheckpointSubsumed
	}
	now := c.clock.Now()
	c.j.history.update(id, func(cs *CheckpointStats) {
		cs.Status, cs.Duration, cs.Failure = status, now.Sub(p.triggered), reason.Error()
	})
	for _, st := range c.subtasks {
		st.interrupt()
	}
	if p.req != nil {
		p.req.done <- savepointResult{err: fmt.Errorf("engine: savepoint %d failed: %w", id, reason)}
	}
	if p.final {
		c.finalPending = false
		if c.finished == len(c.sources()) {
			// Try the final checkpoint again.
			defer c.trigger(&pendingCheckpoint{final: true})
			c.finalPending = true
		}
	}
	if !failure {
		return
	}
	c.lastCompletion = now
	c.log.Warn("checkpoint failed", "checkpoint", id, "err", reason)
	c.failures++
	if c.failures > c.opts.TolerableFailures {
		c.fail(fmt.Errorf("checkpoint %d failed and %d consecutive checkpoint failures exceed the %d tolerated: %w",
			id, c.failures, c.opts.TolerableFailures, reason))
	}
}

// abortAll gives up every checkpoint in flight when the attempt ends.
// Their files are removed by discardLeftovers once no subtask writes any
// more.
func (c *coordinator) abortAll(reason error) {
	for id := range c.pending {
		p := c.pending[id]
		delete(c.pending, id)
		c.leftovers = append(c.leftovers, id)
		if p.req != nil {
			p.req.done <- savepointResult{err: fmt.Errorf("engine: savepoint %d: %w", id, reason)}
		}
		c.j.history.update(id, func(cs *CheckpointStats) { cs.Status, cs.Failure = CheckpointFailed, reason.Error() })
	}
	for _, s := range c.stops {
		if s.req != nil {
			s.req.done <- savepointResult{path: s.path, err: fmt.Errorf("engine: the job attempt ended before every sink committed savepoint %d", s.id)}
		}
	}
	c.stops, c.waitID = nil, 0
}

// discardLeftovers removes what the checkpoints in flight at the end of
// the attempt wrote. It runs after every subtask and snapshot goroutine
// stopped.
func (c *coordinator) discardLeftovers() {
	for _, id := range c.leftovers {
		if err := c.storage.Abort(id); err != nil {
			c.log.Warn("removing an unfinished checkpoint", "checkpoint", id, "err", err)
		}
	}
	c.leftovers = nil
}

func (c *coordinator) operatorStats() []OperatorStats {
	var out []OperatorStats
	idx := map[string]int{}
	// low is the lowest watermark of every subtask of an operator (idle
	// or not), for an operator whose subtasks are all idle.
	var low []int64
	now := time.Now()
	for _, st := range c.subtasks {
		i, ok := idx[st.n.uid]
		if !ok {
			i = len(out)
			idx[st.n.uid] = i
			op := OperatorStats{UID: st.n.uid, Kind: st.n.kind.String(), Parallelism: st.n.parallelism,
				Watermark: math.MaxInt64, WatermarkIdle: true}
			for _, e := range st.n.in {
				op.Inputs = append(op.Inputs, e.from.uid)
			}
			out = append(out, op)
			low = append(low, math.MaxInt64)
		}
		out[i].RecordsIn += st.recordsInCount()
		out[i].RecordsOut += st.recordsOut.Load()
		out[i].Backpressured += st.chainBP().upTo(now)
		wm := st.wmTime.Load()
		low[i] = min(low[i], wm)
		if !st.wmIdle.Load() {
			out[i].WatermarkIdle = false
			out[i].Watermark = min(out[i].Watermark, wm)
		}
	}
	for i := range out {
		if out[i].WatermarkIdle {
			out[i].Watermark = low[i]
		}
	}
	return out
}

// LastCompleted returns the newest completed checkpoint or savepoint of a
// checkpoint history (Status.Checkpoints): the highest id, and of equal
// ids the one triggered last; false when none completed.
func LastCompleted(hist []CheckpointStats) (CheckpointStats, bool) {
	var best CheckpointStats
	found := false
	for _, cs := range hist {
		if cs.Status == CheckpointCompleted && (!found || cs.ID > best.ID || cs.ID == best.ID && cs.Triggered.After(best.Triggered)) {
			best, found = cs, true
		}
	}
	return best, found
}

// CheckpointStats is one line of the checkpoint history, like Flink's
// checkpoint statistics.
type CheckpointStats struct {
	ID        int64
	Savepoint bool
	// Status: CheckpointInProgress, CheckpointCompleted, CheckpointFailed
	// or CheckpointSubsumed.
	Status    CheckpointStatus
	Triggered time.Time
	Duration  time.Duration
	// Size is the bytes of state the checkpoint refers to.
	Size int64
	// Alignment is the longest barrier alignment of any subtask.
	Alignment time.Duration
	// SyncMax and AsyncMax are the longest synchronous part (taken before
	// the barrier is forwarded: operator state, a sink's pre-commit, the
	// keyed backend's capture) and asynchronous part (writing keyed state
	// to the storage) of any subtask's snapshot.
	SyncMax, AsyncMax time.Duration
	// LastAck names the subtask that acknowledged last ("uid/index"), and
	// LastAckAfter how long after the trigger; Persist is how long writing
	// the metadata took. Together they say where a slow checkpoint's time
	// went (barrier travel and alignment are LastAckAfter minus its sync
	// and async parts).
	LastAck      string
	LastAckAfter time.Duration
	Persist      time.Duration
	Path         string
	Failure      string
}

type history struct {
	mu    sync.Mutex
	max   int
	items []CheckpointStats
}

func newHistory(n int) *history { return &history{max: n} }

func (h *history) add(cs CheckpointStats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.items = append(h.items, cs)
	if len(h.items) > h.max {
		h.items = h.items[len(h.items)-h.max:]
	}
}

func (h *history) update(id int64, fn func(*CheckpointStats)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.items {
		if h.items[i].ID == id {
			fn(&h.items[i])
		}
	}
}

func (h *history) list() []CheckpointStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]CheckpointStats(nil), h.items...)
}
