package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProtocolName is the balancer's name in the group's JoinGroup protocols.
// Members of one job must all offer it; the coordinator refuses a member
// that offers no protocol in common with the group (INCONSISTENT_GROUP_PROTOCOL).
const ProtocolName = "onceflow-partition-groups-v1"

// userDataVersion prefixes the user data this package puts in the member
// metadata and in the assignments.
const userDataVersion = 1

// GroupBalancer returns Balancer{Groups: G} as a franz-go balancer for the
// classic consumer group protocol (kgo.Balancers). It speaks the standard
// "consumer" embedded protocol (kmsg.ConsumerMemberMetadata and
// kmsg.ConsumerMemberAssignment), so kadm and Kafka's tools can describe
// the group and its lag; the user data of both carries G and the member's
// groups.
//
// It is cooperative (IsCooperative): franz-go then revokes only what a member
// loses, after the sync that tells it, and rejoins once the revoke callback
// has returned. A member's metadata claims the groups of its last
// assignment, and the balancer never gives a group to one member while
// another claims it (Balancer.Assign withholds it), so the new owner's
// assign callback runs only after the old owner's revoke callback returned.
//
// A member whose G or input topics differ from the leader's (a
// misconfigured instance) is assigned nothing, and its assignment carries
// the reason, which Member.Join returns; the others are balanced as if it
// were absent. Balancing fails, with the reason in the leader's group error
// (franz-go then calls OnPartitionsLost on the leader and retries), only
// when Balancer.Assign refuses the topics themselves: not co-partitioned,
// fewer partitions than G.
func GroupBalancer(G int) kgo.GroupBalancer { return groupBalancer{g: G} }

type groupBalancer struct {
	g int
	// onRefused, when set, hears the leader's reason for assigning this
	// member nothing (ParseSyncAssignment).
	onRefused func(reason string)
}

func (groupBalancer) ProtocolName() string { return ProtocolName }
func (groupBalancer) IsCooperative() bool  { return true }

// JoinGroupMetadata claims the groups of currentAssignment (franz-go's
// last assignment, which for a cooperative member no longer holds what it
// revoked: the rejoin follows the revoke callback).
func (b groupBalancer) JoinGroupMetadata(topics []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = topics
	meta.Generation = generation
	names := make([]string, 0, len(current))
	for t := range current {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		owned := kmsg.NewConsumerMemberMetadataOwnedPartition()
		owned.Topic = t
		owned.Partitions = slices.Sorted(slices.Values(current[t]))
		meta.OwnedPartitions = append(meta.OwnedPartitions, owned)
	}
	meta.UserData = encodeUserData(b.g, GroupsOf(current, b.g), "")
	return meta.AppendTo(nil)
}

func (b groupBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	parts, err := kgo.ParseConsumerSyncAssignment(assignment)
	if err != nil || b.onRefused == nil {
		return parts, err
	}
	var assn kmsg.ConsumerMemberAssignment
	if assn.ReadFrom(assignment) == nil {
		if _, _, reason, err := decodeUserData(assn.UserData); err == nil && reason != "" {
			b.onRefused(reason)
		}
	}
	return parts, nil
}

func (b groupBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	mb := &memberBalancer{g: b.g, topics: map[string]struct{}{}}
	for _, m := range members {
		var meta kmsg.ConsumerMemberMetadata
		meta.Default()
		if err := meta.ReadFrom(m.ProtocolMetadata); err != nil {
			return nil, nil, fmt.Errorf("partition groups: member %s: unreadable join metadata: %w", m.MemberID, err)
		}
		G, groups, _, err := decodeUserData(meta.UserData)
		if err != nil {
			return nil, nil, fmt.Errorf("partition groups: member %s: %w", m.MemberID, err)
		}
		// Claims: the user data's groups and those of the owned
		// partitions (the same set when both come from this package;
		// the union is the safe side otherwise). A member of another G
		// numbers its groups differently: only its partitions count.
		byParts := GroupsOf(ownedMap(meta.OwnedPartitions), b.g)
		if G != b.g {
			groups = nil
		}
		for _, g := range byParts {
			if !slices.Contains(groups, g) {
				groups = append(groups, g)
			}
		}
		topics := slices.Sorted(slices.Values(meta.Topics))
		for _, t := range topics {
			mb.topics[t] = struct{}{}
		}
		mb.members = append(mb.members, memberMeta{
			state:  MemberState{ID: m.MemberID, Generation: meta.Generation, Groups: groups},
			topics: topics,
			g:      G,
		})
	}
	return mb, mb.topics, nil
}

type memberMeta struct {
	state  MemberState
	topics []string
	g      int
}

type memberBalancer struct {
	g       int
	leader  string
	members []memberMeta
	topics  map[string]struct{}
}

// Balance is required by kgo.GroupMemberBalancer; franz-go calls
// BalanceOrError instead. On an error it returns an empty assignment.
func (b *memberBalancer) Balance(topics map[string]int32) kgo.IntoSyncAssignment {
	into, err := b.BalanceOrError(topics)
	if err != nil {
		return syncAssignment(nil)
	}
	return into
}

