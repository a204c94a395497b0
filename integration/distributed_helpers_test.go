package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// The shape of every distributed test job (issue 16's "Must show"): G = 8
// partition groups over 8 input partitions, and the broker's minimum
// session timeout, so that a dead instance's groups move as soon as Kafka
// allows.
const (
	distGroups     = 8
	distSession    = 6 * time.Second
	distInterval   = 250 * time.Millisecond
	distStopWithin = time.Minute
)

// distJob is one job of the built processor in job.mode distributed: its
// topics, its S3 checkpoints, its steady input, and the instances (separate
// processes of the same configuration and environment) that share it.
type distJob struct {
	*s3Job
	typ   string
	check func(in, out []*kgo.Record) string
	feed  *steadyFeeder
	insts []*instance
	adm   *kadm.Client // made at its first use
	// bin is the program every instance runs (the processor, or a Go
	// job's).
	bin string
}

// newDistJob creates a job of type typ (copy or wordcount, or go-wordcount:
// examples/gowordcount, the word count as a Go job on package runner,
// checked as the built-in one) on 8 input and output partitions with S3
// checkpoints, every instance of it distributed over 8 partition groups
// with a 6 s session timeout. The input is not fed yet (startFeeding).
func newDistJob(t *testing.T, typ string) *distJob {
	t.Helper()
	seeds := kafkatest.Bootstrap(t)
	if typ == "go-wordcount" {
		j := newDistJob(t, "wordcount")
		j.bin = program(t, "../examples/gowordcount")
		j.env = append(j.env, "ONCEFLOW_JOB_TYPE=go")
		return j
	}
	j := &distJob{typ: typ, bin: processor(t), s3Job: newS3Job(t, seeds, "dist-"+typ, jobSpec{typ: typ, partitions: distGroups,
		pebble: typ == "wordcount", interval: distInterval})}
	for _, cj := range crashJobs {
		if cj.typ == typ {
			j.check = cj.check
		}
	}
	if j.check == nil {
		t.Fatalf("no output check for job type %s", typ)
	}
	j.env = append(j.env,
		"ONCEFLOW_JOB_MODE=distributed",
		"ONCEFLOW_JOB_PARTITION_GROUPS="+strconv.Itoa(distGroups),
		"ONCEFLOW_DISTRIBUTED_SESSION_TIMEOUT="+distSession.String(),
		// A group reads one partition: a second source subtask would idle.
		"ONCEFLOW_JOB_PARALLELISM=1",
	)
	t.Cleanup(func() {
		if t.Failed() {
			for _, in := range j.insts {
				in.saveLog()
			}
		}
	})
	return j
}

// startFeeding produces 100 input records a second from now on.
func (j *distJob) startFeeding(seed uint64) {
	j.feed = startSteadyFeeder(j.t, j.seeds, j.in, seed, 10, 100*time.Millisecond)
}

// instance is one processor process of a distributed job.
type instance struct {
	j        *distJob
	name     string
	proc     *child
	addrFile string
	addr     string
	paused   bool
}

// start runs one more instance, named name, with a state directory of its
// own, and waits until its API answers.
func (j *distJob) start(name string) *instance {
	t := j.t
	t.Helper()
	in := &instance{j: j, name: name, addrFile: filepath.Join(j.dir, "addr-"+name)}
	env := append(append([]string{}, j.env...), "ONCEFLOW_STATE_DIR="+filepath.Join(j.dir, "state-"+name))
	in.proc = startProgram(t, j.bin, env, "run", "--config", j.cfg, "--addr-file", in.addrFile)
	j.insts = append(j.insts, in)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !eventually(ctx, 50*time.Millisecond, func() bool {
		in.alive()
		b, err := os.ReadFile(in.addrFile)
		in.addr = strings.TrimSpace(string(b))
		return err == nil && in.addr != ""
	}) {
		t.Fatalf("instance %s: no HTTP address in %s within a minute:\n%s", name, in.addrFile, in.proc.tail())
	}
	return in
}

