package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// newestSavepoint returns the path of the savepoint with the highest id in
// the job's checkpoint directory.
func newestSavepoint(t *testing.T, jobDir string) string {
	t.Helper()
	entries, err := os.ReadDir(jobDir)
	if err != nil {
		t.Fatal(err)
	}
	best, bestID := "", int64(-1)
	for _, e := range entries {
		if id, err := strconv.ParseInt(strings.TrimPrefix(e.Name(), "savepoint-"), 10, 64); err == nil &&
			strings.HasPrefix(e.Name(), "savepoint-") && id > bestID {
			best, bestID = filepath.Join(jobDir, e.Name()), id
		}
	}
	if best == "" {
		t.Fatalf("no savepoint in %s", jobDir)
	}
	return best
}

// The built processor on the real broker: a run stopped by SIGTERM (a
// savepoint, no open transaction), a plain run that resumes from it by
// itself, a second SIGTERM, then `run --from` the first savepoint, which
// replays exactly the records after it — and commits nothing of its
// restored state a second time, though the transactional ids have been
// reused since.
func TestRunFromAnOlderSavepointReplaysFromThere(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "resume", jobSpec{pebble: true, seed: 5})
	f, jobDir, out := j.feed, j.jobDir, j.out

	// runUntil runs the processor until the output holds n records, then
	// stops it with SIGTERM. With feed, input keeps arriving until the
	// stop, so that the savepoint holds pre-committed transactions.
	runUntil := func(n int, feed bool, args ...string) {
		t.Helper()
		c := j.run(nil, args...)
		what := fmt.Sprintf("processor %v", args)
		if feed {
			j.flowUntil(c, what, n, 30)
		} else {
			j.waitOutput(c, what, n, 2*time.Minute)
		}
		c.stop(time.Minute)
		kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	}

	f.produce(t, 100)
	runUntil(400, true)
	first := newestSavepoint(t, jobDir)
	atFirst := kafkatest.ReadCommitted(t, seeds, out)
	// Resume by itself, writing enough transactions that every
	// transactional id of the pool is used again, then finish the input.
	runUntil(len(atFirst)+600, true)
	runUntil(len(f.sent), false)
	if second := newestSavepoint(t, jobDir); second == first {
		t.Fatalf("the second stop left no new savepoint (still %s)", first)
	}
	if d := checkCopy(f.sent, kafkatest.ReadCommitted(t, seeds, out)); d != "" {
		t.Fatalf("before --from, the output is not exactly the input: %s", d)
	}

	// --from the first savepoint: the records after it (those not in the
	// output when it was taken) come again, nothing else does.
	seen := map[string]int{}
	for _, r := range atFirst {
		seen[string(r.Headers[0].Value)]++
	}
	want := slices.Clone(f.sent)
	for _, r := range f.sent {
		if seen[string(r.Headers[0].Value)] == 0 {
			want = append(want, r)
		}
	}
	runUntil(len(want), false, "--from", first)
	if d := checkCopy(want, kafkatest.ReadCommitted(t, seeds, out)); d != "" {
		t.Fatalf("after --from %s, the output is not the input plus the records after the savepoint once more: %s", first, d)
	}
	t.Logf("%d input records; %d in the output at savepoint %s; %d after --from it", len(f.sent), len(atFirst), filepath.Base(first), len(want))
}
