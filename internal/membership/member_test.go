package membership

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// childEnv makes the test binary a member process (runChild) instead of
// running tests: the crash test kills it with SIGKILL.
const childEnv = "ONCEFLOW_MEMBERSHIP_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(kafkatest.Main(m))
}

// Timeouts of the broker tests: the broker's group.min.session.timeout.ms
// is 6s by default.
const (
	testSession   = 6 * time.Second
	testHeartbeat = time.Second
	testRebalance = 15 * time.Second
	testRevoke    = 5 * time.Second
	// stopTook is what a simulated pipeline stop (final checkpoint) takes.
	stopTook = 300 * time.Millisecond
)

func testConfig(seeds []string, group, topic string, h Handler) Config {
	cfg := Config{
		Brokers:           seeds,
		GroupID:           group,
		Topics:            []string{topic},
		Groups:            8,
		Handler:           h,
		SessionTimeout:    testSession,
		HeartbeatInterval: testHeartbeat,
		RebalanceTimeout:  testRebalance,
		RevokeTimeout:     testRevoke,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if os.Getenv("ONCEFLOW_MEMBERSHIP_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		cfg.ClientOpts = []kgo.Opt{kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, nil))}
	}
	return cfg
}

// event is one callback as a member saw it: an assignment at the moment
// its callback started, a revocation or loss at the moment its callback
// returned (the pipeline has stopped), a kill when the process was dead.
type event struct {
	at     int64 // unix nanoseconds, wall clock (shared with the child)
	member string
	kind   string // assigned, revoked, lost, killed
	groups []int
}

// tracker records every member's events and the live ownership.
type tracker struct {
	mu     sync.Mutex
	events []event
	owner  map[int]string
}

func newTracker() *tracker { return &tracker{owner: map[int]string{}} }

func (tr *tracker) add(e event) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, e)
	for _, g := range e.groups {
		if e.kind == "assigned" {
			tr.owner[g] = e.member
		} else if tr.owner[g] == e.member {
			delete(tr.owner, g)
		}
	}
}

func (tr *tracker) snapshot() (map[string][]int, int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	by := map[string][]int{}
	for g, m := range tr.owner {
		by[m] = append(by[m], g)
	}
	for _, gs := range by {
		slices.Sort(gs)
	}
	return by, len(tr.events)
}

// overlaps replays all events in time order (an assignment before a
// release at the same instant, the strict side) and returns every moment
// a member was assigned a group another member still ran.
func (tr *tracker) overlaps() []string {
	tr.mu.Lock()
	evs := slices.Clone(tr.events)
	tr.mu.Unlock()
	slices.SortStableFunc(evs, func(a, b event) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		if (a.kind == "assigned") != (b.kind == "assigned") {
			if a.kind == "assigned" {
				return -1
			}
			return 1
		}
		return 0
	})
	owner := map[int]string{}
	var bad []string
	for _, e := range evs {
		for _, g := range e.groups {
			switch {
			case e.kind == "assigned":
				if o, ok := owner[g]; ok && o != e.member {
					bad = append(bad, fmt.Sprintf("group %d assigned to %s at %s while %s still ran it",
						g, e.member, time.Unix(0, e.at).Format("15:04:05.000000"), o))
				}
				owner[g] = e.member
			case owner[g] == e.member:
				delete(owner, g)
			}
		}
	}
	return bad
}

