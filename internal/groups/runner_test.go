package groups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/jobs"
)

// The tests drive the Runner's Handler methods as the Member would, with
// a fake Member and fake pipelines sequenced by channels. waitFor's
// deadline only bounds a failing test; nothing sleeps.

const failAfter = 10 * time.Second

// fakePipeline is a group's pipeline: Run waits for a stop, a
// cancellation or an injected end.
type fakePipeline struct {
	g          int
	running    chan struct{} // closed when Run started
	stopCalled chan struct{} // closed when StopWithSavepoint was entered
	stopped    chan struct{} // closed by a successful StopWithSavepoint: Run returns ErrStopped
	end        chan error    // Run returns what is sent
	runEnded   chan error    // Run's result
	// hangStop makes StopWithSavepoint wait for its ctx (a savepoint that
	// does not complete in time).
	hangStop bool

	mu    sync.Mutex
	stops int
}

func newFakePipeline(g int) *fakePipeline {
	return &fakePipeline{g: g, running: make(chan struct{}), stopCalled: make(chan struct{}), stopped: make(chan struct{}),
		end: make(chan error, 1), runEnded: make(chan error, 1)}
}

func (p *fakePipeline) Run(ctx context.Context) error {
	close(p.running)
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-p.stopped:
		err = engine.ErrStopped
	case err = <-p.end:
	}
	p.runEnded <- err
	return err
}

func (p *fakePipeline) StopWithSavepoint(ctx context.Context) (string, error) {
	p.mu.Lock()
	p.stops++
	first := p.stops == 1
	p.mu.Unlock()
	if first {
		close(p.stopCalled)
	}
	if p.hangStop {
		<-ctx.Done()
		return "", ctx.Err()
	}
	close(p.stopped)
	return fmt.Sprintf("s3://bucket/job/pg-%d/savepoint-1", p.g), nil
}

func (p *fakePipeline) Status() engine.Status {
	t := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return engine.Status{State: engine.JobRunning, Restarts: 2, LastCheckpoint: 7, Checkpoints: []engine.CheckpointStats{
		{ID: 6, Status: engine.CheckpointCompleted, Triggered: t.Add(-time.Second), Duration: 100 * time.Millisecond},
		{ID: 7, Status: engine.CheckpointCompleted, Triggered: t, Duration: 200 * time.Millisecond},
		{ID: 8, Status: engine.CheckpointInProgress, Triggered: t.Add(time.Second)},
	}}
}

// fakeMember stands for membership.Member: Close revokes what it owns, as
// the real one does, then counts as closed.
type fakeMember struct {
	cfg    membership.Config
	joined chan struct{}
	// joinBlocks makes Join wait for its ctx.
	joinBlocks bool
	closed     chan struct{}
	closeOnce  sync.Once

	mu    sync.Mutex
	owned []int
}

func (m *fakeMember) Join(ctx context.Context) error {
	close(m.joined)
	if m.joinBlocks {
		<-ctx.Done()
		return fmt.Errorf("membership: no assignment yet: %w", ctx.Err())
	}
	return nil
}

func (m *fakeMember) Close(context.Context) error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		owned := m.owned
		m.owned = nil
		m.mu.Unlock()
		if len(owned) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RevokeTimeout)
			m.cfg.Handler.Revoked(ctx, owned)
			cancel()
		}
		close(m.closed)
	})
	return nil
}

func (m *fakeMember) CommitOffsets(context.Context, map[string]map[int32]int64) error { return nil }
func (m *fakeMember) GroupID() string                                                 { return m.cfg.GroupID }

// logTap forwards every log record's message to a channel.
type logTap struct{ msgs chan string }

func (h logTap) Enabled(context.Context, slog.Level) bool { return true }
func (h logTap) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Level.String() + " " + r.Message:
	default: // a test that reads no logs must not block the Runner
	}
	return nil
}
func (h logTap) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logTap) WithGroup(string) slog.Handler      { return h }

// harness is a Runner under test, running.
type harness struct {
	t      *testing.T
	r      *Runner
	m      *fakeMember
	logs   chan string
	cancel context.CancelCauseFunc
	runErr chan error

	mu       sync.Mutex
	pipes    map[int]*fakePipeline
	building chan int                // g, when Build was entered
	ready    chan int                // g, when Build returned its pipeline
	gates    map[int]chan struct{}   // Build of g waits for its gate
	buildErr map[int]error           // Build of g fails with it
	failures map[int]int             // Build of g fails that many more times (buildErr)
	builds   map[int]int             // Build calls per group
	hang     map[int]bool            // g's pipeline does not stop in time
	built    map[int]context.Context // Build's ctx
}

