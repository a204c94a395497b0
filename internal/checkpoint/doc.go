// Package checkpoint defines how onceflow keeps checkpoints and savepoints:
// the Storage interface that the engine's coordinator and subtasks drive,
// and the metadata a checkpoint consists of (Metadata, OperatorSnapshot,
// SubtaskSnapshot, Handle, FileRef). Package dirstore keeps them in a
// directory (the default: a local disk or a shared filesystem), package
// s3store in an S3-compatible bucket; both implement the contract below.
// The keyed state backends of package state write the files of their
// snapshots through a SnapshotWriter and read them back through
// Storage.Open; this package knows nothing of how they encode state.
//
// # The contract of a Storage
//
// Ids. Checkpoints and savepoints of a job share one sequence of ids,
// unique and increasing. An id is never reused: Writer and Complete refuse,
// naming the checkpoint, an id that was aborted or is not above the newest
// completed one, and a job's next attempt continues above the ids its last
// one used.
//
// Existence. A checkpoint exists once Complete returned nil, and not
// before: Complete publishes its metadata atomically, with a checksum, after
// every file it names is durable and stored with its recorded size. A
// failed Complete publishes nothing, so the previous checkpoint stays the
// newest; a crash or power loss at any point leaves the previous checkpoint
// or the new one whole, never a damaged one. Every file carries its size
// and CRC32C (FileRef), verified whenever it is read (Open, and Latest and
// Load, which read every file of what they return).
//
// Failure. Abort removes what a checkpoint that will not complete wrote;
// uploads still running fail from then on, naming the checkpoint, and what
// they finish is removed. A snapshot's write or close error fails the
// checkpoint, not the job. Latest returns the newest complete and intact
// checkpoint or savepoint, skipping and reporting (CheckpointInfo) those
// that never completed or are damaged (metadata present but unreadable, or
// a file it names missing or corrupt); Load of a missing or damaged one is
// an error naming its path. Errors name the checkpoint, path or object they
// refuse.
//
// Retention. Complete removes the oldest completed checkpoints beyond the
// retained count; a failure to remove is logged and retried by a later
// completion, never an error of the completion. Files shared by
// incremental checkpoints are referenced from the retained metadata (the
// references are rebuilt from it whenever a storage opens, never trusted
// across restarts), so removing a checkpoint never deletes a file another
// retained one uses. Savepoints are self-contained (their files are copied
// when they complete) and are never removed by retention: they belong to
// the user. A storage that implements SavepointPruner (both of this
// module's do) removes the oldest beyond a bound on request, never the
// job's newest restore point nor a file retained metadata names (see
// SavepointPruner).
//
// Lineage. MarkCommitted records that a checkpoint's transactions were all
// committed (Metadata.Committed). Adopt copies a loaded checkpoint or
// savepoint in as the job's newest under a new id, recording where it came
// from (RestoredFrom) and the newer checkpoint it supersedes (Superseded),
// so that the sinks can tell committed transactions from pending ones.
// DiscardAll removes every checkpoint (never a savepoint), after recording
// durably what it discards (Discarded): a restore of anything older must
// be able to tell that the sinks may have committed past it. Sweep, at the
// job's start, removes what never completed and never touches a checkpoint
// whose metadata exists.
//
// Ownership. A Storage is safe for concurrent use by the coordinator and
// the subtasks of one job. Only one process may write a job's storage: the
// processor's job lock guards a directory, an ownership epoch guards an S3
// prefix (a fenced writer's every later write is refused, see s3store).
//
// # Restoring
//
// A Handle describes one subtask's snapshot of one operator (Backend names
// the writer, one of state's Backend constants; KeyGroups the key groups it
// covers; States how each state was declared). KeyedHandlesFor picks the
// keyed handles a subtask owning a KeyGroupRange restores from,
// OperatorHandles the operator-state handles, and CheckRestore refuses a
// checkpoint with state for operators the job does not declare.
// docs/state.md describes how the engine drives checkpoints, savepoints
// and restores, and why the protocol survives kill -9.
package checkpoint
