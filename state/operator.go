package state

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// Redistribution says how an operator list state is spread over the
// subtasks of a restored operator.
type Redistribution int

const (
	// SplitEvenly deals the entries of all old subtasks out round-robin over
	// the new subtasks. When the parallelism is unchanged every subtask gets
	// back exactly its own entries.
	SplitEvenly Redistribution = iota
	// Union gives every new subtask all entries of all old subtasks.
	Union
)

// String returns "split" or "union", or "Redistribution(n)" for a value
// that is neither.
func (r Redistribution) String() string {
	switch r {
	case SplitEvenly:
		return "split"
	case Union:
		return "union"
	}
	return fmt.Sprintf("Redistribution(%d)", int(r))
}

// operatorSnapshot is the inline encoding of an operator state handle.
type operatorSnapshot struct {
	Subtask     int                  `json:"subtask"`
	Parallelism int                  `json:"parallelism"`
	States      []operatorStateEntry `json:"states"`
}

type operatorStateEntry struct {
	Name    string   `json:"name"`
	Mode    string   `json:"mode"`
	Entries [][]byte `json:"entries"`
}

// OperatorStateStore holds the operator (non-keyed) state of one operator
// subtask: named lists of opaque entries, such as a source's partition
// offsets or a sink's pending transactions. It is owned by the subtask
// goroutine and is not safe for concurrent use.
type OperatorStateStore struct {
	subtask, parallelism int
	restored             []operatorSnapshot
	states               map[string]*OperatorListState
}

// OperatorListState is one named list of an OperatorStateStore.
type OperatorListState struct {
	name    string
	mode    Redistribution
	entries [][]byte
}

// NewOperatorStateStore creates the store of subtask (of parallelism
// subtasks). restore holds the operator handles of ALL subtasks of the
// previous run of this operator (nil entries are skipped); each list is
// redistributed when ListState asks for it.
func NewOperatorStateStore(subtask, parallelism int, restore []*checkpoint.Handle) (*OperatorStateStore, error) {
	if parallelism <= 0 || subtask < 0 || subtask >= parallelism {
		return nil, fmt.Errorf("operator state: subtask %d of parallelism %d", subtask, parallelism)
	}
	s := &OperatorStateStore{subtask: subtask, parallelism: parallelism, states: map[string]*OperatorListState{}}
	for i, h := range restore {
		if h == nil {
			continue
		}
		if h.Backend != checkpoint.BackendOperator {
			return nil, fmt.Errorf("operator state: restore handle %d is a %q snapshot, not operator state", i, h.Backend)
		}
		var snap operatorSnapshot
		if err := json.Unmarshal(h.Inline, &snap); err != nil {
			return nil, fmt.Errorf("operator state: restore handle %d: %w", i, err)
		}
		s.restored = append(s.restored, snap)
	}
	sort.SliceStable(s.restored, func(i, j int) bool { return s.restored[i].Subtask < s.restored[j].Subtask })
	return s, nil
}

// ListState returns the list named name, restoring it with mode on first
// use. Asking for a restored list with another mode than it was written
// with is an error naming the state.
func (s *OperatorStateStore) ListState(name string, mode Redistribution) (*OperatorListState, error) {
	if mode != SplitEvenly && mode != Union {
		return nil, fmt.Errorf("operator state %q: unknown redistribution %d", name, mode)
	}
	if l, ok := s.states[name]; ok {
		if l.mode != mode {
			return nil, fmt.Errorf("operator state %q: asked for as %v, declared as %v", name, mode, l.mode)
		}
		return l, nil
	}
	l := &OperatorListState{name: name, mode: mode}
	sameParallelism := len(s.restored) > 0 && s.restored[0].Parallelism == s.parallelism && len(s.restored) == s.parallelism
	var all [][]byte
	for _, snap := range s.restored {
		for _, st := range snap.States {
			if st.Name != name {
				continue
			}
			if st.Mode != mode.String() {
				return nil, fmt.Errorf("operator state %q: asked for as %v, but stored as %s", name, mode, st.Mode)
			}
			if mode == SplitEvenly && sameParallelism {
				if snap.Subtask == s.subtask {
					l.entries = append(l.entries, st.Entries...)
				}
				continue
			}
			all = append(all, st.Entries...)
		}
	}
	switch mode {
	case Union:
		l.entries = all
	case SplitEvenly:
		for i := s.subtask; i < len(all); i += s.parallelism {
			l.entries = append(l.entries, all[i])
		}
	}
	s.states[name] = l
	return l, nil
}

// Snapshot returns the store's state as an inline handle (Backend
// "operator"). Entries are copied, so later changes do not affect it.
// Restored lists the operator has not asked for (yet) are carried over with
// the entries this subtask would get, so they survive a restore that does
// not use them; a union list is carried by subtask 0 only, so that it is not
// multiplied by the parallelism.
func (s *OperatorStateStore) Snapshot() (*checkpoint.Handle, error) {
	for _, snap := range s.restored {
		for _, st := range snap.States {
			if _, ok := s.states[st.Name]; ok {
				continue
			}
			mode := SplitEvenly
			if st.Mode == Union.String() {
				if s.subtask != 0 {
					continue
				}
				mode = Union
			}
			if _, err := s.ListState(st.Name, mode); err != nil {
				return nil, err
			}
		}
	}
	snap := operatorSnapshot{Subtask: s.subtask, Parallelism: s.parallelism}
	names := make([]string, 0, len(s.states))
	for n := range s.states {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := s.states[n]
		snap.States = append(snap.States, operatorStateEntry{Name: n, Mode: l.mode.String(), Entries: l.Get()})
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("operator state snapshot: %w", err)
	}
	return &checkpoint.Handle{Backend: checkpoint.BackendOperator, Inline: b}, nil
}

// Get returns a copy of the entries.
func (l *OperatorListState) Get() [][]byte {
	out := make([][]byte, len(l.entries))
	for i, e := range l.entries {
		out[i] = append([]byte{}, e...)
	}
	return out
}

// Update replaces the entries with copies of es.
func (l *OperatorListState) Update(es [][]byte) {
	l.entries = l.entries[:0]
	for _, e := range es {
		l.Add(e)
	}
}

// Add appends a copy of e.
func (l *OperatorListState) Add(e []byte) { l.entries = append(l.entries, append([]byte{}, e...)) }

// Clear removes every entry.
func (l *OperatorListState) Clear() { l.entries = nil }