// alive fails the test if the instance exited (a group failure that ends
// the process shows here, with its log) or the feeder failed.
func (in *instance) alive() {
	in.j.t.Helper()
	if in.proc.exited() {
		in.j.t.Fatalf("instance %s exited with %v:\n%s", in.name, in.proc.err, in.proc.tail())
	}
	if in.j.feed != nil {
		in.j.feed.check(in.j.t)
	}
}

// saveLog writes the instance's whole output to the temporary folder's
// root, for a failure's post-mortem, and logs where.
func (in *instance) saveLog() {
	p := filepath.Join(os.TempDir(), in.j.name+"-"+in.name+".log")
	if err := os.WriteFile(p, []byte(in.proc.output.String()), 0o644); err == nil {
		in.j.t.Logf("instance %s: its whole output is in %s", in.name, p)
	}
}

// pause stops the process with SIGSTOP: it keeps its sockets but does
// nothing, as in a long GC pause or a frozen VM.
func (in *instance) pause() {
	in.j.t.Helper()
	if err := in.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		in.j.t.Fatalf("instance %s: SIGSTOP: %v", in.name, err)
	}
	in.paused = true
}

// resume continues a paused process with SIGCONT.
func (in *instance) resume() {
	in.j.t.Helper()
	if err := in.proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		in.j.t.Fatalf("instance %s: SIGCONT: %v", in.name, err)
	}
	in.paused = false
}

// groupStatus is what the tests read of one entry of /api/v1/job's
// "groups" in distributed mode (package runner's groupBody).
type groupStatus struct {
	Group int `json:"group"`
	// State is the group's in the instance: claiming, running, stopping.
	State string `json:"state"`
	// PipelineState is its engine job's (the first stage's, or the first
	// stage not RUNNING).
	PipelineState string `json:"pipeline_state"`
	// LastCheckpoint is null until the group completed a checkpoint in
	// this instance (the first stage's id).
	LastCheckpoint *struct {
		ID int64 `json:"id"`
	} `json:"last_checkpoint"`
}

// distStatus is what the tests read of /api/v1/job in distributed mode.
type distStatus struct {
	Mode   string        `json:"mode"`
	State  string        `json:"state"`
	Groups []groupStatus `json:"groups"`
	Fenced int64         `json:"fenced"`
}

// running reports whether the group's pipeline runs in the instance.
func (g groupStatus) running() bool { return g.State == "running" && g.PipelineState == "RUNNING" }

// lastCheckpoint is the id of the group's last completed checkpoint in the
// instance, 0 for none.
func (g groupStatus) lastCheckpoint() int64 {
	if g.LastCheckpoint == nil {
		return 0
	}
	return g.LastCheckpoint.ID
}

// status reads the instance's /api/v1/job; it fails the test if the
// process exited (a group that fails ends it), does not answer, or says
// it is not distributed.
func (in *instance) status() distStatus {
	t := in.j.t
	t.Helper()
	in.alive()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + in.addr + "/api/v1/job")
	if err != nil {
		t.Fatalf("instance %s: GET /api/v1/job: %v", in.name, err)
	}
	defer resp.Body.Close()
	var st distStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("instance %s: GET /api/v1/job: %v", in.name, err)
	}
	if st.Mode != "distributed" {
		t.Fatalf("instance %s: /api/v1/job says mode %q, want distributed (state %s):\n%s", in.name, st.Mode, st.State, in.proc.tail())
	}
	return st
}

// groups lists the partition groups the instance runs, sorted.
func (in *instance) groups() []int { return runningIn(in.status()) }

// owners maps each partition group to the instances among ins whose API
// says they run it.
func owners(ins []*instance) map[int][]string {
	own := map[int][]string{}
	for _, in := range ins {
		for _, g := range in.groups() {
			own[g] = append(own[g], in.name)
		}
	}
	return own
}

