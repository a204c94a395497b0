package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// element is what flows on a channel: a record (value, its key on a
// keyed edge, and its event timestamp), a barrier or a watermark.
type element struct {
	value    any
	key      any
	keyBytes []byte
	ts       int64
	barrier  *barrier
	wm       *watermark
}

type barrier struct {
	id        int64
	savepoint bool
	// stop: sources read nothing after this barrier (stop-with-savepoint).
	stop bool
}

type output struct {
	e     *edge
	chans []chan element
	next  int
	// direct is the downstream subtask of a chained edge: records and
	// barriers are handed to it by a call on this goroutine, no channel.
	direct *subtask
}

type input struct {
	ch    chan element
	input int // 0 or 1 (second input of a two-input operator)
}

// subtask is one parallel instance of an operator, run by one goroutine.
type subtask struct {
	j       *Job
	c       *coordinator
	n       *node
	index   int
	log     *slog.Logger
	inputs  []input
	outputs []*output
	// head is the first subtask of the chain this one belongs to (nil: it
	// is a head, running its own goroutine); chain, on a head, lists the
	// chained subtasks after it in topological order.
	head  *subtask
	chain []*subtask

	backend state.KeyedBackend
	opStore *state.OperatorStateStore
	restore *checkpoint.OperatorSnapshot
	// newer is the operator's snapshot in newerID, the latest complete
	// checkpoint, when restore comes from an older one (RestoreFrom).
	newer   *checkpoint.OperatorSnapshot
	newerID int64
	// stopID is the id of a stop-with-savepoint barrier a sink subtask
	// snapshotted: its notification waits for the sink's commits.
	stopID int64
	op     operator
	src    sourceRunner
	sink   sinkRunner

	triggers chan barrier
	wake     chan struct{}
	pollMu   sync.Mutex
	pollStop context.CancelFunc

	lastNotified int64
	lastAborted  int64
	// stoppedAt is the id of a stop-with-savepoint barrier the source
	// emitted (0: none): it reads nothing after it unless that savepoint
	// is aborted.
	stoppedAt int64

	recordsIn, recordsOut atomic.Int64
	// feeder is the upstream subtask that calls this one directly (a
	// chained one: its only input); nil otherwise. Every record the
	// feeder emits reaches this subtask once, so its records in are the
	// feeder's records out, and the direct call counts nothing of its own
	// (see recordsInCount).
	feeder *subtask
	// bp is the time this subtask's goroutine waited for room on full
	// channels to downstream subtasks (send), kept on the chain's head:
	// the chain waits as one.
	bp    backpressure
	async sync.WaitGroup

	// valve combines the watermarks of the inputs (see valve); wmTime
	// and wmIdle mirror its output for Status. wmr is a source's reader
	// when it generates watermarks, and wmDue says the source loop is to
	// ask it (set by tickWatermarks).
	valve  *valve
	wmTime atomic.Int64
	wmIdle atomic.Bool
	wmr    WatermarkReader
	wmDue  atomic.Bool
	// ts is the timestamp of the record being processed, or of the timer
	// firing (KeyedContext.Timestamp); emitTS that of what the operator
	// emits through out (emitOut, with emitCtx; emitErr is the first emit
	// failure of the call).
	ts      int64
	emitTS  int64
	out     func(any)
	emitCtx context.Context
	emitErr error
	// timerDomain is the domain of the timer OnTimer runs for (0 outside
	// OnTimer); ptC fires at ptAt (epoch ms) for the earliest
	// processing-time timer (nil: none armed). See timers.go.
	timerDomain state.TimeDomain
	ptC         <-chan time.Time
	ptAt        int64
	// floors are the restored watermarks of a keyed operator's key
	// groups, from floorsStart, when they differ (restoreWatermark).
	floors      []int64
	floorsStart int
}

type attemptResult struct {
	err       error
	completed bool
}

