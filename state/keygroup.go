package state

import "github.com/onceflow/onceflow/internal/checkpoint"

// DefaultMaxParallelism is the number of key groups a job has when its
// configuration does not say otherwise. It bounds how far an operator can
// ever be scaled out, so changing it for a job invalidates its keyed state.
const DefaultMaxParallelism = 128

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
func KeyGroupRangeForSubtask(subtask, parallelism, maxParallelism int) checkpoint.KeyGroupRange {
	start := (subtask*maxParallelism + parallelism - 1) / parallelism
	end := ((subtask+1)*maxParallelism + parallelism - 1) / parallelism
	return checkpoint.KeyGroupRange{Start: start, End: end}
}
