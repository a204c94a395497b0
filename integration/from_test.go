package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/failpoint"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// runUntilKilled runs the processor with failpoints armed while input
// arrives, until a failpoint kills it; it fails the test unless the
// processor died of SIGKILL at failpoint fp.
func runUntilKilled(t *testing.T, f *feeder, fpEnv, fp string, feed int, args ...string) *child {
	t.Helper()
	c := startChild(t, []string{failpoint.Env + "=" + fpEnv}, args...)
	deadline := time.Now().Add(90 * time.Second)
	for !c.exited() && time.Now().Before(deadline) {
		if feed > 0 {
			f.produce(t, feed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !c.wait(time.Second) {
		c.kill()
		t.Fatalf("failpoint %s did not fire within 90s:\n%s", fp, c.tail())
	}
	if !c.killedBySIGKILL() || !strings.Contains(c.output.String(), "failpoint "+fp) {
		t.Fatalf("the processor ended with %v, not by failpoint %s:\n%s", c.err, fp, c.tail())
	}
	return c
}

// §3d on the real broker and the built binary: `run --from` an older
// savepoint is durable.
//
//  1. A run is stopped with SIGTERM: savepoint S (its transactions
//     committed by the stop).
//  2. A plain run resumes from S while input arrives, commits some
//     checkpoints and dies (failpoint before-commit) between the
//     completion of checkpoint C and its commit: C's transactions stay
//     open, C is the job's newest checkpoint.
//  3. `run --from S` restores S — its sinks fence (abort) C's open
//     transactions — and dies right after the restore, at its first
//     pre-commit.
//  4. A plain run must resume S's history, which run 3 made the job's
//     lineage, not C's: committing C's fenced transactions is a DATA MAY
//     BE LOST failure. Its output is exactly a replay from S: every record
//     before S once, the records run 2 committed after S twice (in each
//     input partition one run of records right after S's position), every
//     other record once.
//
// (Run 3 used to leave C the newest checkpoint: run 4 restored it and
// failed on its fenced transactions.)
func TestRunFromSurvivesACrashRightAfterTheRestore(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "from", jobSpec{seed: 11})
	f, jobDir, out, cfg := j.feed, j.jobDir, j.out, j.cfg

	// 1. Run, stop with a savepoint.
	f.produce(t, 300)
	c := j.run(nil)
	j.flowUntil(c, "run 1", 300, 20)
	c.stop(time.Minute)
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	sp := newestSavepoint(t, jobDir)
	atSavepoint := map[string]bool{}
	for _, r := range kafkatest.ReadCommitted(t, seeds, out) {
		atSavepoint[string(r.Headers[0].Value)] = true
	}

	// 2. Resume, commit some checkpoints, die before C's commit.
	f.produce(t, 200)
	runUntilKilled(t, f, failpoint.BeforeCommit+"@6", failpoint.BeforeCommit, 20, "run", "--config", cfg)
	newerID, newer := newestComplete(t, jobDir)
	if newer == sp {
		t.Fatalf("run 2 completed no checkpoint after the savepoint %s", sp)
	}

	// 3. --from the savepoint, killed right after the restore: at its
	// first pre-commit, which comes late enough (a 2s interval) that the
	// replayed records are in open transactions then, so no checkpoint of
	// this run completes.
	c = runUntilKilled(t, f, failpoint.AfterPreCommit+"@1", failpoint.AfterPreCommit, 0,
		"run", "--config", cfg, "--from", sp, "--set", "checkpoint.interval=2s")
	if id, path := newestComplete(t, jobDir); id > newerID+1 {
		t.Fatalf("run 3 completed checkpoint %s before it died: the test needs it to die first", path)
	}
	t.Logf("run 3 (--from %s) died after its restore; its log:\n%s", filepath.Base(sp), grepLines(c.output.String(), "adopted", "restoring", "twophase"))
	if !strings.Contains(c.output.String(), fmt.Sprintf("supersedes=%d ", newerID)) {
		t.Errorf("run 3 did not record that the restored savepoint supersedes checkpoint %d", newerID)
	}

	// 4. A plain run to the end of the input.
	c = startChild(t, nil, "run", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var got []*kgo.Record
	seqs := func() map[string]int {
		m := map[string]int{}
		for _, r := range got {
			m[string(r.Headers[0].Value)]++
		}
		return m
	}
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("the plain run after a crash right after `run --from %s` exited with %v (checkpoint %d, %s, was the newest before):\n%s",
				sp, c.err, newerID, filepath.Base(newer), c.tail())
		}
		got = kafkatest.ReadCommitted(t, seeds, out)
		return len(seqs()) >= len(f.sent) && strings.Contains(c.output.String(), "http listening")
	}) {
		t.Fatalf("run 4: output incomplete after 3 minutes (%d records):\n%s", len(got), c.tail())
	}
	c.stop(time.Minute)
	logs := c.output.String()
	if strings.Contains(logs, "DATA MAY BE LOST") {
		t.Fatalf("run 4 reports possible data loss:\n%s", c.tail())
	}
	// Run 4 restored the adopted checkpoint or a later one of its lineage,
	// never C or one before it.
	restored := grepLines(logs, "msg=restoring")
	var restoredID int64
	if _, err := fmt.Sscanf(restored[strings.Index(restored, " checkpoint=")+1:], "checkpoint=%d", &restoredID); err != nil || restoredID <= newerID {
		t.Errorf("run 4 restored %q, want a checkpoint of the lineage adopted from %s (above %d)", restored, sp, newerID)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	got = kafkatest.ReadCommitted(t, seeds, out)

	// A replay from the savepoint, exactly.
	counts := seqs()
	byPart := map[int32][]*kgo.Record{}
	for _, r := range f.sent {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	twice := 0
	for p, rs := range byPart {
		slices.SortFunc(rs, func(a, b *kgo.Record) int { return int(a.Offset - b.Offset) })
		phase := 0 // 0: before the savepoint, 1: committed by run 2 too, 2: after
		for _, r := range rs {
			seq := string(r.Headers[0].Value)
			n := counts[seq]
			switch {
			case atSavepoint[seq] && phase == 0 && n == 1:
			case atSavepoint[seq]:
				t.Fatalf("input partition %d offset %d (seq %s): before the savepoint, %d times in the output; want once, right at the start of the partition", p, r.Offset, seq, n)
			case n == 2 && phase <= 1:
				phase = 1
				twice++
			case n == 1:
				phase = 2
			default:
				t.Fatalf("input partition %d offset %d (seq %s): after the savepoint, %d times in the output (phase %d); want twice for the records run 2 committed right after the savepoint, once for the rest",
					p, r.Offset, seq, n, phase)
			}
		}
	}
	t.Logf("%d input records, %d before savepoint %s, %d committed again by the replay after run 2 had committed them (checkpoint %d abandoned); %d output records",
		len(f.sent), len(atSavepoint), filepath.Base(sp), twice, newerID, len(got))
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
