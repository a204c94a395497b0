// Package inprocess runs the built-in jobs (jobs.Build) inside the test
// process against a real Kafka broker: the output read with
// read_committed must equal what the input implies, exactly, across a
// cancellation, a stop with a savepoint and the resumes after them. The
// crash tests that kill a processor child process live in package
// integration.
package inprocess

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
	"github.com/onceflow/onceflow/jobs"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

func TestMain(m *testing.M) {
	code := kafkatest.Main(m)
	s3test.Shutdown()
	os.Exit(code)
}

// logBuffer collects the job's logs; a failed test prints their tail.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) contains(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(sub))
}

func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := strings.Split(strings.TrimRight(l.b.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// scenario is one job on one cluster: its topics, configuration and the
// input sent so far.
type scenario struct {
	t      *testing.T
	seeds  []string
	in     string
	out    string
	cfg    *config.Config
	logs   *logBuffer
	feeder *kgo.Client
	rng    *rand.Rand
	sent   []*kgo.Record
	// s3 is the test kit's S3 service and s3Prefix the key prefix (no
	// trailing "/") of a scenario whose checkpoints are kept there.
	s3       *s3test.Endpoint
	s3Prefix string
	localDir string // checkpoint.dir of a scenario on disk
}

// storage is where a scenario keeps its checkpoints.
type storage int

const (
	// onDisk: checkpoint.dir is a directory in the test's temporary
	// folder.
	onDisk storage = iota
	// onS3: checkpoint.dir is s3://<bucket>/<prefix> on the test kit's S3
	// service (s3test.Bootstrap: versitygw on 127.0.0.1, or
	// ONCEFLOW_S3_ENDPOINT).
	onS3
)

// newScenario is a job of type typ with the given delivery on a cluster
// of kind, its checkpoints kept where store says.
func newScenario(t *testing.T, kind kafkatest.Kind, store storage, typ, delivery string) *scenario {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kafka broker")
	}
	seeds := kafkatest.Local(t, kind).Addrs()
	s := &scenario{t: t, seeds: seeds, logs: &logBuffer{},
		in: kafkatest.Topic(t, seeds, 4), out: kafkatest.Topic(t, seeds, 4),
		rng: rand.New(rand.NewPCG(uint64(len(typ)), uint64(len(delivery))))}
	s.feeder = kafkatest.Client(t, seeds, kgo.DefaultProduceTopic(s.in))
	dir := t.TempDir()
	s.localDir = filepath.Join(dir, "checkpoints")
	checkpointDir := []string{"checkpoint.dir=" + s.localDir}
	if store == onS3 {
		ep := s3test.Bootstrap(t)
		s.s3, s.s3Prefix = &ep, strings.TrimSuffix(s3test.Prefix(t), "/")
		checkpointDir = []string{"checkpoint.dir=s3://" + ep.Bucket + "/" + s.s3Prefix,
			"checkpoint.s3.endpoint=" + ep.URL, "checkpoint.s3.region=" + ep.Region, "checkpoint.s3.path_style=true",
			"checkpoint.s3.access_key_id=" + ep.AccessKeyID, "checkpoint.s3.secret_access_key=" + ep.SecretAccessKey}
	}
	name := fmt.Sprintf("%s-%d", typ, time.Now().UnixNano())
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: append([]string{
		"job.name=" + name, "job.type=" + typ, "job.parallelism=2",
		"kafka.brokers=" + strings.Join(seeds, ","),
		"source.topic=" + s.in, "sink.topic=" + s.out, "sink.delivery=" + delivery,
		"sink.transactional_id_prefix=" + name, "sink.transaction_timeout=2m",
		"checkpoint.interval=100ms", "checkpoint.timeout=30s",
		"state.backend=pebble", "state.dir=" + filepath.Join(dir, "state"),
		"restart.strategy=fixed-delay", "restart.attempts=3", "restart.delay=100ms",
	}, checkpointDir...)})
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last job logs:\n%s", s.logs.tail(40))
		}
	})
	return s
}

var vocabulary = []string{"flink", "kafka", "pebble", "barrier", "laowang", "hello", "world", "state", "offset", "commit", "abort", "fence"}

