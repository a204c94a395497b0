package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/integration/kafkatest"
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
	in := kafkatest.Topic(t, seeds, 4)
	out := kafkatest.Topic(t, seeds, 4)
	dir := t.TempDir()
	name := fmt.Sprintf("resume-%d", time.Now().UnixNano()%1e6)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
job: {name: %s, type: copy, parallelism: 2}
kafka: {brokers: [%q]}
source: {topic: %s, start: earliest}
sink: {topic: %s, delivery: exactly_once, transactional_id_prefix: %s, transaction_timeout: 2m}
checkpoint: {interval: 100ms, timeout: 30s, retain: 3, dir: %s/checkpoints}
state: {backend: pebble, dir: %s/state}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
`, name, seeds[0], in, out, name, dir, dir))
	jobDir := filepath.Join(dir, "checkpoints", name)
	f := &feeder{cl: kafkatest.Client(t, seeds, kgo.RequiredAcks(kgo.AllISRAcks())), topic: in, rng: rand.New(rand.NewPCG(5, 8))}

	// runUntil runs the processor until the output holds n records, then
	// stops it with SIGTERM. With feed, input keeps arriving until the
	// stop, so that the savepoint holds pre-committed transactions.
	runUntil := func(n int, feed bool, args ...string) {
		t.Helper()
		c := startChild(t, nil, append([]string{"run", "--config", cfg}, args...)...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var got int
		if !eventually(ctx, 100*time.Millisecond, func() bool {
			if c.exited() {
				t.Fatalf("processor %v exited with %v:\n%s", args, c.err, c.tail())
			}
			if feed {
				f.produce(t, 30)
			}
			got = len(kafkatest.ReadCommitted(t, seeds, out))
			// Stop only a process that took its signals over (it logs
			// that it listens after that).
			return got >= n && strings.Contains(c.output.String(), "http listening")
		}) {
			t.Fatalf("processor %v: %d of %d output records after 2 minutes:\n%s", args, got, n, c.tail())
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