// waitLayout waits until every one of the 8 groups has one owner and the
// owners' counts are want (sorted), and returns the layout.
func (tr *tracker) waitLayout(t *testing.T, members []string, want []int, timeout time.Duration) map[string][]int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		by, _ := tr.snapshot()
		var counts []int
		total := 0
		for _, m := range members {
			counts = append(counts, len(by[m]))
			total += len(by[m])
		}
		others := 0
		for m, gs := range by {
			if !slices.Contains(members, m) {
				others += len(gs)
			}
		}
		slices.Sort(counts)
		if total == 8 && others == 0 && slices.Equal(counts, want) {
			return by
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the layout is %v, want counts %v over %v", timeout, by, want, members)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recorder is an in-process Handler: it records into the tracker and
// simulates a pipeline stop that takes stopTook.
type recorder struct {
	name string
	tr   *tracker
}

func (r recorder) Assigned(_ context.Context, groups []int) {
	r.tr.add(event{at: time.Now().UnixNano(), member: r.name, kind: "assigned", groups: groups})
}

func (r recorder) Revoked(ctx context.Context, groups []int) {
	select {
	case <-time.After(stopTook):
	case <-ctx.Done():
	}
	r.tr.add(event{at: time.Now().UnixNano(), member: r.name, kind: "revoked", groups: groups})
}

func (r recorder) Lost(_ context.Context, groups []int) {
	r.tr.add(event{at: time.Now().UnixNano(), member: r.name, kind: "lost", groups: groups})
}

// TestMembersShareGroups runs the life of a job's group on a real broker:
// three members, a fourth (another process) joining, one leaving, the
// other process killed with SIGKILL; no group ever has two owners.
func TestMembersShareGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Kafka broker")
	}
	seeds := kafkatest.Bootstrap(t)
	topic := kafkatest.Topic(t, seeds, 8)
	group := "onceflow-" + topic
	tr := newTracker()
	start := time.Now()
	// Checked however the test ends.
	t.Cleanup(func() {
		if bad := tr.overlaps(); len(bad) > 0 {
			t.Errorf("groups had two owners:\n%s", strings.Join(bad, "\n"))
		}
	})
	step := func(name string, since time.Time) {
		t.Logf("%-44s %6s (test at %s)", name, time.Since(since).Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
	}

	members := map[string]*Member{}
	join := func(name string) {
		t.Helper()
		m, err := New(testConfig(seeds, group, topic, recorder{name, tr}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		members[name] = m
	}

	// Three members: 3/3/2.
	t0 := time.Now()
	join("a")
	join("b")
	join("c")
	by := tr.waitLayout(t, []string{"a", "b", "c"}, []int{2, 3, 3}, 30*time.Second)
	step("a, b, c joined and balanced", t0)
	t.Logf("layout %v", by)
	for name, m := range members {
		if got := m.Owned(); !slices.Equal(got, by[name]) {
			t.Fatalf("%s.Owned() = %v, the callbacks say %v", name, got, by[name])
		}
	}

	// Membership without polling: twice the session timeout idle, and no
	// callback at all (the heartbeats come from franz-go's own goroutine).
	t0 = time.Now()
	_, before := tr.snapshot()
	time.Sleep(2 * testSession)
	if _, after := tr.snapshot(); after != before {
		t.Fatalf("idle members that never poll saw %d callbacks in %s", after-before, 2*testSession)
	}
	step("idle for twice the session timeout", t0)

	// A fourth member, in another process: 2/2/2/2, groups move to it.
	t0 = time.Now()
	child := startChild(t, seeds, group, topic, tr)
	by = tr.waitLayout(t, []string{"a", "b", "c", "d"}, []int{2, 2, 2, 2}, 30*time.Second)
	step("d (a process) joined, groups moved to it", t0)
	t.Logf("layout %v", by)

	// a leaves: its groups move to the others without waiting for a
	// session timeout.
	t0 = time.Now()
	aHad := by["a"]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := members["a"].Close(ctx); err != nil {
		t.Fatalf("a.Close: %v", err)
	}
	cancel()
	by = tr.waitLayout(t, []string{"b", "c", "d"}, []int{2, 3, 3}, 30*time.Second)
	step("a left (Close), its groups moved", t0)
	t.Logf("a had %v; layout %v", aHad, by)
	if took := time.Since(t0); took > testSession {
		t.Errorf("a's groups took %s to move, longer than the session timeout %s: the leave was not seen", took, testSession)
	}

	// d is killed: nothing leaves the group for it; after the session
	// timeout b and c take its groups over.
	dHad := by["d"]
	t0 = time.Now()
	child.kill(t)
	by = tr.waitLayout(t, []string{"b", "c"}, []int{4, 4}, testSession+30*time.Second)
	took := time.Since(t0)
	step("d killed (SIGKILL), its groups moved", t0)
	t.Logf("d had %v; layout %v; kill to reassignment %s (session timeout %s)", dHad, by, took.Round(10*time.Millisecond), testSession)
	if took < testSession-time.Second {
		t.Errorf("d's groups moved %s after the kill, before its session timeout %s could expire", took, testSession)
	}

	for _, e := range tr.events {
		if e.kind == "lost" {
			t.Errorf("%s lost %v: no member should have been removed from the group while alive", e.member, e.groups)
		}
	}
	if bad := tr.overlaps(); len(bad) == 0 {
		t.Logf("%d callbacks, no group ever had two owners", len(tr.events))
	}

	// The group is visible to Kafka's tools as a consumer group with our
	// protocol, and its assignments decode.
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	d := described[group]
	if d.Err != nil || d.Protocol != ProtocolName || d.ProtocolType != "consumer" || len(d.Members) != 2 {
		t.Fatalf("described group: err %v, protocol %q type %q, %d members", d.Err, d.Protocol, d.ProtocolType, len(d.Members))
	}
	parts := 0
	for _, m := range d.Members {
		assn, ok := m.Assigned.AsConsumer()
		if !ok {
			t.Fatalf("member %s: assignment does not decode as a consumer assignment", m.MemberID)
		}
		for _, at := range assn.Topics {
			parts += len(at.Partitions)
		}
	}
	if parts != 8 {
		t.Fatalf("described assignments hold %d partitions, want 8", parts)
	}
}

// child is a member process.
type child struct {
	tr   *tracker
	cmd  *exec.Cmd
	done chan struct{} // the stdout reader ended
}

func startChild(t *testing.T, seeds []string, group, topic string, tr *tracker) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{strings.Join(seeds, ","), group, topic}, "|"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{tr: tr, cmd: cmd, done: make(chan struct{})}
	joined := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 1 && f[0] == "joined" {
				once.Do(func() { close(joined) })
				continue
			}
			if len(f) != 3 {
				continue
			}
			at, _ := strconv.ParseInt(f[1], 10, 64)
			var groups []int
			for _, s := range strings.Split(f[2], ",") {
				g, _ := strconv.Atoi(s)
				groups = append(groups, g)
			}
			tr.add(event{at: at, member: "d", kind: f[0], groups: groups})
		}
	}()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		<-c.done
	})
	select {
	case <-joined:
	case <-c.done:
		t.Fatal("the member process ended before joining")
	case <-time.After(time.Minute):
		t.Fatal("the member process did not join within a minute")
	}
	return c
}

