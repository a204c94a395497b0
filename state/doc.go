// Package state holds the state of onceflow operators and the checkpoints
// that make it durable.
//
// Keyed state (value, list, map, reducing, aggregating; optional TTL) is
// scoped to the key of the record being processed and lives in a
// KeyedBackend: heap maps (NewMemoryBackendFactory) for small state and
// tests, or Pebble (NewPebbleBackendFactory), laid out like RocksDB state in
// Flink: [key group, 2 bytes big-endian][state id][length-prefixed key]
// [user key]. Keys are assigned to key groups by KeyGroupOf, and each
// subtask owns one contiguous KeyGroupRange, so state can be split and
// merged when an operator's parallelism changes. Operator (non-keyed) state
// is an OperatorStateStore of named lists, redistributed split or union.
//
// Storage (NewFileStorage, NewMemoryStorage) keeps checkpoints and
// savepoints in a directory laid out like Flink's. A checkpoint exists once
// its _metadata is durable (written last, atomically, with a checksum);
// every file it names carries its size and CRC32C, and files shared by
// incremental checkpoints are reference-counted from the retained metadata,
// so that removing one checkpoint never deletes a file another still uses.
// Latest skips (and reports) incomplete or corrupt checkpoints; a corrupt
// one whose _metadata exists is flagged Damaged.
//
// Savepoints (SavepointSnapshot) are written in a canonical,
// backend-independent format that every backend restores at any
// parallelism. docs/state.md describes how the engine drives checkpoints,
// savepoints and restores, and why the protocol survives kill -9.
package state
