package testdriver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/runner"
)

// KafkaOptions configure a KafkaDriver. Bootstrap is required; the rest
// has defaults fit for a test on a cluster other tests share.
type KafkaOptions struct {
	// Bootstrap is the cluster's bootstrap address, host:port (several
	// comma-separated), as the test's own Kafka gives it (a testcontainers
	// Kafka module's Brokers, say). It becomes kafka.brokers.
	Bootstrap string
	// Name is job.name (default the runner.Job's Name, else "testdriver").
	// The job's checkpoints live under a directory of t.TempDir, so two
	// tests may share a name.
	Name string
	// InputTopic and OutputTopic are source.topic and sink.topic (default
	// <name>-input-<random> and <name>-output-<random>, fresh for every
	// StartKafka). StartKafka creates them with Partitions partitions
	// (default 1) and the cluster's default replication factor unless
	// they exist.
	InputTopic, OutputTopic string
	Partitions              int
	// ConfigFile is the job's YAML configuration file (run --config),
	// if any. Keys the driver sets (see Set) override it.
	ConfigFile string
	// Set holds key=value overrides (run --set), applied after the
	// driver's own: kafka.brokers, job.name, source.topic, sink.topic,
	// source.start=earliest, sink.transactional_id_prefix (<name>-<random>:
	// a fresh one for every StartKafka, kept by Restart),
	// checkpoint.interval (CheckpointInterval), checkpoint.dir and
	// state.dir (under t.TempDir), restart.strategy=none (a failure ends
	// the job and fails the next step, instead of restarting it quietly),
	// http.listen=127.0.0.1:0 (the API Stop calls).
	Set []string
	// CheckpointInterval is checkpoint.interval (default 200ms): output is
	// committed, and visible to WaitCommitted, once per interval.
	CheckpointInterval time.Duration
	// ConnectTimeout bounds the wait for the cluster to answer at
	// StartKafka (default 10 s).
	ConnectTimeout time.Duration
	// StartTimeout bounds the creation of the topics, the wait for the job
	// to build and serve its API after it was started (default 60 s), and
	// Stop's wait for it to end.
	StartTimeout time.Duration
	// Log receives the job's log (its stderr), as well as the driver's
	// buffer that failures quote the end of (default: only that buffer).
	Log io.Writer
}

// KafkaDriver runs a Go job's program in this process against a real
// Kafka cluster: the same code path as the program's main
// (runner.Execute with "run"), so the job gets its configuration,
// checkpoints in a directory, the Kafka source and the two-phase-commit
// Kafka sink, its HTTP API and its savepoint on stop. The test produces
// input with Produce and reads what the sink committed as a
// read_committed consumer does (WaitCommitted, Committed).
//
// Every method must be called from the test's goroutine. A step that
// fails, or a job that ended unasked (its exit code and the end of its
// log), fails the test through t.Fatalf. t.Cleanup cancels a job still
// running and closes the driver's clients. While the job runs, the
// process's SIGINT and SIGTERM go to it, as they would to the program: a
// first one stops it with a savepoint, a second cancels it.
type KafkaDriver struct {
	t    TB
	job  runner.Job
	opts KafkaOptions
	args []string // run's command line
	dir  string
	log  logbuf.Buffer

	prod, cons *kgo.Client
	adm        *kadm.Client

	// The running job, if any: its context's cancel, its exit code once
	// it ended, its --addr-file, its stdout.
	cancel context.CancelFunc
	done   chan int
	addr   string
	stdout *logbuf.Buffer
	runs   int

	prefix string                            // sink.transactional_id_prefix
	fetch  func(context.Context) kgo.Fetches // k.cons.PollFetches

	committed []*kgo.Record
	pos       map[int32]int64 // next offset to read, per output partition
	closed    bool
}

