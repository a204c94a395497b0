package checkpoint

import (
	"context"
	"io"
	"time"
)

// MetadataVersion is the version of the Metadata format that every storage
// of this module writes (Metadata.Version). Fields added since version 1
// (Metadata.WriterVersion, OperatorSnapshot.StateFormat, Metadata.Claim)
// are optional: metadata without them loads (as empty, 0 and false), and
// older readers ignore them, so the version did not change.
const MetadataVersion = 1

// Metadata is the _metadata of one completed checkpoint or savepoint: which
// snapshot every operator subtask acked with. A checkpoint exists once its
// metadata is durable, and not before.
type Metadata struct {
	Version      int       `json:"version"`
	Job          string    `json:"job"`
	CheckpointID int64     `json:"checkpoint_id"`
	Savepoint    bool      `json:"savepoint,omitempty"`
	Timestamp    time.Time `json:"timestamp"`
	// Path is where it was loaded from; not stored.
	Path      string             `json:"-"`
	Operators []OperatorSnapshot `json:"operators"`
	// Committed is true once every transaction the sinks stored in this
	// checkpoint is known to be committed (a stop with a savepoint drains
	// its commits before the job ends): a restore need not, and after the
	// broker expired the transactional ids cannot, commit them again. It is
	// read from the marker MarkCommitted writes, not from _metadata.
	Committed bool `json:"-"`
	// RestoredFrom is the path of the checkpoint or savepoint this one was
	// adopted from (Storage.Adopt); empty for a checkpoint the job took.
	RestoredFrom string `json:"restored_from,omitempty"`
	// Supersedes is set on a checkpoint adopted from an older one while
	// the job had a newer complete checkpoint: see Superseded.
	Supersedes *Superseded `json:"supersedes,omitempty"`
	// WriterVersion is the version of the binary that wrote the
	// checkpoint's state (for the processor, what processor version
	// prints), named when a restore refuses it. An adopted checkpoint keeps
	// its original's. Empty in checkpoints written before it was recorded.
	WriterVersion string `json:"writer_version,omitempty"`
	// Claim marks an empty checkpoint (no operators) that a new owner of
	// a partition group published to take a group that had no checkpoint
	// (the S3 storage's Storage.Claim, docs/distributed.md): it holds no
	// state and no transactions, so a restore of it is a fresh start whose
	// checkpoint ids are above it. Otherwise it is retained and removed
	// like any checkpoint. The directory storage never writes one.
	Claim bool `json:"claim,omitempty"`
}

// Superseded records, in a checkpoint adopted from an older one (a run
// resumed on purpose with --from), the newer complete checkpoint the job
// abandoned: its id and path and its sink operators' snapshots (operator
// state only, inline). Every later restore of the adopted lineage hands
// them to the sinks, which tell the restored transactions committed since
// (no longer pending in the newer checkpoint) from those still to commit,
// even after the newer checkpoint's directory is gone.
type Superseded struct {
	CheckpointID int64              `json:"checkpoint_id"`
	Path         string             `json:"path"`
	Operators    []OperatorSnapshot `json:"operators"`
	// WriterVersion is the newer checkpoint's Metadata.WriterVersion.
	WriterVersion string `json:"writer_version,omitempty"`
}

// Discard is what Storage.DiscardAll recorded before it removed a job's
// checkpoints.
type Discard struct {
	// Through is the id of the newest checkpoint or savepoint whose
	// _metadata existed (0: DiscardAll never found one).
	Through int64 `json:"through"`
	// Newest is, when Through was an intact checkpoint, its id, path and
	// operators with their operator state only (inline; the keyed state
	// went with the checkpoint), in the form an adopted checkpoint records
	// a newer one it supersedes. Nil when Through was a savepoint (it is
	// kept, so nothing is lost) or damaged.
	Newest *Superseded `json:"newest,omitempty"`
}

// OperatorSnapshot is one operator's part of a checkpoint, matched to the
// job's operators by UID on restore.
type OperatorSnapshot struct {
	UID            string `json:"uid"`
	Parallelism    int    `json:"parallelism"`
	MaxParallelism int    `json:"max_parallelism"`
	// StateFormat is the version of the format of the operator's
	// operator state (SubtaskSnapshot.Operator: a source's offsets, a
	// sink's transactions) as the operator declared it when the
	// checkpoint was taken; 0 when it declared none, or in a checkpoint
	// written before formats were recorded. A restore into an operator
	// that understands only older formats is refused (see the engine).
	StateFormat int               `json:"state_format,omitempty"`
	Subtasks    []SubtaskSnapshot `json:"subtasks"`
}

// SubtaskSnapshot is what one subtask acked with.
type SubtaskSnapshot struct {
	Subtask int `json:"subtask"`
	// Keyed is the keyed state (nil for non-keyed operators).
	Keyed *Handle `json:"keyed,omitempty"`
	// Operator is the operator (non-keyed) state, such as a source's
	// partition offsets or a sink's pending transactions.
	Operator *Handle `json:"operator,omitempty"`
}