// runAttempt runs one attempt of the job from md (nil: from scratch) until
// it finishes, stops, fails or ctx ends.
func (j *Job) runAttempt(parent context.Context, attempt int, md, newer *checkpoint.Metadata, log *slog.Logger) attemptResult {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	c, err := newCoordinator(ctx, j, md, log)
	if err != nil {
		return attemptResult{err: err}
	}
	var failOnce sync.Once
	var firstErr error
	fail := func(err error) {
		failOnce.Do(func() { firstErr = err })
		cancel()
	}
	c.fail = fail

	subtasks, err := j.build(c, md, newer, log)
	if err != nil {
		return attemptResult{err: err}
	}
	c.subtasks = subtasks
	j.setCoord(c)
	defer j.setCoord(nil)

	var wg sync.WaitGroup
	for _, st := range subtasks {
		if st.head != nil {
			continue // runs on its head's goroutine
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.run(ctx); err != nil && ctx.Err() == nil {
				fail(st.failure(err))
			}
		}()
	}
	coordDone := make(chan error, 1)
	go func() { coordDone <- c.run() }()

	var result error
	coordReturned := false
	select {
	case result = <-coordDone:
		coordReturned = true
		cancel()
	case <-ctx.Done():
	}
	wg.Wait()
	for _, st := range subtasks {
		st.async.Wait()
	}
	if !coordReturned {
		<-coordDone
	}
	j.nextID = c.nextID
	c.discardLeftovers()
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer closeCancel()
	for _, st := range subtasks {
		st.close(closeCtx)
	}
	completed := c.completedAny
	switch {
	case firstErr != nil:
		return attemptResult{err: firstErr, completed: completed}
	case result != nil:
		return attemptResult{err: result, completed: completed}
	case parent.Err() != nil:
		return attemptResult{err: parent.Err(), completed: completed}
	}
	return attemptResult{completed: completed}
}

// build creates every subtask, its channels, state and operator.
func (j *Job) build(c *coordinator, md, newer *checkpoint.Metadata, log *slog.Logger) ([]*subtask, error) {
	byNode := map[*node][]*subtask{}
	var all []*subtask
	for _, n := range j.nodes {
		for i := range n.parallelism {
			st := &subtask{j: j, c: c, n: n, index: i, wake: make(chan struct{}, 1),
				log: log.With("operator", n.uid, "subtask", i)}
			if n.kind == kindSource {
				st.triggers = j.newTriggerQueue()
			}
			if md != nil {
				st.restore = md.Operator(n.uid)
			}
			if newer != nil {
				st.newerID, st.newer = newer.CheckpointID, newer.Operator(n.uid)
			}
			byNode[n] = append(byNode[n], st)
			all = append(all, st)
		}
	}
	for _, n := range j.nodes {
		for _, e := range n.out {
			forward := e.keyOf == nil && e.from.parallelism == e.to.parallelism
			chained := forward && !j.opts.DisableChaining && len(e.to.in) == 1
			for i, up := range byNode[e.from] {
				if chained {
					// j.nodes is in topological order, so up's head is
					// known before down joins the chain.
					down, head := byNode[e.to][i], up
					if up.head != nil {
						head = up.head
					}
					down.head, down.feeder = head, up
					head.chain = append(head.chain, down)
					up.outputs = append(up.outputs, &output{e: e, direct: down})
					continue
				}
				out := &output{e: e}
				for k, down := range byNode[e.to] {
					if forward && i != k {
						continue
					}
					ch := make(chan element, j.opts.ChannelCapacity)
					out.chans = append(out.chans, ch)
					down.inputs = append(down.inputs, input{ch: ch, input: e.input})
				}
				up.outputs = append(up.outputs, out)
			}
		}
	}
	for _, st := range all {
		st.initWatermarks()
	}
	return all, nil
}

// newTriggerQueue returns a source subtask's queue of barriers to emit.
// Only the coordinator sends on it, and only when every source's queue
// has room (coordinator.trigger), so a barrier reaches all or none.
func (j *Job) newTriggerQueue() chan barrier {
	return make(chan barrier, j.opts.Checkpoint.MaxConcurrent+4)
}