type setup struct {
	joinBlocks bool
	gates      []int // groups whose Build waits for release
	buildErr   map[int]error
	// failures: Build of g fails with buildErr[g] only that many times.
	failures map[int]int
	hang     []int
}

func start(t *testing.T, s setup) *harness {
	t.Helper()
	h := &harness{t: t, logs: make(chan string, 10000), runErr: make(chan error, 1), pipes: map[int]*fakePipeline{},
		building: make(chan int, 100), ready: make(chan int, 100), gates: map[int]chan struct{}{}, buildErr: s.buildErr, hang: map[int]bool{},
		built: map[int]context.Context{}, failures: s.failures, builds: map[int]int{}}
	for _, g := range s.gates {
		h.gates[g] = make(chan struct{})
	}
	for _, g := range s.hang {
		h.hang[g] = true
	}
	h.m = &fakeMember{joined: make(chan struct{}), closed: make(chan struct{}), joinBlocks: s.joinBlocks}
	r, err := New(Options{
		G:          8,
		Build:      h.build,
		Membership: membership.Config{GroupID: "onceflow-test", RevokeTimeout: time.Minute},
		NewMember: func(c membership.Config) (Member, error) {
			h.m.cfg = c
			return h.m, nil
		},
		Logger:       slog.New(logTap{h.logs}),
		BuildBackoff: func(int) time.Duration { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	ctx, cancel := context.WithCancelCause(context.Background())
	h.cancel = cancel
	go func() { h.runErr <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		select {
		case <-h.r.ended:
		case <-time.After(failAfter):
			t.Errorf("Run did not return after its ctx ended")
		}
	})
	waitFor(t, h.m.joined, "Join")
	return h
}

func (h *harness) build(ctx context.Context, g int) (Pipeline, error) {
	h.mu.Lock()
	gate := h.gates[g]
	h.built[g] = ctx
	h.builds[g]++
	failing := h.failures == nil || h.failures[g] >= h.builds[g]
	h.mu.Unlock()
	h.building <- g
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, fmt.Errorf("claim of group %d: %w", g, ctx.Err())
		}
	}
	if err := h.buildErr[g]; err != nil && failing {
		return nil, err
	}
	p := newFakePipeline(g)
	h.mu.Lock()
	p.hangStop = h.hang[g]
	h.pipes[g] = p
	h.mu.Unlock()
	h.ready <- g
	return p, nil
}

func (h *harness) pipe(g int) *fakePipeline {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pipes[g]
	if p == nil {
		h.t.Fatalf("group %d was not built", g)
	}
	return p
}

// assign is the Member assigning gs; it waits until each group's
// pipeline runs (or, for a gated group, until Build was entered).
func (h *harness) assign(gs ...int) {
	h.t.Helper()
	h.m.mu.Lock()
	h.m.owned = append(h.m.owned, gs...)
	h.m.mu.Unlock()
	h.r.Assigned(context.Background(), gs)
	for range gs {
		select {
		case <-h.building:
		case <-time.After(failAfter):
			h.t.Fatalf("Build of %v not called", gs)
		}
	}
	for _, g := range gs {
		if h.gates[g] == nil {
			h.waitReady(g)
		}
	}
}

// waitReady waits until g's pipeline was built and runs.
func (h *harness) waitReady(g int) *fakePipeline {
	h.t.Helper()
	for {
		h.mu.Lock()
		p := h.pipes[g]
		h.mu.Unlock()
		if p != nil {
			waitFor(h.t, p.running, fmt.Sprintf("group %d running", g))
			return p
		}
		select {
		case <-h.ready: // some group is built; look again
		case <-time.After(failAfter):
			h.t.Fatalf("group %d not built", g)
		}
	}
}

// revoke is the Member revoking gs under ctx; it returns once Revoked did.
func (h *harness) revoke(ctx context.Context, gs ...int) {
	h.m.mu.Lock()
	h.m.owned = slices.DeleteFunc(h.m.owned, func(g int) bool { return slices.Contains(gs, g) })
	h.m.mu.Unlock()
	h.r.Revoked(ctx, gs)
}