// CheckpointInfo lists a stored checkpoint without loading its state.
type CheckpointInfo struct {
	ID        int64
	Savepoint bool
	Path      string
	Complete  bool
	// Damaged is true for a checkpoint whose _metadata exists but cannot
	// be used: unreadable, a bad checksum, or a state file it names
	// missing, truncated or corrupt. A directory without _metadata (a
	// checkpoint that never completed) is incomplete, not damaged. List
	// reads only the metadata, so it cannot see damaged state files: Load
	// or Latest can.
	Damaged bool
	// Committed is true for a complete checkpoint or savepoint carrying
	// the marker of Storage.MarkCommitted (Metadata.Committed).
	Committed bool
	// Err says why an incomplete or damaged checkpoint cannot be used.
	Err error
}

// Storage keeps the checkpoints and savepoints of one job: their metadata,
// the files of their snapshots, and the files incremental checkpoints
// share. The package doc states the contract every implementation keeps;
// package dirstore keeps them in a directory laid out like Flink's
// (chk-<n>/_metadata, shared/, savepoint-<id>/), package s3store in an
// S3 bucket. Implementations must be safe for concurrent use by the
// coordinator and the subtasks. Every error names the checkpoint, path or
// object it refuses.
type Storage interface {
	// Job is the name of the job whose checkpoints the storage holds: the
	// name it was opened with (each storage is opened per job).
	Job() string
	// Writer returns where a subtask writes the files of its snapshot of
	// checkpoint id. It does no I/O. It fails, naming the
	// checkpoint, for an id that was aborted or is not newer than the
	// newest completed checkpoint: such a checkpoint can never complete,
	// and checkpoint ids are never reused (a job's next attempt continues
	// above the ids its last one used).
	Writer(checkpointID int64, operatorUID string, subtask int) (SnapshotWriter, error)
	// Stage returns where a subtask writes shared files ahead of the
	// checkpoint that will name them: a state backend's materialization,
	// uploaded beside the checkpoints instead of inside one (see
	// internal/statebackend/changelog.go). Until Release, the files it
	// creates are kept though no checkpoint names them; a checkpoint may
	// then name them, and Complete takes its references as for any other
	// file. After Release, or after a crash of the process (staging lives
	// in memory only), the ones no retained checkpoint names are orphans,
	// removed as such. It does no I/O.
	Stage(operatorUID string, subtask int) (Staging, error)
	// Complete makes the checkpoint durable: it checks that every file md
	// names is stored with its recorded size, publishes md atomically with
	// a checksum (the directory storage: temp file, fsync, rename, fsync of
	// the directory; the S3 storage: a create-only put of its manifest),
	// takes a reference on every shared file it names, and then removes the
	// oldest completed checkpoints beyond the retained count. Until
	// Complete returns nil the checkpoint does not exist; a failed Complete
	// leaves the previous checkpoint the newest, and a power loss or crash
	// leaves the previous checkpoint or this one whole, never a damaged
	// one (every file md names is durable before md is). It fails for an
	// id that was aborted or is not newer than the newest completed one.
	// Retention failures after the publication do not fail it: they are
	// logged, and the next completion retries them.
	Complete(ctx context.Context, md *Metadata) error
	// Abort removes what was written for a checkpoint that will not
	// complete. Shared files still referenced elsewhere stay. Its uploads
	// may still be running: from then on their Create and Close fail
	// naming the checkpoint, and what they finish is removed, so nothing
	// of it is left once they end. Complete of an aborted id fails. An
	// error names what could not be removed; the id stays aborted.
	Abort(checkpointID int64) error
	// Latest returns the newest complete, intact checkpoint or savepoint
	// (the highest id: ids are unique and increasing across both),
	// verifying every file it names and skipping (and reporting through
	// the returned infos) incomplete or corrupt ones. It returns nil
	// metadata when there is none, and an error (no metadata) when it
	// cannot list the job's checkpoints. The S3 storage also fails the
	// call, rather than skip the checkpoint, when a read does not get an
	// answer (see package s3store).
	//
	// Savepoints count because their transactions were committed when they
	// completed: resuming from an older checkpoint would replay the records
	// between the two into new transactions and write them twice (after a
	// stop with a savepoint and a plain restart, or a failure following a
	// savepoint), as Flink's failover also considers savepoints.
	Latest(ctx context.Context) (*Metadata, []CheckpointInfo, error)
	// Load reads the checkpoint or savepoint at path (as Metadata.Path and
	// CheckpointInfo.Path name it: for the directory storage a chk-<n> or
	// savepoint-<id> directory or its _metadata file) and verifies it; a
	// missing or corrupt one is an error naming the path.
	Load(ctx context.Context, path string) (*Metadata, error)
	// List returns every checkpoint and savepoint found, oldest first,
	// from their metadata only (it cannot see damaged state files).
	List(ctx context.Context) ([]CheckpointInfo, error)
	// Open reads a stored file, verifying size and checksum as it is read to
	// the end; a mismatch is an error naming the path.
	Open(ref FileRef) (io.ReadCloser, error)
	// DiscardAll removes every checkpoint of the job and the files they
	// share (delete-on-cancellation); savepoints stay, they belong to the
	// user. Before it removes anything it records durably what it
	// discards (Discarded): the id of the newest checkpoint or savepoint
	// whose metadata exists and, when that one is an intact checkpoint,
	// its operator state. The sinks may have committed that checkpoint's
	// transactions, so a restore of anything older writes their output
	// again, and whoever restores must be able to tell; a restore of an
	// older savepoint on purpose needs the sinks' state to tell which of
	// its transactions were committed since (see Superseded). A failure to
	// record it removes nothing.
	DiscardAll() error
	// Discarded returns what DiscardAll recorded, the newest if it ran
	// several times; the zero Discard when it never ran on this job's
	// storage. An unreadable record is an error naming its path.
	Discarded(ctx context.Context) (Discard, error)
	// MarkCommitted records durably that every transaction the sinks stored
	// in completed checkpoint or savepoint checkpointID has been committed;
	// Load, Latest and List then report it (Metadata.Committed). It is
	// called after a stop with a savepoint once every sink drained its
	// commits. Marking a checkpoint that does not exist, or a damaged one,
	// is an error.
	MarkCommitted(ctx context.Context, checkpointID int64) error
	// Adopt makes md (a checkpoint or savepoint returned by Load, of this
	// job's storage or another) the job's newest complete checkpoint, under
	// id newID, which must be above every id in the storage: its state
	// files are copied (or shared ones referenced) so that removing the
	// original never touches the copy, and the new metadata records
	// RestoredFrom (md's path), md.Supersedes and, when md was committed,
	// the committed marker. Until Adopt returns nil the job's lineage is
	// unchanged. It returns the new checkpoint's metadata (Path set). An
	// implementation may refuse, changing nothing, a checkpoint of a
	// location it cannot read (the S3 storage adopts only its own).
	Adopt(ctx context.Context, md *Metadata, newID int64) (*Metadata, error)
	// Sweep removes what a crash or a failed completion left behind: the
	// files of every checkpoint and savepoint whose metadata was never
	// published (a checkpoint that never completed, a savepoint whose
	// completion failed or was cut short, a removal that was). A
	// checkpoint whose metadata exists, intact or damaged, is never
	// touched, so a power loss during Sweep cannot harm a complete
	// checkpoint; the removals are durable when it returns. It is meant
	// for the job's start, when nothing of the job is in flight: a
	// checkpoint or savepoint being written has no metadata yet, so Sweep
	// leaves alone the ids this storage has in flight and keeps new ones
	// from starting meanwhile, but it cannot see another process's, and
	// the caller must own the job (the processor's job lock, or the S3
	// storage's epoch). It returns what it removed, oldest first, with Err
	// saying why each was incomplete; an error names what it could not
	// remove, after removing what it could.
	Sweep(ctx context.Context) ([]CheckpointInfo, error)
}

