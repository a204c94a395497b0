package inprocess

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
	"github.com/onceflow/onceflow/jobs"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

// newDistributedScenario is a wordcount job in job.mode distributed with
// G partition groups over an input of inPartitions partitions, its
// checkpoints on the test kit's S3 service, extra keys appended.
func newDistributedScenario(t *testing.T, inPartitions int32, groups int, extra ...string) *scenario {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Kafka broker and an S3 service")
	}
	seeds := kafkatest.Bootstrap(t)
	ep := s3test.Bootstrap(t)
	s := &scenario{t: t, seeds: seeds, logs: &logBuffer{},
		in: kafkatest.Topic(t, seeds, inPartitions), out: kafkatest.Topic(t, seeds, 4),
		rng: rand.New(rand.NewPCG(uint64(inPartitions), uint64(groups)))}
	s.feeder = kafkatest.Client(t, seeds, kgo.DefaultProduceTopic(s.in))
	dir := t.TempDir()
	name := fmt.Sprintf("wcd-%d", time.Now().UnixNano())
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: append([]string{
		"job.name=" + name, "job.type=wordcount", "job.parallelism=2",
		"job.mode=distributed", fmt.Sprintf("job.partition_groups=%d", groups),
		"kafka.brokers=" + strings.Join(seeds, ","),
		"source.topic=" + s.in, "sink.topic=" + s.out, "sink.delivery=exactly_once",
		"sink.transactional_id_prefix=" + name, "sink.transaction_timeout=2m",
		"checkpoint.interval=300ms", "checkpoint.timeout=30s",
		"checkpoint.dir=s3://" + ep.Bucket + "/" + strings.TrimSuffix(s3test.Prefix(t), "/"),
		"checkpoint.s3.endpoint=" + ep.URL, "checkpoint.s3.region=" + ep.Region, "checkpoint.s3.path_style=true",
		"checkpoint.s3.access_key_id=" + ep.AccessKeyID, "checkpoint.s3.secret_access_key=" + ep.SecretAccessKey,
		"state.backend=pebble", "state.dir=" + filepath.Join(dir, "state"),
		"restart.strategy=fixed-delay", "restart.attempts=3", "restart.delay=100ms",
	}, extra...)})
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last job logs:\n%s", s.logs.tail(60))
		}
	})
	return s
}

// groupsRun is every partition group of a distributed job run in this
// process, as the instances of the job would run them between them.
type groupsRun struct {
	pipelines []*jobs.GroupPipeline
	done      chan error // one Run's end per group
	stop      context.CancelFunc
}

func (s *scenario) startGroups(ctx context.Context) *groupsRun {
	s.t.Helper()
	began := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	r := &groupsRun{done: make(chan error, s.cfg.Job.PartitionGroups), stop: cancel}
	for g := range s.cfg.Job.PartitionGroups {
		p, err := jobs.BuildGroup(ctx, s.cfg, jobs.Env{ClientOpts: []kgo.Opt{kgo.SeedBrokers(s.seeds...)},
			Logger: slog.New(slog.NewTextHandler(s.logs, nil)),
			Group:  &jobs.Group{Index: g, Count: s.cfg.Job.PartitionGroups}})
		if err != nil {
			cancel()
			s.t.Fatalf("BuildGroup %d: %v", g, err)
		}
		r.pipelines = append(r.pipelines, p)
	}
	s.t.Logf("built %d groups in %s", len(r.pipelines), time.Since(began).Round(time.Millisecond))
	for _, p := range r.pipelines {
		go func() { r.done <- p.Run(rctx) }()
	}
	return r
}

// waitGroupsComplete waits until the output holds every record the input
// implies; a group that ends first fails the test.
func (s *scenario) waitGroupsComplete(r *groupsRun) {
	s.t.Helper()
	s.waitOutput(r.done, "a group", 60*time.Second)
}

// stopGroups stops every group with savepoints, concurrently as
// instances would, and waits for their Run to return ErrStopped.
func (s *scenario) stopGroups(ctx context.Context, r *groupsRun) {
	s.t.Helper()
	defer r.stop()
	var wg sync.WaitGroup
	errs := make([]error, len(r.pipelines))
	for i, p := range r.pipelines {
		wg.Go(func() {
			var path string
			path, errs[i] = p.StopWithSavepoint(ctx)
			if errs[i] == nil && len(strings.Split(path, ", ")) != 2 {
				errs[i] = fmt.Errorf("savepoints %q, want one per stage", path)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatalf("stop with savepoints: %v", err)
	}
	for range r.pipelines {
		if err := <-r.done; !errors.Is(err, engine.ErrStopped) {
			s.t.Fatalf("a group's Run returned %v after the stop, want ErrStopped", err)
		}
	}
}

// cancelGroups cancels every group, as a crash of the instances would
// end them: transactions left open and pending.
func (s *scenario) cancelGroups(r *groupsRun) {
	s.t.Helper()
	r.stop()
	for range r.pipelines {
		if err := <-r.done; !errors.Is(err, context.Canceled) {
			s.t.Fatalf("a group's Run returned %v after the cancellation, want context.Canceled", err)
		}
	}
}

// A distributed word count, G = 3 over 4 input partitions (group 0 reads
// two), parallelism 2, checkpoints on S3: every group runs its two stages
// in this process. The groups are cancelled while input arrives, resumed
// from their latest checkpoints, stopped with savepoints, fed more and
// resumed from the savepoints. After each stop the output read with
// read_committed is exact, each word's counts 1, 2, ... once and in
// order, although every group reads only its own input partitions; no
// transaction holds the output or the repartition topic.
func TestDistributedWordCountRepartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newDistributedScenario(t, 4, 3)
	began := time.Now()
	repartition := jobs.RepartitionTopic(s.cfg)
	s.feed(ctx, 300)

	// 1. Input keeps arriving; every group is cancelled mid-stream.
	// It runs until some output is committed, so that both stages have
	// checkpoints whose transactions the resume must commit.
	r := s.startGroups(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 6 || len(s.committed()) == 0 && time.Now().Before(deadline); i++ {
		time.Sleep(100 * time.Millisecond)
		s.feed(ctx, 50)
	}
	if len(s.committed()) == 0 {
		t.Fatal("no output committed in 30s")
	}
	s.cancelGroups(r)
	t.Logf("cancelled: %d of %d outputs committed; transactions left open: %v", len(s.committed()), s.wantOut(), s.openTransactions(ctx))

	// 2. Resume from the latest checkpoints: each stage commits what its
	// checkpoint holds and aborts the rest.
	r = s.startGroups(ctx)
	s.feed(ctx, 100)
	s.waitGroupsComplete(r)
	s.stopGroups(ctx, r)
	s.check(true)
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, s.out)
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, repartition)

	// 3. Resume from the savepoints with more input.
	s.feed(ctx, 200)
	r = s.startGroups(ctx)
	s.waitGroupsComplete(r)
	s.stopGroups(ctx, r)
	s.check(true)
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, s.out)
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, repartition)
	for _, p := range r.pipelines {
		for _, st := range p.StageStatus() {
			if st.Restarts != 0 {
				t.Fatalf("stage %s restarted %d times", st.Name, st.Restarts)
			}
		}
	}
	t.Logf("%d input records, %d outputs, exact; %s after the kits were up", len(s.sent), s.wantOut(), time.Since(began).Round(time.Millisecond))
}

