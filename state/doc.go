// Package state holds the state of onceflow operators and the checkpoints
// that make it durable.
//
// Keyed state (value, list, map, reducing, aggregating) is scoped to the key
// of the record being processed and lives in a KeyedBackend: heap maps for
// small state and tests, or Pebble, laid out like RocksDB state in Flink:
// [key group, 2 bytes big-endian][state id][serialized key][user key].
// Keys are assigned to key groups by KeyGroupOf, and each subtask owns one
// contiguous KeyGroupRange, so state can be split and merged when an
// operator's parallelism changes.
//
// Storage keeps checkpoints and savepoints in a directory laid out like
// Flink's. A checkpoint exists once its _metadata is durable; every file it
// names carries a checksum, and files shared by incremental checkpoints are
// reference-counted so that removing one checkpoint never deletes a file
// another still uses.
package state
