package membership

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

func TestUserDataRoundTrip(t *testing.T) {
	for _, groups := range [][]int{nil, {0}, {1, 5, 300}} {
		for _, refused := range []string{"", "because"} {
			G, got, why, err := decodeUserData(encodeUserData(400, groups, refused))
			if err != nil || G != 400 || !slices.Equal(got, groups) || why != refused {
				t.Fatalf("%v %q: decoded G=%d %v %q, %v", groups, refused, G, got, why, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, {9}, {1}, {1, 8, 3, 0}, {1, 8, 0}, {1, 8, 0, 4, 'a'}} {
		if _, _, _, err := decodeUserData(bad); err == nil {
			t.Fatalf("%v decoded", bad)
		}
	}
}

// joinMember is what the coordinator hands the leader for a member whose
// balancer has G groups and last held current.
func joinMember(id string, G int, topics []string, current map[string][]int32, gen int32) kmsg.JoinGroupResponseMember {
	m := kmsg.NewJoinGroupResponseMember()
	m.MemberID = id
	m.ProtocolMetadata = GroupBalancer(G).JoinGroupMetadata(topics, current, gen)
	return m
}

// The adapter end to end without a broker: metadata in, assignments out
// that parse back into whole groups, withheld groups assigned to nobody.
func TestGroupBalancerAssignments(t *testing.T) {
	gb := GroupBalancer(4)
	mb, topics, err := gb.MemberBalancer([]kmsg.JoinGroupResponseMember{
		joinMember("a", 4, []string{"l", "r"}, map[string][]int32{"l": {0, 1, 2, 3, 4, 5, 6, 7}, "r": {0, 1, 2, 3, 4, 5, 6, 7}}, 2),
		joinMember("b", 4, []string{"l", "r"}, nil, -1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(topics, map[string]struct{}{"l": {}, "r": {}}) {
		t.Fatalf("topics %v", topics)
	}
	into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{"l": 8, "r": 8})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string][]int32{}
	for _, sa := range into.IntoSyncAssignment() {
		parts, err := gb.ParseSyncAssignment(sa.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		got[sa.MemberID] = parts
		var assn kmsg.ConsumerMemberAssignment
		if err := assn.ReadFrom(sa.MemberAssignment); err != nil {
			t.Fatal(err)
		}
		if _, groups, _, err := decodeUserData(assn.UserData); err != nil || !slices.Equal(groups, GroupsOf(parts, 4)) {
			t.Fatalf("%s: user data groups %v (%v), partitions say %v", sa.MemberID, groups, err, GroupsOf(parts, 4))
		}
	}
	// a keeps groups 0 and 1; 2 and 3 move to b in the next round.
	want := map[string]map[string][]int32{
		"a": {"l": {0, 1, 4, 5}, "r": {0, 1, 4, 5}},
		"b": {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("assignments %v, want %v", got, want)
	}
}

// Members whose G or topics differ from the leader's are assigned nothing,
// with the reason; the others are balanced without them, except for the
// groups a refused member still claims.
func TestGroupBalancerRefusesMembers(t *testing.T) {
	var refused []string
	gb := groupBalancer{g: 4, onRefused: func(r string) { refused = append(refused, r) }}
	members := []kmsg.JoinGroupResponseMember{
		joinMember("a", 4, []string{"in"}, nil, 1),
		joinMember("b", 8, []string{"in"}, map[string][]int32{"in": {1, 5}}, 1), // runs group 1 (of G=4)
		joinMember("c", 4, []string{"in", "x"}, nil, 1),
		joinMember("d", 4, []string{"in"}, nil, 1),
	}
	mb, _, err := gb.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	mb.(kgo.GroupMemberBalancerInfo).SetBalanceInfo(kgo.BalanceInfo{LeaderID: "d"})
	into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{"in": 8, "x": 8})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]int{}
	for _, sa := range into.IntoSyncAssignment() {
		parts, err := gb.ParseSyncAssignment(sa.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		got[sa.MemberID] = GroupsOf(parts, 4)
	}
	// Group 1 goes to nobody while the refused b may still run it.
	if want := map[string][]int{"a": {0}, "b": nil, "c": nil, "d": {2, 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	want := []string{
		"the group's leader refused member b: it has G=8 partition groups, the group runs G=4",
		"the group's leader refused member c: it reads input topics [in x], the group reads [in]",
	}
	if len(refused) != 2 || !strings.Contains(refused[0], want[0]) || !strings.Contains(refused[1], want[1]) {
		t.Fatalf("refusals %q, want %q", refused, want)
	}
}

func TestGroupBalancerRefuses(t *testing.T) {
	tests := []struct {
		name    string
		members []kmsg.JoinGroupResponseMember
		counts  map[string]int32
		want    string
	}{
		{"no count", []kmsg.JoinGroupResponseMember{joinMember("a", 4, []string{"in"}, nil, 1)},
			map[string]int32{}, "no partition count for input topic in"},
		{"not co-partitioned", []kmsg.JoinGroupResponseMember{joinMember("a", 4, []string{"in", "x"}, nil, 1)},
			map[string]int32{"in": 8, "x": 4}, "in has 8, x has 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mb, _, err := GroupBalancer(4).MemberBalancer(tc.members)
			if err != nil {
				t.Fatal(err)
			}
			_, err = mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(tc.counts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	// A member of another kind (the plain consumer protocol's metadata).
	m := kmsg.NewJoinGroupResponseMember()
	m.MemberID = "stranger"
	m.ProtocolMetadata = kgo.CooperativeStickyBalancer().JoinGroupMetadata([]string{"in"}, nil, 1)
	if _, _, err := GroupBalancer(4).MemberBalancer([]kmsg.JoinGroupResponseMember{m}); err == nil || !strings.Contains(err.Error(), "member stranger") {
		t.Fatalf("error %v, want one naming member stranger", err)
	}
}

func TestConfigRefuses(t *testing.T) {
	ok := Config{Brokers: []string{"x:9092"}, Job: "j", Topics: []string{"in"}, Groups: 2, Handler: recorder{}}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "no seed brokers"},
		{"no job", func(c *Config) { c.Job = "" }, "no job name"},
		{"no topics", func(c *Config) { c.Topics = nil }, "group onceflow-j: no input topics"},
		{"no groups", func(c *Config) { c.Groups = 0 }, "at least 1, got 0"},
		{"no handler", func(c *Config) { c.Handler = nil }, "no Handler"},
		{"revoke too long", func(c *Config) { c.RevokeTimeout = time.Minute }, "revoke timeout 1m0s must be below the rebalance timeout 1m0s"},
		{"heartbeat too slow", func(c *Config) { c.SessionTimeout, c.HeartbeatInterval = 6*time.Second, 6*time.Second }, "heartbeat interval 6s must be below the session timeout 6s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	m, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if m.GroupID() != "onceflow-j" || m.cfg.SessionTimeout != 10*time.Second || m.cfg.HeartbeatInterval != time.Second {
		t.Fatalf("defaults: group %s, session %s, heartbeat %s", m.GroupID(), m.cfg.SessionTimeout, m.cfg.HeartbeatInterval)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close before Join: %v", err)
	}
}

// On franz-go's fake cluster (no broker): Join refuses what the balancer
// would, two members share the groups, Close hands them over.
func TestMemberOnFakeCluster(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "in", "in2"), kfake.SeedTopics(6, "six"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seeds := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		topics []string
		groups int
		want   string
	}{
		{[]string{"in", "six"}, 2, "not co-partitioned (in has 8, six has 6 partitions)"},
		{[]string{"in", "missing"}, 2, "input topic missing"},
		{[]string{"six"}, 8, "G = 8 exceeds the 6 partitions of input topics six"},
	} {
		cfg := testConfig(seeds, "refused", tc.topics[0], recorder{})
		cfg.Topics, cfg.Groups = tc.topics, tc.groups
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Join(%v, G=%d) = %v, want an error saying %q", tc.topics, tc.groups, err, tc.want)
		}
		_ = m.Close(ctx)
	}

	tr := newTracker()
	t.Cleanup(func() {
		if bad := tr.overlaps(); len(bad) > 0 {
			t.Errorf("groups had two owners:\n%s", strings.Join(bad, "\n"))
		}
	})
	var ms []*Member
	for _, name := range []string{"a", "b"} {
		cfg := testConfig(seeds, "job", "in", recorder{name, tr})
		cfg.Topics = []string{"in", "in2"}
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	by := tr.waitLayout(t, []string{"a", "b"}, []int{4, 4}, 30*time.Second)

	// Offsets for lag monitoring: a commits its own partitions; one of
	// b's is refused before it reaches the coordinator.
	mine := map[string]map[int32]int64{"in": {}, "in2": {}}
	for _, p := range PartitionsOf(by["a"], 8, map[string]int32{"in": 8}, 8)["in"] {
		mine["in"][p], mine["in2"][p] = int64(10+p), int64(20+p)
	}
	if err := ms[0].CommitOffsets(ctx, mine); err != nil {
		t.Fatal(err)
	}
	theirs := int32(by["b"][0])
	err = ms[0].CommitOffsets(ctx, map[string]map[int32]int64{"in": {theirs: 5}})
	if want := fmt.Sprintf("in[%d] offset 5: partition group %d is not owned by this member", theirs, theirs); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("committing b's partition: %v, want an error saying %q", err, want)
	}
	if err := ms[0].CommitOffsets(ctx, map[string]map[int32]int64{"other": {0: 1}}); err == nil || !strings.Contains(err.Error(), "other is not an input topic") {
		t.Fatalf("committing another topic: %v", err)
	}
	committed, err := kadm.NewClient(kafkatest.Client(t, seeds)).FetchOffsets(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	for tp, ps := range mine {
		for p, o := range ps {
			if got, ok := committed.Lookup(tp, p); !ok || got.At != o {
				t.Fatalf("committed %s[%d] = %+v, want %d", tp, p, got, o)
			}
		}
	}
	n := 0
	for _, ps := range committed.Offsets() {
		n += len(ps)
	}
	if n != 8 {
		t.Fatalf("%d offsets committed, want a's 8", n)
	}

	if err := ms[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	tr.waitLayout(t, []string{"b"}, []int{8}, 30*time.Second)
	if got := ms[0].Owned(); len(got) != 0 {
		t.Fatalf("a owns %v after Close", got)
	}
	if got := ms[1].Owned(); len(got) != 8 {
		t.Fatalf("b owns %v", got)
	}
}

// fakeSession is the session timeout of the kfake tests of slow revokes,
// shorter than a real broker allows.
const fakeSession = 2 * time.Second

func fakeConfig(seeds []string, h Handler) Config {
	cfg := testConfig(seeds, "job", "in", h)
	cfg.SessionTimeout, cfg.HeartbeatInterval = fakeSession, 300*time.Millisecond
	return cfg
}

// slowStop is a Handler whose pipelines take hang to stop, whatever ctx
// says; it reports whether ctx had ended by then.
type slowStop struct {
	recorder
	hang     time.Duration
	ctxEnded chan bool
}

func (s slowStop) Revoked(ctx context.Context, groups []int) {
	time.Sleep(s.hang)
	s.ctxEnded <- ctx.Err() != nil
	s.recorder.Revoked(ctx, groups)
}

// A revoke that outlasts RevokeTimeout, and the session timeout too: its
// ctx ends at the timeout, the Member keeps waiting for it, franz-go keeps
// heartbeating meanwhile (the member is not removed), and the groups reach
// their new owner only after it returned (no rebalance was pending, so the
// rebalance timeout did not apply).
func TestRevokePastTimeout(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second), kfake.SeedTopics(8, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := newTracker()
	a := slowStop{recorder: recorder{"a", tr}, hang: fakeSession + time.Second, ctxEnded: make(chan bool, 8)}
	cfg := fakeConfig(c.ListenAddrs(), a)
	cfg.RevokeTimeout = 500 * time.Millisecond
	ma, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close(ctx)
	if err := ma.Join(ctx); err != nil {
		t.Fatal(err)
	}
	mb, err := New(fakeConfig(c.ListenAddrs(), recorder{"b", tr}))
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close(ctx)
	if err := mb.Join(ctx); err != nil {
		t.Fatal(err)
	}
	tr.waitLayout(t, []string{"a", "b"}, []int{4, 4}, 30*time.Second)
	if !<-a.ctxEnded {
		t.Fatal("Revoked's ctx had not ended after running past RevokeTimeout")
	}
	if bad := tr.overlaps(); len(bad) > 0 {
		t.Fatalf("groups had two owners:\n%s", strings.Join(bad, "\n"))
	}
	var revokedAt, assignedAt int64
	for _, e := range tr.events {
		switch {
		case e.member == "a" && e.kind == "revoked":
			revokedAt = e.at
		case e.member == "b" && e.kind == "assigned":
			assignedAt = e.at
		}
	}
	for _, e := range tr.events {
		if e.kind == "lost" {
			t.Fatalf("%s lost %v: removed from the group during a revoke longer than the session timeout", e.member, e.groups)
		}
	}
	if revokedAt == 0 || assignedAt < revokedAt {
		t.Fatalf("b assigned at %d, a's revoke returned at %d", assignedAt, revokedAt)
	}
	t.Logf("b got the groups %s after a's slow revoke returned", time.Duration(assignedAt-revokedAt))
}

// The documented limit: a revoke still running when a rebalance has waited
// RebalanceTimeout for the member. The coordinator removes the member and
// its groups move while its pipelines may still run (fencing's case, issue
// 16 §5); the member learns it afterwards.
func TestRevokePastRebalanceTimeout(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := newTracker()
	a := slowStop{recorder: recorder{"a", tr}, hang: 6 * time.Second, ctxEnded: make(chan bool, 8)}
	cfgA := testConfig(c.ListenAddrs(), "job", "in", a)
	cfgA.RevokeTimeout, cfgA.RebalanceTimeout = 500*time.Millisecond, 2*time.Second
	ma, err := New(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close(ctx)
	if err := ma.Join(ctx); err != nil {
		t.Fatal(err)
	}
	join := func(name string) *Member {
		cfg := testConfig(c.ListenAddrs(), "job", "in", recorder{name, tr})
		cfg.RevokeTimeout, cfg.RebalanceTimeout = 500*time.Millisecond, 2*time.Second
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Join(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	mb := join("b") // a starts its 6 s revoke of 4 groups
	defer mb.Close(ctx)
	mc := join("c") // a rebalance that waits for a
	defer mc.Close(ctx)
	tr.waitLayout(t, []string{"a", "b", "c"}, []int{2, 3, 3}, 30*time.Second)
	tr.mu.Lock()
	var aLost []int
	for _, e := range tr.events {
		t.Logf("%s %s %v", time.Unix(0, e.at).Format("05.000"), e.member+" "+e.kind, e.groups)
		if e.member == "a" && e.kind == "lost" {
			aLost = append(aLost, e.groups...)
		}
	}
	tr.mu.Unlock()
	// a was removed while revoking 4 of its 8 groups: b and c got all 8
	// while a ran them (the overlaps), and a hears of the 4 it kept only
	// once it rejoined under a new member id: as lost.
	bad := tr.overlaps()
	if len(bad) == 0 {
		t.Fatal("no overlap: the member was not removed while revoking (the test's premise)")
	}
	for _, o := range bad {
		if !strings.Contains(o, "while a still ran it") {
			t.Fatalf("an overlap not caused by the removed member: %s", o)
		}
	}
	if len(aLost) != 4 {
		t.Fatalf("a lost %v, want the 4 groups it still held when it was removed", aLost)
	}
}

// A misconfigured instance (another G) joining a running job: its Join
// fails with the leader's reason, and the running member keeps its groups
// throughout.
func TestMemberRefusedByLeader(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := newTracker()
	a, err := New(testConfig(c.ListenAddrs(), "job", "in", recorder{"a", tr}))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	if err := a.Join(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(c.ListenAddrs(), "job", "in", recorder{"b", tr})
	cfg.Groups = 4
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	want := "the group's leader refused member"
	if err := b.Join(ctx); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "it has G=4 partition groups, the group runs G=8") {
		t.Fatalf("Join with G=4 = %v, want the leader's refusal", err)
	}
	tr.waitLayout(t, []string{"a"}, []int{8}, 30*time.Second)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.events) != 1 {
		t.Fatalf("the running member saw %d callbacks, want only its first assignment: %+v", len(tr.events), tr.events)
	}
}

// committer is a Handler that commits the offsets of the groups it gives
// up from inside Revoked, as a final checkpoint would.
type committer struct {
	recorder
	m *Member
}

func (c *committer) Revoked(ctx context.Context, groups []int) {
	offsets := map[string]map[int32]int64{"in": {}}
	for _, p := range PartitionsOf(groups, 8, map[string]int32{"in": 8}, 8)["in"] {
		offsets["in"][p] = 100 + int64(p)
	}
	owned := c.m.Owned()
	for _, g := range groups {
		if !slices.Contains(owned, g) {
			panic(fmt.Sprintf("Owned() in Revoked(%v) = %v: the groups being revoked are still owned", groups, owned))
		}
	}
	if err := c.m.CommitOffsets(ctx, offsets); err != nil {
		panic(err)
	}
	c.recorder.Revoked(ctx, groups)
}

// The Handler may call Owned and CommitOffsets from its callbacks: the
// final offsets of revoked groups are committed while still owned.
func TestCommitInRevoke(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := newTracker()
	h := &committer{recorder: recorder{"a", tr}}
	a, err := New(testConfig(c.ListenAddrs(), "job", "in", h))
	if err != nil {
		t.Fatal(err)
	}
	h.m = a
	defer a.Close(ctx)
	if err := a.Join(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := New(testConfig(c.ListenAddrs(), "job", "in", recorder{"b", tr}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := b.Join(ctx); err != nil {
		t.Fatal(err)
	}
	by := tr.waitLayout(t, []string{"a", "b"}, []int{4, 4}, 30*time.Second)
	committed, err := kadm.NewClient(kafkatest.Client(t, c.ListenAddrs())).FetchOffsets(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range PartitionsOf(by["b"], 8, map[string]int32{"in": 8}, 8)["in"] {
		if got, ok := committed.Lookup("in", p); !ok || got.At != 100+int64(p) {
			t.Fatalf("committed in[%d] = %+v, want %d (committed in a's Revoked)", p, got, 100+p)
		}
	}
}