// read is how many input records the groups' first stages read.
func (s *scenario) read(r *groupsRun) int64 {
	var n int64
	for _, p := range r.pipelines {
		n += p.Stats().RecordsRead
	}
	return n
}

// openTransactions counts the open transactions of each stage's ids, over
// the groups.
func (s *scenario) openTransactions(ctx context.Context) map[string]int {
	s.t.Helper()
	cl := kafkatest.Client(s.t, s.seeds)
	out := map[string]int{}
	for g := range s.cfg.Job.PartitionGroups {
		prefix := s.cfg.Sink.TransactionalIDPrefix
		for stage, p := range map[string]string{"stage 1": fmt.Sprintf("%s-pg%d", prefix, g), "stage 2": fmt.Sprintf("%s/%s-pg%d", prefix, jobs.UIDCount, g)} {
			open, err := sinkkafka.ListOpenTransactions(ctx, cl, p)
			if err != nil {
				s.t.Fatal(err)
			}
			out[stage] += len(open)
		}
	}
	return out
}

// A distributed sum, G = 2 over 4 input partitions: each observation's x
// crosses the repartition topic as text. After a stop with savepoints and
// a resume with more input, each group's outputs, read with
// read_committed, are its running sums, rising, one per observation, the
// last its total.
func TestDistributedAggregateRepartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newDistributedScenario(t, 4, 2, "job.type=aggregate", "aggregate.function=sum", "aggregate.group_by=g", "aggregate.field=v")
	began := time.Now()
	n := map[string]int{}
	total := map[string]float64{}
	feed := func(count int) {
		var recs []*kgo.Record
		for range count {
			i := len(s.sent)
			g, x := fmt.Sprintf("g%d", i%7), float64(i%13)+0.25
			n[g]++
			total[g] += x
			r := &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: fmt.Appendf(nil, `{"g": %q, "v": %v}`, g, x)}
			recs = append(recs, r)
			s.sent = append(s.sent, r)
		}
		if err := s.feeder.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// check returns how many outputs are missing; more than one output per
	// observation, or sums that do not rise, fail the test.
	check := func() int {
		got := map[string][]float64{}
		for _, r := range s.committed() {
			x, err := strconv.ParseFloat(string(r.Value), 64)
			if err != nil {
				t.Fatalf("output %s=%q is not a number", r.Key, r.Value)
			}
			got[string(r.Key)] = append(got[string(r.Key)], x)
		}
		missing := 0
		for g, want := range n {
			sums := got[g]
			if len(sums) > want {
				t.Fatalf("group %s: %d outputs for %d observations: %v", g, len(sums), want, sums)
			}
			for i := 1; i < len(sums); i++ {
				if sums[i] <= sums[i-1] {
					t.Fatalf("group %s: sum %v follows %v (an observation counted twice, or out of order)", g, sums[i], sums[i-1])
				}
			}
			if len(sums) == want && sums[want-1] != total[g] {
				t.Fatalf("group %s: last sum %v, want the total %v", g, sums[want-1], total[g])
			}
			missing += want - len(sums)
		}
		return missing
	}
	waitExact := func(r *groupsRun) {
		deadline := time.Now().Add(60 * time.Second)
		for check() > 0 {
			select {
			case err := <-r.done:
				t.Fatalf("a group ended with %v before the output was complete", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("output incomplete after 60s: %d sums missing", check())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	feed(200)
	r := s.startGroups(ctx)
	feed(100)
	waitExact(r)
	s.stopGroups(ctx, r)
	if check() != 0 {
		t.Fatal("outputs missing after the stop")
	}
	feed(150)
	r = s.startGroups(ctx)
	waitExact(r)
	s.stopGroups(ctx, r)
	if check() != 0 {
		t.Fatal("outputs missing after the stop")
	}
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, s.out)
	kafkatest.OpenTransactionsHoldNothing(t, s.seeds, jobs.RepartitionTopic(s.cfg))
	t.Logf("%d observations of %d groups, sums exact; %s after the kits were up", len(s.sent), len(n), time.Since(began).Round(time.Millisecond))
}
