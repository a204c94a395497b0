package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Handler receives the partition groups a Member gains and gives up. Its
// methods are called one at a time, in the order the group protocol
// decides, never concurrently; groups is never empty.
type Handler interface {
	// Assigned: the member now owns groups. Restoring a group (claim,
	// commit, fence, run: issue 16 §2) can take long, so Assigned should
	// start it and return: franz-go runs a later revoke only after
	// Assigned returned. ctx ends when the Member closes.
	Assigned(ctx context.Context, groups []int)
	// Revoked: the member gives groups up. Stop their pipelines (final
	// checkpoint if it finishes before ctx ends, else cancel) and return
	// only once nothing of theirs runs: the new owner is assigned a group
	// only after this returns. ctx ends after Config.RevokeTimeout.
	Revoked(ctx context.Context, groups []int)
	// Lost: the groups may already run elsewhere, because the member was
	// removed from the group while alive: it missed its session timeout,
	// or it did not rejoin within a rebalance's timeout (a revoke running
	// too long), or a join or sync failed. The Member also delivers as
	// Lost what franz-go revokes after such a removal (see onRevoked).
	// Stop them at once without a final checkpoint: the new owner's
	// fencing refuses it anyway. ctx ends after Config.RevokeTimeout.
	Lost(ctx context.Context, groups []int)
}

// Config configures a Member.
type Config struct {
	// Brokers are the seed brokers.
	Brokers []string
	// Job names the job; the consumer group is "onceflow-<Job>" unless
	// GroupID is set.
	Job     string
	GroupID string
	// Topics are the job's (co-partitioned) input topics.
	Topics []string
	// Groups is G, the number of partition groups.
	Groups int
	// Handler receives the assignments. Required.
	Handler Handler

	// SessionTimeout: how long the coordinator waits for heartbeats before
	// it removes a silent member (a crashed process) and hands its groups
	// to others. Default 10s; the broker refuses values outside its
	// group.min/max.session.timeout.ms (6s..30min by default).
	SessionTimeout time.Duration
	// HeartbeatInterval: how often the member heartbeats. A surviving
	// member learns that a rebalance began (a dead member's session ran
	// out) only from its next heartbeat's answer, so up to one interval
	// adds to every takeover. Default SessionTimeout/10, within
	// 100ms..3s (Kafka's own default, 3s, sits on a 45s session).
	HeartbeatInterval time.Duration
	// RebalanceTimeout: how long the coordinator waits, once a rebalance
	// started, for every member to rejoin; a member still revoking then is
	// removed from the group. Default 60s.
	RebalanceTimeout time.Duration
	// RevokeTimeout bounds Revoked and Lost: their ctx ends after it.
	// Default 30s; must be below RebalanceTimeout.
	RevokeTimeout time.Duration

	// Logger receives membership events. Default slog.Default().
	Logger *slog.Logger
	// ClientOpts are added to the kgo client's options (TLS, SASL, a kgo
	// logger).
	ClientOpts []kgo.Opt
}

