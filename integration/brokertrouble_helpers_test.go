package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

// steadyFeeder produces the input of a job at a steady pace from its own
// goroutine while brokers stop, die and come back. Its producer is
// idempotent with acks=all and retries without limit, so a record counts
// as sent only once acknowledged, and each is written once whatever the
// brokers do. A produce that fails anyway (beyond feedWait) ends the
// feeding and fails the test at the next check.
type steadyFeeder struct {
	topic string
	stop  chan struct{}
	done  chan struct{}
	// close closes the producer (once): at the end of the feeding, or to
	// cut a produce under way short when the test ends early (kgo waits
	// for an answer to records in flight whatever their context says).
	close func()

	mu     sync.Mutex
	sent   []*kgo.Record
	err    error
	stalls []string // produces that took over a second: how long, when
}

// feedWait bounds one batch's produce (its context, and the records'
// delivery timeout, which kgo also applies to records in flight): a
// broker outage the tests cause lasts far less.
const feedWait = 2 * time.Minute

// startSteadyFeeder produces perTick records to topic every tick until
// stopped (by stopFeeding, or by the test's end).
func startSteadyFeeder(t *testing.T, seeds []string, topic string, seed uint64, perTick int, tick time.Duration) *steadyFeeder {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(feedWait))
	if err != nil {
		t.Fatalf("feeder: %v", err)
	}
	f := &steadyFeeder{topic: topic, stop: make(chan struct{}), done: make(chan struct{}), close: sync.OnceFunc(cl.Close)}
	rng := rand.New(rand.NewPCG(seed, 17))
	go func() { // owned by f; ends on stop or a failed produce
		defer close(f.done)
		defer f.close()
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		for n := 0; ; {
			select {
			case <-f.stop:
				return
			case <-ticker.C:
			}
			batch := make([]*kgo.Record, 0, perTick)
			for range perTick {
				r := inputLine(rng, n)
				r.Topic = topic
				batch = append(batch, r)
				n++
			}
			ctx, cancel := context.WithTimeout(context.Background(), feedWait)
			began := time.Now()
			err := cl.ProduceSync(ctx, batch...).FirstErr()
			took := time.Since(began)
			cancel()
			f.mu.Lock()
			if took > time.Second {
				f.stalls = append(f.stalls, fmt.Sprintf("%s at %s", took.Round(time.Millisecond), began.Format("15:04:05.000")))
			}
			if err != nil {
				f.err = fmt.Errorf("producing input to %s (%d records sent before): %w", topic, len(f.sent), err)
			} else {
				f.sent = append(f.sent, batch...)
			}
			f.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// A test that failed must not wait here for a broker it left down.
	t.Cleanup(func() {
		f.close()
		f.halt()
	})
	return f
}

func (f *steadyFeeder) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// check fails the test if a produce failed.
func (f *steadyFeeder) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatalf("feeder: %v", f.err)
	}
}

