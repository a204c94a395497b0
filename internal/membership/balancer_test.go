package membership

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// group is one simulated consumer group: each member's claims and
// generation, moved forward by rebalance like the real protocol does.
type group struct {
	t       *testing.T
	b       Balancer
	topics  map[string]int32
	gen     int32
	members map[string]*MemberState
}

func newGroup(t *testing.T, G int, topics map[string]int32) *group {
	return &group{t: t, b: Balancer{Groups: G}, topics: topics, members: map[string]*MemberState{}}
}

func (s *group) join(ids ...string) {
	for _, id := range ids {
		s.members[id] = &MemberState{ID: id, Generation: -1}
	}
}

func (s *group) leave(ids ...string) {
	for _, id := range ids {
		delete(s.members, id)
	}
}

func (s *group) input() []MemberState {
	var in []MemberState
	for _, m := range s.members {
		in = append(in, MemberState{ID: m.ID, Generation: m.Generation, Groups: slices.Clone(m.Groups)})
	}
	slices.SortFunc(in, func(a, b MemberState) int { return strings.Compare(a.ID, b.ID) })
	return in
}

// round runs one join/sync round: every member takes its plan (revoking
// what it no longer holds) at a new generation.
func (s *group) round() Plan {
	s.t.Helper()
	plan, err := s.b.Assign(s.input(), s.topics)
	if err != nil {
		s.t.Fatalf("assign: %v", err)
	}
	s.gen++
	for id, m := range s.members {
		// Cooperative safety: nothing handed to a member that another
		// member of the round still claims.
		for _, g := range plan.Groups[id] {
			for oid, o := range s.members {
				if oid != id && slices.Contains(o.Groups, g) && !slices.Contains(m.Groups, g) {
					s.t.Fatalf("round %d gives group %d to %s while %s still holds it", s.gen, g, id, oid)
				}
			}
		}
		m.Groups = slices.Clone(plan.Groups[id])
		m.Generation = s.gen
	}
	return plan
}

// settle runs rounds until nothing is withheld (at most two are needed)
// and returns how many groups changed owner, with the rounds it took.
func (s *group) settle() (moved, rounds int) {
	s.t.Helper()
	before := s.owners()
	for rounds = 1; ; rounds++ {
		plan := s.round()
		if len(plan.Withheld) == 0 {
			break
		}
		if rounds == 2 {
			s.t.Fatalf("still withholding %v after two rounds", plan.Withheld)
		}
	}
	after := s.owners()
	for g, o := range after {
		if before[g] != "" && before[g] != o {
			moved++
		}
	}
	s.check()
	return moved, rounds
}

func (s *group) owners() map[int]string {
	o := map[int]string{}
	for id, m := range s.members {
		for _, g := range m.Groups {
			o[g] = id
		}
	}
	return o
}

// check: every group held exactly once, counts within one.
func (s *group) check() {
	s.t.Helper()
	held := map[int]string{}
	lo, hi := s.b.Groups+1, -1
	for id, m := range s.members {
		for _, g := range m.Groups {
			if o, ok := held[g]; ok {
				s.t.Fatalf("group %d held by %s and %s", g, o, id)
			}
			held[g] = id
		}
		lo, hi = min(lo, len(m.Groups)), max(hi, len(m.Groups))
	}
	if len(held) != s.b.Groups {
		s.t.Fatalf("%d of %d groups held: %v", len(held), s.b.Groups, held)
	}
	if hi-lo > 1 {
		s.t.Fatalf("unbalanced: counts from %d to %d: %v", lo, hi, s.layout())
	}
}

func (s *group) layout() map[string][]int {
	l := map[string][]int{}
	for id, m := range s.members {
		l[id] = m.Groups
	}
	return l
}