// SetBalanceInfo (kgo.GroupMemberBalancerInfo) tells which member is the
// leader: its topics are the job's.
func (b *memberBalancer) SetBalanceInfo(info kgo.BalanceInfo) { b.leader = info.LeaderID }

func (b *memberBalancer) BalanceOrError(counts map[string]int32) (kgo.IntoSyncAssignment, error) {
	// The leader's topics (and G, b.g) are the job's; a member that
	// differs is refused: assigned nothing, told why.
	ref := b.members[0].topics
	for _, m := range b.members {
		if m.state.ID == b.leader {
			ref = m.topics
		}
	}
	refused := map[string]string{}
	var states []MemberState
	for _, m := range b.members {
		switch {
		case m.g != b.g:
			refused[m.state.ID] = fmt.Sprintf("partition groups: the group's leader refused member %s: it has G=%d partition groups, the group runs G=%d", m.state.ID, m.g, b.g)
		case !slices.Equal(m.topics, ref):
			refused[m.state.ID] = fmt.Sprintf("partition groups: the group's leader refused member %s: it reads input topics [%s], the group reads [%s]", m.state.ID, strings.Join(m.topics, " "), strings.Join(ref, " "))
		default:
			states = append(states, m.state)
		}
	}
	partitions := make(map[string]int32, len(ref))
	for _, t := range ref {
		n, ok := counts[t]
		if !ok {
			return nil, fmt.Errorf("partition groups: the leader has no partition count for input topic %s (missing from its metadata)", t)
		}
		partitions[t] = n
	}
	plan, err := Balancer{Groups: b.g}.Assign(states, partitions)
	if err != nil {
		return nil, err
	}
	// A refused member may still run groups it claims (it was assigned
	// them under another leader): nobody gets them until it gave them up.
	for _, m := range b.members {
		if _, ok := refused[m.state.ID]; !ok {
			continue
		}
		for _, g := range m.state.Groups {
			for id, gs := range plan.Groups {
				if i := slices.Index(gs, g); i >= 0 {
					plan.Groups[id] = slices.Delete(gs, i, i+1)
					plan.Partitions[id] = PartitionsOf(plan.Groups[id], b.g, partitions, partitions[ref[0]])
				}
			}
		}
	}
	out := make(syncAssignment, 0, len(b.members))
	for _, m := range b.members {
		id := m.state.ID
		var assn kmsg.ConsumerMemberAssignment
		assn.Default()
		for _, t := range slices.Sorted(maps.Keys(plan.Partitions[id])) {
			if len(plan.Partitions[id][t]) == 0 {
				continue
			}
			at := kmsg.NewConsumerMemberAssignmentTopic()
			at.Topic = t
			at.Partitions = plan.Partitions[id][t]
			assn.Topics = append(assn.Topics, at)
		}
		assn.UserData = encodeUserData(b.g, plan.Groups[id], refused[id])
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID = id
		sa.MemberAssignment = assn.AppendTo(nil)
		out = append(out, sa)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MemberID < out[j].MemberID })
	return out, nil
}

type syncAssignment []kmsg.SyncGroupRequestGroupAssignment

func (s syncAssignment) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment { return s }

func ownedMap(owned []kmsg.ConsumerMemberMetadataOwnedPartition) map[string][]int32 {
	m := make(map[string][]int32, len(owned))
	for _, o := range owned {
		m[o.Topic] = append(m[o.Topic], o.Partitions...)
	}
	return m
}

// encodeUserData is the user data of join metadata and assignments:
// version, G, count, groups (uvarints), then the length and bytes of the
// leader's reason for refusing the member (assignments only; empty when
// none).
func encodeUserData(G int, groups []int, refused string) []byte {
	b := []byte{userDataVersion}
	b = binary.AppendUvarint(b, uint64(G))
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		b = binary.AppendUvarint(b, uint64(g))
	}
	b = binary.AppendUvarint(b, uint64(len(refused)))
	return append(b, refused...)
}

func decodeUserData(b []byte) (G int, groups []int, refused string, err error) {
	if len(b) == 0 {
		return 0, nil, "", errors.New("no partition-group user data in its join metadata (not an onceflow member?)")
	}
	if b[0] != userDataVersion {
		return 0, nil, "", fmt.Errorf("partition-group user data of version %d, this build reads %d", b[0], userDataVersion)
	}
	b = b[1:]
	truncated := errors.New("truncated partition-group user data")
	next := func() (int, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > 1<<31 {
			return 0, false
		}
		b = b[n:]
		return int(v), true
	}
	var ok bool
	if G, ok = next(); !ok {
		return 0, nil, "", truncated
	}
	count, ok := next()
	if !ok || count > G {
		return 0, nil, "", truncated
	}
	for range count {
		g, ok := next()
		if !ok {
			return 0, nil, "", truncated
		}
		groups = append(groups, g)
	}
	n, ok := next()
	if !ok || n > len(b) {
		return 0, nil, "", truncated
	}
	return G, groups, string(b[:n]), nil
}