// open restores the subtask's state and creates its operator. It runs on
// the subtask's goroutine, so that slow restores (a sink's recovery
// commits) run in parallel.
func (st *subtask) open(ctx context.Context) error {
	j, n := st.j, st.n
	var opHandles []*checkpoint.Handle
	if st.restore != nil {
		opHandles = checkpoint.OperatorHandles(st.restore)
	}
	store, err := state.NewOperatorStateStore(st.index, n.parallelism, opHandles)
	if err != nil {
		return fmt.Errorf("restoring operator state: %w", err)
	}
	st.opStore = store
	scope := Scope{Job: j.name, UID: n.uid, Subtask: st.index, Parallelism: n.parallelism, Restored: st.c.restored}
	if st.restore != nil {
		scope.RestoredStateFormat = st.restore.StateFormat
	}
	switch n.kind {
	case kindSource:
		entries, err := st.entries(state.Union)
		if err != nil {
			return err
		}
		if st.src, err = n.newSource(ctx, scope, entries); err != nil {
			return fmt.Errorf("opening the source: %w", err)
		}
	case kindSink:
		entries, err := st.entries(state.Union)
		if err != nil {
			return err
		}
		scope.RestoredCommitted = st.c.restoredCommitted
		if st.newerID != 0 {
			scope.NewerCheckpoint = st.newerID
			if scope.NewerEntries, err = st.newerEntries(); err != nil {
				return err
			}
		}
		if st.sink, err = n.newSink(ctx, scope, entries); err != nil {
			return fmt.Errorf("opening the sink: %w", err)
		}
	default:
		if n.keyed {
			kgs := state.KeyGroupRangeForSubtask(st.index, n.parallelism, j.opts.MaxParallelism)
			var restore []*checkpoint.Handle
			if st.restore != nil {
				restore = checkpoint.KeyedHandlesFor(st.restore, kgs)
			}
			st.backend, err = j.opts.Backend.CreateKeyedBackend(ctx, state.KeyedBackendOptions{
				Job: j.name, OperatorUID: n.uid, Subtask: st.index, Parallelism: n.parallelism,
				MaxParallelism: j.opts.MaxParallelism, KeyGroups: kgs, Restore: restore, Storage: j.opts.Storage,
			})
			if err != nil {
				return fmt.Errorf("creating the keyed state backend: %w", err)
			}
			if err := st.restoreWatermark(kgs); err != nil {
				return err
			}
		}
		if st.op, err = n.newOperator(st); err != nil {
			return fmt.Errorf("opening the operator: %w", err)
		}
		if err := st.armNextProcessingTime(); err != nil {
			return fmt.Errorf("reading the processing-time timers: %w", err)
		}
		if st.op.stateful != nil {
			entries, err := st.entries(state.SplitEvenly)
			if err != nil {
				return err
			}
			if err := st.op.stateful.RestoreState(entries); err != nil {
				return fmt.Errorf("restoring operator state: %w", err)
			}
		}
	}
	return nil
}

func (st *subtask) entries(mode state.Redistribution) ([][]byte, error) {
	l, err := st.opStore.ListState("entries", mode)
	if err != nil {
		return nil, fmt.Errorf("restoring operator state: %w", err)
	}
	return l.Get(), nil
}

// newerEntries is the union of the operator's entries in the newer
// checkpoint (none when the operator had no state there).
func (st *subtask) newerEntries() ([][]byte, error) {
	if st.newer == nil {
		return nil, nil
	}
	store, err := state.NewOperatorStateStore(st.index, st.n.parallelism, checkpoint.OperatorHandles(st.newer))
	if err != nil {
		return nil, fmt.Errorf("reading operator state of the newer checkpoint %d: %w", st.newerID, err)
	}
	l, err := store.ListState("entries", state.Union)
	if err != nil {
		return nil, fmt.Errorf("reading operator state of the newer checkpoint %d: %w", st.newerID, err)
	}
	return l.Get(), nil
}

func (st *subtask) close(ctx context.Context) {
	if st.src != nil {
		if err := st.src.Close(); err != nil {
			st.log.Warn("closing the source", "err", err)
		}
	}
	if st.sink != nil {
		if err := st.sink.Close(ctx); err != nil {
			st.log.Warn("closing the sink", "err", err)
		}
	}
	if st.backend != nil {
		if err := st.backend.Close(); err != nil {
			st.log.Warn("closing the keyed state backend", "err", err)
		}
	}
}