// spread describes who runs what, for logs: "a:[0 3 6] b:[1 4 7] ...".
func spread(ins []*instance) string {
	var s []string
	for _, in := range ins {
		s = append(s, fmt.Sprintf("%s:%v", in.name, in.groups()))
	}
	return strings.Join(s, " ")
}

// waitAllRunning waits until every partition group runs on exactly one of
// ins, and cond (if not nil) holds of the ownership; it returns how long
// that took. It fails the test, naming what and the last ownership seen,
// after within.
func (j *distJob) waitAllRunning(what string, ins []*instance, within time.Duration, cond func(map[int][]string) bool) time.Duration {
	t := j.t
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var own map[int][]string
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		own = owners(ins)
		for g := range distGroups {
			if len(own[g]) != 1 {
				return false
			}
		}
		return cond == nil || cond(own)
	}) {
		var logs []string
		for _, in := range ins {
			logs = append(logs, fmt.Sprintf("--- instance %s:\n%s", in.name, in.proc.tail()))
		}
		t.Fatalf("%s: after %s the partition groups are not each running on one instance: %v\n%s", what, within, own, strings.Join(logs, "\n"))
	}
	return time.Since(start)
}

// waitOutputFlows waits until the output's last stable offsets (summed
// over its partitions: committed records and their markers) grow by at
// least n while every instance of ins stays up.
func (j *distJob) waitOutputFlows(what string, ins []*instance, n int64, within time.Duration) {
	t := j.t
	t.Helper()
	from := j.stableOffsets()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	got := from
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		for _, in := range ins {
			in.alive()
		}
		got = j.stableOffsets()
		return got >= from+n
	}) {
		t.Fatalf("%s: the output's last stable offsets grew by %d in %s, want %d; groups %s", what, got-from, within, n, spread(ins))
	}
}

// stableOffsets is the sum of the output partitions' last stable offsets.
func (j *distJob) stableOffsets() int64 {
	t := j.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if j.adm == nil {
		j.adm = kadm.NewClient(kafkatest.Client(t, j.seeds))
	}
	lso, err := j.adm.ListCommittedOffsets(ctx, j.out)
	if err != nil {
		t.Fatalf("last stable offsets of %s: %v", j.out, err)
	}
	var sum int64
	lso.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// wantOutputs is how many output records the input calls for.
func (j *distJob) wantOutputs(in []*kgo.Record) int {
	if j.typ == "wordcount" {
		return wordsIn(in)
	}
	return len(in)
}

// finish stops the input, waits until the committed output holds every
// result, stops every instance of ins at once with SIGTERM (each must exit
// 0 within distStopWithin), and checks that the output is exact and that
// no transaction is left open on the output or on a repartition topic of
// the job.
func (j *distJob) finish(ins []*instance) {
	t := j.t
	t.Helper()
	sent := j.feed.stopFeeding(t)
	want := j.wantOutputs(sent)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		for _, in := range ins {
			in.alive()
		}
		got = j.output()
		return len(got) >= want
	}) {
		t.Fatalf("output incomplete: %d of %d records 90s after the input stopped; groups %s", len(got), want, spread(ins))
	}
	stopAll(t, ins, distStopWithin)
	got = j.output()
	if d := j.check(sent, got); d != "" {
		t.Errorf("the output is not exactly once (%d input records, %d output records): %s", len(sent), len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, j.seeds, j.out)
	for _, topic := range j.repartitionTopics() {
		kafkatest.OpenTransactionsHoldNothing(t, j.seeds, topic)
	}
	for _, in := range j.insts {
		t.Logf("instance %s: warnings logged: %s", in.name, warnings(in.proc.output.String()))
	}
	t.Logf("%d input records, %d output records, exact; input produces over 1s: %v", len(sent), len(got), j.feed.stallList())
}

