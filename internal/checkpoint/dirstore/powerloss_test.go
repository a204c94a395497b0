package dirstore

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// Power-loss tests: a storage step (writing a checkpoint, a savepoint,
// MarkCommitted, Adopt) runs on a crashable in-memory filesystem; before
// each of its mutating filesystem operations, and once after the step,
// the filesystem is cloned as a power loss at that moment would leave it
// (vfs.MemFS.CrashClone: what was synced, plus a random share of what was
// not). A storage reopened on every clone must find the previous state or
// the new one, whole, never a damaged checkpoint; once the new state is
// durable (found with nothing unsynced kept), every later crash finds it
// too, and the storage goes on checkpointing.

// crashCfgs are the clones taken at every crash point: only what was
// synced; three random shares of the unsynced blocks and directory
// entries; and everything (a process crash, the OS survives).
var crashCfgs = []int{0, 30, 60, 100}

type crashPoint struct {
	before string       // the operation the crash came before ("" after the step)
	clones []*vfs.MemFS // one per crashCfgs
}

// crashRecorder wraps a crashable MemFS; while armed it records a crash
// point before every mutating operation.
type crashRecorder struct {
	mem    *vfs.MemFS
	fs     vfs.FS
	armed  atomic.Bool
	seed   uint64
	mu     sync.Mutex
	points []crashPoint
}

func newCrashRecorder(seed uint64) *crashRecorder {
	r := &crashRecorder{mem: vfs.NewCrashableMem(), seed: seed}
	r.fs = errorfs.Wrap(r.mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if r.armed.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			r.record(opName(op.Kind) + " " + op.Path)
		}
		return nil
	}))
	return r
}

func opName(k errorfs.OpKind) string {
	switch k {
	case errorfs.OpCreate:
		return "create"
	case errorfs.OpRemove:
		return "remove"
	case errorfs.OpRemoveAll:
		return "removeall"
	case errorfs.OpRename:
		return "rename"
	case errorfs.OpMkdirAll:
		return "mkdirall"
	case errorfs.OpFileWrite:
		return "write"
	case errorfs.OpFileSync:
		return "sync"
	}
	return fmt.Sprintf("op%d", k)
}

func (r *crashRecorder) record(before string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := crashPoint{before: before}
	for i, pct := range crashCfgs {
		cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: pct}
		if pct > 0 {
			cfg.RNG = rand.New(rand.NewPCG(r.seed, uint64(len(r.points)*len(crashCfgs)+i)))
		}
		p.clones = append(p.clones, r.mem.CrashClone(cfg))
	}
	r.points = append(r.points, p)
}

// run arms the recorder for step and returns the crash points: one before
// each mutating operation and one after the step.
func (r *crashRecorder) run(t *testing.T, step func() error) []crashPoint {
	t.Helper()
	r.armed.Store(true)
	err := step()
	r.armed.Store(false)
	must(t, err)
	r.record("")
	return r.points
}

const crashRoot = "/data"

func crashStorage(t *testing.T, fs vfs.FS, retained int) checkpoint.Storage {
	t.Helper()
	st, err := NewFileStorage(crashRoot, "job", StorageOptions{Retained: retained, FS: fs})
	must(t, err)
	return st
}

// crashBody is a file body spanning several 4 KiB blocks, so that a clone
// can keep some of its unsynced blocks and not others.
func crashBody(tag string) string {
	return strings.Repeat(tag+" ", 10_000/(len(tag)+1))
}

// crashCheckpoint writes checkpoint or savepoint id of operators "a" (two
// subtasks) and "b" (one): each subtask a private file, an inline one,
// and the shared files named (reusing those the storage holds), then
// completes it.
func crashCheckpoint(st checkpoint.Storage, id int64, savepoint bool, shared ...string) (*checkpoint.Metadata, error) {
	return crashCheckpointFiles(st, id, savepoint, true, shared...)
}

