package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

// s3Job is a procJob whose checkpoints live in the test's S3 service
// (s3test.Bootstrap: versitygw on 127.0.0.1, or ONCEFLOW_S3_ENDPOINT),
// under a prefix of its own; env is what points the processor there.
type s3Job struct {
	*procJob
	ep     s3test.Endpoint
	prefix string // without the trailing "/"
	env    []string
}

func newS3Job(t *testing.T, seeds []string, name string, s jobSpec) *s3Job {
	t.Helper()
	ep := s3test.Bootstrap(t)
	j := &s3Job{procJob: newProcJob(t, seeds, name, s), ep: ep, prefix: strings.TrimSuffix(s3test.Prefix(t), "/")}
	// the local job lock's directory (and Pebble's, as the kit sets it)
	j.env = s3CheckpointEnv(ep, j.prefix, filepath.Join(j.dir, "state"))
	return j
}

// s3CheckpointEnv is the environment that makes the processor keep its
// checkpoints in ep's bucket under prefix (no trailing "/"), whatever its
// configuration file says, with stateDir as its state.dir.
func s3CheckpointEnv(ep s3test.Endpoint, prefix, stateDir string) []string {
	return []string{
		"ONCEFLOW_CHECKPOINT_DIR=s3://" + ep.Bucket + "/" + prefix,
		"ONCEFLOW_CHECKPOINT_S3_ENDPOINT=" + ep.URL,
		"ONCEFLOW_CHECKPOINT_S3_REGION=" + ep.Region,
		"ONCEFLOW_CHECKPOINT_S3_PATH_STYLE=true",
		"ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID=" + ep.AccessKeyID,
		"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=" + ep.SecretAccessKey,
		"ONCEFLOW_STATE_DIR=" + stateDir,
	}
}

// manifests lists the job's manifest keys (checkpoints, savepoints and
// their committed markers) relative to manifest/.
func (j *s3Job) manifests() []string {
	j.t.Helper()
	root := j.prefix + "/" + j.name + "/manifest/"
	out, err := s3test.Client(j.t, j.ep).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String(j.ep.Bucket), Prefix: aws.String(root)})
	if err != nil {
		j.t.Fatalf("listing %s: %v", root, err)
	}
	var names []string
	for _, o := range out.Contents {
		names = append(names, strings.TrimPrefix(aws.ToString(o.Key), root))
	}
	return names
}

// noLocalCheckpoints fails the test if the checkpoint directory of the
// job's file configuration was created: with S3 nothing goes there.
func (j *s3Job) noLocalCheckpoints() {
	j.t.Helper()
	if _, err := os.Stat(filepath.Dir(j.jobDir)); err == nil {
		j.t.Fatalf("the local checkpoint directory %s exists, though checkpoint.dir is s3://", filepath.Dir(j.jobDir))
	}
}

func wordsIn(in []*kgo.Record) int {
	n := 0
	for _, r := range in {
		n += len(strings.Fields(string(r.Value)))
	}
	return n
}