func TestBalancerSteps(t *testing.T) {
	type step struct {
		name   string
		join   []string
		leave  []string
		want   map[string][]int
		moved  int
		rounds int
	}
	eight := map[string]int32{"in": 8}
	tests := []struct {
		name   string
		G      int
		topics map[string]int32
		steps  []step
	}{
		{
			name: "join, join, join, leave, G=8 on 8 partitions", G: 8, topics: eight,
			steps: []step{
				{name: "first member", join: []string{"a"}, want: map[string][]int{"a": {0, 1, 2, 3, 4, 5, 6, 7}}, rounds: 1},
				{name: "second joins", join: []string{"b"}, want: map[string][]int{"a": {0, 1, 2, 3}, "b": {4, 5, 6, 7}}, moved: 4, rounds: 2},
				{name: "third joins", join: []string{"c"}, want: map[string][]int{"a": {0, 1, 2}, "b": {4, 5, 6}, "c": {3, 7}}, moved: 2, rounds: 2},
				{name: "fourth joins", join: []string{"d"}, want: map[string][]int{"a": {0, 1}, "b": {4, 5}, "c": {3, 7}, "d": {2, 6}}, moved: 2, rounds: 2},
				{name: "fourth leaves", leave: []string{"d"}, want: map[string][]int{"a": {0, 1, 2}, "b": {4, 5, 6}, "c": {3, 7}}, moved: 0, rounds: 1},
				{name: "first leaves", leave: []string{"a"}, want: map[string][]int{"b": {0, 4, 5, 6}, "c": {1, 2, 3, 7}}, moved: 0, rounds: 1},
				{name: "a rejoins", join: []string{"a"}, want: map[string][]int{"a": {6, 7}, "b": {0, 4, 5}, "c": {1, 2, 3}}, moved: 2, rounds: 2},
			},
		},
		{
			name: "G larger than the members: 8 groups over 3, then 5", G: 8, topics: eight,
			steps: []step{
				{name: "three at once", join: []string{"a", "b", "c"}, want: map[string][]int{"a": {0, 1, 2}, "b": {3, 4, 5}, "c": {6, 7}}, rounds: 1},
				{name: "two more at once", join: []string{"d", "e"}, want: map[string][]int{"a": {0, 1}, "b": {3, 4}, "c": {6, 7}, "d": {2}, "e": {5}}, moved: 2, rounds: 2},
			},
		},
		{
			name: "8 partitions in 3 groups (not a multiple)", G: 3, topics: eight,
			steps: []step{
				{name: "two members", join: []string{"a", "b"}, want: map[string][]int{"a": {0, 1}, "b": {2}}, rounds: 1},
				{name: "third", join: []string{"c"}, want: map[string][]int{"a": {0}, "b": {2}, "c": {1}}, moved: 1, rounds: 2},
				{name: "fourth gets none", join: []string{"d"}, want: map[string][]int{"a": {0}, "b": {2}, "c": {1}, "d": {}}, moved: 0, rounds: 1},
			},
		},
		{
			name: "more members than groups", G: 2, topics: map[string]int32{"x": 4, "y": 4},
			steps: []step{
				{name: "three members", join: []string{"a", "b", "c"}, want: map[string][]int{"a": {0}, "b": {1}, "c": {}}, rounds: 1},
				{name: "holder leaves, idle one takes over", leave: []string{"a"}, want: map[string][]int{"b": {1}, "c": {0}}, rounds: 1},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newGroup(t, tc.G, tc.topics)
			for _, st := range tc.steps {
				s.join(st.join...)
				s.leave(st.leave...)
				moved, rounds := s.settle()
				if got := s.layout(); !reflect.DeepEqual(got, st.want) {
					t.Fatalf("%s: layout %v, want %v", st.name, got, st.want)
				}
				if moved != st.moved || rounds != st.rounds {
					t.Fatalf("%s: %d groups moved in %d rounds, want %d in %d", st.name, moved, rounds, st.moved, st.rounds)
				}
			}
		})
	}
}