// crashCheckpointFiles is crashCheckpoint, without the private files
// unless private.
func crashCheckpointFiles(st checkpoint.Storage, id int64, savepoint, private bool, shared ...string) (*checkpoint.Metadata, error) {
	md := &checkpoint.Metadata{CheckpointID: id, Savepoint: savepoint}
	for _, op := range []struct {
		uid  string
		subs int
	}{{"a", 2}, {"b", 1}} {
		o := checkpoint.OperatorSnapshot{UID: op.uid, Parallelism: op.subs, MaxParallelism: maxParallelism}
		for sub := 0; sub < op.subs; sub++ {
			w, err := st.Writer(id, op.uid, sub)
			if err != nil {
				return nil, err
			}
			h := &checkpoint.Handle{Backend: "test"}
			put := func(name string, sh bool) error {
				if sh {
					if ref, ok := w.HasShared(name); ok {
						h.Files = append(h.Files, ref)
						return nil
					}
				}
				f, err := w.Create(name, sh)
				if err != nil {
					return err
				}
				if _, err := io.WriteString(f, crashBody(fmt.Sprintf("%s/%d/%s/%d", op.uid, sub, name, id))); err != nil {
					f.Abort()
					return err
				}
				ref, err := f.Close()
				if err != nil {
					return err
				}
				h.Files = append(h.Files, ref)
				return nil
			}
			if private {
				if err := put("state", false); err != nil {
					return nil, err
				}
			}
			for _, name := range shared {
				if err := put(fmt.Sprintf("%s-%d-%s", op.uid, sub, name), true); err != nil {
					return nil, err
				}
			}
			inline := []byte(fmt.Sprintf("inline %s/%d/%d", op.uid, sub, id))
			h.Files = append(h.Files, checkpoint.FileRef{Path: "MANIFEST", Size: int64(len(inline)), CRC32C: crcOf(inline), Inline: true, Data: inline})
			o.Subtasks = append(o.Subtasks, checkpoint.SubtaskSnapshot{Subtask: sub, Keyed: h})
		}
		md.Operators = append(md.Operators, o)
	}
	return md, st.Complete(context.Background(), md)
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func operatorsJSON(t *testing.T, md *checkpoint.Metadata) string {
	t.Helper()
	b, err := json.Marshal(md.Operators)
	must(t, err)
	return string(b)
}

// contentJSON is the size and checksum of every file of md, in order:
// equal for a checkpoint and its adopted copy.
func contentJSON(t *testing.T, md *checkpoint.Metadata) string {
	t.Helper()
	var out []string
	for _, op := range md.Operators {
		for _, st := range op.Subtasks {
			for _, r := range st.Keyed.Files {
				out = append(out, fmt.Sprintf("%d/%08x/%v", r.Size, r.CRC32C, r.Inline))
			}
		}
	}
	return strings.Join(out, " ")
}

// observed is what a storage reopened after a crash shows.
type observed struct {
	md    *checkpoint.Metadata
	infos []checkpoint.CheckpointInfo
	st    checkpoint.Storage // reopened on the clone
}

// checkCrashes opens a storage on every clone of every point and hands
// Latest's result to classify, which returns whether it shows the new
// state (and fails the test if it shows neither the old nor the new one).
// It checks that no checkpoint is ever damaged, that the new state once
// durable stays, that it is there after the step, and that every crashed
// storage completes a further checkpoint. It returns the number of crash
// points.
func checkCrashes(t *testing.T, points []crashPoint, retained int, classify func(t *testing.T, o observed) bool) int {
	t.Helper()
	ctx := context.Background()
	durable := -1 // the first point whose synced-only clone shows the new state
	for i, p := range points {
		where := fmt.Sprintf("crash point %d/%d (before %q)", i, len(points)-1, p.before)
		if p.before == "" {
			where = fmt.Sprintf("crash point %d/%d (after the step)", i, len(points)-1)
		}
		for j, clone := range p.clones {
			what := fmt.Sprintf("%s, %d%% of unsynced data kept", where, crashCfgs[j])
			st, err := NewFileStorage(crashRoot, "job", StorageOptions{Retained: retained, FS: clone})
			if err != nil {
				t.Fatalf("%s: reopening: %v", what, err)
			}
			md, infos, err := st.Latest(ctx)
			if err != nil {
				t.Fatalf("%s: Latest: %v", what, err)
			}
			for _, in := range infos {
				if in.Damaged {
					t.Fatalf("%s: %s is damaged: %v\n%s", what, in.Path, in.Err, clone.String())
				}
			}
			if md == nil {
				t.Fatalf("%s: no checkpoint at all; infos %+v\n%s", what, infos, clone.String())
			}
			isNew := classify(t, observed{md: md, infos: infos, st: st})
			if crashCfgs[j] == 0 && isNew && durable < 0 {
				durable = i
			}
			if durable >= 0 && !isNew {
				t.Fatalf("%s: the old state is back, though the new one was durable at crash point %d", what, durable)
			}
			if p.before == "" && !isNew {
				t.Fatalf("%s: the step returned, and its result is not there", what)
			}
			// The job goes on from here.
			list, err := st.List(ctx)
			must(t, err)
			next := md.CheckpointID + 1
			for _, in := range list {
				next = max(next, in.ID+1)
			}
			if _, err := crashCheckpoint(st, next, false, "next.sst"); err != nil {
				t.Fatalf("%s: checkpoint %d after the crash: %v", what, next, err)
			}
			if latest, _, err := st.Latest(ctx); err != nil || latest == nil || latest.CheckpointID != next {
				t.Fatalf("%s: after the crash, checkpoint %d completed but Latest = %+v, %v", what, next, latest, err)
			}
		}
	}
	if durable < 0 {
		t.Fatal("the new state never became durable")
	}
	t.Logf("%d crash points (%d clones each); the new state durable from point %d", len(points), len(crashCfgs), durable)
	if testing.Verbose() {
		for i, p := range points {
			t.Logf("  %2d before %s", i, p.before)
		}
	}
	return len(points)
}

func TestPowerLossWritingACheckpoint(t *testing.T) {
	for _, tc := range []struct {
		seed    uint64
		private bool // else only shared and inline files: Complete creates chk-2
	}{{1, true}, {2, true}, {3, false}} {
		t.Run(fmt.Sprintf("seed=%d/private=%v", tc.seed, tc.private), func(t *testing.T) {
			rec := newCrashRecorder(tc.seed)
			st := crashStorage(t, rec.fs, 1)
			old, err := crashCheckpoint(st, 1, false, "x.sst", "y.sst")
			must(t, err)
			var md *checkpoint.Metadata
			points := rec.run(t, func() (err error) {
				// Reuses x.sst, writes z.sst, subsumes 1 (and y.sst).
				md, err = crashCheckpointFiles(st, 2, false, tc.private, "x.sst", "z.sst")
				return err
			})
			checkCrashes(t, points, 1, func(t *testing.T, o observed) bool {
				switch {
				case o.md.CheckpointID == 1 && operatorsJSON(t, o.md) == operatorsJSON(t, old):
					return false
				case o.md.CheckpointID == 2 && operatorsJSON(t, o.md) == operatorsJSON(t, md):
					return true
				}
				t.Fatalf("Latest is %d, neither checkpoint 1 nor 2 as written: %s", o.md.CheckpointID, operatorsJSON(t, o.md))
				return false
			})
		})
	}
}

func TestPowerLossWritingASavepoint(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rec := newCrashRecorder(seed)
			st := crashStorage(t, rec.fs, 1)
			old, err := crashCheckpoint(st, 1, false, "x.sst")
			must(t, err)
			var sp *checkpoint.Metadata
			points := rec.run(t, func() (err error) {
				// Its private files move from chk-2 to savepoint-2; x.sst,
				// reused, is copied in.
				sp, err = crashCheckpoint(st, 2, true, "x.sst")
				return err
			})
			checkCrashes(t, points, 1, func(t *testing.T, o observed) bool {
				switch {
				case o.md.CheckpointID == 1 && !o.md.Savepoint && operatorsJSON(t, o.md) == operatorsJSON(t, old):
					return false
				case o.md.CheckpointID == 2 && o.md.Savepoint && operatorsJSON(t, o.md) == operatorsJSON(t, sp):
					return true
				}
				t.Fatalf("Latest is %d (savepoint %v), neither checkpoint 1 nor savepoint 2 as written", o.md.CheckpointID, o.md.Savepoint)
				return false
			})
		})
	}
}