func (h *harness) lose(gs ...int) {
	h.m.mu.Lock()
	h.m.owned = slices.DeleteFunc(h.m.owned, func(g int) bool { return slices.Contains(gs, g) })
	h.m.mu.Unlock()
	h.r.Lost(context.Background(), gs)
}

// waitLog waits for a log line containing want.
func (h *harness) waitLog(want string) {
	h.t.Helper()
	deadline := time.After(failAfter)
	for {
		select {
		case msg := <-h.logs:
			if strings.Contains(msg, want) {
				return
			}
		case <-deadline:
			h.t.Fatalf("no log line with %q", want)
		}
	}
}

func (h *harness) waitRun() error {
	h.t.Helper()
	select {
	case err := <-h.runErr:
		return err
	case <-time.After(failAfter):
		h.t.Fatal("Run did not return")
		return nil
	}
}

func waitFor(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(failAfter):
		t.Fatalf("%s: not within %s", what, failAfter)
	}
}

func recv(t *testing.T, c <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(failAfter):
		t.Fatalf("%s: not within %s", what, failAfter)
		return nil
	}
}

func groupsOf(st Status) []int {
	var gs []int
	for _, g := range st.Groups {
		gs = append(gs, g.Group)
	}
	return gs
}

func TestAssignedClaimsThenRuns(t *testing.T) {
	h := start(t, setup{gates: []int{3}})
	h.assign(3) // returns while Build still claims
	st := h.r.Status()
	if st.State != StateRunning || st.GroupID != "onceflow-test" || st.G != 8 || st.Assignments != 1 {
		t.Fatalf("status %+v", st)
	}
	if len(st.Groups) != 1 || st.Groups[0].Group != 3 || st.Groups[0].State != GroupClaiming || st.Groups[0].PipelineState != "" {
		t.Fatalf("groups while claiming: %+v", st.Groups)
	}
	close(h.gates[3])
	h.waitReady(3)
	g := h.r.Status().Groups[0]
	want := time.Date(2025, 1, 2, 3, 4, 5, 200*int(time.Millisecond), time.UTC)
	if g.State != GroupRunning || g.PipelineState != "RUNNING" || g.LastCheckpoint != 7 || !g.LastCheckpointTime.Equal(want) || g.Restarts != 2 {
		t.Fatalf("running group: %+v", g)
	}
}

func TestRevokedStopsWithAFinalSavepointThenReturns(t *testing.T) {
	h := start(t, setup{})
	h.assign(1, 5)
	h.revoke(context.Background(), 1)
	// Revoked returned: group 1's pipeline ended with its savepoint.
	if err := recv(t, h.pipe(1).runEnded, "group 1 ended"); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("group 1's Run returned %v, want ErrStopped", err)
	}
	if st := h.r.Status(); !slices.Equal(groupsOf(st), []int{5}) || st.Revocations != 1 {
		t.Fatalf("status after revoking 1: %+v", st)
	}
	select {
	case <-h.pipe(5).stopCalled:
		t.Fatal("group 5 was stopped too")
	default:
	}
	h.r.Revoked(context.Background(), []int{1, 6}) // no longer held, never held: no-ops
	select {
	case err := <-h.runErr:
		t.Fatalf("Run returned %v", err)
	default:
	}
}

func TestRevokeCancelsAPipelineThatDoesNotStopInTime(t *testing.T) {
	h := start(t, setup{hang: []int{2}})
	h.assign(2)
	ctx, cancel := context.WithCancel(context.Background())
	revoked := make(chan struct{})
	go func() {
		defer close(revoked)
		h.revoke(ctx, 2)
	}()
	waitFor(t, h.pipe(2).stopCalled, "StopWithSavepoint called")
	select {
	case <-revoked:
		t.Fatal("Revoked returned while the savepoint was still under way")
	default:
	}
	cancel() // the revoke timeout
	waitFor(t, revoked, "Revoked returns after its deadline")
	if err := recv(t, h.pipe(2).runEnded, "group 2 ended"); !errors.Is(err, context.Canceled) {
		t.Fatalf("group 2's Run returned %v, want it cancelled", err)
	}
	h.waitLog("no final savepoint, cancelling")
	if st := h.r.Status(); len(st.Groups) != 0 {
		t.Fatalf("groups after the revoke: %+v", st.Groups)
	}
}