// SnapshotWriter creates the files of one subtask's snapshot.
type SnapshotWriter interface {
	// Create opens a new file. A private file is stored with the
	// checkpoint (the directory storage: under its chk-<n> directory); a
	// shared one with the files checkpoints share (shared/), where name
	// must be unique for the job (carry a restore id or content hash).
	// After the checkpoint was aborted it fails naming the checkpoint.
	Create(name string, shared bool) (FileWriter, error)
	// HasShared reports whether a shared file of that name is already stored
	// and referenced by a retained checkpoint, so it need not be written
	// again.
	HasShared(name string) (FileRef, bool)
}

// Staging writes shared files for a checkpoint to come (Storage.Stage).
// Its Create refuses a private file.
type Staging interface {
	SnapshotWriter
	// Release ends the staging: files a retained checkpoint names stay,
	// the others become orphans. A Create or Close after it fails naming
	// the staging. Calling it again does nothing.
	Release()
}

// FileWriter is a file being written. Close makes it durable (an fsync, a
// completed upload) and returns its reference; a write or close error
// fails the snapshot, not the job.
type FileWriter interface {
	io.Writer
	Close() (FileRef, error)
	// Abort removes the partial file.
	Abort()
}

// MapFileRefs replaces every file reference of md's snapshots (keyed and
// operator state, inline files too) with fn's answer; the first error of
// fn stops it and is returned, with the references before it replaced.
func (md *Metadata) MapFileRefs(fn func(FileRef) (FileRef, error)) error {
	for i := range md.Operators {
		for j := range md.Operators[i].Subtasks {
			st := &md.Operators[i].Subtasks[j]
			for _, h := range []*Handle{st.Keyed, st.Operator} {
				if h == nil {
					continue
				}
				for k, r := range h.Files {
					nr, err := fn(r)
					if err != nil {
						return err
					}
					h.Files[k] = nr
				}
			}
		}
	}
	return nil
}