func TestPowerLossMarkingCommitted(t *testing.T) {
	for _, savepoint := range []bool{true, false} {
		t.Run(fmt.Sprintf("savepoint=%v", savepoint), func(t *testing.T) {
			rec := newCrashRecorder(1)
			st := crashStorage(t, rec.fs, 1)
			_, err := crashCheckpoint(st, 1, false, "x.sst")
			must(t, err)
			md, err := crashCheckpoint(st, 2, savepoint, "x.sst")
			must(t, err)
			points := rec.run(t, func() error { return st.MarkCommitted(context.Background(), 2) })
			checkCrashes(t, points, 1, func(t *testing.T, o observed) bool {
				if o.md.CheckpointID != 2 || operatorsJSON(t, o.md) != operatorsJSON(t, md) {
					t.Fatalf("Latest is %d, not %d as written", o.md.CheckpointID, md.CheckpointID)
				}
				if o.infos[0].Committed != o.md.Committed {
					t.Fatalf("Latest's info says committed=%v, its metadata %v", o.infos[0].Committed, o.md.Committed)
				}
				return o.md.Committed
			})
		})
	}
}

func TestPowerLossAdopting(t *testing.T) {
	// The storage holds 1 and 2 (retained 2), savepoint 3 (committed) and
	// 4; another job's directory holds checkpoint 7.
	setup := func(t *testing.T, fs vfs.FS) (checkpoint.Storage, map[string]*checkpoint.Metadata) {
		ctx := context.Background()
		other, err := NewFileStorage("/other", "old", StorageOptions{FS: fs})
		must(t, err)
		_, err = crashCheckpoint(other, 7, false, "o.sst")
		must(t, err)
		st := crashStorage(t, fs, 2)
		for _, c := range []struct {
			id int64
			sp bool
			sh []string
		}{{1, false, []string{"a.sst"}}, {2, false, []string{"a.sst", "b.sst"}}, {3, true, []string{"b.sst"}}, {4, false, []string{"b.sst", "c.sst"}}} {
			_, err := crashCheckpoint(st, c.id, c.sp, c.sh...)
			must(t, err)
		}
		must(t, st.MarkCommitted(ctx, 3))
		srcs := map[string]*checkpoint.Metadata{}
		for name, path := range map[string]string{"own checkpoint": "chk-2", "committed savepoint": "savepoint-3", "other job's checkpoint": "/other/old/chk-7"} {
			md, err := st.Load(ctx, path)
			must(t, err)
			srcs[name] = md
		}
		return st, srcs
	}
	for _, name := range []string{"own checkpoint", "committed savepoint", "other job's checkpoint"} {
		t.Run(name, func(t *testing.T) {
			rec := newCrashRecorder(3)
			st, srcs := setup(t, rec.fs)
			src := srcs[name]
			old, _, err := st.Latest(context.Background())
			must(t, err)
			var ad *checkpoint.Metadata
			points := rec.run(t, func() (err error) {
				ad, err = st.Adopt(context.Background(), src, 5)
				return err
			})
			checkCrashes(t, points, 2, func(t *testing.T, o observed) bool {
				switch {
				case o.md.CheckpointID == 4 && operatorsJSON(t, o.md) == operatorsJSON(t, old):
					return false
				case o.md.CheckpointID == 5 && operatorsJSON(t, o.md) == operatorsJSON(t, ad) &&
					contentJSON(t, o.md) == contentJSON(t, src) && o.md.RestoredFrom == src.Path:
					if o.md.Committed != src.Committed {
						t.Fatalf("adopted checkpoint 5 committed=%v, its source %v", o.md.Committed, src.Committed)
					}
					return true
				}
				t.Fatalf("Latest is %d, neither checkpoint 4 nor the adopted 5", o.md.CheckpointID)
				return false
			})
		})
	}
}