// The built processor with checkpoints in S3 (versitygw) on the real
// broker: a word count with incremental Pebble checkpoints killed with
// SIGKILL twice mid-stream and restarted plainly resumes from its newest
// S3 checkpoint; then a stop with a savepoint (SIGTERM) and a plain run
// that resumes from it, which must replay nothing. The output is exactly
// the counts of the input and no transaction is left open.
func TestS3CheckpointsKillRestartAndSavepoint(t *testing.T) {
	start := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newS3Job(t, seeds, "s3chk", jobSpec{typ: "wordcount", pebble: true, seed: 16})
	f := j.feed

	f.produce(t, 200)
	for kill := range 2 {
		c := j.run(j.env)
		what := fmt.Sprintf("run %d", kill+1)
		j.flowUntil(c, what, len(j.output())+300, 20)
		// Let a few checkpoints complete past the output seen.
		time.Sleep(500 * time.Millisecond)
		if !strings.Contains(c.output.String(), fmt.Sprintf("msg=\"checkpoints in S3\" location=s3://%s/%s/%s", j.ep.Bucket, j.prefix, j.name)) {
			t.Fatalf("%s: the processor did not say where in S3 it keeps checkpoints:\n%s", what, c.tail())
		}
		if strings.Contains(c.output.String(), "fenced") {
			t.Fatalf("%s: a single processor logged a fence:\n%s", what, c.tail())
		}
		c.kill()
		t.Logf("%s: killed with SIGKILL; manifests %v", what, j.manifests())
	}

	// A plain restart finishes the input; SIGTERM stops it with a savepoint.
	f.produce(t, 100)
	c := j.run(j.env)
	j.waitOutput(c, "run after the kills", wordsIn(f.sent), 2*time.Minute)
	c.stop(time.Minute)
	if strings.Contains(c.output.String(), "fenced") {
		t.Fatalf("run after the kills: a single processor logged a fence:\n%s", c.tail())
	}
	saved := strings.TrimSpace(c.output.String()[strings.LastIndex(strings.TrimSpace(c.output.String()), "\n")+1:])
	if !strings.Contains(saved, j.name+"/manifest/savepoint-") {
		t.Fatalf("the stop printed %q, not the S3 key of a savepoint of job %s:\n%s", saved, j.name, c.tail())
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	if d := checkWordCount(f.sent, j.output()); d != "" {
		t.Fatalf("after two SIGKILLs and a stop, the output is not exactly the counts of the input: %s", d)
	}

	// A plain run resumes from the savepoint: only new input is counted.
	f.produce(t, 100)
	c = j.run(j.env)
	j.waitOutput(c, "run after the savepoint", wordsIn(f.sent), 2*time.Minute)
	if out := c.output.String(); !strings.Contains(out, "msg=restoring") || !strings.Contains(out, "path="+saved) {
		t.Fatalf("the run after the stop did not restore the savepoint %s:\n%s", saved, c.tail())
	}
	c.stop(time.Minute)
	out := strings.TrimSpace(c.output.String())
	saved2 := out[strings.LastIndex(out, "\n")+1:]
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	if d := checkWordCount(f.sent, j.output()); d != "" {
		t.Fatalf("after resuming from the savepoint, the output is not exactly the counts of the input: %s", d)
	}

	// run --from s3://<bucket>/<key> of the newest savepoint: adopted,
	// restored, and nothing replayed.
	f.produce(t, 50)
	c = j.run(j.env, "--from", "s3://"+j.ep.Bucket+"/"+saved2)
	j.waitOutput(c, "run --from the second savepoint", wordsIn(f.sent), 2*time.Minute)
	if out := c.output.String(); !strings.Contains(out, "restored_from="+saved2) {
		t.Fatalf("run --from s3://%s/%s did not restore an adopted copy of it:\n%s", j.ep.Bucket, saved2, c.tail())
	}
	c.stop(time.Minute)
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	got := j.output()
	if d := checkWordCount(f.sent, got); d != "" {
		t.Fatalf("after run --from the newest savepoint, the output is not exactly the counts of the input: %s", d)
	}
	j.noLocalCheckpoints()

	// The checkpoints commands read the job's S3 checkpoints (keys from
	// the environment, as the run took them).
	loc := "s3://" + j.ep.Bucket + "/" + j.prefix + "/" + j.name
	list := startChild(t, j.env, "checkpoints", "list", loc)
	if !list.wait(time.Minute) || list.err != nil || !strings.Contains(list.output.String(), saved) ||
		!strings.Contains(list.output.String(), "complete, committed") || strings.Contains(list.output.String(), "DAMAGED") {
		t.Fatalf("checkpoints list %s: %v; want the savepoint %s complete and committed, nothing damaged:\n%s", loc, list.err, saved, list.tail())
	}
	inspect := startChild(t, j.env, "checkpoints", "inspect", "s3://"+j.ep.Bucket+"/"+saved)
	if !inspect.wait(time.Minute) || inspect.err != nil || !strings.Contains(inspect.output.String(), "savepoint ") ||
		!strings.Contains(inspect.output.String(), "committed: its transactions are known to be committed") {
		t.Fatalf("checkpoints inspect %s: %v:\n%s", saved, inspect.err, inspect.tail())
	}
	sps := startChild(t, j.env, "savepoints", "list", loc)
	if !sps.wait(time.Minute) || sps.err != nil || !strings.Contains(sps.output.String(), saved) ||
		!strings.Contains(sps.output.String(), "complete, committed") || strings.Contains(sps.output.String(), "DAMAGED") {
		t.Fatalf("savepoints list %s: %v; want the savepoint %s complete and committed, nothing damaged:\n%s", loc, sps.err, saved, sps.tail())
	}
	t.Logf("checkpoints list:\n%s\nsavepoints list:\n%s", list.output.String(), sps.output.String())
	t.Logf("%d input records, %d output records, exact; manifests %v; %s", len(f.sent), len(got), j.manifests(), time.Since(start).Round(time.Millisecond))
}

// A second processor started on the same job on the same machine is
// refused by the local lock in the state directory (S3 checkpoints have
// no local checkpoint directory to lock), naming the lock, with exit 1;
// the first one runs on and its output is exact.
func TestS3CheckpointsSecondProcessorOnTheSameMachineIsRefused(t *testing.T) {
	start := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newS3Job(t, seeds, "s3lock", jobSpec{typ: "wordcount", seed: 17})
	f := j.feed
	f.produce(t, 100)
	first := j.run(j.env)
	j.flowUntil(first, "first processor", 200, 20)

	second := j.run(j.env)
	if !second.wait(time.Minute) {
		second.kill()
		t.Fatalf("the second processor still runs a minute after starting beside the first:\n%s", second.tail())
	}
	out := strings.TrimSpace(second.output.String())
	if code := second.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out, "state.dir") || !strings.Contains(out, "job lock") ||
		!strings.Contains(out, j.name+".lock") || strings.Contains(out, "msg=restoring") {
		t.Fatalf("the second processor: exit %d; want 1, refused by the job lock in state.dir before restoring anything:\n%s", code, out)
	}
	f.produce(t, 50)
	j.waitOutput(first, "first processor", wordsIn(f.sent), 2*time.Minute)
	first.stop(time.Minute)
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	if d := checkWordCount(f.sent, j.output()); d != "" {
		t.Fatalf("the output is not exactly the counts of the input: %s", d)
	}
	t.Logf("second processor refused: %s; %s", out[strings.LastIndex(out, "\n")+1:], time.Since(start).Round(time.Millisecond))
}