// StartKafka creates the topics, starts job (a Go job's program: a
// runner.Job with a Dataflow; runner.Job{Dataflow: df} for a bare
// jobs.Dataflow) as "run" with opts' configuration, and returns once the
// job was built and serves its API. A cluster that does not answer at
// opts.Bootstrap within ConnectTimeout fails the test, naming the
// address; a job that ends while starting fails it with its exit code
// and log. t must not be nil.
func StartKafka(t TB, job runner.Job, opts KafkaOptions) *KafkaDriver {
	t.Helper()
	if job.Dataflow == nil {
		t.Fatalf("testdriver: StartKafka: the runner.Job has no Dataflow (the processor's built-in jobs run as a binary; see integration's procJob)")
	}
	if strings.TrimSpace(opts.Bootstrap) == "" {
		t.Fatalf("testdriver: StartKafka: KafkaOptions.Bootstrap is empty: give the host:port of the test's Kafka")
	}
	suffix := randomSuffix()
	opts.Name = cmp.Or(opts.Name, job.Name, "testdriver")
	opts.InputTopic = cmp.Or(opts.InputTopic, opts.Name+"-input-"+suffix)
	opts.OutputTopic = cmp.Or(opts.OutputTopic, opts.Name+"-output-"+suffix)
	opts.Partitions = max(opts.Partitions, 1)
	opts.CheckpointInterval = cmp.Or(opts.CheckpointInterval, 200*time.Millisecond)
	opts.ConnectTimeout = cmp.Or(opts.ConnectTimeout, 10*time.Second)
	opts.StartTimeout = cmp.Or(opts.StartTimeout, time.Minute)
	k := &KafkaDriver{t: t, job: job, opts: opts, dir: t.TempDir(), pos: map[int32]int64{}, prefix: opts.Name + "-" + suffix}
	t.Cleanup(k.close)

	seeds := strings.Split(opts.Bootstrap, ",")
	var err error
	if k.prod, err = kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(opts.InputTopic)); err != nil {
		t.Fatalf("testdriver: StartKafka: a client for %s: %v", opts.Bootstrap, err)
	}
	k.adm = kadm.NewClient(k.prod)
	ctx, cancel := context.WithTimeout(context.Background(), opts.ConnectTimeout)
	defer cancel()
	if err := k.prod.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (KafkaOptions.ConnectTimeout %s)", err, opts.ConnectTimeout)
		}
		t.Fatalf("testdriver: StartKafka: no Kafka answers at %s (KafkaOptions.Bootstrap): %v", opts.Bootstrap, err)
	}
	// A cluster that answered may still be slow to create topics (a
	// loaded machine, a broker just started): that gets StartTimeout.
	ctx, cancelCreate := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancelCreate()
	for _, topic := range []string{opts.InputTopic, opts.OutputTopic} {
		if err := k.createTopic(ctx, topic); err != nil {
			t.Fatalf("testdriver: StartKafka: creating topic %s on %s: %v", topic, opts.Bootstrap, err)
		}
	}
	if k.cons, err = kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(opts.OutputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond)); err != nil {
		t.Fatalf("testdriver: StartKafka: a consumer for %s: %v", opts.Bootstrap, err)
	}
	k.fetch = k.cons.PollFetches

	k.args = []string{opts.Name, "run",
		"--set", "kafka.brokers=" + opts.Bootstrap,
		"--set", "job.name=" + opts.Name,
		"--set", "source.topic=" + opts.InputTopic,
		"--set", "source.start=earliest",
		"--set", "sink.topic=" + opts.OutputTopic,
		"--set", "sink.transactional_id_prefix=" + k.prefix,
		"--set", "checkpoint.interval=" + opts.CheckpointInterval.String(),
		"--set", "checkpoint.dir=" + filepath.Join(k.dir, "checkpoints"),
		"--set", "state.dir=" + filepath.Join(k.dir, "state"),
		"--set", "restart.strategy=none",
		"--set", "http.listen=127.0.0.1:0",
		"--connect-timeout", opts.ConnectTimeout.String(),
	}
	if opts.ConfigFile != "" {
		k.args = append(k.args, "--config", opts.ConfigFile)
	}
	for _, kv := range opts.Set {
		k.args = append(k.args, "--set", kv)
	}
	k.start()
	return k
}