// subtaskError names the subtask an error of a chain comes from.
type subtaskError struct {
	st  *subtask
	err error
}

func (e *subtaskError) Error() string {
	return fmt.Sprintf("operator %s subtask %d/%d: %v", e.st.n.uid, e.st.index, e.st.n.parallelism, e.err)
}

func (e *subtaskError) Unwrap() error { return e.err }

// failure names st in err, unless a chained subtask already named itself.
func (st *subtask) failure(err error) error {
	var se *subtaskError
	if errors.As(err, &se) {
		return err
	}
	return &subtaskError{st: st, err: err}
}

// run opens the subtask and its chain, then runs the head's loop until ctx
// ends or a step fails.
func (st *subtask) run(ctx context.Context) error {
	if err := st.open(ctx); err != nil {
		return err
	}
	for _, m := range st.chain {
		if err := m.open(ctx); err != nil {
			return m.failure(err)
		}
	}
	if st.n.kind == kindSource {
		return st.runSource(ctx)
	}
	return st.runInputs(ctx)
}

// interrupt wakes the subtask (for a chained one, its head): a source
// blocked in Next returns at once.
func (st *subtask) interrupt() {
	if st.head != nil {
		st.head.interrupt()
		return
	}
	select {
	case st.wake <- struct{}{}:
	default:
	}
	st.pollMu.Lock()
	if st.pollStop != nil {
		st.pollStop()
	}
	st.pollMu.Unlock()
}