func TestRevokedWhileClaimingCancelsTheClaim(t *testing.T) {
	h := start(t, setup{gates: []int{4}})
	h.assign(4)
	h.revoke(context.Background(), 4)
	h.mu.Lock()
	bctx := h.built[4]
	built := h.pipes[4]
	h.mu.Unlock()
	if bctx.Err() == nil {
		t.Fatal("Revoked returned while group 4's Build's ctx still runs")
	}
	if built != nil {
		t.Fatal("a pipeline was built for a claim given up")
	}
	if st := h.r.Status(); len(st.Groups) != 0 {
		t.Fatalf("groups: %+v", st.Groups)
	}
}

func TestLostCancelsWithoutASavepoint(t *testing.T) {
	h := start(t, setup{})
	h.assign(0, 7)
	h.lose(0, 7)
	for _, g := range []int{0, 7} {
		p := h.pipe(g)
		if err := recv(t, p.runEnded, "ended"); !errors.Is(err, context.Canceled) {
			t.Fatalf("group %d's Run returned %v, want it cancelled", g, err)
		}
		select {
		case <-p.stopCalled:
			t.Fatalf("group %d lost with a savepoint", g)
		default:
		}
	}
	if st := h.r.Status(); len(st.Groups) != 0 || st.Losses != 1 {
		t.Fatalf("status: %+v", st)
	}
	// A zombie learns of its removal from the coordinator first: the
	// loss is its notice, logged once for the groups it held.
	h.waitLog("fenced out")
	h.lose(0) // unknown now: no-op
}

func TestFencedGroupIsGivenUpAndTheProcessContinues(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"s3 manifest", engine.NonRecoverable(fmt.Errorf("complete checkpoint 9: %w", &wrapped{s3store.ErrFenced}))},
		{"producer fenced", fmt.Errorf("sink: flush: %w", kerr.ProducerFenced)},
		{"invalid producer epoch", engine.NonRecoverable(fmt.Errorf("engine: job x/pg-1 failed: %w", kerr.InvalidProducerEpoch))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, setup{})
			h.assign(1, 2)
			h.pipe(1).end <- tc.err
			h.waitLog("WARN fenced: another instance owns partition group 1 now; giving it up")
			if st := h.r.Status(); !slices.Equal(groupsOf(st), []int{2}) || st.Fenced != 1 {
				t.Fatalf("status: %+v", st)
			}
			h.revoke(context.Background(), 1) // the Member learns it later: a no-op
			select {
			case err := <-h.runErr:
				t.Fatalf("Run returned %v after a fenced group", err)
			default:
			}
			// Group 2 still runs and leaves with its savepoint.
			if err := h.r.Leave(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := h.waitRun(); err != nil {
				t.Fatalf("Run after Leave: %v", err)
			}
			if err := recv(t, h.pipe(2).runEnded, "group 2 ended"); !errors.Is(err, engine.ErrStopped) {
				t.Fatalf("group 2: %v", err)
			}
		})
	}
}

// wrapped hides its error behind one more Unwrap, as a *FencedError does.
type wrapped struct{ err error }

func (w *wrapped) Error() string { return "manifest of epoch 3 above ours (2): " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func TestFencedClaimIsGivenUp(t *testing.T) {
	h := start(t, setup{buildErr: map[int]error{6: fmt.Errorf("claim: %w", s3store.ErrFenced)}})
	h.r.Assigned(context.Background(), []int{6})
	h.waitLog("giving it up")
	if st := h.r.Status(); len(st.Groups) != 0 || st.Fenced != 1 {
		t.Fatalf("status: %+v", st)
	}
}

func TestAFailedGroupEndsRunAndTheOthersLeaveWithSavepoints(t *testing.T) {
	h := start(t, setup{})
	h.assign(1, 3)
	boom := errors.New("engine: job x/pg-3 failed and the fixed-delay restart strategy gives up: disk full")
	h.pipe(3).end <- boom
	err := h.waitRun()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "partition group 3") {
		t.Fatalf("Run returned %v, want the failure of group 3", err)
	}
	if err := recv(t, h.pipe(1).runEnded, "group 1 ended"); !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("group 1 ended with %v, want its final savepoint", err)
	}
	waitFor(t, h.m.closed, "member closed")
}