// A start against an S3 endpoint where nothing listens is refused at once,
// in one line naming the endpoint and the bucket, with exit code 1 (the
// service may come back, as an unreachable broker may); so are a wrong
// secret and a missing bucket, saying which. No secret is printed.
func TestS3CheckpointsClosedPortRefusesToStart(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newS3Job(t, seeds, "s3refused", jobSpec{})
	closed := "http://" + closedAddr(t)
	const wrongSecret = "not-the-secret-4711"
	for _, tc := range []struct {
		name, endpoint, bucket, why string
		env                         []string
	}{
		{"closed port", closed, j.ep.Bucket, "unreachable", []string{"ONCEFLOW_CHECKPOINT_S3_ENDPOINT=" + closed}},
		{"wrong secret", j.ep.URL, j.ep.Bucket, "refused the credentials", []string{"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=" + wrongSecret}},
		{"missing bucket", j.ep.URL, "onceflow-missing", "does not exist", []string{"ONCEFLOW_CHECKPOINT_DIR=s3://onceflow-missing/" + j.prefix}},
	} {
		start := time.Now()
		env := append(append([]string{}, j.env...), tc.env...)
		c := startChild(t, env, "run", "--config", j.cfg)
		if !c.wait(2 * time.Minute) {
			c.kill()
			t.Fatalf("%s: the processor still runs 2 minutes after starting:\n%s", tc.name, c.tail())
		}
		out := strings.TrimSpace(c.output.String())
		last := out[strings.LastIndex(out, "\n")+1:]
		if code := c.cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(last, "processor: ") ||
			!strings.Contains(last, tc.endpoint) || !strings.Contains(last, "bucket "+tc.bucket) || !strings.Contains(last, tc.why) {
			t.Fatalf("%s: exit %d; want 1 and a last line naming %s, bucket %s and %q:\n%s", tc.name, code, tc.endpoint, tc.bucket, tc.why, out)
		}
		if strings.Contains(out, j.ep.SecretAccessKey) || strings.Contains(out, wrongSecret) {
			t.Fatalf("%s: the output shows a secret access key:\n%s", tc.name, out)
		}
		t.Logf("%s: refused in %s: %s", tc.name, time.Since(start).Round(time.Millisecond), last)
	}
}

// closedAddr is a loopback address where nothing listens (a port just
// released).
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// processor run --fresh with S3 checkpoints: the job's objects are set
// aside under <job>.set-aside-<time>/ (the savepoint of the stop among
// them), and the new run starts over from source.start: every input is
// copied once more, exactly once.
func TestS3FreshSetsAsideAndStartsOver(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newS3Job(t, seeds, "s3fresh", jobSpec{seed: 17})
	j.feed.produce(t, 100)
	c := j.run(j.env)
	j.waitOutput(c, "first run", 100, 2*time.Minute)
	c.stop(time.Minute)
	before := j.manifests()

	c = j.run(j.env, "--fresh")
	j.waitOutput(c, "run --fresh", 200, 2*time.Minute)
	// A few checkpoints past the output, then a stop that must not add any.
	time.Sleep(300 * time.Millisecond)
	c.stop(time.Minute)
	if out := c.output.String(); !strings.Contains(out, "fresh start: the job's retained checkpoints and savepoints are ignored and set aside") ||
		!strings.Contains(out, "moved_to=s3://"+j.ep.Bucket+"/"+j.prefix+"/"+j.name+".set-aside-") {
		t.Fatalf("run --fresh did not log where it set the checkpoints aside:\n%s", c.tail())
	}
	listed, err := s3test.Client(t, j.ep).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String(j.ep.Bucket), Prefix: aws.String(j.prefix + "/" + j.name + ".set-aside-")})
	if err != nil {
		t.Fatal(err)
	}
	var aside []string
	for _, o := range listed.Contents {
		if k := aws.ToString(o.Key); strings.Contains(k, "/manifest/") {
			aside = append(aside, k[strings.Index(k, "/manifest/")+len("/manifest/"):])
		}
	}
	slices.Sort(aside)
	slices.Sort(before)
	if !slices.Equal(aside, before) {
		t.Fatalf("set aside: manifests %v, want the first run's %v", aside, before)
	}
	if got := len(j.output()); got != 200 {
		t.Fatalf("after run --fresh the output holds %d records, want 200 (every input once per run)", got)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("set aside %d manifests; the fresh run's: %v", len(aside), j.manifests())
}