func (c *Config) defaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("membership: no seed brokers")
	}
	if c.GroupID == "" {
		if c.Job == "" {
			return errors.New("membership: no job name (Config.Job) and no group id")
		}
		c.GroupID = "onceflow-" + c.Job
	}
	if len(c.Topics) == 0 {
		return fmt.Errorf("membership: group %s: no input topics", c.GroupID)
	}
	if c.Groups < 1 {
		return fmt.Errorf("membership: group %s: partition groups must be at least 1, got %d", c.GroupID, c.Groups)
	}
	if c.Handler == nil {
		return fmt.Errorf("membership: group %s: no Handler", c.GroupID)
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = min(3*time.Second, max(100*time.Millisecond, c.SessionTimeout/10))
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = DefaultRevokeTimeout
	}
	if c.HeartbeatInterval >= c.SessionTimeout {
		return fmt.Errorf("membership: group %s: heartbeat interval %s must be below the session timeout %s", c.GroupID, c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.RevokeTimeout >= c.RebalanceTimeout {
		return fmt.Errorf("membership: group %s: revoke timeout %s must be below the rebalance timeout %s (past it the coordinator removes a member that is still revoking)", c.GroupID, c.RevokeTimeout, c.RebalanceTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Member is one process's membership in a job's consumer group: a franz-go
// group consumer with GroupBalancer that only holds membership.
//
// # Membership only, no records
//
// The per-group pipelines read their partitions with their own clients, so
// the Member's client fetches nothing: Join pauses fetching of the input
// topics (kgo.Client.PauseFetchTopics) and nobody polls it. Auto-commit is
// off; the offsets that lag monitoring reads are committed through
// CommitOffsets by the member owning the partitions (issue 16 §2). Polling is not needed to stay
// in the group: franz-go's classic group consumer heartbeats from its own
// group-management goroutine (every HeartbeatInterval, also while a revoke
// callback runs), not from PollFetches, and without kgo.BlockRebalanceOnPoll
// no rebalance waits for a poll. The integration test holds members idle,
// never polling, for twice the session timeout without a rebalance. So the
// session timeout measures only whether the process (and its network) is
// alive: a member is removed when its process dies or stalls, never because
// a pipeline is slow.
//
// # Cooperative, and why no two members run one group at once
//
// The balancer is cooperative (KIP-429), not eager: an eager rebalance
// revokes every group of every member, which here means a final checkpoint
// and a restore of every pipeline on each join or leave. Cooperatively,
// only the groups that move stop. The ordering that keeps them single-owned:
//
//  1. A member's JoinGroup metadata claims the groups of its last
//     assignment (franz-go's lastAssigned, see GroupBalancer).
//  2. The leader never assigns a group claimed by another live member
//     (Balancer.Assign withholds it); it goes to nobody in that round.
//  3. The holder learns at its sync that it lost the group; franz-go calls
//     OnPartitionsRevoked (Handler.Revoked) and rejoins only after that
//     returns (the rejoin is deferred behind the revoke; a rebalance that
//     starts meanwhile also waits for it: the heartbeat loop's revoke waits
//     for the assign, which waits for the prerevoke). Until it rejoins, its
//     claim stands in every round.
//  4. The round after its rejoin no longer sees the claim and gives the
//     group to its new owner, whose Handler.Assigned therefore starts after
//     the old owner's Handler.Revoked returned.
//
// A member that leaves (Close) revokes everything, and sends LeaveGroup
// after the revoke returned; a member that dies is removed only after its
// session timeout, when nothing of it runs.
//
// Any other failed join or sync (the coordinator unreachable, say) makes
// franz-go call OnPartitionsLost for everything and rejoin claiming
// nothing: the member stops its groups and may get them back.
//
// What membership alone cannot prevent: a member removed while alive (a
// process paused or cut off past SessionTimeout, or one whose revoke runs
// past RebalanceTimeout after a rebalance started). Its groups go to others
// while it may still run them; it learns only later (Handler.Lost, or a
// Handler.Revoked already running when it was removed). Fencing
// (issue 16 §5: the new owner's epoch-conditional manifest and its producer
// fencing of the group's transactional ids) keeps such a zombie's writes
// out.
//
// # RevokeTimeout
//
// Revoked's and Lost's ctx ends after RevokeTimeout: the handler must then
// give up the final checkpoint, cancel the pipelines and return. The Member
// keeps waiting for it to return (it never lets franz-go rejoin while a
// revoked pipeline may run) and logs an error at the deadline. Heartbeats
// go on meanwhile, so a member with a slow revoke stays in the group; but if
// a rebalance starts (another member joins or leaves), the coordinator
// removes it once RebalanceTimeout passes without its rejoin, and its
// groups move: the zombie case above. Hence RevokeTimeout < RebalanceTimeout.
type Member struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards cl, started, closed, lastErr, refusal, owned
	cl       *kgo.Client
	started  bool
	closed   bool
	lastErr  error
	refusal  error         // the leader's reason for assigning this member nothing
	firstSet chan struct{} // closed at the first assignment (empty or not)
	once     sync.Once

	ctx    context.Context // Assigned's ctx; ends at Close
	cancel context.CancelFunc

	// cbMu makes the Handler's calls one at a time. Owned and
	// CommitOffsets do not take it, so the Handler may call them.
	cbMu  sync.Mutex
	owned map[int]string // group -> the member id it was assigned under

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg (defaults filled in) and returns a Member that has not
// joined yet.
func New(cfg Config) (*Member, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Member{
		cfg:      cfg,
		log:      cfg.Logger.With("group", cfg.GroupID),
		firstSet: make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		owned:    map[int]string{},
	}, nil
}

// GroupID is the Kafka consumer group the member joins.
func (m *Member) GroupID() string { return m.cfg.GroupID }

// Join checks that the input topics exist and are co-partitioned with at
// least G partitions, joins the group, and returns once the member received
// its first assignment (possibly empty; Handler.Assigned has returned for a
// non-empty one). When the group's leader refused the member (its G or
// input topics differ from the leader's), Join leaves and returns the
// leader's reason. On an error or when ctx ends first, it closes the client
// and returns why, with the last group-management error if any. A Member
// joins once; Close it and make a new one to join again.
func (m *Member) Join(ctx context.Context) error {
	m.mu.Lock()
	if m.started || m.closed {
		m.mu.Unlock()
		return fmt.Errorf("membership: group %s: Join called twice or after Close", m.cfg.GroupID)
	}
	m.started = true
	m.mu.Unlock()

	if err := m.checkTopics(ctx); err != nil {
		return err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(m.cfg.Brokers...),
		kgo.ConsumerGroup(m.cfg.GroupID),
		kgo.ConsumeTopics(m.cfg.Topics...),
		kgo.Balancers(groupBalancer{g: m.cfg.Groups, onRefused: m.refused}),
		kgo.SessionTimeout(m.cfg.SessionTimeout),
		kgo.HeartbeatInterval(m.cfg.HeartbeatInterval),
		kgo.RebalanceTimeout(m.cfg.RebalanceTimeout),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
		kgo.WithHooks(manageErrHook{m}),
		kgo.WithLogger(clientLogger{m.log}),
	}
	cl, err := kgo.NewClient(append(opts, m.cfg.ClientOpts...)...)
	if err != nil {
		return fmt.Errorf("membership: group %s: client: %w", m.cfg.GroupID, err)
	}
	cl.PauseFetchTopics(m.cfg.Topics...)
	m.mu.Lock()
	if m.closed { // Close ran while we checked the topics
		m.mu.Unlock()
		cl.Close()
		m.cancel()
		return fmt.Errorf("membership: group %s: closed while joining", m.cfg.GroupID)
	}
	m.cl = cl
	m.mu.Unlock()

	select {
	case <-m.firstSet:
		m.mu.Lock()
		refusal := m.refusal
		m.mu.Unlock()
		if refusal == nil {
			return nil
		}
		m.closeClient()
		return fmt.Errorf("membership: group %s: %w", m.cfg.GroupID, refusal)
	case <-ctx.Done():
	}
	err = fmt.Errorf("membership: group %s: no assignment yet: %w", m.cfg.GroupID, ctx.Err())
	if last := m.lastError(); last != nil {
		err = fmt.Errorf("%w (last group error: %v)", err, last)
	}
	m.closeClient()
	return err
}

// checkTopics refuses missing topics and topics the balancer would refuse,
// before joining: as a balance error they would only show in the leader's
// log, and the group would keep retrying.
func (m *Member) checkTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(m.cfg.Brokers...)}, m.cfg.ClientOpts...)...)
	if err != nil {
		return fmt.Errorf("membership: group %s: client: %w", m.cfg.GroupID, err)
	}
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(ctx, m.cfg.Topics...)
	if err != nil {
		return fmt.Errorf("membership: group %s: listing input topics %s: %w", m.cfg.GroupID, strings.Join(m.cfg.Topics, ", "), err)
	}
	counts := map[string]int32{}
	for _, t := range m.cfg.Topics {
		d, ok := details[t]
		if !ok || d.Err != nil {
			why := "not found"
			if ok {
				why = d.Err.Error()
			}
			return fmt.Errorf("membership: group %s: input topic %s: %s", m.cfg.GroupID, t, why)
		}
		counts[t] = int32(len(d.Partitions))
	}
	if _, err := (Balancer{Groups: m.cfg.Groups}).validate([]MemberState{{ID: "check"}}, counts); err != nil {
		return fmt.Errorf("membership: group %s: %w", m.cfg.GroupID, err)
	}
	return nil
}

