package state

import (
	"context"
	"io"
	"time"
)

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
}

// OperatorSnapshot is one operator's part of a checkpoint, matched to the
// job's operators by UID on restore.
type OperatorSnapshot struct {
	UID            string            `json:"uid"`
	Parallelism    int               `json:"parallelism"`
	MaxParallelism int               `json:"max_parallelism"`
	Subtasks       []SubtaskSnapshot `json:"subtasks"`
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
	// Err says why an incomplete or corrupt checkpoint cannot be used.
	Err error
}

// Storage keeps the checkpoints of one job, laid out like Flink's:
// <dir>/<job>/chk-<n>/_metadata plus the files of its snapshots,
// <dir>/<job>/shared/ for files incremental checkpoints share, and
// <dir>/<job>/savepoint-<id>/ for savepoints. Implementations must be safe for
// concurrent use by the coordinator and the subtasks.
type Storage interface {
	// Writer returns where a subtask writes the files of its snapshot of
	// checkpoint id.
	Writer(checkpointID int64, operatorUID string, subtask int) (SnapshotWriter, error)
	// Complete makes the checkpoint durable: it writes md atomically (temp
	// file, fsync, rename, fsync of the directory) with a checksum, takes a
	// reference on every shared file it names, and then removes the oldest
	// completed checkpoints beyond the retained count. Until Complete
	// returns nil the checkpoint does not exist.
	Complete(ctx context.Context, md *Metadata) error
	// Abort removes what was written for a checkpoint that will not
	// complete. Shared files still referenced elsewhere stay.
	Abort(checkpointID int64) error
	// Latest returns the newest complete, intact checkpoint or savepoint
	// (the highest id: ids are unique and increasing across both),
	// skipping (and reporting through the returned infos) incomplete or
	// corrupt ones. It returns nil metadata when there is none.
	//
	// Savepoints count because their transactions were committed when they
	// completed: resuming from an older checkpoint would replay the records
	// between the two into new transactions and write them twice (after a
	// stop with a savepoint and a plain restart, or a failure following a
	// savepoint), as Flink's failover also considers savepoints.
	Latest(ctx context.Context) (*Metadata, []CheckpointInfo, error)
	// Load reads the checkpoint or savepoint at path (a chk-<n> or
	// savepoint-<id> directory or its _metadata file) and verifies it; a
	// missing or corrupt one is an error naming the path.
	Load(ctx context.Context, path string) (*Metadata, error)
	// List returns every checkpoint and savepoint found, oldest first.
	List(ctx context.Context) ([]CheckpointInfo, error)
	// Open reads a stored file, verifying size and checksum as it is read to
	// the end; a mismatch is an error naming the path.
	Open(ref FileRef) (io.ReadCloser, error)
	// DiscardAll removes every checkpoint of the job (delete-on-cancellation).
	// Savepoints stay.
	DiscardAll() error
}

// SnapshotWriter creates the files of one subtask's snapshot.
type SnapshotWriter interface {
	// Create opens a new file. A private file is stored under the
	// checkpoint's own directory; a shared one under shared/, where name
	// must be unique for the job (carry a restore id or content hash).
	Create(name string, shared bool) (FileWriter, error)
	// HasShared reports whether a shared file of that name is already stored
	// and referenced by a retained checkpoint, so it need not be written
	// again.
	HasShared(name string) (FileRef, bool)
}

// FileWriter is a file being written. Close makes it durable (fsync) and
// returns its reference; a write or close error fails the snapshot.
type FileWriter interface {
	io.Writer
	Close() (FileRef, error)
	// Abort removes the partial file.
	Abort()
}
