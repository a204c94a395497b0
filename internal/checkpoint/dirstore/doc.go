// Package dirstore keeps a job's checkpoints in a directory, laid out like
// Flink's: <dir>/<job>/chk-<n>/_metadata plus the files of the checkpoint's
// snapshots, <dir>/<job>/shared/ for the files incremental checkpoints
// share, and <dir>/<job>/savepoint-<id>/ for savepoints. It implements
// checkpoint.Storage (see package checkpoint for the contract) and is the
// default storage: NewFileStorage on a local disk or shared filesystem,
// NewMemoryStorage in memory for tests and jobs that need no recovery
// across restarts.
//
// A checkpoint exists once its _metadata is durable: written last, with a
// checksum, to a temporary file that is fsynced and renamed, and the
// rename fsynced in the directory, after every file and directory it names
// was fsynced and its entry fsynced in its parent. Every file it names
// carries its size and CRC32C; files shared by incremental checkpoints are
// reference-counted from the retained metadata. Latest skips (and reports)
// incomplete or corrupt checkpoints; a corrupt one whose _metadata exists
// is flagged Damaged. StorageOptions.ReadOnly opens a job directory for
// reading only, as the processor's checkpoints commands do.
//
// Savepoints are moved into their own directory when they complete
// (private files moved, shared ones copied), so that no checkpoint's
// removal touches them. ListSavepoints lists them, and the storage's
// PruneSavepoints (checkpoint.SavepointPruner) bounds how many stay,
// never removing the job's restore point.
package dirstore