func (st *subtask) runSource(ctx context.Context) error {
	finished := false
	var pollCtx context.Context
	stopPoll := context.CancelFunc(func() {})
	defer func() { stopPoll() }()
	if st.wmr = st.src.watermarks(); st.wmr != nil {
		// Asked once before the first record (a subtask with nothing to
		// read is idle from the start), then every interval.
		st.wmDue.Store(true)
		st.async.Add(1)
		go st.tickWatermarks(ctx, st.j.opts.WatermarkInterval)
	}
	for {
		// Control first: notifications (commits, aborts) before barriers,
		// and a pending barrier goes out before the next record.
		if len(st.wake) > 0 {
			<-st.wake // only this goroutine receives: it cannot block
			if err := st.handleNotifications(ctx); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// A select per record cost more than the rest of the loop: the
		// queues' lengths say whether one is worth it.
		if len(st.triggers) > 0 || len(st.wake) > 0 {
			select {
			case b := <-st.triggers:
				if err := st.checkpoint(ctx, b); err != nil {
					return err
				}
				if b.stop {
					st.stoppedAt = b.id
				}
				continue
			case <-st.wake:
				if err := st.handleNotifications(ctx); err != nil {
					return err
				}
				continue
			default:
			}
		}
		if finished || st.stoppedAt > 0 {
			select {
			case b := <-st.triggers:
				if err := st.checkpoint(ctx, b); err != nil {
					return err
				}
			case <-st.wake:
				if err := st.handleNotifications(ctx); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if st.wmDue.Load() && st.wmDue.Swap(false) {
			if err := st.sourceWatermark(ctx); err != nil {
				return err
			}
		}
		// One poll context serves every Next until interrupt cancels it:
		// a context per record cost more than the rest of the loop.
		if pollCtx == nil || pollCtx.Err() != nil {
			pollCtx, stopPoll = context.WithCancel(ctx)
			st.pollMu.Lock()
			st.pollStop = stopPoll
			st.pollMu.Unlock()
		}
		// Checked after the context is installed: a trigger, wake-up or
		// watermark tick sent before is seen here, one sent after cancels
		// the context.
		if len(st.triggers) > 0 || len(st.wake) > 0 || st.wmDue.Load() {
			continue
		}
	read:
		v, ts, ok, err := st.src.next(pollCtx)
		switch {
		case errors.Is(err, io.EOF):
			finished = true
			// No record follows: every event-time timer downstream may
			// fire, before the final checkpoint's barrier.
			if err := st.onWatermark(ctx, 0, watermark{time: MaxWatermark}); err != nil {
				return err
			}
			st.c.sourceFinished()
			continue
		case err != nil && ctx.Err() == nil:
			return err
		case !ok:
			continue
		}
		st.recordsOut.Add(1)
		if err := st.emit(ctx, v, ts); err != nil {
			return err
		}
		// Everything the checks above wait for (a trigger, a wake-up, a
		// watermark tick, the end of ctx) cancels the poll context once
		// it is installed, so while it stands the next record needs
		// none of them: the loop's checks cost more than the rest of
		// it per record.
		if pollCtx.Err() == nil {
			goto read
		}
	}
}

// runInputs is the loop of operators and sinks: read the inputs and,
// with several, let an aligner decide when to snapshot (it aligns in
// EXACTLY_ONCE mode, counts in AT_LEAST_ONCE mode; see aligner).
func (st *subtask) runInputs(ctx context.Context) error {
	n := len(st.inputs)
	if st.valve == nil {
		st.initWatermarks()
	}
	var al *aligner
	if n > 1 {
		al = newAligner(n, st.j.opts.Checkpoint.Mode)
	}
	var cases []reflect.SelectCase
	if n > 2 {
		cases = make([]reflect.SelectCase, n+3)
		for i, in := range st.inputs {
			cases[i] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(in.ch)}
		}
		cases[n] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.wake)}
		cases[n+1] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}
		cases[n+2] = reflect.SelectCase{Dir: reflect.SelectRecv}
	}
	// open are the inputs read now: nil while one is blocked by alignment.
	open := make([]chan element, max(n, 2))
	for i, in := range st.inputs {
		open[i] = in.ch
	}
	// follow makes open and cases follow the aligner after one of its steps.
	follow := func() {
		for i, in := range st.inputs {
			ch := in.ch
			if al.isBlocked(i) {
				ch = nil
			}
			if open[i] == ch {
				continue
			}
			open[i] = ch
			if cases != nil {
				cases[i].Chan = reflect.Value{}
				if ch != nil {
					cases[i].Chan = reflect.ValueOf(ch)
				}
			}
		}
	}
	// notifications delivers completions and aborts; an abort ends the
	// aligner's wait for that checkpoint.
	var abortSeen int64
	notifications := func() error {
		if err := st.handleNotifications(ctx); err != nil {
			return err
		}
		if al != nil {
			if id := st.c.aborted.Load(); id > abortSeen {
				abortSeen = id
				st.decline(al.aborted(id).declined)
				follow()
			}
		}
		return nil
	}
	// casesPT is the processing-time wake-up cases holds.
	var casesPT <-chan time.Time
	for {
		var el element
		ch := 0
		woke, timers := false, false
		if len(st.wake) > 0 {
			// Notifications first, then the inputs; only this goroutine
			// receives from wake, so this cannot block.
			<-st.wake
			if err := notifications(); err != nil {
				return err
			}
		}
		if st.ptC != nil {
			// Due processing-time timers fire before the next input: an
			// input that arrived after the wake-up (a barrier, say) cannot
			// overtake them, which a select between both would allow.
			select {
			case <-st.ptC:
				if err := st.onProcessingTime(ctx); err != nil {
					return err
				}
				continue
			default:
			}
		}
		switch n {
		case 1:
			select {
			case el = <-st.inputs[0].ch:
			case <-st.wake:
				woke = true
			case <-st.ptC:
				timers = true
			case <-ctx.Done():
				return ctx.Err()
			}
		case 2:
			// The common case of two upstream subtasks, without the cost
			// of reflect.Select; a blocked input is a nil channel.
			select {
			case el = <-open[0]:
			case el = <-open[1]:
				ch = 1
			case <-st.wake:
				woke = true
			case <-st.ptC:
				timers = true
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			if casesPT != st.ptC {
				casesPT, cases[n+2].Chan = st.ptC, reflect.Value{}
				if st.ptC != nil {
					cases[n+2].Chan = reflect.ValueOf(st.ptC)
				}
			}
			i, v, _ := reflect.Select(cases)
			switch {
			case i < n:
				el, ch = v.Interface().(element), i
			case i == n:
				woke = true
			case i == n+2:
				timers = true
			default:
				return ctx.Err()
			}
		}
		if timers {
			if err := st.onProcessingTime(ctx); err != nil {
				return err
			}
			continue
		}
		if woke {
			if err := notifications(); err != nil {
				return err
			}
			continue
		}
		if el.wm != nil {
			// A blocked input's watermarks wait in its channel with its
			// records: they are read once alignment releases it.
			if err := st.onWatermark(ctx, ch, *el.wm); err != nil {
				return err
			}
			continue
		}
		if b := el.barrier; b != nil {
			if al == nil {
				if err := st.checkpoint(ctx, *b); err != nil {
					return err
				}
				continue
			}
			step, err := al.onBarrier(ch, *b, time.Now())
			if err != nil {
				return err
			}
			st.decline(step.declined)
			follow()
			if step.snapshot {
				if al.exact {
					st.c.alignment(step.barrier.id, step.alignment)
				}
				if err := st.checkpoint(ctx, step.barrier); err != nil {
					return err
				}
			}
			continue
		}
		st.recordsIn.Add(1)
		if err := st.process(ctx, st.inputs[ch].input, el); err != nil {
			return err
		}
	}
}