// randomSuffix is 6 hex digits that keep topics and transactional ids
// of one StartKafka apart from every other's on a shared cluster.
func randomSuffix() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (k *KafkaDriver) createTopic(ctx context.Context, topic string) error {
	resp, err := k.adm.CreateTopic(ctx, int32(k.opts.Partitions), -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return err
	}
	// A created topic reaches every broker's metadata a little later; the
	// job checks its topics there when it is built.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		td, err := k.adm.ListTopics(ctx, topic)
		if err == nil && td.Has(topic) && td[topic].Err == nil && len(td[topic].Partitions) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("created, and not in the cluster's metadata within %s (KafkaOptions.StartTimeout)", k.opts.StartTimeout)
		case <-tick.C:
		}
	}
}

func (k *KafkaDriver) fatalf(format string, args ...any) {
	k.t.Helper()
	k.t.Fatalf("testdriver: job %s on %s: "+format, append([]any{k.opts.Name, k.opts.Bootstrap}, args...)...)
}

// logTail is the end of the job's log, for failures.
func (k *KafkaDriver) logTail() string {
	s := k.log.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return "\n--- the job's log (end) ---\n" + s
}

// diagnosis is what a stalled job shows, for a failure that waited in
// vain: its status from the API (its state, its checkpoints) and the
// stacks of this process's goroutines, grouped (the job runs here).
func (k *KafkaDriver) diagnosis() string {
	var b strings.Builder
	b.WriteString("\n--- the job's status (GET /api/v1/job) ---\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+k.addr+"/api/v1/job", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
			resp.Body.Close()
			b.Write(body)
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "unavailable: %v", err)
	}
	b.WriteString("\n--- the cluster's transactions ---\n")
	b.WriteString(k.transactions(ctx))
	b.WriteString("\n--- goroutines ---\n")
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// transactions lists the transactional ids of the job's prefix with their
// states, and the producers with a transaction open on the output topic
// (what holds its last stable offset back), for a diagnosis.
func (k *KafkaDriver) transactions(ctx context.Context) string {
	var b strings.Builder
	listed, err := k.adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		fmt.Fprintf(&b, "listing transactions: %v\n", err)
	}
	for _, id := range slices.Sorted(maps.Keys(listed)) {
		if l := listed[id]; strings.HasPrefix(id, k.prefix) {
			fmt.Fprintf(&b, "%s: producer id %d, %s\n", id, l.ProducerID, l.State)
		}
	}
	described, err := k.adm.DescribeProducers(ctx, kadm.TopicsSet{k.opts.OutputTopic: nil})
	if err != nil {
		fmt.Fprintf(&b, "describing the producers of %s: %v\n", k.opts.OutputTopic, err)
	}
	described.EachProducer(func(p kadm.DescribedProducer) {
		if p.CurrentTxnStartOffset >= 0 {
			fmt.Fprintf(&b, "%s/%d: producer id %d epoch %d has a transaction open from offset %d (last written %s)\n",
				p.Topic, p.Partition, p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset, time.UnixMilli(p.LastTimestamp).UTC().Format(time.RFC3339Nano))
		}
	})
	return b.String()
}

// start runs the job's program with run's command line on a goroutine
// and waits for its --addr-file.
func (k *KafkaDriver) start() {
	k.t.Helper()
	k.runs++
	addrFile := filepath.Join(k.dir, fmt.Sprintf("addr-%d", k.runs))
	args := append(slices.Clone(k.args), "--addr-file", addrFile)
	var stderr io.Writer = &k.log
	if k.opts.Log != nil {
		stderr = io.MultiWriter(&k.log, k.opts.Log)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	stdout := &logbuf.Buffer{}
	go func() { done <- runner.Execute(ctx, k.job, args, stdout, stderr) }()
	k.cancel, k.done, k.stdout, k.addr = cancel, done, stdout, ""
	deadline := time.Now().Add(k.opts.StartTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			k.addr = strings.TrimSpace(string(b))
			return
		}
		select {
		case code := <-done:
			k.done <- code
			k.fatalf("the job ended while starting (exit %d)%s", code, k.logTail())
		case <-tick.C:
			if time.Now().After(deadline) {
				k.fatalf("the job did not serve its API within %s (KafkaOptions.StartTimeout)%s", k.opts.StartTimeout, k.logTail())
			}
		}
	}
}

