package state

import (
	"context"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// KeyedBackendOptions is what the engine tells a backend about the subtask
// it serves.
type KeyedBackendOptions struct {
	Job            string
	OperatorUID    string
	Subtask        int
	Parallelism    int
	MaxParallelism int
	// KeyGroups is the range this subtask owns; keys outside it are a bug in
	// the caller's routing.
	KeyGroups checkpoint.KeyGroupRange
	// Restore holds the keyed snapshots of the previous run whose key-group
	// ranges intersect KeyGroups (several when the parallelism changed).
	// Entries of key groups outside KeyGroups must be dropped.
	Restore []*checkpoint.Handle
	// Storage is where restored files are read from.
	Storage checkpoint.Storage
	// Now is the clock for TTL; nil means time.Now.
	Now func() time.Time
}

// KeyedBackendFactory creates the keyed backend of one operator subtask.
type KeyedBackendFactory interface {
	// Name is recorded in handles ("memory", "pebble").
	Name() string
	CreateKeyedBackend(ctx context.Context, opts KeyedBackendOptions) (KeyedBackend, error)
}

// KeyedBackend holds the keyed state of one operator subtask, its keyed
// timers included (Timers). It is owned by the subtask's goroutine: every
// method but the AsyncSnapshot it returns is called from that goroutine
// only.
type KeyedBackend interface {
	Timers
	// SetCurrentKey scopes every following state access to key (the
	// serialized key the record was routed by).
	SetCurrentKey(key []byte)
	// CurrentKey returns the key set last.
	CurrentKey() []byte
	// KeyGroups is the range this backend owns.
	KeyGroups() checkpoint.KeyGroupRange
	// Register declares a state, or returns the one declared earlier under
	// that name. Declaring a name again with another kind or codec, or with a
	// codec different from the restored snapshot's, is an error naming the
	// state.
	Register(meta checkpoint.StateMeta) (RawState, error)
	// Snapshot is called at the barrier of checkpoint id, after every record
	// before the barrier was processed and before any record after it. It
	// captures the state synchronously (cheaply: a Pebble flush and
	// checkpoint, a copy-on-write of maps) and returns the slow part, which
	// the engine runs in another goroutine while processing continues.
	Snapshot(checkpointID int64, w checkpoint.SnapshotWriter) (AsyncSnapshot, error)
	// NotifyCheckpointComplete tells the backend checkpoint id is durable:
	// incremental backends may base later checkpoints on its files.
	NotifyCheckpointComplete(checkpointID int64)
	// NotifyCheckpointAborted tells the backend checkpoint id will never
	// complete.
	NotifyCheckpointAborted(checkpointID int64)
	// Close releases local resources. Stored snapshots stay.
	Close() error
}

// AsyncSnapshot finishes a snapshot begun at a barrier: it writes the files
// and returns the handle the subtask acks with. It may run concurrently with
// processing on the backend that created it. An error fails the checkpoint,
// not the job.
type AsyncSnapshot func(ctx context.Context) (*checkpoint.Handle, error)

// RawState is the byte-level access a typed state builds on. All calls are
// scoped to the backend's current key. userKey is nil except for map state.
// Slices returned by Get or passed to Iterate's fn must not be modified
// (backends may share them with snapshots in progress); Put copies value.
type RawState interface {
	Get(userKey []byte) (value []byte, ok bool, err error)
	Put(userKey, value []byte) error
	Delete(userKey []byte) error
	// Iterate calls fn for every entry of the current key, in user-key byte
	// order, until fn returns false.
	Iterate(fn func(userKey, value []byte) bool) error
	// Clear removes every entry of the current key.
	Clear() error
}
