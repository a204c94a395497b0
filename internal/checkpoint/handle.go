package checkpoint

import (
	"fmt"
	"time"
)

// Handle describes one subtask's snapshot of one operator: the files it
// consists of, or the bytes themselves when they are small. It is stored in
// the checkpoint metadata.
type Handle struct {
	// Backend is the name of the backend that wrote it (the Backend
	// constants), or "canonical" for savepoints, which every
	// backend can read.
	Backend   string        `json:"backend"`
	KeyGroups KeyGroupRange `json:"key_groups"`
	States    []StateMeta   `json:"states,omitempty"`
	Files     []FileRef     `json:"files,omitempty"`
	// Inline holds a snapshot small enough to keep in the metadata.
	Inline []byte `json:"inline,omitempty"`
}

// FileRef names one stored file and how to check it.
type FileRef struct {
	// Path is relative to the job's checkpoint directory, e.g.
	// "chk-7/op-1/0/state" or "shared/<restore-id>-000012.sst".
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	CRC32C uint32 `json:"crc32c"`
	// Shared files may be referenced by several checkpoints and are deleted
	// only when no retained checkpoint refers to them.
	Shared bool `json:"shared,omitempty"`
	// Inline files are not stored on their own: Data, in the metadata,
	// holds their bytes (like Flink's state.storage.fs.memory-threshold),
	// which spares a small file its create, fsync and rename. Path is then
	// only the file's name.
	Inline bool   `json:"inline,omitempty"`
	Data   []byte `json:"data,omitempty"`
}

// Kind says how a registered state is laid out.
type Kind string

const (
	// KindValue is a value state: one encoded value per key.
	KindValue Kind = "value"
	// KindList is a list state: one value per key holding the whole list
	// as length-prefixed elements.
	KindList Kind = "list"
	// KindMap is a map state: one entry per key and user key, encoded
	// with the state's user key codec.
	KindMap Kind = "map"
	// KindReducing is a reducing state: one value per key, the fold of
	// every value added to it.
	KindReducing Kind = "reducing"
	// KindAggregating is an aggregating state: one accumulator per key.
	KindAggregating Kind = "aggregating"
)

// StateMeta describes one registered state. It is recorded in every snapshot
// so that a restore can check the job still declares the state the same way.
type StateMeta struct {
	Name         string        `json:"name"`
	Kind         Kind          `json:"kind"`
	ValueCodec   string        `json:"value_codec"`
	UserKeyCodec string        `json:"user_key_codec,omitempty"` // map state only
	TTL          time.Duration `json:"ttl,omitempty"`
}

// KeyGroupRange is the half-open interval [Start, End) of key groups that one
// subtask owns. Ranges of the subtasks of one operator are contiguous and
// disjoint, which is what lets keyed state be split and merged on rescaling.
// Package state assigns keys to key groups (state.KeyGroupOf) and key
// groups to subtasks (state.KeyGroupRangeForSubtask).
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

// String renders r as the half-open interval "[Start,End)".
func (r KeyGroupRange) String() string { return fmt.Sprintf("[%d,%d)", r.Start, r.End) }

// The values of Handle.Backend.
const (
	// BackendCanonical is checkpoint.Handle.Backend of a savepoint snapshot.
	BackendCanonical = "canonical"
	// BackendMemory is checkpoint.Handle.Backend of a memory backend checkpoint.
	BackendMemory = "memory"
	// BackendOperator is checkpoint.Handle.Backend of operator state.
	BackendOperator = "operator"
	// BackendPebble is checkpoint.Handle.Backend of a Pebble backend checkpoint.
	BackendPebble = "pebble"
	// BackendPebbleChangelog is checkpoint.Handle.Backend of a Pebble
	// checkpoint with a changelog: a materialized Pebble checkpoint and
	// segments of writes to replay on it (internal/statebackend's
	// changelog.go). Its own name makes a binary that cannot replay the
	// segments refuse it instead of restoring older state.
	BackendPebbleChangelog = "pebble-changelog"
)