// running fails the test unless the job runs; a job that ended unasked
// fails it with its exit code and log.
func (k *KafkaDriver) running(step string) {
	k.t.Helper()
	if k.closed {
		k.fatalf("%s after the test ended", step)
	}
	if k.done == nil {
		k.fatalf("%s: the job is not running (Stop or Cancel ended it; Restart runs it again)", step)
	}
	select {
	case code := <-k.done:
		k.done <- code
		k.fatalf("%s: the job ended unasked (exit %d)%s", step, code, k.logTail())
	default:
	}
}

// Addr is the running job's HTTP API address (host:port): /healthz,
// /metrics, /api/v1/job and the processor's stop and savepoint commands
// (--http) reach it.
func (k *KafkaDriver) Addr() string { return k.addr }

// Topics are the job's input and output topics.
func (k *KafkaDriver) Topics() (input, output string) {
	return k.opts.InputTopic, k.opts.OutputTopic
}

// Log is the job's log so far (its stderr, every run).
func (k *KafkaDriver) Log() string { return k.log.String() }

// Produce writes records to the input topic (a record's Topic, when set,
// wins), synchronously: it returns once the cluster acknowledged every
// one. Partitions are chosen by the client's default partitioner (by
// key). A refused record fails the test, naming its topic.
func (k *KafkaDriver) Produce(records ...*kgo.Record) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), k.opts.StartTimeout)
	defer cancel()
	rs := make([]*kgo.Record, len(records))
	for i, r := range records {
		rs[i] = copyRecord(r)
		rs[i].Topic = cmp.Or(r.Topic, k.opts.InputTopic)
	}
	if err := k.prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		k.fatalf("Produce to %s: %v", k.opts.InputTopic, err)
	}
}

// poll reads what the output topic committed into k.committed until ctx
// ends or until reached returns true; it reports whether reached did.
// The records of every fetch are kept before anything else is looked at:
// a fetch can come back just as ctx ends, and the consumer's position is
// past its records already.
func (k *KafkaDriver) poll(ctx context.Context, reached func() bool) (bool, error) {
	for !reached() {
		fs := k.fetch(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			k.pos[r.Partition] = max(k.pos[r.Partition], r.Offset+1)
			if !r.Attrs.IsControl() {
				k.committed = append(k.committed, copyRecord(r))
			}
		})
		var errs []error
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				errs = append(errs, fmt.Errorf("reading %s/%d: %w", topic, p, err))
			}
		})
		if len(errs) > 0 {
			return false, errors.Join(errs...)
		}
		if ctx.Err() != nil {
			return reached(), nil
		}
	}
	return true, nil
}

// WaitCommitted waits until at least n records of the output topic are
// committed (visible to a read_committed consumer) and returns every
// committed record read so far, in the order read (per partition, the
// log's). The job commits once per checkpoint.interval. A timeout, a job
// that ended unasked, or a failing read fails the test, saying how many
// records had been committed.
func (k *KafkaDriver) WaitCommitted(n int, timeout time.Duration) []*kgo.Record {
	k.t.Helper()
	k.running("WaitCommitted")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Poll in slices so that a job that ends meanwhile is reported as
	// such, not as a timeout.
	for {
		slice, cancelSlice := context.WithTimeout(ctx, 250*time.Millisecond)
		ok, err := k.poll(slice, func() bool { return len(k.committed) >= n })
		cancelSlice()
		if err != nil {
			k.fatalf("WaitCommitted(%d): %v", n, err)
		}
		if ok {
			return k.records()
		}
		k.running(fmt.Sprintf("WaitCommitted(%d) with %d records committed to %s", n, len(k.committed), k.opts.OutputTopic))
		if ctx.Err() != nil {
			k.fatalf("WaitCommitted(%d): %d records committed to %s within %s%s%s", n, len(k.committed), k.opts.OutputTopic, timeout, k.logTail(), k.diagnosis())
		}
	}
}