// decline tells the coordinator that this subtask gives up checkpoints
// (an aligner's decision): it aborts each one still pending, as a failed
// checkpoint.
func (st *subtask) decline(ds []declinedCheckpoint) {
	for _, d := range ds {
		st.log.Info("declining a checkpoint", "checkpoint", d.id, "reason", d.reason)
		st.c.ack(ackMsg{id: d.id, st: st, at: time.Now(),
			err: fmt.Errorf("operator %s subtask %d declined checkpoint %d: %s", st.n.uid, st.index, d.id, d.reason)})
	}
}

// recordsInCount is how many records the subtask took in: its feeder's
// records out when it is chained (an atomic add per record less on the
// chain's goroutine), else its own count.
func (st *subtask) recordsInCount() int64 {
	if st.feeder != nil {
		return st.feeder.recordsOut.Load()
	}
	return st.recordsIn.Load()
}

func (st *subtask) process(ctx context.Context, in int, el element) error {
	if st.sink != nil {
		return st.sink.write(ctx, el.value)
	}
	if st.backend != nil {
		st.backend.SetCurrentKey(el.keyBytes)
	}
	st.ts, st.emitTS, st.emitCtx, st.emitErr = el.ts, el.ts, ctx, nil
	if err := st.op.process(in, el, st.outFunc()); err != nil {
		return err
	}
	return st.emitErr
}

// outFunc is the out function operators get: one method value per
// subtask, not a closure per record.
func (st *subtask) outFunc() func(any) {
	if st.out == nil {
		st.out = st.emitOut
	}
	return st.out
}

// emitOut emits v with emitTS (the timestamp of the record being
// processed, or of the timer firing), once no emit of this call has
// failed (the failure is returned by process or fireTimers).
func (st *subtask) emitOut(v any) {
	if st.emitErr == nil {
		st.recordsOut.Add(1)
		st.emitErr = st.emit(st.emitCtx, v, st.emitTS)
	}
}

// emit routes a record with event timestamp ts to every output: by key
// group on keyed edges, one-to-one on forward edges, round-robin
// otherwise.
func (st *subtask) emit(ctx context.Context, v any, ts int64) error {
	for _, o := range st.outputs {
		if d := o.direct; d != nil && d.sink != nil {
			// A chained sink takes the value alone (process).
			if err := d.sink.write(ctx, v); err != nil {
				return d.failure(err)
			}
			continue
		}
		el := element{value: v, ts: ts}
		target := 0
		switch {
		case o.e.keyOf != nil:
			k, kb, err := o.e.keyOf(v)
			if err != nil {
				return err
			}
			el.key, el.keyBytes = k, kb
			kg := state.KeyGroupOf(kb, st.j.opts.MaxParallelism)
			target = state.SubtaskForKeyGroup(kg, len(o.chans), st.j.opts.MaxParallelism)
		case len(o.chans) > 1:
			target = o.next
			o.next = (o.next + 1) % len(o.chans)
		}
		if o.direct != nil {
			if err := o.direct.process(ctx, o.e.input, el); err != nil {
				return o.direct.failure(err)
			}
			continue
		}
		if err := st.send(ctx, o.chans[target], el); err != nil {
			return err
		}
	}
	return nil
}