// kill ends the process with SIGKILL: no revoke, no LeaveGroup. Its groups
// stop running when it is dead, which is when they count as released.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	<-c.done
	// Whatever the process owned stopped at its death.
	dead := time.Now().UnixNano()
	by, _ := c.tr.snapshot()
	c.tr.add(event{at: dead, member: "d", kind: "killed", groups: by["d"]})
}

// runChild is a member process: it prints its callbacks on stdout
// ("assigned <unix nanos> g,g", at the callback's start; "revoked ..." at
// its end) and runs until it is killed (or for two minutes at most, should
// the test die without killing it).
func runChild(spec string) int {
	f := strings.Split(spec, "|")
	if len(f) != 3 {
		fmt.Fprintf(os.Stderr, "bad %s=%q\n", childEnv, spec)
		return 2
	}
	out := &lineWriter{w: os.Stdout}
	m, err := New(testConfig(strings.Split(f[0], ","), f[1], f[2], out))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Join(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out.line("joined")
	time.Sleep(2 * time.Minute)
	return 3
}

type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, s)
}

func (l *lineWriter) event(kind string, groups []int) {
	s := make([]string, len(groups))
	for i, g := range groups {
		s[i] = strconv.Itoa(g)
	}
	l.line(fmt.Sprintf("%s %d %s", kind, time.Now().UnixNano(), strings.Join(s, ",")))
}

func (l *lineWriter) Assigned(_ context.Context, groups []int) { l.event("assigned", groups) }

func (l *lineWriter) Revoked(ctx context.Context, groups []int) {
	select {
	case <-time.After(stopTook):
	case <-ctx.Done():
	}
	l.event("revoked", groups)
}

func (l *lineWriter) Lost(_ context.Context, groups []int) { l.event("lost", groups) }