// stopAll sends SIGTERM to every instance of ins at once (a scale-down to
// zero) and requires each to exit 0 within d.
func stopAll(t *testing.T, ins []*instance, d time.Duration) {
	t.Helper()
	for _, in := range ins {
		_ = in.proc.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(d)
	var bad []string
	for _, in := range ins {
		if !in.proc.wait(time.Until(deadline)) {
			in.proc.kill()
			bad = append(bad, fmt.Sprintf("--- instance %s did not stop within %s after SIGTERM:\n%s", in.name, d, in.proc.tail()))
			continue
		}
		if in.proc.err != nil {
			bad = append(bad, fmt.Sprintf("--- instance %s exited with %v after SIGTERM:\n%s", in.name, in.proc.err, in.proc.tail()))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("stopping every instance with SIGTERM:\n%s", strings.Join(bad, "\n"))
	}
}

// repartitionTopics lists the job's repartition topics
// (<job>-<operator uid>-repartition; none for a copy).
func (j *distJob) repartitionTopics() []string {
	t := j.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(kafkatest.Client(t, j.seeds)).ListTopics(ctx)
	if err != nil {
		t.Fatalf("listing topics: %v", err)
	}
	var out []string
	for _, name := range topics.Names() {
		if strings.HasPrefix(name, j.name+"-") && strings.HasSuffix(name, "-repartition") {
			out = append(out, name)
		}
	}
	return out
}

// groupOf is the partition group of an input partition.
func groupOf(p int32) int { return int(p) % distGroups }

// seqOf is the feeder's sequence number of a copied record (its "seq"
// header), -1 without one.
func seqOf(r *kgo.Record) int {
	for _, h := range r.Headers {
		if h.Key == "seq" {
			if n, err := strconv.Atoi(string(h.Value)); err == nil {
				return n
			}
		}
	}
	return -1
}

// partitionsBySeq maps each record the feeder got acknowledged so far to
// the input partition it went to.
func (f *steadyFeeder) partitionsBySeq() map[int]int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int]int32, len(f.sent))
	for _, r := range f.sent {
		out[seqOf(r)] = r.Partition
	}
	return out
}

// outputTail follows a topic with a read_committed consumer from its
// start and notes when it first saw each copied record (by its "seq"
// header): the moment its transaction became visible, within a fetch.
type outputTail struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	seen map[int]time.Time
	err  error
}

// startOutputTail starts following topic until the test ends.
func startOutputTail(t *testing.T, seeds []string, topic string) *outputTail {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("output tail: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &outputTail{cancel: cancel, done: make(chan struct{}), seen: map[int]time.Time{}}
	go func() { // owned by o; ends when the test ends
		defer close(o.done)
		defer cl.Close()
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			o.mu.Lock()
			fs.EachError(func(topic string, p int32, err error) {
				if ctx.Err() == nil && o.err == nil {
					o.err = fmt.Errorf("fetching %s/%d: %w", topic, p, err)
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				if s := seqOf(r); s >= 0 {
					if _, ok := o.seen[s]; !ok {
						o.seen[s] = now
					}
				}
			})
			o.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-o.done
	})
	return o
}

// firstSeen is the earliest time at or after since that the tail first
// saw a record for which pick holds.
func (o *outputTail) firstSeen(since time.Time, pick func(seq int) bool) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var first time.Time
	for s, at := range o.seen {
		if !at.Before(since) && pick(s) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// engineJobs names the engine jobs of partition group g, as the engine's
// log lines do: <job>/pg-<g>, and for a word count also its second stage
// <job>/count/pg-<g> (jobs/stages.go).
func (j *distJob) engineJobs(g int) []string {
	names := []string{fmt.Sprintf("%s/pg-%d", j.name, g)}
	if j.typ == "wordcount" {
		names = append(names, fmt.Sprintf("%s/count/pg-%d", j.name, g))
	}
	return names
}

// finalSavepoints reads, from an instance's log, the final savepoints its
// partition groups stopped with when they were revoked (internal/groups'
// "stopped with a final savepoint" line): group -> savepoint keys (one per
// stage).
func finalSavepoints(logs string) map[int][]string {
	group := regexp.MustCompile(` partition_group=(\d+)`)
	keys := regexp.MustCompile(` savepoint=("[^"]*"|\S+)`)
	out := map[int][]string{}
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, `msg="partition group revoked: stopped with a final savepoint"`) {
			continue
		}
		g, k := group.FindStringSubmatch(line), keys.FindStringSubmatch(line)
		if g == nil || k == nil {
			continue
		}
		n, _ := strconv.Atoi(g[1])
		out[n] = append(out[n], strings.Split(strings.Trim(k[1], `"`), ", ")...)
	}
	return out
}