func TestAFailedBuildEndsRun(t *testing.T) {
	bad := errors.New("s3store: the job's restore point cannot be claimed without a decision")
	h := start(t, setup{buildErr: map[int]error{0: bad}})
	h.r.Assigned(context.Background(), []int{0})
	if err := h.waitRun(); !errors.Is(err, bad) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestLeaveRevokesEveryGroupWithASavepoint(t *testing.T) {
	h := start(t, setup{gates: []int{4}})
	h.assign(0, 2, 4) // 4 still claiming
	if err := h.r.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.waitRun(); err != nil {
		t.Fatalf("Run after Leave: %v", err)
	}
	for _, g := range []int{0, 2} {
		if err := recv(t, h.pipe(g).runEnded, "ended"); !errors.Is(err, engine.ErrStopped) {
			t.Fatalf("group %d ended with %v, want its final savepoint", g, err)
		}
	}
	if st := h.r.Status(); st.State != StateStopped || len(st.Groups) != 0 || st.Revocations != 1 {
		t.Fatalf("status after leaving: %+v", st)
	}
	h.r.Assigned(context.Background(), []int{5}) // too late: nothing starts
	if st := h.r.Status(); len(st.Groups) != 0 {
		t.Fatalf("a group started after Run returned: %+v", st.Groups)
	}
}

func TestCancelEndsEveryGroupWithoutSavepoints(t *testing.T) {
	h := start(t, setup{})
	h.assign(1, 2)
	h.cancel(errors.New("second signal"))
	err := h.waitRun()
	if err == nil || !strings.Contains(err.Error(), "second signal") {
		t.Fatalf("Run returned %v, want the cause of the cancellation", err)
	}
	for _, g := range []int{1, 2} {
		p := h.pipe(g)
		if err := recv(t, p.runEnded, "ended"); !errors.Is(err, context.Canceled) {
			t.Fatalf("group %d: %v", g, err)
		}
		select {
		case <-p.stopCalled:
			t.Fatalf("group %d stopped with a savepoint", g)
		default:
		}
	}
	waitFor(t, h.m.closed, "member closed")
}

func TestLeaveWhileJoining(t *testing.T) {
	h := start(t, setup{joinBlocks: true})
	if err := h.r.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.waitRun(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Options{G: 0, Build: func(context.Context, int) (Pipeline, error) { return nil, nil }}); err == nil {
		t.Fatal("G 0 accepted")
	}
	if _, err := New(Options{G: 2}); err == nil {
		t.Fatal("no Build accepted")
	}
}

func TestIsFenced(t *testing.T) {
	for _, err := range []error{s3store.ErrFenced, kerr.ProducerFenced, kerr.InvalidProducerEpoch, engine.NonRecoverable(fmt.Errorf("x: %w", kerr.ProducerFenced))} {
		if !IsFenced(err) {
			t.Errorf("%v: not fenced", err)
		}
	}
	for _, err := range []error{nil, errors.New("fenced"), kerr.InvalidTxnState, context.Canceled} {
		if IsFenced(err) {
			t.Errorf("%v: fenced", err)
		}
	}
}

// A build that fails while the cluster or the S3 service is briefly away
// is tried again; the group then runs and the process goes on.
func TestATransientBuildFailureIsRetried(t *testing.T) {
	away := errors.New("checkpoint.dir s3://b/p/wc/pg-2: claiming the group: connection refused")
	h := start(t, setup{buildErr: map[int]error{2: away}, failures: map[int]int{2: 2}})
	h.r.Assigned(context.Background(), []int{2})
	h.waitReady(2)
	h.mu.Lock()
	n := h.builds[2]
	h.mu.Unlock()
	if n != 3 {
		t.Fatalf("Build of group 2 called %d times, want 3 (two failures, then success)", n)
	}
	h.waitLog("trying again")
	select {
	case err := <-h.runErr:
		t.Fatalf("Run returned %v after a retried build", err)
	default:
	}
}

// A build refused for a reason no retry fixes ends Run at the first try.
func TestAPermanentBuildFailureIsNotRetried(t *testing.T) {
	refused := &jobs.ConfigError{Key: "sink.transaction_timeout", Err: errors.New("above the broker's transaction.max.timeout.ms")}
	h := start(t, setup{buildErr: map[int]error{5: refused}})
	h.r.Assigned(context.Background(), []int{5})
	if err := h.waitRun(); !errors.As(err, new(*jobs.ConfigError)) {
		t.Fatalf("Run returned %v, want the configuration refusal", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.builds[5] != 1 {
		t.Fatalf("Build of group 5 called %d times, want 1", h.builds[5])
	}
}
