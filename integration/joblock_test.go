package integration

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// Two processors of one job on one checkpoint directory would restore the
// same checkpoint and fence each other's transactions. The second refuses
// at start, naming the lock file and the pid of the first; once the first
// dies by SIGKILL, its lock is taken over and the job resumes exactly.
func TestSecondProcessorOfAJobRefuses(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "lock", jobSpec{partitions: 2, seed: 7})
	f := j.feed
	f.produce(t, 200)
	first := j.run(nil)
	j.flowUntil(first, "the first processor", 1, 0)

	second := j.run(nil)
	if !second.wait(30 * time.Second) {
		second.kill()
		t.Fatalf("a second processor of job %s on the same checkpoint directory kept running next to the first:\n%s", j.name, second.tail())
	}
	lock := filepath.Join(j.dir, "checkpoints", j.name+".lock")
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
	third := j.run(nil)
	j.waitOutput(third, "the processor after the killed one", len(f.sent), time.Minute)
	third.stop(time.Minute)
	if d := checkCopy(f.sent, j.output()); d != "" {
		t.Fatalf("output is not exactly once: %s", d)
	}
}
