package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/integration/kafkatest"
)

// Two processors of one job on one checkpoint directory would restore the
// same checkpoint and fence each other's transactions. The second refuses
// at start, naming the lock file and the pid of the first; once the first
// dies by SIGKILL, its lock is taken over and the job resumes exactly.
func TestSecondProcessorOfAJobRefuses(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	in := kafkatest.Topic(t, seeds, 2)
	out := kafkatest.Topic(t, seeds, 2)
	dir := t.TempDir()
	name := fmt.Sprintf("lock-%d", time.Now().UnixNano()%1e6)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
job: {name: %s, type: copy, parallelism: 2}
kafka: {brokers: [%q]}
source: {topic: %s, start: earliest}
sink: {topic: %s, delivery: exactly_once, transactional_id_prefix: %s, transaction_timeout: 5m}
checkpoint: {interval: 100ms, timeout: 30s, dir: %s/checkpoints}
state: {backend: memory}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
`, name, seeds[0], in, out, name, dir))
	f := &feeder{cl: kafkatest.Client(t, seeds), topic: in, rng: rand.New(rand.NewPCG(7, 8))}
	f.produce(t, 200)

	first := startChild(t, nil, "run", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		return first.exited() || len(kafkatest.ReadCommitted(t, seeds, out)) > 0
	}) || first.exited() {
		t.Fatalf("the first processor did not start copying:\n%s", first.tail())
	}

	second := startChild(t, nil, "run", "--config", cfg)
	if !second.wait(30 * time.Second) {
		second.kill()
		t.Fatalf("a second processor of job %s on the same checkpoint directory kept running next to the first:\n%s", name, second.tail())
	}
	lock := filepath.Join(dir, "checkpoints", name+".lock")
	pid := strconv.Itoa(first.cmd.Process.Pid)
	lines := strings.Split(strings.TrimSpace(second.output.String()), "\n")
	last := lines[len(lines)-1]
	if second.err == nil || !strings.Contains(last, lock) || !strings.Contains(last, pid) {
		t.Fatalf("the second processor exited with %v; want a failure whose last line names %s and pid %s:\n%s", second.err, lock, pid, second.tail())
	}
	if first.exited() {
		t.Fatalf("the first processor ended when the second was refused:\n%s", first.tail())
	}

	// A lock left by a killed process is taken over.
	first.kill()
	f.produce(t, 200)
	third := startChild(t, nil, "run", "--config", cfg)
	if !eventually(ctx, 200*time.Millisecond, func() bool {
		return third.exited() || len(kafkatest.ReadCommitted(t, seeds, out)) >= len(f.sent)
	}) || third.exited() {
		t.Fatalf("the processor after the killed one did not take the lock over and finish the copy:\n%s", third.tail())
	}
	third.stop(time.Minute)
	if d := checkCopy(f.sent, kafkatest.ReadCommitted(t, seeds, out)); d != "" {
		t.Fatalf("output is not exactly once: %s", d)
	}
}