// restoredFrom finds in logs (an instance's output) the engine's
// "restoring" lines of engine job (engine/job.go restorePoint) and reports
// whether one restored one of the savepoints: as its path with
// savepoint=true, or as the checkpoint a claim copied (restored_from). It
// returns that line, or else the last "restoring" line of the job ("" if
// none).
func restoredFrom(logs, job string, savepoints []string) (bool, string) {
	var last string
	for line := range strings.Lines(logs) {
		fields := strings.Fields(line)
		if !slices.Contains(fields, "msg=restoring") ||
			!slices.Contains(fields, "job="+job) && !slices.Contains(fields, fmt.Sprintf("job=%q", job)) {
			continue
		}
		last = strings.TrimSpace(line)
		for _, sp := range savepoints {
			if slices.Contains(fields, "restored_from="+sp) || slices.Contains(fields, "path="+sp) && slices.Contains(fields, "savepoint=true") {
				return true, last
			}
		}
	}
	return false, last
}

// fenceNotices are the lines of logs whose message (msg=, not an error
// quoted in err=) says the instance was fenced: a zombie's notice that
// another instance owns its groups now.
func fenceNotices(logs string) []string {
	msg := regexp.MustCompile(` msg=("[^"]*"|\S+)`)
	var out []string
	for line := range strings.Lines(logs) {
		if m := msg.FindStringSubmatch(line); m != nil && strings.Contains(m[1], "fenced") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// logLine is one line of an instance's log (log.format text): its time,
// its message and its attributes.
type logLine struct {
	at    time.Time
	msg   string
	attrs map[string]string
}

var logAttr = regexp.MustCompile(`([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)`)

// parseLog reads the lines of logs that carry a time and a message.
func parseLog(logs string) []logLine {
	var out []logLine
	for line := range strings.Lines(logs) {
		l := logLine{attrs: map[string]string{}}
		for _, m := range logAttr.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			if _, dup := l.attrs[m[1]]; !dup {
				l.attrs[m[1]] = v
			}
		}
		at, err := time.Parse(time.RFC3339Nano, l.attrs["time"])
		if err != nil || l.attrs["msg"] == "" {
			continue
		}
		l.at, l.msg = at, l.attrs["msg"]
		out = append(out, l)
	}
	return out
}

// inGroups reports whether a partition_groups attribute ("[3 4 5]")
// holds g.
func inGroups(list string, g int) bool {
	return slices.Contains(strings.Fields(strings.Trim(list, "[]")), strconv.Itoa(g))
}

// takeoverPhases describes, from the log of group g's new owner since the
// kill (lines), each step of the takeover as its time after the kill: the
// member's view of the rebalance (its client's log lines, at log.level
// debug), the assignment, then for each stage its checkpoint storage
// opened, the claims, the group running (built), each stage's restore
// point read, its sink's fencing and recovery, and its first completed
// checkpoint, in the order they happened. jobs are the group's engine
// jobs (engineJobs): a name holding "/<uid>/" or "/<uid>-" of stage 2's
// keyed operator is stage 2's. It also returns when the group was
// assigned, after the kill (0: not seen).
func takeoverPhases(lines []logLine, g int, jobs []string, killedAt time.Time) (string, time.Duration) {
	type step struct {
		at   time.Time
		what string
	}
	var steps []step
	add := func(at time.Time, what string) { steps = append(steps, step{at, what}) }
	stage2 := ""
	if len(jobs) > 1 {
		// <job>/<uid>/pg-<g>: the uid names stage 2's storage, engine
		// job and transactional ids.
		parts := strings.Split(jobs[1], "/")
		stage2 = parts[len(parts)-2]
	}
	stageOf := func(name string) string {
		if stage2 != "" && (strings.Contains(name, "/"+stage2+"/") || strings.Contains(name, "/"+stage2+"-")) {
			return "stage 2"
		}
		return "stage 1"
	}
	seen := map[string]bool{}
	first := func(key string) bool {
		if seen[key] {
			return false
		}
		seen[key] = true
		return true
	}
	var assigned, running time.Time
	group := strconv.Itoa(g)
	for _, l := range lines {
		a := l.attrs
		mine := a["group"] == group || a["partition_group"] == group
		switch {
		case assigned.IsZero() && strings.HasPrefix(l.msg, "kafka group client: "):
			// The group protocol's steps, as the member's client logs them.
			step := map[string]string{
				"heartbeat errored":       "rebalance noticed",
				"joining group":           "joining",
				"joined":                  "joined",
				"joined, balancing group": "joined (leader)",
				"synced":                  "synced",
			}[strings.TrimPrefix(l.msg, "kafka group client: ")]
			if step == "rebalance noticed" && !strings.Contains(a["err"], "REBALANCE_IN_PROGRESS") {
				step = "heartbeat failed: " + a["err"]
			}
			if step != "" && first(step) {
				add(l.at, step)
			}
		case assigned.IsZero():
			if l.msg == "partition groups assigned" && inGroups(a["partition_groups"], g) {
				assigned = l.at
				add(l.at, "assigned")
			}
		case !mine:
		case l.msg == "checkpoints in S3":
			add(l.at, stageOf(a["location"])+" storage opened")
		case strings.HasPrefix(l.msg, "claimed the group"):
			add(l.at, "a stage claimed")
		case l.msg == "partition group running" && running.IsZero():
			running = l.at
			add(l.at, "running (built in "+a["built_in"]+")")
		case l.msg == "restoring" || strings.HasPrefix(l.msg, "the newest checkpoint is an empty claim"):
			add(l.at, stageOf(a["job"])+" restore point read")
		case strings.HasPrefix(l.msg, "kafka sink: lingering transactions aborted"):
			add(l.at, fmt.Sprintf("%s sink %s fenced %s ids (%s)", stageOf(a["prefix"]), a["subtask"], a["fenced"], durations(a)))
		case strings.HasPrefix(l.msg, "kafka sink: subtask recovered"):
			add(l.at, fmt.Sprintf("%s sink %s recovered (%s)", stageOf(a["job"]), a["subtask"], durations(a)))
		case l.msg == "checkpoint complete" && !running.IsZero() && first("checkpoint "+a["job"]):
			add(l.at, stageOf(a["job"])+" first checkpoint "+a["checkpoint"])
		}
	}
	slices.SortStableFunc(steps, func(x, y step) int { return x.at.Compare(y.at) })
	var out []string
	for _, s := range steps {
		out = append(out, fmt.Sprintf("%s +%s", s.what, s.at.Sub(killedAt).Round(time.Millisecond)))
	}
	if assigned.IsZero() {
		return strings.Join(out, ", "), 0
	}
	return strings.Join(out, ", "), assigned.Sub(killedAt)
}

// durations lists the attributes of a log line that are durations
// ("took=1.2s listing=80ms"), sorted by name.
func durations(attrs map[string]string) string {
	var out []string
	for k, v := range attrs {
		if _, err := time.ParseDuration(v); err == nil && strings.TrimLeft(v, "0123456789.") != "" {
			out = append(out, k+" "+v)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
