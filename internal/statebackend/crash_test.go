package statebackend

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

const (
	crashEnvMode = "ONCEFLOW_STATE_CRASH_MODE"
	crashEnvDir  = "ONCEFLOW_STATE_CRASH_DIR"
	// crashEnvWork is the child's Pebble directory, a temporary directory
	// of the parent's: the killed child cannot remove one of its own.
	crashEnvWork = "ONCEFLOW_STATE_CRASH_WORK"
	crashKeys    = 3000
	crashAt      = 3 // the checkpoint the failpoint modes block in
)

// TestCrashChild is the child process of TestKillDuringCheckpoint; it does
// nothing unless started by it. It writes checkpoint r after workload round
// r with an incremental Pebble backend into file storage, printing
// "completed r" after each Complete (and "cut r" or "adopted r" when
// checkpoint r cut or adopted a staged materialization). In modes
// "midwrite" and "metadata" a failpoint blocks checkpoint crashAt in the
// middle of writing a shared SST file, or just before the rename that
// publishes its _metadata; in modes "loop" and "loop-changelog" it
// checkpoints until killed.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(crashEnvMode)
	if mode == "" {
		t.Skip("only runs as the child of TestKillDuringCheckpoint")
	}
	dir := os.Getenv(crashEnvDir)
	var current atomic.Int64
	var writes atomic.Int64
	block := func(what string) {
		fmt.Printf("blocked %s\n", what)
		os.Stdout.Sync()
		select {} // the parent kills us here
	}
	stall := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if current.Load() != crashAt {
			return nil
		}
		switch {
		case mode == "midwrite" && op.Kind == errorfs.OpFileWrite && strings.Contains(op.Path, "shared") && strings.Contains(op.Path, ".sst"):
			if writes.Add(1) == 3 {
				block(op.Path)
			}
		case mode == "metadata" && op.Kind == errorfs.OpRename && strings.HasSuffix(op.Path, "_metadata.inprogress"):
			block(op.Path)
		}
		return nil
	})
	st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 2, FS: errorfs.Wrap(vfs.Default, stall)})
	must(t, err)
	// The failpoint modes block in the upload of a materialized Pebble
	// checkpoint: no changelog. "loop-changelog" is killed amid chains
	// of segments and materializations staged beside them (past half a
	// MiB of writes), uploading, adopted or released.
	limit := int64(-1)
	if mode == "loop-changelog" {
		limit = 1 << 20
	}
	f := NewPebbleFactory(PebbleOptions{Dir: os.Getenv(crashEnvWork), Incremental: true, MemTableSize: 1 << 20, ChangelogLimit: limit})
	b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Storage: st})
	w := newWorkload(t, b)
	for r := int64(1); ; r++ {
		w.apply(t, b, crashKeys, int(r))
		applyTimerRound(t, b, crashKeys/10, int(r))
		current.Store(r)
		h := runSnapshot(t, b, st, "op", 0, r, false)
		if step := stagedStep(b, r); step != "" {
			fmt.Printf("%s %d\n", step, r)
		}
		completeOne(t, st, "op", r, false, 1, h)
		b.NotifyCheckpointComplete(r)
		fmt.Printf("completed %d\n", r)
		if r > 1000 {
			t.Fatal("never killed")
		}
	}
}

