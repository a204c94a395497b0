package state

import "fmt"

// DefaultMaxParallelism is the number of key groups a job has when its
// configuration does not say otherwise. It bounds how far an operator can
// ever be scaled out, so changing it for a job invalidates its keyed state.
const DefaultMaxParallelism = 128

// KeyGroupRange is the half-open interval [Start, End) of key groups that one
// subtask owns. Ranges of the subtasks of one operator are contiguous and
// disjoint, which is what lets keyed state be split and merged on rescaling.
type KeyGroupRange struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// Contains reports whether kg lies in r.
func (r KeyGroupRange) Contains(kg int) bool { return kg >= r.Start && kg < r.End }

// Len is the number of key groups in r.
func (r KeyGroupRange) Len() int { return r.End - r.Start }

// Intersect returns the key groups in both r and o (possibly empty).
func (r KeyGroupRange) Intersect(o KeyGroupRange) KeyGroupRange {
	s, e := max(r.Start, o.Start), min(r.End, o.End)
	if e < s {
		e = s
	}
	return KeyGroupRange{Start: s, End: e}
}

func (r KeyGroupRange) String() string { return fmt.Sprintf("[%d,%d)", r.Start, r.End) }

// KeyGroupOf maps a serialized key to its key group in [0, maxParallelism).
// The hash is fixed (FNV-1a followed by the murmur3 finalizer) so that the
// mapping is the same in every process and every release: state written by
// one run is found by the next.
func KeyGroupOf(key []byte, maxParallelism int) int {
	h := uint32(2166136261)
	for _, b := range key {
		h ^= uint32(b)
		h *= 16777619
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return int(h % uint32(maxParallelism))
}

// SubtaskForKeyGroup returns the index of the subtask that owns keyGroup when
// an operator runs with the given parallelism: keyGroup*parallelism/maxParallelism.
func SubtaskForKeyGroup(keyGroup, parallelism, maxParallelism int) int {
	return keyGroup * parallelism / maxParallelism
}

// KeyGroupRangeForSubtask returns the contiguous key groups that subtask owns;
// it is the inverse of SubtaskForKeyGroup.
func KeyGroupRangeForSubtask(subtask, parallelism, maxParallelism int) KeyGroupRange {
	start := (subtask*maxParallelism + parallelism - 1) / parallelism
	end := ((subtask+1)*maxParallelism + parallelism - 1) / parallelism
	return KeyGroupRange{Start: start, End: end}
}
