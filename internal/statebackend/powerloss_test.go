package statebackend

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// powerLossPoint is a power loss of the backend's disk: the disk as it
// would come back (vfs.MemFS.CrashClone) and the latest checkpoint the
// storage held complete at that moment, with the state it must restore.
type powerLossPoint struct {
	before string // the operation the power went out before
	disk   *vfs.MemFS
	kept   int // the percentage of what was not synced that the disk kept
	id     int64
	h      *checkpoint.Handle
	want   []string
}

// A power loss of the backend's disk at any moment of a job's
// checkpoints, staged materializations and local recovery links included,
// leaves a disk on which the restore of the latest completed checkpoint
// is exact. The backend never syncs its local files (noSyncFS): they are
// scratch, so a disk can come back with any share of their bytes and
// directory entries (50%, 0%, 50% and 100% of what was not synced, in
// turn).
// The storage retains every checkpoint, so that each power loss can
// restore the checkpoint that was the latest when it happened.
// Local recovery takes a local file only when its size and CRC32C match
// the checkpoint's; everything else is downloaded from the storage, which
// is another disk and does not lose power here. The disks that kept
// everything must restore from the local files, or local recovery was
// not exercised.
func TestPowerLossLeavesLocalRecoveryExact(t *testing.T) {
	// A power loss before every every-th mutating operation; when that
	// makes 2×points of them, every other one is dropped and every
	// doubles, so that they spread over the whole run.
	const (
		dir    = "/data"
		points = 24
	)
	every := 1
	mem := vfs.NewCrashableMem()
	rng := rand.New(rand.NewPCG(7, 8))
	var (
		mu     sync.Mutex
		armed  bool
		ops    int
		id     int64
		latest *checkpoint.Handle
		want   []string
		lost   []powerLossPoint
	)
	record := func(before string, pct int) {
		cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: pct}
		if pct > 0 {
			cfg.RNG = rng
		}
		lost = append(lost, powerLossPoint{before: before, disk: mem.CrashClone(cfg), kept: pct, id: id, h: latest, want: want})
	}
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if !armed || latest == nil {
			return nil
		}
		if ops++; ops%every != 0 {
			return nil
		}
		record(fmt.Sprintf("op %d on %s", op.Kind, op.Path), []int{50, 0, 50, 100}[(ops/every)%4])
		if len(lost) == 2*points {
			for i := range points {
				lost[i] = lost[2*i+1]
			}
			clear(lost[points:])
			lost = lost[:points]
			every *= 2
		}
		return nil
	}))
	st, err := dirstore.NewFileStorage("/storage", "job", dirstore.StorageOptions{Retained: 16, FS: vfs.NewMem()})
	must(t, err)
	opts := PebbleOptions{Dir: dir, FS: fs, Incremental: true, LocalRecovery: true, MemTableSize: 1 << 20, ChangelogLimit: 1 << 20}
	b := newBackend(t, NewPebbleFactory(opts), state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	w := newWorkload(t, b)
	mu.Lock()
	armed = true
	mu.Unlock()
	var cuts, adoptions int
	for c := int64(1); c <= 8; c++ {
		w.apply(t, b, 2000, int(c))
		dump := dumpBackend(t, b)
		h := runSnapshot(t, b, st, "op", 0, c, false)
		switch stagedStep(b, c) {
		case "cut":
			cuts++
		case "adopted":
			adoptions++
		}
		completeOne(t, st, "op", c, false, 1, h)
		mu.Lock()
		id, latest, want = c, h, dump
		mu.Unlock()
		b.NotifyCheckpointComplete(c)
	}
	mu.Lock()
	armed = false
	record("", 100) // after the last notification, everything kept
	got := lost
	mu.Unlock()
	if cuts == 0 || adoptions == 0 {
		t.Fatalf("%d staged materializations cut and %d adopted in 8 checkpoints; want some of each", cuts, adoptions)
	}
	var fromLocal int
	for i, p := range got {
		o := opts
		o.FS = p.disk
		r := newBackend(t, NewPebbleFactory(o), state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{p.h}, Storage: st})
		newWorkload(t, r)
		if d := diffDumps(p.want, dumpBackend(t, r)); d != "" {
			t.Fatalf("power loss %d (before %q): restore of checkpoint %d: %s", i, p.before, p.id, d)
		}
		if p.kept == 100 {
			fromLocal += r.(*pebbleBackend).restoredLocal
		}
		must(t, r.Close())
	}
	if fromLocal == 0 {
		t.Fatalf("%d power losses: no restore took an SST file from the local disk", len(got))
	}
	t.Logf("%d power losses over %d mutating operations (%d staged materializations cut, %d adopted); %d SST files restored from the local disks that kept everything", len(got), ops, cuts, adoptions, fromLocal)
}
