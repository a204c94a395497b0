// Package s3store keeps a job's checkpoints in an S3-compatible object
// store (internal/objstore): an implementation of checkpoint.Storage for issue
// 16 §4 and §5, selected by an s3:// checkpoint.dir (package jobs).
//
// # Object layout
//
// Every object of a job lives under one root, <Options.Prefix>/<job>/:
//
//	manifest/chk-<n>                     the manifest of checkpoint n
//	manifest/savepoint-<id>              the manifest of savepoint id
//	manifest/chk-<n>.committed           the marker of MarkCommitted
//	data/chk-<n>/<token>/op-<uid>/<subtask>/<file>        private files
//	data/savepoint-<id>/<token>/op-<uid>/<subtask>/<file> a savepoint's copies
//	data/savepoint-<id>/<token>/shared/<file>             ... of shared files
//	shared/<token>-<n>/<file>            files incremental checkpoints share
//	discarded                            what DiscardAll discarded (checkpoint.Discard)
//
// <token> is e<epoch>-<random hex>, drawn once per opened Storage, so every
// data object a writer puts has a name no other writer uses: a zombie's
// uploads land beside the new owner's and never overwrite them, and data
// objects are put create-only besides. A shared file's key carries the id
// of the checkpoint that wrote it too, so two checkpoints in flight that
// write a file of the same name (same content) write two objects, and the
// Abort of one never deletes the other's. No key is another key's
// "directory" (a prefix followed by "/"), which file-backed servers such
// as versitygw's posix backend refuse: manifests and markers are leaves of
// manifest/, and data keys end in a file name under a token. FileRef.Path is a key
// relative to the root. Listing manifest/ alone finds every checkpoint,
// savepoint and marker, without listing the data.
//
// # Publishing a checkpoint
//
// A checkpoint or savepoint exists once its manifest exists, and not
// before. Complete first checks that every object the metadata names is
// stored with the recorded size: it asks the store (Stat, several at a
// time) about the objects it does not know, and not about those this
// process put for the checkpoint or a staging (the put succeeded with
// that size) or the shared objects a retained manifest names with that
// size (checked when that checkpoint completed, and never deleted while
// retained), so that a checkpoint reusing a large state's files costs no
// round trip per file. Then it puts the manifest create-only
// (If-None-Match: *). The manifest is a header line
//
//	onceflow-s3-manifest v1 epoch=<e> crc32c=<crc of the body> len=<n>
//
// followed by the checkpoint.Metadata as JSON. The epoch is Options.Epoch, the
// writer's ownership epoch: a new owner opens the storage above the newest
// manifest's epoch and claims the job before it runs (see Claiming a job).
// When the create-only put is refused, or fails in a way that
// leaves its outcome unknown, Complete reads the manifest back: the same
// bytes are success (a lost response); a manifest of a higher epoch is
// ErrFenced, naming the key and both epochs; anything else is an error
// naming the key. Before it puts the manifest, Complete also lists
// manifest/ and refuses with ErrFenced when any manifest carries a higher
// epoch, so a writer that fell behind an owner who has published stops
// even when its own id is still free. A fenced Storage (a higher epoch
// seen at open, Complete, MarkCommitted, Adopt, Sweep or DiscardAll)
// refuses every later Writer, Complete, MarkCommitted, Adopt, Sweep and
// DiscardAll with ErrFenced, and deletes nothing but the objects
// of its own checkpoints that never completed (Abort): no manifest names
// those, so no other writer can use them. Abort deletes only after the
// store confirmed that no manifest of the id exists: a Complete whose put
// was applied but whose response and read-back were lost returned an
// error, and its checkpoint must survive the Abort that follows.
//
// # Claiming a job
//
// A new owner (of a partition group, docs/distributed.md) opens the
// Storage with an epoch above NewestEpoch and calls Claim before it runs
// anything: Claim publishes the next id, create-only, under that epoch,
// as a copy of the checkpoint Latest would restore (Adopt's copy, the
// committed marker first when it was committed) or, when the job has
// none, as an empty checkpoint (checkpoint.Metadata.Claim, which the engine
// restores as a fresh start with ids above it). From then on every writer
// of a lower epoch is fenced: its next Complete lists the claim, or finds
// its own id taken by it and reads it back, and its uploads stay orphans.
// A zombie that publishes the id first, not having seen the claim, has
// published a complete checkpoint whose transactions are still open:
// Claim deletes what it wrote for that id (its copies, and the committed
// marker it put beside the zombie's manifest, which would make a restore
// skip committing them) and claims the zombie's checkpoint at the next
// id, a bounded number of times. A committed marker that says "adopted"
// under another epoch than its manifest's is such a leftover (a claim
// that crashed after losing its id): the next Claim deletes it and does
// not believe it. Claim refuses (ErrNotClaimable) to publish above a
// damaged newest checkpoint or above checkpoints DiscardAll deleted,
// which would hide them from the engine's refusals to replay past them.
// Two claimers of the same epoch are told apart by the create-only put:
// the second fails naming the first's manifest.
//
// # Damage
//
// A checkpoint is damaged (checkpoint.CheckpointInfo.Damaged) when its manifest
// is corrupt (header, checksum, JSON, or an id or kind not matching its
// name) or, for Latest and Load, when an object it names is missing or
// not of the recorded size and CRC32C. A read the store fails (it does not
// answer, refuses, times out) is an error of the call, never damage:
// Latest taking the newest checkpoint for damaged would fall back to an
// older one and replay what the newer one's transactions committed.
//
// # Retention and deletion
//
// The newest Options.Retained checkpoints (by id, intact manifests of any
// epoch) are retained; savepoints are removed only by PruneSavepoints. The
// references (which checkpoints name which shared object) are never
// stored: they are rebuilt from the retained manifests when the Storage
// opens and whenever a checkpoint completes, so a crash between a
// publication and the deletions it allows leaves only extra objects. After
// a checkpoint completes (and only when no manifest of a higher epoch
// exists), a subsumed checkpoint's manifest and marker are deleted first,
// then its private objects and the shared objects no retained manifest and
// no checkpoint in flight in this process names (by Complete, or after it
// by a goroutine of the storage with Options.CollectInBackground: no later
// checkpoint can come to name those objects, so the next Complete need not
// wait for their deletion). Objects no manifest names
// at all (a failed checkpoint's, a crashed or fenced writer's) are deleted
// once they are older than Options.OrphanGrace, so that a checkpoint another
// process is still uploading is not touched; completions look for them
// at most once per quarter of that period (two listings of all the job's
// data), the first time a quarter of it after the Storage opened. While a damaged manifest is
// present, no shared object is deleted as an orphan and nothing under that
// checkpoint's data/ is deleted (its references are unknown). Deletion
// failures are logged and retried by the next completion.
//
// DiscardAll records checkpoint.Discard in <root>discarded (a failure to record
// deletes nothing), then deletes every checkpoint's manifest and marker,
// then their data and the shared objects; savepoints stay.
//
// # Savepoints
//
// A savepoint is self-contained, as in the directory backend: Complete
// copies (reading through the CRC32C check) every file it names into
// data/savepoint-<id>/<token>/, writes manifest/savepoint-<id> naming the
// copies, and then deletes the checkpoint's private originals. Removing
// checkpoints never touches a savepoint, and Adopt (so Claim) copies the
// objects of a savepoint it adopts: no checkpoint names a savepoint's
// objects.
//
// PruneSavepoints (checkpoint.SavepointPruner: the engine calls it after
// each savepoint of a job with checkpoint.retain_savepoints, the processor's
// savepoints prune on request) removes the oldest complete savepoints
// beyond a bound: manifest first, then its committed marker, then the
// objects it names under data/savepoint-<id>/. It never removes the job's
// newest restore point, nor a savepoint an object of which any intact
// manifest that stays names; a savepoint whose manifest is corrupt is
// skipped with everything under its data/savepoint-<id>/, and so are
// objects there without a manifest (left to Sweep and the collection of
// orphans). A fenced Storage prunes nothing (ErrFenced).
//
// # Limits of this first slice
//
//   - A file being written is buffered in memory up to
//     Options.SpoolThreshold, then in a local spool file, until Close puts
//     it in one request (no multipart upload: a service's single-put limit,
//     5 GiB on AWS, bounds a file).
//   - Load and Adopt take checkpoints of this Storage's root only: Adopt
//     of another location's (a directory's, another job's) fails with
//     ErrNotSupported and changes nothing.
//   - Sweep deletes the data of checkpoints without a manifest, except
//     the ids in flight here and objects of a writer of a higher epoch
//     (their token says it: Sweep then fails with ErrFenced); it cannot
//     see another process of the same epoch writing.
//   - A zombie that completes a checkpoint before it sees the claim also
//     deletes what its retention subsumes, possibly the checkpoint Claim
//     is copying: the copy then fails, and Claim, finding the zombie's
//     newer checkpoint, claims that one instead. A collection the zombie
//     starts after the claim is published deletes nothing (it stops at
//     the fence).
//   - Claim reads the whole checkpoint it claims (Latest verifies every
//     file, Adopt copies the private ones), and the restore reads it again.
//   - List and Latest see manifests only: a checkpoint without a manifest
//     (never completed) is not listed as incomplete, and its objects are
//     orphans, deleted after the grace period.
package s3store
