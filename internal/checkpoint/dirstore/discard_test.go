package dirstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// DiscardAll records the newest checkpoint or savepoint it found before
// it removes the checkpoints (a damaged one counts: its transactions may
// have committed), the record survives a reopen and a second DiscardAll
// never lowers it; a job that never completed a checkpoint records
// nothing.
func TestDiscardAllRecordsTheNewestCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() checkpoint.Storage {
		st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 3})
		must(t, err)
		return st
	}
	st := open()
	if d, err := st.Discarded(ctx); err != nil || d.Through != 0 || d.Newest != nil {
		t.Fatalf("Discarded before any DiscardAll = %+v, %v; want nothing", d, err)
	}
	must(t, st.DiscardAll())
	if d, err := st.Discarded(ctx); err != nil || d.Through != 0 {
		t.Fatalf("Discarded after discarding nothing = %+v, %v; want nothing", d, err)
	}

	writeSavepoint(t, st, 1)
	writeCheckpoint(t, st, 2, "a.sst")
	writeCheckpoint(t, st, 3, "b.sst")
	// Checkpoint 4 is damaged (a state file flipped), 5 never completed.
	md4 := writeCheckpoint(t, st, 4, "c.sst")
	p := filepath.Join(dir, "job", md4.Operators[0].Subtasks[0].Keyed.Files[0].Path)
	b, err := os.ReadFile(p)
	must(t, err)
	b[0] ^= 1
	must(t, os.WriteFile(p, b, 0o644))
	w, err := st.Writer(5, "op/1", 0)
	must(t, err)
	f, err := w.Create("private", false)
	must(t, err)
	_, err = f.Close()
	must(t, err)

	st = open()
	must(t, st.DiscardAll())
	for _, s := range []checkpoint.Storage{st, open()} {
		// (Its _metadata is intact, only a keyed state file is flipped:
		// the operator state in it is recorded.)
		if d, err := s.Discarded(ctx); err != nil || d.Through != 4 || d.Newest == nil || d.Newest.CheckpointID != 4 {
			t.Fatalf("Discarded = %+v, %v; want 4, the newest checkpoint whose _metadata existed", d, err)
		}
	}
	md, _, err := st.Latest(ctx)
	must(t, err)
	if md == nil || md.CheckpointID != 1 || !md.Savepoint {
		t.Fatalf("after DiscardAll Latest = %+v, want savepoint 1 only", md)
	}
	// A newer savepoint raises the record, nothing lowers it.
	writeSavepoint(t, st, 9)
	must(t, st.DiscardAll())
	if d, _ := st.Discarded(ctx); d.Through != 9 || d.Newest != nil {
		t.Fatalf("Discarded after a newer savepoint = %+v, want 9 (a savepoint: it stays, no state recorded)", d)
	}
	st = open()
	must(t, st.DiscardAll())
	if d, _ := open().Discarded(ctx); d.Through != 9 {
		t.Fatalf("Discarded after a DiscardAll that found less = %+v, want 9", d)
	}

	must(t, os.WriteFile(filepath.Join(dir, "job", discardedFile), []byte("garbage"), 0o644))
	if _, err := open().Discarded(ctx); err == nil || !strings.Contains(err.Error(), discardedFile) {
		t.Fatalf("Discarded of a corrupt record = %v, want an error naming %s", err, discardedFile)
	}
}

// When the newest point is an intact checkpoint, DiscardAll records its
// operator state (a sink's pending transactions), without the keyed
// state, which goes with the checkpoint: a later --from an older
// savepoint tells from it which transactions were committed since.
func TestDiscardAllRecordsTheNewestCheckpointsOperatorState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := NewFileStorage(dir, "job", StorageOptions{Retained: 3})
	must(t, err)
	writeSavepoint(t, st, 1)
	writeCheckpoint(t, st, 2, "a.sst")
	w, err := st.Writer(3, "op/1", 0)
	must(t, err)
	f, err := w.Create("private", false)
	must(t, err)
	ref, err := f.Close()
	must(t, err)
	sinkState := &checkpoint.Handle{Backend: "operator", Inline: []byte(`{"entries":["txn-3"]}`)}
	md := &checkpoint.Metadata{CheckpointID: 3, WriterVersion: "v9", Operators: []checkpoint.OperatorSnapshot{
		{UID: "op/1", Parallelism: 1, MaxParallelism: 128, Subtasks: []checkpoint.SubtaskSnapshot{{Subtask: 0, Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref}}}}},
		{UID: "sink", Parallelism: 1, MaxParallelism: 128, StateFormat: 1, Subtasks: []checkpoint.SubtaskSnapshot{{Subtask: 0, Operator: sinkState}}},
	}}
	must(t, st.Complete(ctx, md))
	must(t, st.DiscardAll())
	reopened, err := NewFileStorage(dir, "job", StorageOptions{Retained: 3})
	must(t, err)
	d, err := reopened.Discarded(ctx)
	must(t, err)
	n := d.Newest
	if d.Through != 3 || n == nil || n.CheckpointID != 3 || n.Path != md.Path || n.WriterVersion != "v9" || len(n.Operators) != 2 {
		t.Fatalf("Discarded = %+v (newest %+v), want checkpoint 3 with its two operators", d, n)
	}
	if n.Operators[0].Subtasks[0].Keyed != nil {
		t.Errorf("the record keeps keyed state, whose files are gone: %+v", n.Operators[0].Subtasks[0].Keyed)
	}
	if op := n.Operators[1]; op.UID != "sink" || op.StateFormat != 1 || string(op.Subtasks[0].Operator.Inline) != string(sinkState.Inline) {
		t.Errorf("the sink's operator state recorded as %+v, want %s", op, sinkState.Inline)
	}
}

// If the record cannot be written, DiscardAll removes nothing: a later
// restore finds the checkpoints as they were.
func TestDiscardAllRemovesNothingWithoutItsRecord(t *testing.T) {
	ctx := context.Background()
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpCreate && strings.Contains(op.Path, discardedFile) {
			return errors.New("injected: disk full")
		}
		return nil
	}))
	st, err := NewFileStorage("/data", "job", StorageOptions{FS: fs, Retained: 2})
	must(t, err)
	writeCheckpoint(t, st, 1, "a.sst")
	writeCheckpoint(t, st, 2, "a.sst")
	if err := st.DiscardAll(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("DiscardAll = %v, want the injected error", err)
	}
	md, _, err := st.Latest(ctx)
	must(t, err)
	if md == nil || md.CheckpointID != 2 {
		t.Fatalf("after a failed DiscardAll Latest = %+v, want checkpoint 2", md)
	}
}

// A power loss at any moment of DiscardAll never leaves the job with an
// older point as its newest and no record of what was deleted: either
// the newest checkpoint is still whole, or the record names it.
func TestPowerLossDiscarding(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		rec := newCrashRecorder(seed)
		st := crashStorage(t, rec.fs, 2)
		for _, c := range []struct {
			id int64
			sp bool
		}{{1, true}, {2, false}, {3, false}} {
			_, err := crashCheckpoint(st, c.id, c.sp, "x.sst")
			must(t, err)
		}
		points := rec.run(t, st.DiscardAll)
		checkCrashes(t, points, 2, func(t *testing.T, o observed) bool {
			d, err := o.st.Discarded(context.Background())
			must(t, err)
			through := d.Through
			if through < 3 && o.md.CheckpointID != 3 {
				t.Fatalf("the newest point is %d and the record says %d: checkpoint 3 is gone without a word", o.md.CheckpointID, through)
			}
			return through >= 3
		})
	}
}
