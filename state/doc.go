// Package state holds the state of onceflow operators: keyed state and its
// backends, operator state, and the codecs typed state is stored with.
//
// Keyed state (value, list, map, reducing, aggregating; optional TTL) is
// scoped to the key of the record being processed and lives in a
// KeyedBackend: heap maps (NewMemoryBackendFactory) for small state and
// tests, or Pebble (NewPebbleBackendFactory), laid out like RocksDB state in
// Flink: [key group, 2 bytes big-endian][state id][length-prefixed key]
// [user key]. Keys are assigned to key groups by KeyGroupOf, and each
// subtask owns one contiguous checkpoint.KeyGroupRange
// (KeyGroupRangeForSubtask), so state can be split and merged when an
// operator's parallelism changes. Keyed timers (Timers, event time and
// processing time) are keyed state too: every backend stores them by key
// group, snapshots, restores and rescales them with the rest. Operator
// (non-keyed) state is an OperatorStateStore of named lists, redistributed
// split or union.
//
// A backend's snapshot at a checkpoint barrier is written through a
// checkpoint.SnapshotWriter and described by a checkpoint.Handle; a restore
// reads the files back through checkpoint.Storage. Where and how
// checkpoints are stored is package checkpoint's (and its dirstore and
// s3store backends'), not this package's.
//
// Savepoints (SavepointSnapshot) are written in a canonical,
// backend-independent format that every backend restores at any
// parallelism. docs/state.md describes how the engine drives checkpoints,
// savepoints and restores, and why the protocol survives kill -9.
package state