// count is how many records were acknowledged so far.
func (f *steadyFeeder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

// stopFeeding stops the feeder, once the produce under way (if any) got
// its answer, and returns every record it sent.
func (f *steadyFeeder) stopFeeding(t *testing.T) []*kgo.Record {
	t.Helper()
	f.halt()
	f.check(t)
	return f.sent
}

// troubleJob is one processor running one job on its own topics, for the
// broker-trouble tests: its config, its HTTP API, its input feeder.
type troubleJob struct {
	t        *testing.T
	typ      string
	name     string
	seeds    []string
	in, out  string
	dir      string
	cfg      string
	addrFile string
	check    func(in, out []*kgo.Record) string
	// env is added to the processor's environment (onS3 sets it).
	env []string
	// s3Location is s3://<bucket>/<prefix>/<job> of a job onS3 put in S3.
	s3Location string

	proc *child
	feed *steadyFeeder
	addr string
}

// troubleTolerance is the jobs' kafka.outage_tolerance. A broker
// restarted after SIGKILL is away for longer than its JVM's start: it
// cannot register again until the session of its killed incarnation has
// timed out (DUPLICATE_BROKER_REGISTRATION for broker.session.timeout.ms,
// 9 s), so 5 s down cost the jobs 20 s on this machine, and more under a
// full make test. The tolerance leaves twice that.
const troubleTolerance = 60 * time.Second

// troubleConfig are the settings every broker-trouble job shares:
// checkpoints that fail during an outage are tolerated for
// (3+1) × 15s = troubleTolerance, and the transaction timeout is well
// above the sink's budget (interval + 4 × 15s + restart delay + outage
// tolerance ≈ 121s).
var troubleConfig = `
job: {name: %[1]s, type: %[2]s, parallelism: 2}
kafka: {brokers: [%[3]s], outage_tolerance: ` + troubleTolerance.String() + `}
source: {topic: %[4]s, start: earliest}
sink: {topic: %[5]s, delivery: exactly_once, transactional_id_prefix: %[1]s, transaction_timeout: 5m}
checkpoint: {interval: 200ms, timeout: 15s, tolerable_failures: 3, retain: 3, dir: %[6]s/checkpoints}
state: {backend: pebble, dir: %[6]s/state, incremental: true}
restart: {strategy: fixed-delay, attempts: 3, delay: 1s}
http: {listen: "127.0.0.1:0"}
log: {level: info}
`

// newTroubleJob writes the config of a job of type typ (copy or
// wordcount) with a unique name, reading <name>-in and writing
// <name>-out. The topics are not created yet: createTopics or the test
// does that.
func newTroubleJob(t *testing.T, typ string, seeds []string) *troubleJob {
	t.Helper()
	j := &troubleJob{t: t, typ: typ, seeds: seeds, dir: t.TempDir()}
	j.name = fmt.Sprintf("trouble-%s-%d-%d", typ, os.Getpid(), time.Now().UnixNano()%1e6)
	j.in, j.out = j.name+"-in", j.name+"-out"
	for _, cj := range crashJobs {
		if cj.typ == typ {
			j.check = cj.check
		}
	}
	if j.check == nil {
		t.Fatalf("no output check for job type %s", typ)
	}
	quoted := make([]string, len(seeds))
	for i, s := range seeds {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	j.cfg = writeConfig(t, j.dir, fmt.Sprintf(troubleConfig, j.name, typ, strings.Join(quoted, ", "), j.in, j.out, j.dir))
	j.addrFile = filepath.Join(j.dir, "addr")
	return j
}

// onS3 makes the job keep its checkpoints in the test kit's S3 service
// (s3test.Bootstrap), under a prefix of its own, instead of its
// directory. Call it before start.
func (j *troubleJob) onS3() {
	j.t.Helper()
	ep := s3test.Bootstrap(j.t)
	prefix := strings.TrimSuffix(s3test.Prefix(j.t), "/")
	j.env = s3CheckpointEnv(ep, prefix, filepath.Join(j.dir, "state"))
	j.s3Location = "s3://" + ep.Bucket + "/" + prefix + "/" + j.name
}

// createTopics creates the input and output topics with two partitions,
// placed by the cluster.
func (j *troubleJob) createTopics() {
	j.t.Helper()
	kafkatest.CreateTopic(j.t, j.seeds, j.in, 2)
	kafkatest.CreateTopic(j.t, j.seeds, j.out, 2)
}

// start feeds the input and runs the processor, and returns once its API
// answers and it has completed a checkpoint with output committed.
func (j *troubleJob) start(seed uint64) {
	t := j.t
	t.Helper()
	j.feed = startSteadyFeeder(t, j.seeds, j.in, seed, 10, 100*time.Millisecond)
	j.proc = startChild(t, j.env, "run", "--config", j.cfg, "--addr-file", j.addrFile)
	t.Cleanup(func() {
		if t.Failed() {
			j.saveLog()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		j.alive()
		b, err := os.ReadFile(j.addrFile)
		j.addr = strings.TrimSpace(string(b))
		return err == nil && j.addr != ""
	}) {
		t.Fatalf("%s: no HTTP address in %s within 2 minutes:\n%s", j.name, j.addrFile, j.proc.tail())
	}
	j.waitCheckpoints(1, 2*time.Minute)
	if !eventually(ctx, time.Second, func() bool {
		j.alive()
		return len(kafkatest.ReadCommitted(t, j.seeds, j.out)) > 0
	}) {
		t.Fatalf("%s: no output committed within 2 minutes:\n%s", j.name, j.proc.tail())
	}
}

// alive fails the test if the processor exited.
func (j *troubleJob) alive() {
	j.t.Helper()
	if j.proc.exited() {
		j.t.Fatalf("%s: the processor exited with %v:\n%s", j.name, j.proc.err, j.proc.tail())
	}
	j.feed.check(j.t)
}

// saveLog writes the processor's whole output next to the test's
// temporary files' root, for a failure's post-mortem, and logs where.
func (j *troubleJob) saveLog() {
	if j.proc == nil {
		return
	}
	p := filepath.Join(os.TempDir(), j.name+".log")
	if err := os.WriteFile(p, []byte(j.proc.output.String()), 0o644); err == nil {
		j.t.Logf("%s: the processor's whole output is in %s", j.name, p)
	}
}

// jobStatus is what the tests read of GET /api/v1/job and /healthz.
type jobStatus struct {
	State          string `json:"state"`
	Restarts       int64  `json:"restarts"`
	LastCheckpoint int64  `json:"last_checkpoint"`
	// WaitingForCluster is /healthz's.
	WaitingForCluster bool `json:"waiting_for_cluster"`
	Cluster           struct {
		Reachable          bool    `json:"reachable"`
		UnreachableSeconds float64 `json:"unreachable_seconds"`
		ToleranceSeconds   float64 `json:"tolerance_seconds"`
		Outages            int64   `json:"outages"`
	} `json:"cluster"`
	// Code is the HTTP status of the answer.
	Code int `json:"-"`
}

// status reads the job's API; it fails the test if the processor exited
// or does not answer.
func (j *troubleJob) status() jobStatus { return j.get("/api/v1/job") }

// health reads the job's /healthz.
func (j *troubleJob) health() jobStatus { return j.get("/healthz") }

func (j *troubleJob) get(path string) jobStatus {
	t := j.t
	t.Helper()
	j.alive()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + j.addr + path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", j.name, path, err)
	}
	defer resp.Body.Close()
	var st jobStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("%s: GET %s: %v", j.name, path, err)
	}
	st.Code = resp.StatusCode
	return st
}

// The processor's log lines for the start and the end of an outage
// (internal/outage's Tracker).
const (
	outageStartLog = "the Kafka cluster does not answer; waiting for it"
	outageEndLog   = "the Kafka cluster answers again"
)

// waitFlowing waits until the input feeder got records more records
// acknowledged and then checkpoints more checkpoints completed: after a
// broker came back, input flows again and the job works on it, before the
// next trouble starts. It returns how long the input took to flow again
// (its first batch).
func (j *troubleJob) waitFlowing(records int, checkpoints int64, within time.Duration) time.Duration {
	t := j.t
	t.Helper()
	start := time.Now()
	from := j.feed.count()
	var flowing time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if !eventually(ctx, 50*time.Millisecond, func() bool {
		j.alive()
		n := j.feed.count()
		if n > from && flowing == 0 {
			flowing = time.Since(start)
		}
		return n >= from+records
	}) {
		t.Fatalf("%s: the input feeder's producer got %d records acknowledged in %s, want %d (its produces over 1s: %v)",
			j.name, j.feed.count()-from, within, records, j.feed.stallList())
	}
	j.waitCheckpoints(checkpoints, within)
	return flowing
}

func (f *steadyFeeder) stallList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.stalls...)
}

