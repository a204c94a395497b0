// Package membership shares a distributed job's partition groups among the
// processes that run it (issue 16 §1, §2), with Kafka's classic consumer
// group protocol as the only coordinator.
//
// A job's input partitions are split into G partition groups: partition p of
// every (co-partitioned) input topic belongs to group p mod G. A group is the
// unit of ownership. Processes started with the same job name join one Kafka
// consumer group; the group's leader runs Balancer, which hands out whole
// partition groups, and every member learns the groups it gains and gives up
// through Member's Handler.
//
// Balancer is pure (no Kafka); GroupBalancer adapts it to franz-go's
// kgo.GroupBalancer; Member runs a kgo client that holds the membership.
package membership

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// MemberState is what the leader knows of one member when it balances: the
// groups the member holds right now (it may still be running their
// pipelines) and the generation in which it was given them.
type MemberState struct {
	// ID is the member's id in the Kafka group.
	ID string
	// Generation is the group generation of the member's last assignment
	// (-1 when it never had one). When two members claim one group, the
	// claim of the higher generation is the current one (KIP-792).
	Generation int32
	// Groups are the groups the member claims to hold.
	Groups []int
}

// Plan is the result of one balance.
type Plan struct {
	// Groups maps every member id to the groups it holds after this
	// rebalance, ascending (an empty slice when it holds none).
	Groups map[string][]int
	// Partitions maps every member id to its topic partitions: for each
	// of its groups g, partition p of every input topic with p mod G == g.
	Partitions map[string]map[string][]int32
	// Withheld are the groups that move from one live member to another:
	// they are assigned to nobody in this round, because the member still
	// holding them (the value) must first revoke them. That member rejoins
	// once it has, and the next round assigns them (issue 16 §2: a group's
	// pipeline stops before its new owner restores it).
	Withheld map[int]string
}

// Balancer assigns partition groups to the members of a job's consumer
// group. Its zero value is not usable: set Groups.
//
// Assign is deterministic (the same input gives the same plan, whatever the
// order of the members), balanced (the members' group counts differ by at
// most one once withheld groups are handed over) and sticky (a member keeps
// every group it holds unless balance demands that it give some up; the
// members that hold more keep the larger quotas, so the fewest groups move).
//
// It is cooperative (KIP-429): a group moving from member A to member B is
// withheld from everybody in the round that decides the move; A revokes it
// (its Revoked callback returns) and rejoins, and the next round, in which A
// no longer claims it, gives it to B. See Member for why this never lets two
// live members run one group at once.
type Balancer struct {
	// Groups is G, the number of partition groups (>= 1, and at most the
	// input topics' partition count).
	Groups int
}

