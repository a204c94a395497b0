package state

import (
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

func snapOps(t *testing.T, parallelism int, entries func(sub int) [][]byte, mode Redistribution) []*checkpoint.Handle {
	t.Helper()
	var hs []*checkpoint.Handle
	for s := 0; s < parallelism; s++ {
		st, err := NewOperatorStateStore(s, parallelism, nil)
		must(t, err)
		l, err := st.ListState("offsets", mode)
		must(t, err)
		l.Update(entries(s))
		h, err := st.Snapshot()
		must(t, err)
		hs = append(hs, h)
	}
	return hs
}

func restoredEntries(t *testing.T, hs []*checkpoint.Handle, parallelism int, mode Redistribution) [][]string {
	t.Helper()
	var out [][]string
	for s := 0; s < parallelism; s++ {
		st, err := NewOperatorStateStore(s, parallelism, hs)
		must(t, err)
		l, err := st.ListState("offsets", mode)
		must(t, err)
		var got []string
		for _, e := range l.Get() {
			got = append(got, string(e))
		}
		out = append(out, got)
	}
	return out
}

func TestOperatorStateRedistribution(t *testing.T) {
	entries := func(sub int) [][]byte {
		var es [][]byte
		for p := sub; p < 7; p += 3 {
			es = append(es, []byte(fmt.Sprintf("p%d", p)))
		}
		return es
	}
	hs := snapOps(t, 3, entries, SplitEvenly)

	// Same parallelism: every subtask gets its own entries back.
	same := restoredEntries(t, hs, 3, SplitEvenly)
	for s := 0; s < 3; s++ {
		var want []string
		for _, e := range entries(s) {
			want = append(want, string(e))
		}
		if !slices.Equal(same[s], want) {
			t.Fatalf("subtask %d got %v, want its own %v", s, same[s], want)
		}
	}
	// Rescale 3 -> 2 -> 4: each entry on exactly one subtask, spread evenly.
	for _, p := range []int{2, 4, 7, 9} {
		got := restoredEntries(t, hs, p, SplitEvenly)
		var all []string
		for s, es := range got {
			if len(es) > (7+p-1)/p || len(es) < 7/p {
				t.Fatalf("parallelism %d: subtask %d got %d entries", p, s, len(es))
			}
			all = append(all, es...)
		}
		sort.Strings(all)
		if !slices.Equal(all, []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6"}) {
			t.Fatalf("parallelism %d: entries %v", p, all)
		}
	}
	// Union: everyone gets everything.
	uh := snapOps(t, 3, entries, Union)
	for _, es := range restoredEntries(t, uh, 2, Union) {
		if len(es) != 7 {
			t.Fatalf("union gave %v", es)
		}
	}
	// Mode mismatch names the state.
	st, err := NewOperatorStateStore(0, 2, uh)
	must(t, err)
	_, err = st.ListState("offsets", SplitEvenly)
	wantErrContains(t, err, `"offsets"`, "union")
}

func TestCheckRestore(t *testing.T) {
	md := &checkpoint.Metadata{Path: "/x/chk-3", Operators: []checkpoint.OperatorSnapshot{
		{UID: "source", Subtasks: []checkpoint.SubtaskSnapshot{{Operator: &checkpoint.Handle{Backend: checkpoint.BackendOperator}}}},
		{UID: "counter", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: checkpoint.BackendMemory}}}},
		{UID: "stateless", Subtasks: []checkpoint.SubtaskSnapshot{{}}},
	}}
	must(t, checkpoint.CheckRestore(md, []string{"source", "counter"}, false))
	wantErrContains(t, checkpoint.CheckRestore(md, []string{"source"}, false), `"counter"`, "/x/chk-3")
	must(t, checkpoint.CheckRestore(md, []string{"source"}, true))
}

// Lists a restored run does not ask for survive its snapshots, neither lost
// nor multiplied by the parallelism.
func TestOperatorStateCarriesUnusedLists(t *testing.T) {
	var hs []*checkpoint.Handle
	for sub := 0; sub < 3; sub++ {
		st, err := NewOperatorStateStore(sub, 3, nil)
		must(t, err)
		l, err := st.ListState("split", SplitEvenly)
		must(t, err)
		l.Add([]byte(fmt.Sprintf("s%d", sub)))
		u, err := st.ListState("union", Union)
		must(t, err)
		u.Add([]byte(fmt.Sprintf("u%d", sub)))
		h, err := st.Snapshot()
		must(t, err)
		hs = append(hs, h)
	}
	// A run at parallelism 2 that uses neither list.
	var carried []*checkpoint.Handle
	for sub := 0; sub < 2; sub++ {
		st, err := NewOperatorStateStore(sub, 2, hs)
		must(t, err)
		h, err := st.Snapshot()
		must(t, err)
		carried = append(carried, h)
	}
	st, err := NewOperatorStateStore(0, 1, carried)
	must(t, err)
	for name, mode := range map[string]Redistribution{"split": SplitEvenly, "union": Union} {
		l, err := st.ListState(name, mode)
		must(t, err)
		var got []string
		for _, e := range l.Get() {
			got = append(got, string(e))
		}
		sort.Strings(got)
		want := []string{name[:1] + "0", name[:1] + "1", name[:1] + "2"}
		if !slices.Equal(got, want) {
			t.Fatalf("%s list after an unused restore: %v, want %v", name, got, want)
		}
	}
}