// send puts el on ch, a channel to a downstream subtask. When ch is full
// it waits for room or for ctx to end, and counts the wait as the
// backpressured time of its chain (the head's bp); a send with room
// costs no clock reading and no lock.
func (st *subtask) send(ctx context.Context, ch chan element, el element) error {
	select {
	case ch <- el:
		return nil
	default:
	}
	bp := st.chainBP()
	bp.begin(time.Now())
	var err error
	select {
	case ch <- el:
	case <-ctx.Done():
		err = ctx.Err()
	}
	bp.end(time.Now())
	return err
}

// chainBP is the backpressure of the chain st runs in: its head's.
func (st *subtask) chainBP() *backpressure {
	if st.head != nil {
		return &st.head.bp
	}
	return &st.bp
}

// backpressure accumulates a subtask's waits for room on full channels.
// A wait under way counts up to the time it is read, so that a subtask
// blocked for good shows as backpressured while it waits.
type backpressure struct {
	mu    sync.Mutex
	total time.Duration
	since time.Time // start of the wait under way; zero: none
}

func (b *backpressure) begin(now time.Time) {
	b.mu.Lock()
	b.since = now
	b.mu.Unlock()
}

func (b *backpressure) end(now time.Time) {
	b.mu.Lock()
	b.total += now.Sub(b.since)
	b.since = time.Time{}
	b.mu.Unlock()
}

// upTo is the backpressured time until now.
func (b *backpressure) upTo(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.since.IsZero() {
		return b.total
	}
	return b.total + max(now.Sub(b.since), 0)
}

func (st *subtask) broadcast(ctx context.Context, b barrier) error {
	return st.sendToAll(ctx, element{barrier: &b}, func(d *subtask) error { return d.checkpoint(ctx, b) })
}