// Owned returns the groups the member owns now, ascending: assigned and not
// yet revoked or lost.
func (m *Member) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.owned)
}

// Close leaves the group: Handler.Revoked for every owned group (bounded
// by RevokeTimeout as always), then a LeaveGroup request so the others take
// the groups over at once instead of after the session timeout, then the
// client closes. When ctx ends before the leave completes, Close closes the
// client anyway and returns the ctx error; the coordinator then removes the
// member after its session timeout. Close is idempotent and safe before
// Join; every goroutine of the Member has ended when it returns.
func (m *Member) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		cl := m.cl
		m.mu.Unlock()
		if cl != nil {
			if err := cl.LeaveGroupContext(ctx); err != nil {
				m.closeErr = fmt.Errorf("membership: group %s: leaving: %w", m.cfg.GroupID, err)
			}
		}
		m.closeClient()
	})
	return m.closeErr
}

// CommitOffsets commits offsets (topic -> partition -> next offset to read)
// to the job's consumer group, for lag monitoring, with this member's id and
// generation: the coordinator refuses them (ILLEGAL_GENERATION,
// UNKNOWN_MEMBER_ID) from a member that is no longer in the current
// generation. A partition of a group this member does not own is refused
// here, naming the topic, partition and group; so are topics that are not
// inputs. It returns the first partition error the coordinator answered.
func (m *Member) CommitOffsets(ctx context.Context, offsets map[string]map[int32]int64) error {
	commit := make(map[string]map[int32]kgo.EpochOffset, len(offsets))
	m.mu.Lock()
	cl := m.cl
	for t, ps := range offsets {
		if !slices.Contains(m.cfg.Topics, t) {
			m.mu.Unlock()
			return fmt.Errorf("membership: group %s: commit: %s is not an input topic (%s)", m.cfg.GroupID, t, strings.Join(m.cfg.Topics, ", "))
		}
		commit[t] = make(map[int32]kgo.EpochOffset, len(ps))
		for p, o := range ps {
			g := int(p) % m.cfg.Groups
			if _, ok := m.owned[g]; !ok {
				m.mu.Unlock()
				return fmt.Errorf("membership: group %s: commit: %s[%d] offset %d: partition group %d is not owned by this member", m.cfg.GroupID, t, p, o, g)
			}
			commit[t][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
		}
	}
	m.mu.Unlock()
	if cl == nil {
		return fmt.Errorf("membership: group %s: commit: not joined", m.cfg.GroupID)
	}
	var err error
	cl.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, cerr error) {
		if cerr != nil {
			err = cerr
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && err == nil {
					err = fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	if err != nil {
		return fmt.Errorf("membership: group %s: commit: %w", m.cfg.GroupID, err)
	}
	return nil
}

func (m *Member) closeClient() {
	m.mu.Lock()
	cl := m.cl
	m.cl = nil
	m.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
	m.cancel()
}

func (m *Member) lastError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

func (m *Member) groupsOf(partitions map[string][]int32) []int {
	return GroupsOf(partitions, m.cfg.Groups)
}

func (m *Member) onAssigned(_ context.Context, cl *kgo.Client, partitions map[string][]int32) {
	defer m.once.Do(func() { close(m.firstSet) })
	groups := m.groupsOf(partitions)
	if len(groups) == 0 {
		return
	}
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	id, _ := cl.GroupMetadata()
	m.mu.Lock()
	for _, g := range groups {
		if _, ok := m.owned[g]; ok {
			m.log.Error("partition group assigned again while owned", "partition_group", g)
		}
		m.owned[g] = id
	}
	owned := sortedKeys(m.owned)
	m.mu.Unlock()
	m.log.Info("partition groups assigned", "partition_groups", groups, "owned", owned)
	m.cfg.Handler.Assigned(m.ctx, groups)
}

// onRevoked delivers the groups this member was assigned under its
// current member id as Revoked, and the rest as Lost: franz-go handles a
// JoinGroup answered UNKNOWN_MEMBER_ID (the coordinator removed the member,
// e.g. after a revoke that outlasted a rebalance's timeout) by rejoining
// under a new id, still claiming its old partitions, and then revokes
// them at the next sync; it does not call OnPartitionsLost. Those groups
// have already moved.
func (m *Member) onRevoked(_ context.Context, cl *kgo.Client, partitions map[string][]int32) {
	groups := m.groupsOf(partitions)
	if len(groups) == 0 {
		return
	}
	id, _ := cl.GroupMetadata()
	var revoked, lost []int
	m.mu.Lock()
	for _, g := range groups {
		if was, ok := m.owned[g]; ok && was != id {
			lost = append(lost, g)
		} else {
			revoked = append(revoked, g)
		}
	}
	m.mu.Unlock()
	if len(lost) > 0 {
		m.log.Warn("partition groups revoked after this member was removed from the group and rejoined under a new member id: they have moved already; delivering them as lost", "partition_groups", lost, "member_id", id)
		m.giveUp("lost", lost, m.cfg.Handler.Lost)
	}
	m.giveUp("revoked", revoked, m.cfg.Handler.Revoked)
}

func (m *Member) onLost(_ context.Context, _ *kgo.Client, partitions map[string][]int32) {
	m.giveUp("lost", m.groupsOf(partitions), m.cfg.Handler.Lost)
}

func (m *Member) giveUp(how string, groups []int, call func(context.Context, []int)) {
	if len(groups) == 0 {
		return
	}
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	start := time.Now()
	m.log.Info("partition groups "+how, "partition_groups", groups)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RevokeTimeout)
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			m.log.Error("partition groups still stopping past the revoke timeout: their pipelines were told to cancel; the member rejoins only once they stopped, and a rebalance that waits longer than the rebalance timeout removes it from the group (its groups then move; fencing keeps its late writes out)",
				"how", how, "partition_groups", groups, "revoke_timeout", m.cfg.RevokeTimeout, "rebalance_timeout", m.cfg.RebalanceTimeout)
		}
	})
	call(ctx, groups)
	stop()
	cancel()
	m.mu.Lock()
	for _, g := range groups {
		delete(m.owned, g)
	}
	m.mu.Unlock()
	m.log.Info("partition groups stopped", "how", how, "partition_groups", groups, "took", time.Since(start).Round(time.Millisecond))
}

func sortedKeys(s map[int]string) []int { return slices.Sorted(maps.Keys(s)) }

// refused records the leader's reason for assigning this member nothing
// (its G or input topics differ from the leader's).
func (m *Member) refused(reason string) {
	m.mu.Lock()
	m.refusal = errors.New(reason)
	m.lastErr = m.refusal
	m.mu.Unlock()
	m.log.Error("this member is assigned nothing: " + reason)
}

// manageErrHook records the error that ended a group session.
type manageErrHook struct{ m *Member }

func (h manageErrHook) OnGroupManageError(err error) {
	h.m.mu.Lock()
	h.m.lastErr = err
	h.m.mu.Unlock()
	h.m.log.Warn("group session ended with an error; franz-go rejoins after a backoff", "err", err)
}
