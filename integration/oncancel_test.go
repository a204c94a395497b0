package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

var httpAddrRE = regexp.MustCompile(`msg="http listening" addr=(\S+)`)

// post sends an empty POST to the processor's API at path and decodes a
// JSON answer into out (when not nil); it fails the test on a transport
// error or a status other than want.
func (c *child) post(path string, want int, out any) {
	c.t.Helper()
	m := httpAddrRE.FindStringSubmatch(c.output.String())
	if m == nil {
		c.t.Fatalf("POST %s: the processor logged no HTTP address:\n%s", path, c.tail())
	}
	cl := &http.Client{Timeout: time.Minute}
	resp, err := cl.Post("http://"+m[1]+path, "application/json", nil)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		c.t.Fatalf("POST %s: status %d, want %d", path, resp.StatusCode, want)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			c.t.Fatalf("POST %s: decoding the answer: %v", path, err)
		}
	}
}

// §3 on the built binary: a copy job with checkpoint.on_cancel delete
// takes a savepoint, goes on committing, and is cancelled (POST
// /api/v1/stop?savepoint=false). The cancel deletes the checkpoints and
// keeps the savepoint. The next plain run must not resume from that stale
// savepoint, which wrote again everything committed after it: it refuses
// in one line naming the savepoint, on_cancel, --from and --fresh, and
// writes nothing. --from the savepoint then works, its duplicates being
// exactly the records replayed after it (one run per input partition),
// and a plain run after that continues without a duplicate.
func TestCancelWithDeleteDoesNotReplayCommittedOutput(t *testing.T) {
	began := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "oncancel", jobSpec{seed: 17})
	del := []string{"--set", "checkpoint.on_cancel=delete"}
	j.feed.produce(t, 100)
	c := j.run(nil, del...)
	j.flowUntil(c, "the first run", 200, 20)
	var sp struct{ Path string }
	c.post("/api/v1/savepoint", http.StatusOK, &sp)
	if sp.Path == "" {
		t.Fatalf("the savepoint answer names no path:\n%s", c.tail())
	}
	atSavepoint := len(j.feed.sent)
	// More input, committed by checkpoints after the savepoint.
	j.flowUntil(c, "after the savepoint", atSavepoint+300, 20)
	// Every record fed is committed before the cancel (a cancel aborts
	// what the last checkpoint did not hold; that part is not at stake).
	j.waitOutput(c, "all input committed before the cancel", len(j.feed.sent), time.Minute)
	c.post("/api/v1/stop?savepoint=false", http.StatusAccepted, nil)
	if !c.wait(time.Minute) {
		c.kill()
		t.Fatalf("the processor did not exit within a minute of the cancel:\n%s", c.tail())
	}
	if got := completeCheckpoints(t, j.jobDir); len(got) != 1 || got[newestID(t, got)] != sp.Path {
		t.Fatalf("after the cancel with delete, the job directory holds %v, want only the savepoint %s", got, sp.Path)
	}
	before := j.output()
	if d := checkCopy(j.feed.sent, before); d != "" {
		t.Fatalf("before the cancel the output was not exactly the input: %s", d)
	}

	c = j.refusedRun("a plain run after the cancel", del...)
	var line string
	for _, l := range strings.Split(c.output.String(), "\n") {
		if strings.Contains(l, sp.Path) && strings.Contains(l, "on_cancel") && strings.Contains(l, "--from") && strings.Contains(l, "--fresh") {
			line = l
		}
	}
	if line == "" || c.err == nil {
		t.Fatalf("the run after the cancel exited with %v and no line names the savepoint %s, on_cancel, --from and --fresh:\n%s", c.err, sp.Path, c.tail())
	}
	if n := len(j.output()); n != len(before) {
		t.Fatalf("the refused run wrote %d records", n-len(before))
	}
	t.Logf("refused with: %s", line)

	// --from the savepoint, on purpose: the records after it come twice,
	// as one run per partition, nothing else does. Input fed after the
	// start, on every key, follows the replay in every partition: once it
	// is all out, so is the replay.
	c = j.run(nil, append(del, "--from", sp.Path)...)
	j.feed.produce(t, 200)
	j.waitSeqs(c, "--from the savepoint", j.feed.sent[len(j.feed.sent)-200:])
	c.stop(time.Minute)
	got := j.output()
	seqs := map[string]int{}
	for _, r := range got {
		seqs[string(r.Headers[0].Value)]++
	}
	dups, problem := replayDuplicates(j.feed.sent, seqs, func(r *kgo.Record) []string { return []string{string(r.Headers[0].Value)} })
	if problem != "" {
		t.Fatalf("after --from %s: %s", sp.Path, problem)
	}

	// A plain run after it resumes the adopted lineage: new input once.
	j.feed.produce(t, 100)
	c = j.run(nil, del...)
	j.waitSeqs(c, "a plain run after --from", j.feed.sent[len(j.feed.sent)-100:])
	c.stop(time.Minute)
	final := j.output()
	seen := map[string]bool{}
	for _, r := range got {
		seen[string(r.Headers[0].Value)] = true
	}
	var fresh []*kgo.Record
	for _, r := range final {
		if !seen[string(r.Headers[0].Value)] {
			fresh = append(fresh, r)
		}
	}
	if d := checkCopy(j.feed.sent[len(j.feed.sent)-100:], fresh); d != "" || len(final) != len(got)+100 {
		t.Fatalf("the plain run after --from wrote %d records, want the 100 new ones once: %s", len(final)-len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("%d input records; %d replayed twice after --from; %s in all", len(j.feed.sent), dups, time.Since(began).Round(time.Second))
}

// waitSeqs polls until every record of want (by its seq header) is in
// the committed output; it fails the test, naming what, if c exits or
// two minutes pass.
func (j *procJob) waitSeqs(c *child, what string, want []*kgo.Record) {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	missing := len(want)
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			j.t.Fatalf("%s: the processor exited with %v:\n%s", what, c.err, c.tail())
		}
		seen := map[string]bool{}
		for _, r := range j.output() {
			seen[string(r.Headers[0].Value)] = true
		}
		missing = 0
		for _, r := range want {
			if !seen[string(r.Headers[0].Value)] {
				missing++
			}
		}
		return missing == 0 && strings.Contains(c.output.String(), "http listening")
	}) {
		j.t.Fatalf("%s: %d of %d records still missing from the output after 2 minutes:\n%s", what, missing, len(want), c.tail())
	}
}

// newestID returns the highest id of m.
func newestID(t *testing.T, m map[int64]string) int64 {
	t.Helper()
	best := int64(-1)
	for id := range m {
		best = max(best, id)
	}
	return best
}