// Assign balances the groups over members. partitions maps every input
// topic to its partition count; all counts must be equal (co-partitioned
// inputs), and G may not exceed them.
//
// Errors: no members, duplicate member ids, G < 1, no topics, a topic with
// no partitions, topics whose partition counts differ (naming every topic
// and count), G above the partition count.
func (b Balancer) Assign(members []MemberState, partitions map[string]int32) (Plan, error) {
	n, err := b.validate(members, partitions)
	if err != nil {
		return Plan{}, err
	}
	G := b.Groups

	ms := slices.Clone(members)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })

	// The current holder of each group: the claimant of the highest
	// generation, the first by id on a tie. claimGen[g][i] is member i's
	// claim on g (absent when none).
	owner := make([]int, G)
	maxGen := make([]int32, G)
	claimGen := make([]map[int]int32, G)
	for g := range owner {
		owner[g] = -1
	}
	for i, m := range ms {
		for _, g := range m.Groups {
			if g < 0 || g >= G {
				continue // a group of another G: nothing runs it here
			}
			if claimGen[g] == nil {
				claimGen[g] = map[int]int32{}
			}
			if old, ok := claimGen[g][i]; ok && old >= m.Generation {
				continue
			}
			claimGen[g][i] = m.Generation
			if owner[g] == -1 || m.Generation > maxGen[g] {
				owner[g], maxGen[g] = i, m.Generation
			}
		}
	}
	kept := make([][]int, len(ms))
	for g, i := range owner {
		if i >= 0 {
			kept[i] = append(kept[i], g)
		}
	}

	// Quotas: G/len members each, and one more for G%len of them, given
	// to the members that hold the most (then by id).
	order := make([]int, len(ms))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool { return len(kept[order[x]]) > len(kept[order[y]]) })
	quota := make([]int, len(ms))
	for rank, i := range order {
		quota[i] = G / len(ms)
		if rank < G%len(ms) {
			quota[i]++
		}
	}

	assigned := make([][]int, len(ms))
	taken := make([]bool, G)
	for i := range ms {
		k := kept[i]
		if len(k) > quota[i] {
			k = k[:quota[i]]
		}
		for _, g := range k {
			taken[g] = true
		}
		assigned[i] = append(assigned[i], k...)
	}
	// Free groups, ascending, fill the members in id order up to their
	// quotas (contiguous runs for a fresh group).
	next := 0
	for i := range ms {
		for len(assigned[i]) < quota[i] {
			for taken[next] {
				next++
			}
			taken[next] = true
			assigned[i] = append(assigned[i], next)
		}
	}

	plan := Plan{
		Groups:     make(map[string][]int, len(ms)),
		Partitions: make(map[string]map[string][]int32, len(ms)),
		Withheld:   map[int]string{},
	}
	for i, m := range ms {
		mine := []int{}
		for _, g := range assigned[i] {
			if gen, ok := claimGen[g][i]; owner[g] >= 0 && (!ok || gen != maxGen[g]) {
				// Another live member holds it: it revokes first.
				plan.Withheld[g] = ms[owner[g]].ID
				continue
			}
			mine = append(mine, g)
		}
		slices.Sort(mine)
		plan.Groups[m.ID] = mine
		plan.Partitions[m.ID] = PartitionsOf(mine, G, partitions, n)
	}
	return plan, nil
}

// PartitionsOf returns the topic partitions of groups: partition p of each
// topic with p mod G in groups. n is every topic's partition count.
func PartitionsOf(groups []int, G int, topics map[string]int32, n int32) map[string][]int32 {
	in := make(map[int]bool, len(groups))
	for _, g := range groups {
		in[g] = true
	}
	out := make(map[string][]int32, len(topics))
	for t := range topics {
		ps := []int32{}
		for p := int32(0); p < n; p++ {
			if in[int(p)%G] {
				ps = append(ps, p)
			}
		}
		out[t] = ps
	}
	return out
}

// GroupsOf returns the groups (ascending, without repeats) that the topic
// partitions belong to.
func GroupsOf(partitions map[string][]int32, G int) []int {
	seen := map[int]bool{}
	var out []int
	for _, ps := range partitions {
		for _, p := range ps {
			g := int(p) % G
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	return out
}

// validate checks the input and returns the common partition count.
func (b Balancer) validate(members []MemberState, partitions map[string]int32) (int32, error) {
	if b.Groups < 1 {
		return 0, fmt.Errorf("partition groups: G must be at least 1, got %d", b.Groups)
	}
	if len(members) == 0 {
		return 0, errors.New("partition groups: no members to assign to")
	}
	ids := map[string]bool{}
	for _, m := range members {
		if ids[m.ID] {
			return 0, fmt.Errorf("partition groups: member %q is listed twice", m.ID)
		}
		ids[m.ID] = true
	}
	if len(partitions) == 0 {
		return 0, errors.New("partition groups: no input topics")
	}
	topics := make([]string, 0, len(partitions))
	for t := range partitions {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		if partitions[t] <= 0 {
			return 0, fmt.Errorf("partition groups: input topic %s has %d partitions", t, partitions[t])
		}
	}
	n := partitions[topics[0]]
	for _, t := range topics[1:] {
		if partitions[t] != n {
			counts := make([]string, len(topics))
			for i, t := range topics {
				counts[i] = fmt.Sprintf("%s has %d", t, partitions[t])
			}
			return 0, fmt.Errorf("partition groups: input topics are not co-partitioned (%s partitions): partition p of every input topic must belong to group p mod G, so all need the same partition count", strings.Join(counts, ", "))
		}
	}
	if int32(b.Groups) > n {
		return 0, fmt.Errorf("partition groups: G = %d exceeds the %d partitions of input topics %s: groups %d..%d would own no partition", b.Groups, n, strings.Join(topics, ", "), n, b.Groups-1)
	}
	return n, nil
}