// feed sends n input records: a line of one to six words, a key and a
// header that make every record unique.
func (s *scenario) feed(ctx context.Context, n int) {
	s.t.Helper()
	var recs []*kgo.Record
	for range n {
		i := len(s.sent)
		ws := make([]string, 1+s.rng.IntN(6))
		for j := range ws {
			ws[j] = vocabulary[s.rng.IntN(len(vocabulary))]
		}
		r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i%97)), Value: []byte(strings.Join(ws, " ")),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}}
		recs = append(recs, r)
		s.sent = append(s.sent, r)
	}
	if err := s.feeder.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		s.t.Fatalf("feeding %s: %v", s.in, err)
	}
}

// wantOut is how many output records the input implies.
func (s *scenario) wantOut() int {
	if s.cfg.Job.Type == "copy" {
		return len(s.sent)
	}
	n := 0
	for _, r := range s.sent {
		n += len(strings.Fields(string(r.Value)))
	}
	return n
}

// run is a built job running in the background.
type run struct {
	b    *jobs.Built
	done chan error
	stop context.CancelFunc
}

func (s *scenario) start(ctx context.Context) *run {
	s.t.Helper()
	b, err := jobs.Build(ctx, s.cfg, jobs.Env{ClientOpts: []kgo.Opt{kgo.SeedBrokers(s.seeds...)},
		Logger: slog.New(slog.NewTextHandler(s.logs, nil))})
	if err != nil {
		left := "no deadline"
		if d, ok := ctx.Deadline(); ok {
			left = time.Until(d).Round(time.Millisecond).String() + " left"
		}
		s.t.Fatalf("Build (%s): %v", left, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &run{b: b, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- b.Job.Run(rctx) }()
	return r
}

// committed reads the output visible under read_committed.
func (s *scenario) committed() []*kgo.Record { return kafkatest.ReadCommitted(s.t, s.seeds, s.out) }

// waitComplete waits until the output holds every record the input
// implies.
func (s *scenario) waitComplete(r *run) {
	s.t.Helper()
	s.waitOutput(r.done, "the job", 45*time.Second)
}

// waitOutput waits up to d until the output holds every record the input
// implies; a value on done (what ended, named by who) fails the test.
func (s *scenario) waitOutput(done <-chan error, who string, d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		missing := len(s.diff(s.committed(), false).missing)
		if missing == 0 {
			return
		}
		select {
		case err := <-done:
			s.t.Fatalf("%s ended with %v before the output was complete (%d outputs missing)", who, err, missing)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("output incomplete after %s: %d outputs missing", d, missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type outputDiff struct{ missing, extra []string }

// diff compares output with what the input implies; with ordered, a word
// count whose updates are out of order fails the test.
func (s *scenario) diff(got []*kgo.Record, ordered bool) outputDiff {
	var want, have map[string]int
	if s.cfg.Job.Type == "copy" {
		want, have = copyIDs(s.sent), copyIDs(got)
	} else {
		want, have = wordCounts(s.sent), countOutputs(s.t, got, ordered)
	}
	var d outputDiff
	for id, n := range want {
		if have[id] < n {
			d.missing = append(d.missing, id)
		}
	}
	for id, n := range have {
		if n > want[id] {
			d.extra = append(d.extra, fmt.Sprintf("%s x%d", id, n))
		}
	}
	slices.Sort(d.missing)
	slices.Sort(d.extra)
	return d
}

// stopWithSavepoint stops the job the way SIGTERM does.
func (s *scenario) stopWithSavepoint(ctx context.Context, r *run) {
	s.t.Helper()
	defer r.stop()
	if _, err := r.b.Job.StopWithSavepoint(ctx); err != nil {
		s.t.Fatalf("stop with savepoint: %v", err)
	}
	if err := <-r.done; !errors.Is(err, engine.ErrStopped) {
		s.t.Fatalf("Run returned %v after the stop, want ErrStopped", err)
	}
}

// cancel stops the job the way a second signal does: no savepoint,
// transactions left for the next run's recovery.
func (s *scenario) cancel(r *run) {
	s.t.Helper()
	r.stop()
	if err := <-r.done; !errors.Is(err, context.Canceled) {
		s.t.Fatalf("Run returned %v after the cancellation, want context.Canceled", err)
	}
}

// check compares the output with the input: exact for exactly_once, no
// loss for at_least_once.
func (s *scenario) check(exact bool) {
	s.t.Helper()
	got := s.committed()
	d := s.diff(got, exact)
	if len(d.missing) > 0 {
		s.t.Fatalf("%d expected outputs missing, e.g. %v", len(d.missing), d.missing[:min(5, len(d.missing))])
	}
	if exact && len(d.extra) > 0 {
		s.t.Fatalf("%d outputs too many (duplicates or unexpected), e.g. %v", len(d.extra), d.extra[:min(5, len(d.extra))])
	}
	if exact && len(got) != s.wantOut() {
		s.t.Fatalf("%d output records, want exactly %d", len(got), s.wantOut())
	}
}

// groupCaughtUp checks that the consumer group holds the offsets of the
// last completed checkpoint (for lag monitoring): after a stop with a
// savepoint that read everything, the end of every input partition.
func (s *scenario) groupCaughtUp(ctx context.Context) {
	s.t.Helper()
	adm := kadm.NewClient(kafkatest.Client(s.t, s.seeds))
	ends, err := adm.ListEndOffsets(ctx, s.in)
	if err != nil {
		s.t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(ctx, s.cfg.Source.Group)
	if err != nil {
		s.t.Fatalf("fetching the offsets of group %s: %v", s.cfg.Source.Group, err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		c, ok := committed.Lookup(s.in, e.Partition)
		if !ok || c.At != e.Offset {
			s.t.Fatalf("group %s: partition %d committed at %d (found %v), want its end %d", s.cfg.Source.Group, e.Partition, c.At, ok, e.Offset)
		}
	})
}

// checkpointsInS3 checks that a scenario on S3 kept its checkpoints
// there and nowhere else: the job said where (jobs logs "checkpoints in
// S3" with the location), its manifests are listed under
// <prefix>/<job>/manifest/, and the directory checkpoint.dir would have
// named on disk was never created.
func (s *scenario) checkpointsInS3(ctx context.Context) {
	s.t.Helper()
	loc := "s3://" + s.s3.Bucket + "/" + s.s3Prefix + "/" + s.cfg.Job.Name
	if !s.logs.contains(`msg="checkpoints in S3" location=` + loc + " ") {
		s.t.Fatalf("the job never logged that it keeps its checkpoints in S3 at %s", loc)
	}
	root := s.s3Prefix + "/" + s.cfg.Job.Name + "/manifest/"
	out, err := s3test.Client(s.t, *s.s3).ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.s3.Bucket), Prefix: aws.String(root)})
	if err != nil {
		s.t.Fatalf("listing s3://%s/%s: %v", s.s3.Bucket, root, err)
	}
	var savepoints int
	for _, o := range out.Contents {
		if strings.HasPrefix(strings.TrimPrefix(aws.ToString(o.Key), root), "savepoint-") {
			savepoints++
		}
	}
	if savepoints == 0 {
		s.t.Fatalf("no savepoint manifest under s3://%s/%s after two stops with a savepoint (%d objects there)", s.s3.Bucket, root, len(out.Contents))
	}
	if _, err := os.Stat(s.localDir); err == nil {
		s.t.Fatalf("the local checkpoint directory %s exists, though checkpoint.dir is %s", s.localDir, loc)
	}
	s.t.Logf("%d manifest objects under %s, %d of them of savepoints", len(out.Contents), loc, savepoints)
}

// copyIDs counts the records by key, value and headers.
func copyIDs(rs []*kgo.Record) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		id := string(r.Key) + "|" + string(r.Value)
		for _, h := range r.Headers {
			id += "|" + h.Key + "=" + string(h.Value)
		}
		out[id]++
	}
	return out
}

// wordCounts is the running word count's expected output: word=1 ...
// word=n once each for a word seen n times.
func wordCounts(in []*kgo.Record) map[string]int {
	n := map[string]int{}
	out := map[string]int{}
	for _, r := range in {
		for _, w := range strings.Fields(string(r.Value)) {
			n[w]++
			out[w+"="+strconv.Itoa(n[w])] = 1
		}
	}
	return out
}

// countOutputs counts the word count's outputs; with exact it also
// requires every word's counts, in its partition's order, to be 1, 2, 3,
// ... (each update once, in order).
func countOutputs(t *testing.T, rs []*kgo.Record, exact bool) map[string]int {
	t.Helper()
	out := map[string]int{}
	last := map[string]int{}
	for _, r := range rs {
		w := string(r.Key)
		n, err := strconv.Atoi(string(r.Value))
		if err != nil {
			t.Fatalf("output %s=%q is not a count", w, r.Value)
		}
		if exact && n != last[w]+1 {
			t.Fatalf("word %s: count %d follows %d (partition %d offset %d)", w, n, last[w], r.Partition, r.Offset)
		}
		last[w] = n
		out[w+"="+strconv.Itoa(n)]++
	}
	return out
}

// An exactly_once copy and running word count, 4 input partitions,
// parallelism 2, in both transaction versions, with checkpoints in a
// directory and in S3 (subtests s3/...; versitygw from the test kit): the
// job is cancelled while input arrives (transactions left open and
// pending), resumed from its latest checkpoint, stopped with a savepoint,
// fed more and resumed from the savepoint. After each stop the output
// read with read_committed is exact and no transaction holds an output
// partition; on S3 the checkpoints and savepoints are there and not on
// disk.
func TestExactlyOnceJobs(t *testing.T) {
	for _, k := range []struct {
		name  string
		kind  kafkatest.Kind
		store storage
	}{
		{"tv2", kafkatest.Kind{}, onDisk},
		{"tv0", kafkatest.Kind{TransactionVersion: broker.TV(0)}, onDisk},
		{"s3/tv2", kafkatest.Kind{}, onS3},
		{"s3/tv0", kafkatest.Kind{TransactionVersion: broker.TV(0)}, onS3},
	} {
		for _, typ := range []string{"copy", "wordcount"} {
			t.Run(k.name+"/"+typ, func(t *testing.T) {
				began := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				s := newScenario(t, k.kind, k.store, typ, "exactly_once")
				s.feed(ctx, 300)

				// 1. Input keeps arriving; the job is cancelled mid-stream.
				// The sink's recovery runs before the source reads (they
				// are chained), which takes a while on a loaded machine.
				r := s.start(ctx)
				deadline := time.Now().Add(20 * time.Second)
				for i := 0; i < 6 || r.b.Stats().RecordsRead == 0 && time.Now().Before(deadline); i++ {
					time.Sleep(100 * time.Millisecond)
					s.feed(ctx, 50)
				}
				read := r.b.Stats().RecordsRead
				if read == 0 {
					t.Fatal("the source read nothing in 20s")
				}
				cancelled := time.Now()
				s.cancel(r)
				// (Where the subtest's two minutes go, should they run out.)
				t.Logf("the cancel took %s, %s into the subtest", time.Since(cancelled).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
				open, err := sinkkafka.ListOpenTransactions(ctx, kafkatest.Client(t, s.seeds), s.cfg.Sink.TransactionalIDPrefix)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("cancelled after reading %d records: %d of %d outputs committed, %d transactions left open",
					read, len(s.committed()), s.wantOut(), len(open))

				// 2. Resume from the latest checkpoint: commit what it
				// holds, abort the rest, go on.
				r = s.start(ctx)
				s.feed(ctx, 100)
				s.waitComplete(r)
				s.stopWithSavepoint(ctx, r)
				if st := r.b.Stats(); st.PendingTransactions != 0 || st.OldestPending != 0 {
					t.Fatalf("transactions pending after a stop with savepoint: %+v", st)
				}
				s.check(true)
				kafkatest.OpenTransactionsHoldNothing(t, s.seeds, s.out)

				// 3. Resume from the savepoint with more input.
				s.feed(ctx, 200)
				r = s.start(ctx)
				s.waitComplete(r)
				s.stopWithSavepoint(ctx, r)
				s.check(true)
				kafkatest.OpenTransactionsHoldNothing(t, s.seeds, s.out)
				if n := r.b.Job.Status().Restarts; n != 0 {
					t.Fatalf("the last run restarted %d times", n)
				}
				s.groupCaughtUp(ctx)
				if k.store == onS3 {
					s.checkpointsInS3(ctx)
				}
			})
		}
	}
}

// at_least_once loses nothing across a cancellation and a resume
// (records after the last checkpoint may be written twice).
func TestAtLeastOnceLosesNothing(t *testing.T) {
	for _, typ := range []string{"copy", "wordcount"} {
		t.Run(typ, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s := newScenario(t, kafkatest.Kind{}, onDisk, typ, "at_least_once")
			s.feed(ctx, 300)
			r := s.start(ctx)
			for range 6 {
				time.Sleep(100 * time.Millisecond)
				s.feed(ctx, 50)
			}
			s.cancel(r)
			s.feed(ctx, 100)
			r = s.start(ctx)
			s.waitComplete(r)
			s.stopWithSavepoint(ctx, r)
			s.check(false)
		})
	}
}
