package checkpoint

import (
	"fmt"
	"sort"
	"strings"
)

// KeyedHandlesFor returns the keyed handles of op whose key-group ranges
// intersect kgs: what a subtask owning kgs passes as
// KeyedBackendOptions.Restore. It returns nil when op is nil.
func KeyedHandlesFor(op *OperatorSnapshot, kgs KeyGroupRange) []*Handle {
	if op == nil {
		return nil
	}
	var out []*Handle
	for _, st := range op.Subtasks {
		if st.Keyed != nil && st.Keyed.KeyGroups.Intersect(kgs).Len() > 0 {
			out = append(out, st.Keyed)
		}
	}
	return out
}

// OperatorHandles returns the operator-state handles of every subtask of
// op, in subtask order: what NewOperatorStateStore takes.
func OperatorHandles(op *OperatorSnapshot) []*Handle {
	if op == nil {
		return nil
	}
	subs := append([]SubtaskSnapshot(nil), op.Subtasks...)
	sort.Slice(subs, func(i, j int) bool { return subs[i].Subtask < subs[j].Subtask })
	var out []*Handle
	for _, st := range subs {
		if st.Operator != nil {
			out = append(out, st.Operator)
		}
	}
	return out
}

// Operator returns the snapshot of the operator with uid, or nil.
func (md *Metadata) Operator(uid string) *OperatorSnapshot {
	if md == nil {
		return nil
	}
	for i := range md.Operators {
		if md.Operators[i].UID == uid {
			return &md.Operators[i]
		}
	}
	return nil
}

// CheckRestore checks that a job whose operators have the uids jobUIDs can
// restore md: every operator with state in md must exist in the job, unless
// allowNonRestored (Flink's --allowNonRestoredState), in which case its
// state is dropped. The error names every missing uid.
func CheckRestore(md *Metadata, jobUIDs []string, allowNonRestored bool) error {
	if md == nil {
		return nil
	}
	have := make(map[string]bool, len(jobUIDs))
	for _, u := range jobUIDs {
		have[u] = true
	}
	var missing []string
	for _, op := range md.Operators {
		if have[op.UID] || !hasState(op) {
			continue
		}
		missing = append(missing, op.UID)
	}
	if len(missing) > 0 && !allowNonRestored {
		return fmt.Errorf("checkpoint %s has state for operator uid(s) %s that the job does not declare (allow non-restored state to drop it)",
			md.Path, strings.Join(quoteAll(missing), ", "))
	}
	return nil
}

func hasState(op OperatorSnapshot) bool {
	for _, st := range op.Subtasks {
		if st.Keyed != nil || st.Operator != nil {
			return true
		}
	}
	return false
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