// Committed reads the output topic up to its last stable offset (every
// transaction decided by now) and returns every committed record, in the
// order read. Called after Stop, it is everything the job committed. A
// failing read fails the test.
func (k *KafkaDriver) Committed() []*kgo.Record {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), k.opts.StartTimeout)
	defer cancel()
	lso, err := k.adm.ListCommittedOffsets(ctx, k.opts.OutputTopic)
	if err == nil {
		err = lso.Error()
	}
	if err != nil {
		k.fatalf("Committed: the last stable offsets of %s: %v", k.opts.OutputTopic, err)
	}
	ok, err := k.poll(ctx, func() bool {
		reached := true
		lso.Each(func(o kadm.ListedOffset) {
			if k.pos[o.Partition] < o.Offset {
				reached = false
			}
		})
		return reached
	})
	if err != nil {
		k.fatalf("Committed: %v", err)
	}
	if !ok {
		k.fatalf("Committed: %s not read up to its last stable offsets %v within %s (KafkaOptions.StartTimeout)", k.opts.OutputTopic, lso.Offsets(), k.opts.StartTimeout)
	}
	return k.records()
}

func (k *KafkaDriver) records() []*kgo.Record {
	out := make([]*kgo.Record, len(k.committed))
	for i, r := range k.committed {
		out[i] = copyRecord(r)
	}
	return out
}

// Stop stops the job with a savepoint, as the program's "stop
// --savepoint" command does through its API (every pending transaction
// committed, none left open), waits for it to end and returns the
// savepoint's path. A stop refused or a job that does not end with exit 0
// within StartTimeout fails the test.
func (k *KafkaDriver) Stop() string {
	k.t.Helper()
	k.running("Stop")
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), k.opts.StartTimeout)
	defer cancel()
	code := runner.Execute(ctx, k.job, []string{k.opts.Name, "stop", "--savepoint", "--http", k.addr,
		"--timeout", k.opts.StartTimeout.String()}, &out, &errOut)
	if code != 0 {
		k.fatalf("Stop: stop --savepoint exited %d: %s%s", code, strings.TrimSpace(errOut.String()), k.logTail())
	}
	select {
	case code := <-k.done:
		k.cancel()
		k.done, k.cancel = nil, nil
		if code != 0 {
			k.fatalf("Stop: the job exited %d after its savepoint%s", code, k.logTail())
		}
	case <-ctx.Done():
		k.fatalf("Stop: the job did not end within %s of its savepoint (KafkaOptions.StartTimeout)%s", k.opts.StartTimeout, k.logTail())
	}
	return strings.TrimSpace(out.String())
}

// Cancel ends the job without a savepoint, as a crash would: output of
// the checkpoint in flight is never committed, and Restart resumes from
// the latest completed checkpoint (re-reading the input after it). It
// waits for the job to end.
func (k *KafkaDriver) Cancel() {
	k.t.Helper()
	k.running("Cancel")
	k.cancel()
	select {
	case <-k.done:
	case <-time.After(k.opts.StartTimeout):
		k.fatalf("Cancel: the job did not end within %s (KafkaOptions.StartTimeout)%s", k.opts.StartTimeout, k.logTail())
	}
	k.done, k.cancel = nil, nil
}

// Restart runs the job again after Stop or Cancel, with the same
// configuration: it resumes from its latest retained checkpoint or
// savepoint, as a restarted program does.
func (k *KafkaDriver) Restart() {
	k.t.Helper()
	if k.done != nil {
		k.fatalf("Restart: the job is running (Stop or Cancel it first)")
	}
	k.start()
}

// close cancels a job still running and closes the clients (t.Cleanup).
func (k *KafkaDriver) close() {
	k.closed = true
	if k.cancel != nil {
		k.cancel()
		select {
		case <-k.done:
		case <-time.After(k.opts.StartTimeout):
		}
		k.cancel, k.done = nil, nil
	}
	for _, c := range []*kgo.Client{k.cons, k.prod} {
		if c != nil {
			c.Close()
		}
	}
}
