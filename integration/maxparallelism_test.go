package integration

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// words counts the words of the input lines: the number of output
// records of a word count that read them all.
func words(in []*kgo.Record) int {
	n := 0
	for _, r := range in {
		n += len(strings.Fields(string(r.Value)))
	}
	return n
}

// exitCode is the exit code of an exited child (-1 when it died of a
// signal or did not exit).
func (c *child) exitCode() int {
	if c.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// refusedRun runs the processor with args and waits for it to exit on
// its own within a minute; a run that restores a checkpoint instead fails
// the test at once. It returns the child.
func (j *procJob) refusedRun(what string, args ...string) *child {
	j.t.Helper()
	c := j.run(nil, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(ctx, 50*time.Millisecond, func() bool {
		if strings.Contains(c.output.String(), "msg=restoring") {
			c.kill()
			j.t.Fatalf("%s: the processor restored a checkpoint instead of refusing:\n%s", what, c.tail())
		}
		return c.exited()
	})
	if !c.exited() {
		c.kill()
		j.t.Fatalf("%s: the processor did not exit within a minute:\n%s", what, c.tail())
	}
	return c
}

// §1 on the built binary: a word count stopped with a savepoint at the
// default max parallelism (128) is started again with --set
// job.max_parallelism=64. It must not restore (its keyed state would land
// in the wrong key groups: about half the counts started over, silently):
// it exits 2, the code of a configuration to change, with one line naming
// both values and the keyed operator, and writes nothing. A run with 128
// again then resumes from the savepoint, and the output is exact.
func TestChangedMaxParallelismIsRefusedAtStart(t *testing.T) {
	began := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "maxp", jobSpec{typ: "wordcount", pebble: true, seed: 13})
	j.feed.produce(t, 200)
	c := j.run(nil)
	j.flowUntil(c, "the first run", 600, 20)
	c.stop(time.Minute)
	sp := newestSavepoint(t, j.jobDir)
	before := len(j.output())

	c = j.refusedRun("--set job.max_parallelism=64", "--set", "job.max_parallelism=64")
	var line string
	for _, l := range strings.Split(c.output.String(), "\n") {
		if strings.Contains(l, "128") && strings.Contains(l, "64") && strings.Contains(l, `"count"`) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no line names max parallelism 128 and 64 and the operator \"count\":\n%s", c.tail())
	}
	if !strings.Contains(line, sp) {
		t.Errorf("the refusal does not name the savepoint %s: %s", sp, line)
	}
	if code := c.exitCode(); code != 2 {
		t.Errorf("the refusal exited with %v (code %d), want 2 (a configuration to change):\n%s", c.err, code, c.tail())
	}
	if n := len(j.output()); n != before {
		t.Fatalf("the refused run wrote %d records", n-before)
	}
	t.Logf("refused with: %s", line)

	// Back at 128: the savepoint is restored and the counts go on.
	j.feed.produce(t, 100)
	c = j.run(nil)
	j.waitOutput(c, "the run at max parallelism 128", words(j.feed.sent), 2*time.Minute)
	c.stop(time.Minute)
	if d := checkWordCount(j.feed.sent, j.output()); d != "" {
		t.Fatalf("after the refusal and a run at 128, the output is not exact: %s", d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("%d input lines, %d counts, exact; %s in all", len(j.feed.sent), words(j.feed.sent), time.Since(began).Round(time.Second))
}