func TestKillDuringCheckpoint(t *testing.T) {
	for _, mode := range []string{"midwrite", "metadata", "loop", "loop-changelog"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashEnvMode+"="+mode, crashEnvDir+"="+dir, crashEnvWork+"="+t.TempDir())
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			must(t, err)
			must(t, cmd.Start())
			sc := bufio.NewScanner(out)
			lastCompleted := int64(0)
			killAfter := int64(3 + rand.IntN(3))
			if mode == "loop-changelog" {
				killAfter = int64(4 + rand.IntN(12)) // amid chains and materializations
			}
			var staged []string // the child's cuts and adoptions
			for sc.Scan() {
				line := sc.Text()
				if strings.HasPrefix(line, "cut ") || strings.HasPrefix(line, "adopted ") {
					staged = append(staged, line)
				}
				if n, ok := strings.CutPrefix(line, "completed "); ok {
					lastCompleted, _ = strconv.ParseInt(n, 10, 64)
					if strings.HasPrefix(mode, "loop") && lastCompleted == killAfter {
						time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
						break
					}
				}
				if strings.HasPrefix(line, "blocked ") {
					t.Logf("child %s", line)
					break
				}
			}
			must(t, cmd.Process.Signal(syscall.SIGKILL))
			werr := cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child did not die by SIGKILL: %v (last completed %d)", werr, lastCompleted)
			}
			t.Logf("killed after checkpoint %d; staged materializations: %v", lastCompleted, staged)

			st, err := dirstore.NewFileStorage(dir, "job", dirstore.StorageOptions{Retained: 2})
			must(t, err)
			md, infos, err := st.Latest(context.Background())
			must(t, err)
			if md == nil {
				t.Fatalf("no checkpoint after kill; infos %+v", infos)
			}
			switch mode {
			case "loop", "loop-changelog":
				// The kill may land after a Complete whose line we did not read.
				if md.CheckpointID != lastCompleted && md.CheckpointID != lastCompleted+1 {
					t.Fatalf("latest %d, last completed %d", md.CheckpointID, lastCompleted)
				}
			default:
				if md.CheckpointID != crashAt-1 || lastCompleted != crashAt-1 {
					t.Fatalf("latest %d, last completed %d, want %d", md.CheckpointID, lastCompleted, crashAt-1)
				}
				// Its directory exists once a private file was created
				// (always in mode metadata; in mode midwrite only if one
				// was written before the shared SST): then it is reported
				// as incomplete, not damaged.
				_, statErr := os.Stat(filepath.Join(dir, "job", "chk-3"))
				if mode == "metadata" || statErr == nil {
					if infos[0].ID != crashAt || infos[0].Err == nil || infos[0].Damaged || !strings.Contains(infos[0].Err.Error(), "chk-3") {
						t.Fatalf("the interrupted checkpoint is not reported as incomplete: %+v", infos)
					}
					t.Logf("skipped: %v", infos[0].Err)
				} else if len(infos) != 1 {
					t.Fatalf("infos %+v, want only the checkpoint restored", infos)
				}
			}
			// Restore it and compare with the workload replayed to that round.
			f := NewPebbleFactory(PebbleOptions{Dir: t.TempDir()})
			r := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "op", Restore: checkpoint.KeyedHandlesFor(md.Operator("op"), checkpoint.KeyGroupRange{Start: 0, End: 128}), Storage: st})
			newWorkload(t, r)
			ref := newBackend(t, NewMemoryFactory(), state.KeyedBackendOptions{})
			w := newWorkload(t, ref)
			for round := 1; round <= int(md.CheckpointID); round++ {
				w.apply(t, ref, crashKeys, round)
				applyTimerRound(t, ref, crashKeys/10, round)
			}
			if d := diffDumps(dumpBackend(t, ref), dumpBackend(t, r)); d != "" {
				t.Fatalf("restored checkpoint %d differs from the workload: %s", md.CheckpointID, d)
			}
			// And the job can go on checkpointing into the same directory.
			// Leftovers of the interrupted checkpoint are then cleaned up.
			h := runSnapshot(t, r, st, "op", 0, md.CheckpointID+10, false)
			completeOne(t, st, "op", md.CheckpointID+10, false, 1, h)
			used := map[string]bool{}
			for _, f := range h.Files {
				used[filepath.Base(f.Path)] = true
			}
			ents, err := os.ReadDir(filepath.Join(dir, "job", "shared"))
			must(t, err)
			var prev *checkpoint.Metadata
			if prev, err = st.Load(context.Background(), filepath.Join(dir, "job", fmt.Sprintf("chk-%d", md.CheckpointID))); err != nil {
				t.Fatal(err)
			}
			for _, f := range prev.Operators[0].Subtasks[0].Keyed.Files {
				used[filepath.Base(f.Path)] = true
			}
			for _, e := range ents {
				if !used[e.Name()] {
					t.Fatalf("orphaned shared file %s survives", e.Name())
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "job", "chk-3")); !strings.HasPrefix(mode, "loop") && err == nil {
				t.Fatal("interrupted chk-3 survives a later completion")
			}
		})
	}
}