// waitCheckpoints waits until n more checkpoints completed than when it
// was called: the job is doing its work.
func (j *troubleJob) waitCheckpoints(n int64, within time.Duration) {
	t := j.t
	t.Helper()
	from := j.status().LastCheckpoint
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var st jobStatus
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		st = j.status()
		return st.LastCheckpoint >= from+n
	}) {
		t.Fatalf("%s: %d checkpoints completed in %s (state %s, %d restarts), want %d:\n%s",
			j.name, st.LastCheckpoint-from, within, st.State, st.Restarts, n, j.proc.tail())
	}
}

// finish stops the input, waits until the output holds every result,
// stops the processor with SIGTERM (a savepoint) and checks the committed
// output is exact and no transaction is left open. It returns the job's
// status before the stop.
func (j *troubleJob) finish() jobStatus {
	t := j.t
	t.Helper()
	sent := j.feed.stopFeeding(t)
	want := len(sent)
	if j.typ == "wordcount" {
		want = 0
		for _, r := range sent {
			want += len(strings.Fields(string(r.Value)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, time.Second, func() bool {
		j.alive()
		got = kafkatest.ReadCommitted(t, j.seeds, j.out)
		return len(got) >= want
	}) {
		t.Fatalf("%s: output incomplete: %d of %d records 2 minutes after the input stopped:\n%s", j.name, len(got), want, j.proc.tail())
	}
	st := j.status()
	j.proc.stop(time.Minute)
	got = kafkatest.ReadCommitted(t, j.seeds, j.out)
	if d := j.check(sent, got); d != "" {
		t.Errorf("%s: output is not exactly once (%d input records, %d output): %s", j.name, len(sent), len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, j.seeds, j.out)
	t.Logf("%s: %d input records, %d output records, %d restarts; warnings logged: %s; input produces over 1s: %v",
		j.name, len(sent), len(got), st.Restarts, warnings(j.proc.output.String()), j.feed.stallList())
	return st
}

// warnings counts the processor's WARN and ERROR lines by message, so
// that a passing run still shows how close to failing it came (commits
// retried, outages waited out).
func warnings(logs string) string {
	n := map[string]int{}
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		msg := line
		if _, rest, ok := strings.Cut(line, " msg="); ok {
			msg = rest
			if strings.HasPrefix(msg, `"`) {
				if end := strings.Index(msg[1:], `"`); end >= 0 {
					msg = msg[1 : end+1]
				}
			} else if sp := strings.IndexByte(msg, ' '); sp >= 0 {
				msg = msg[:sp]
			}
		}
		n[strings.TrimSpace(msg)]++
	}
	if len(n) == 0 {
		return "none"
	}
	var out []string
	for _, m := range slices.Sorted(maps.Keys(n)) {
		out = append(out, fmt.Sprintf("%q×%d", m, n[m]))
	}
	return strings.Join(out, ", ")
}