// The first round of a move withholds the moving groups from everybody and
// names who holds them.
func TestBalancerWithholdsMovingGroups(t *testing.T) {
	b := Balancer{Groups: 8}
	plan, err := b.Assign([]MemberState{
		{ID: "a", Generation: 3, Groups: []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{ID: "b", Generation: -1},
	}, map[string]int32{"in": 8})
	if err != nil {
		t.Fatal(err)
	}
	want := Plan{
		Groups:     map[string][]int{"a": {0, 1, 2, 3}, "b": {}},
		Partitions: map[string]map[string][]int32{"a": {"in": {0, 1, 2, 3}}, "b": {"in": {}}},
		Withheld:   map[int]string{4: "a", 5: "a", 6: "a", 7: "a"},
	}
	if !reflect.DeepEqual(plan, want) {
		t.Fatalf("plan %+v\nwant %+v", plan, want)
	}
}

// Every partition of a group goes to one member, on every co-partitioned
// topic; partition p is in group p mod G.
func TestBalancerPartitions(t *testing.T) {
	b := Balancer{Groups: 3}
	plan, err := b.Assign([]MemberState{{ID: "a"}, {ID: "b"}}, map[string]int32{"left": 8, "right": 8})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string][]int32{
		"a": {"left": {0, 1, 3, 4, 6, 7}, "right": {0, 1, 3, 4, 6, 7}},
		"b": {"left": {2, 5}, "right": {2, 5}},
	}
	if !reflect.DeepEqual(plan.Partitions, want) {
		t.Fatalf("partitions %v, want %v", plan.Partitions, want)
	}
	if got := GroupsOf(plan.Partitions["a"], 3); !reflect.DeepEqual(got, []int{0, 1}) {
		t.Fatalf("GroupsOf = %v", got)
	}
}

// The same members in any order give the same plan.
func TestBalancerDeterministic(t *testing.T) {
	b := Balancer{Groups: 16}
	in := []MemberState{
		{ID: "m3", Generation: 7, Groups: []int{0, 1, 2, 3, 4, 5, 6}},
		{ID: "m1", Generation: 7, Groups: []int{7, 8, 9}},
		{ID: "m2", Generation: 7, Groups: []int{10, 11, 12, 13, 14, 15}},
		{ID: "m4", Generation: -1},
		{ID: "m0", Generation: -1},
	}
	first, err := b.Assign(in, map[string]int32{"in": 16})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		perm := slices.Clone(in)
		for j := range perm {
			k := (j*7 + i) % len(perm)
			perm[j], perm[k] = perm[k], perm[j]
		}
		again, err := b.Assign(perm, map[string]int32{"in": 16})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("order %v gives %v, first gave %v", perm, again, first)
		}
	}
}

// Minimal movement: from any layout, only the groups above a member's
// quota (and those of departed members) move.
func TestBalancerSticky(t *testing.T) {
	b := Balancer{Groups: 12}
	in := []MemberState{
		{ID: "a", Generation: 4, Groups: []int{0, 1, 2, 3, 4, 5, 6}}, // 7: over
		{ID: "b", Generation: 4, Groups: []int{7, 8}},                // 2
		{ID: "c", Generation: 4, Groups: []int{9}},                   // 1
		{ID: "d", Generation: -1},                                    // new
	} // groups 10 and 11: their holder left
	plan, err := b.Assign(in, map[string]int32{"in": 12})
	if err != nil {
		t.Fatal(err)
	}
	// Quotas 3 each: a keeps 0..2 and gives up 3..6 (withheld: they go
	// to b, c and d in the next round); b keeps 7, 8; c keeps 9; the
	// groups of the departed holder, 10 and 11, go to d at once.
	want := map[string][]int{"a": {0, 1, 2}, "b": {7, 8}, "c": {9}, "d": {10, 11}}
	if !reflect.DeepEqual(plan.Groups, want) {
		t.Fatalf("groups %v, want %v", plan.Groups, want)
	}
	if want := map[int]string{3: "a", 4: "a", 5: "a", 6: "a"}; !reflect.DeepEqual(plan.Withheld, want) {
		t.Fatalf("withheld %v, want %v", plan.Withheld, want)
	}
}

