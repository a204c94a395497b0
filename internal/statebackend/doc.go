// Package statebackend holds the keyed state backends behind package
// state's KeyedBackend: heap maps (NewMemoryFactory) for small state and
// tests, and Pebble (NewPebbleFactory), laid out like RocksDB state in
// Flink: [key group, 2 bytes big-endian][state id][length-prefixed key]
// [user key], timers under their own prefix ordered by key group, then by
// sign-flipped big-endian time. Both store keyed timers, snapshot at a
// checkpoint barrier through a checkpoint.SnapshotWriter (Pebble
// incrementally, sharing unchanged SST files between checkpoints), and
// restore and rescale by key group from their own snapshots, from each
// other's and from savepoints.
//
// SavepointSnapshot writes any backend's state in the canonical,
// backend-independent format of package savepoint, which every backend
// restores at any parallelism.
//
// Failure behaviour: a snapshot or restore error (an unreadable file, a
// checksum mismatch reported by the storage, a codec or kind that does
// not match the restored state) is returned with the state's name or the
// file's path; it fails the checkpoint (snapshot) or the job attempt
// (restore), never the stored checkpoints.
package statebackend
