// Package state is the state a user's operator keeps: typed keyed state
// (value, list, map, reducing, aggregating; optional TTL), the codecs it is
// stored with, key groups, keyed timers' time domains, and operator
// (non-keyed) state.
//
// Keyed state is scoped to the key of the record being processed. It lives
// in a KeyedBackend: the engine creates one per operator subtask from the
// job's KeyedBackendFactory (heap maps for small state and tests, or
// Pebble, laid out like RocksDB state in Flink; runner picks one from the
// state.backend key). Keys are assigned to key groups by KeyGroupOf, and
// each subtask owns one contiguous range of them (KeyGroupRangeForSubtask),
// so state can be split and merged when an operator's parallelism changes.
// Keyed timers (Timers, event time and processing time) are keyed state
// too. Operator state is an OperatorStateStore of named lists,
// redistributed split or union.
//
// The backends themselves are internal (internal/statebackend), and so
// are the canonical savepoint format (internal/savepoint) and the
// checkpoint format and storage (internal/checkpoint). docs/state.md
// describes how the engine drives checkpoints, savepoints and restores,
// and why the protocol survives kill -9.
//
// Failure behaviour: every state access returns an error rather than
// panicking: a value its codec cannot decode, a state declared again with
// another kind or codec, an access without a current key. Such an error
// fails the record's processing and so the job attempt, which restarts from
// the last completed checkpoint.
package state