// sendToAll sends el (a barrier or a watermark) to every downstream
// subtask: on every channel of every output, and to a chained operator by
// direct, a call on this goroutine.
func (st *subtask) sendToAll(ctx context.Context, el element, direct func(*subtask) error) error {
	for _, o := range st.outputs {
		if o.direct != nil {
			if err := direct(o.direct); err != nil {
				return o.direct.failure(err)
			}
			continue
		}
		for _, ch := range o.chans {
			if err := st.send(ctx, ch, el); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkpoint snapshots the subtask at barrier b: the synchronous part
// (operator state; a sink's pre-commit; the keyed backend's capture) on
// this goroutine before the barrier is forwarded, the slow part of the
// keyed snapshot on another goroutine, which then acks.
func (st *subtask) checkpoint(ctx context.Context, b barrier) error {
	start := time.Now()
	var entries [][]byte
	var err error
	mode := state.Union
	hasOp := true
	// sinkWait, when set, is the part of the sink's snapshot that runs
	// on the snapshot's goroutine (AsyncSnapshotWriter).
	var sinkWait func(context.Context) error
	switch {
	case st.src != nil:
		entries, err = st.src.SnapshotState(b.id)
	case st.sink != nil:
		if b.stop {
			st.stopID = b.id
		}
		if a, ok := st.sink.(asyncSnapshotter); ok {
			entries, sinkWait, err = a.snapshotAsync(ctx, b.id)
		} else {
			entries, err = st.sink.SnapshotState(ctx, b.id)
		}
	case st.op != nil && st.op.stateful != nil:
		mode = state.SplitEvenly
		entries, err = st.op.stateful.SnapshotState(b.id)
	default:
		hasOp = false
	}
	if err != nil {
		return fmt.Errorf("snapshotting for checkpoint %d: %w", b.id, err)
	}
	var opHandle *checkpoint.Handle
	if hasOp || st.backend != nil {
		if hasOp {
			l, err := st.opStore.ListState("entries", mode)
			if err != nil {
				return err
			}
			l.Update(entries)
		}
		if st.backend != nil {
			if err := st.snapshotWatermark(); err != nil {
				return err
			}
		}
		if opHandle, err = st.opStore.Snapshot(); err != nil {
			return fmt.Errorf("snapshotting operator state for checkpoint %d: %w", b.id, err)
		}
	}
	var async state.AsyncSnapshot
	var kerr error
	if st.backend != nil {
		w, err := st.j.opts.Storage.Writer(b.id, st.n.uid, st.index)
		if err == nil {
			if b.savepoint {
				async, err = statebackend.SavepointSnapshot(st.backend, b.id, w)
			} else {
				async, err = st.backend.Snapshot(b.id, w)
			}
		}
		kerr = err
	}
	syncDone := time.Now()
	if err := st.broadcast(ctx, b); err != nil {
		return err
	}
	st.async.Add(1)
	go func() { // owned by the subtask: waited for before the attempt ends
		defer st.async.Done()
		asyncStart := time.Now()
		var kh *checkpoint.Handle
		err := kerr
		if err == nil && async != nil {
			kh, err = async(ctx)
		}
		if err != nil {
			err = fmt.Errorf("operator %s subtask %d: keyed snapshot: %w", st.n.uid, st.index, err)
		}
		if err == nil && sinkWait != nil {
			if err = sinkWait(ctx); err != nil {
				err = fmt.Errorf("operator %s subtask %d: sink snapshot: %w", st.n.uid, st.index, err)
			}
		}
		now := time.Now()
		st.c.ack(ackMsg{id: b.id, st: st, keyed: kh, operator: opHandle, err: err,
			sync: syncDone.Sub(start), async: now.Sub(asyncStart), at: now})
	}()
	return nil
}

// handleNotifications delivers the latest checkpoint completion and abort
// to the head and every subtask of its chain.
func (st *subtask) handleNotifications(ctx context.Context) error {
	if err := st.notify(ctx); err != nil {
		return err
	}
	for _, m := range st.chain {
		if err := m.notify(ctx); err != nil {
			return m.failure(err)
		}
	}
	return nil
}

// notify delivers the latest checkpoint completion and abort to the
// operator, backend, source or sink. Intermediate ids may be skipped: a
// sink commits everything up to the id it is told.
func (st *subtask) notify(ctx context.Context) error {
	if id := st.c.completed.Load(); id > st.lastNotified {
		st.lastNotified = id
		if st.backend != nil {
			st.backend.NotifyCheckpointComplete(id)
		}
		if st.sink != nil {
			if err := st.sink.NotifyCheckpointComplete(ctx, id); err != nil {
				return fmt.Errorf("committing checkpoint %d: %w", id, err)
			}
			if st.stopID != 0 && id >= st.stopID {
				if err := st.sink.drain(ctx); err != nil {
					return fmt.Errorf("committing the stop savepoint %d: %w", id, err)
				}
			}
		}
		if st.src != nil {
			if err := st.src.NotifyCheckpointComplete(ctx, id); err != nil {
				st.log.Warn("source notification", "checkpoint", id, "err", err)
			}
		}
		st.c.notified(st, id)
	}
	if id := st.c.aborted.Load(); id > st.lastAborted {
		st.lastAborted = id
		if st.stoppedAt > 0 && id >= st.stoppedAt {
			st.stoppedAt = 0 // the stop-with-savepoint failed: go on reading
		}
		if st.backend != nil {
			st.backend.NotifyCheckpointAborted(id)
		}
		if st.sink != nil {
			if err := st.sink.NotifyCheckpointAborted(ctx, id); err != nil {
				return fmt.Errorf("aborting checkpoint %d: %w", id, err)
			}
		}
	}
	return nil
}

// sortedAcks orders acks by operator and subtask for the metadata.
func sortedAcks(acks []ackMsg) []ackMsg {
	sort.Slice(acks, func(a, b int) bool {
		if acks[a].st.n.uid != acks[b].st.n.uid {
			return acks[a].st.n.uid < acks[b].st.n.uid
		}
		return acks[a].st.index < acks[b].st.index
	})
	return acks
}