// A stale claim (a member that missed a generation) loses to the current
// holder's: the group stays with the holder of the higher generation.
func TestBalancerStaleClaim(t *testing.T) {
	b := Balancer{Groups: 2}
	plan, err := b.Assign([]MemberState{
		{ID: "a", Generation: 3, Groups: []int{0, 1}},
		{ID: "b", Generation: 5, Groups: []int{1}},
	}, map[string]int32{"in": 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]int{"a": {0}, "b": {1}}; !reflect.DeepEqual(plan.Groups, want) || len(plan.Withheld) != 0 {
		t.Fatalf("groups %v withheld %v, want %v and none", plan.Groups, plan.Withheld, want)
	}
	// The stale claimant may not be handed a group the current holder
	// still runs.
	plan, err = b.Assign([]MemberState{
		{ID: "a", Generation: 3, Groups: []int{1}},
		{ID: "b", Generation: 5, Groups: []int{0, 1}},
	}, map[string]int32{"in": 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][]int{"a": {}, "b": {0}}; !reflect.DeepEqual(plan.Groups, want) || !reflect.DeepEqual(plan.Withheld, map[int]string{1: "b"}) {
		t.Fatalf("groups %v withheld %v, want %v and 1 withheld from b", plan.Groups, plan.Withheld, want)
	}
}

func TestBalancerRefuses(t *testing.T) {
	one := []MemberState{{ID: "a"}}
	tests := []struct {
		name    string
		G       int
		members []MemberState
		topics  map[string]int32
		want    []string
	}{
		{"co-partitioning broken", 4, one, map[string]int32{"clicks": 8, "views": 6, "users": 8},
			[]string{"not co-partitioned", "clicks has 8", "users has 8", "views has 6"}},
		{"G above the partitions", 12, one, map[string]int32{"in": 8}, []string{"G = 12", "8 partitions", "in", "groups 8..11"}},
		{"G zero", 0, one, map[string]int32{"in": 8}, []string{"at least 1, got 0"}},
		{"no members", 2, nil, map[string]int32{"in": 8}, []string{"no members"}},
		{"duplicate member", 2, []MemberState{{ID: "a"}, {ID: "a"}}, map[string]int32{"in": 8}, []string{`"a" is listed twice`}},
		{"no topics", 2, one, nil, []string{"no input topics"}},
		{"empty topic", 2, one, map[string]int32{"in": 0}, []string{"in has 0 partitions"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Balancer{Groups: tc.G}.Assign(tc.members, tc.topics)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func ExampleBalancer() {
	plan, _ := Balancer{Groups: 8}.Assign([]MemberState{{ID: "a"}, {ID: "b"}, {ID: "c"}}, map[string]int32{"in": 8})
	fmt.Println(plan.Groups["a"], plan.Groups["b"], plan.Groups["c"])
	// Output: [0 1 2] [3 4 5] [6 7]
}

// Random joins and leaves (fixed seed): after every change the layout is
// complete and balanced, no round hands out a group another member still
// holds (checked in round), at most two rounds settle it, and only the
// groups a member must give up for balance move.
func TestBalancerRandomChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 8))
	for _, G := range []int{1, 3, 8, 13} {
		s := newGroup(t, G, map[string]int32{"a": 16, "b": 16})
		next := 0
		for range 200 {
			if len(s.members) == 0 || (len(s.members) < 6 && rng.IntN(2) == 0) {
				s.join(fmt.Sprintf("m%02d", next))
				next++
			} else {
				ids := slices.Sorted(maps.Keys(s.members))
				s.leave(ids[rng.IntN(len(ids))])
			}
			if len(s.members) == 0 {
				continue
			}
			// The fewest moves balance allows: what members hold beyond
			// the quotas, given the larger quotas to the larger holders.
			var counts []int
			for _, m := range s.members {
				counts = append(counts, len(m.Groups))
			}
			slices.Sort(counts)
			slices.Reverse(counts)
			least := 0
			for rank, c := range counts {
				q := G / len(counts)
				if rank < G%len(counts) {
					q++
				}
				least += max(0, c-q)
			}
			moved, _ := s.settle()
			if moved != least {
				t.Fatalf("G=%d: %d groups moved, %d had to: %v", G, moved, least, s.layout())
			}
		}
	}
}
