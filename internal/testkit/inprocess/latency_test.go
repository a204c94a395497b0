package inprocess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
)

// BenchmarkRepartitionLatency measures how long a word takes from its
// produce to its count being readable with read_committed, for the word
// count in one process (job.mode single: one commit on the way) and in
// job.mode distributed (G = 4 groups over 4 input partitions, every group
// in this process: the record crosses the repartition topic, so two
// commits), at two checkpoint intervals, both with checkpoints on the S3
// test kit. It reports p50, p90 and the largest of the probes, one new
// word each, sent one at a time at a steady pace (no load beside them).
// It is not part of the test run: go test -run '^$' -bench
// RepartitionLatency -benchtime 1x ./internal/testkit/inprocess/
func BenchmarkRepartitionLatency(b *testing.B) {
	for _, interval := range []time.Duration{200 * time.Millisecond, time.Second} {
		for _, mode := range []string{"single", "distributed"} {
			b.Run(fmt.Sprintf("%s/interval=%s", mode, interval), func(b *testing.B) {
				for range b.N {
					lat := probeLatency(b, mode, interval, 40, 250*time.Millisecond)
					b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
					b.ReportMetric(ms(lat[len(lat)*9/10]), "p90-ms")
					b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
				}
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// probeLatency runs the word count in mode and returns the sorted
// latencies of probes words sent gap apart, after a first word showed the
// job running.
func probeLatency(b *testing.B, mode string, interval time.Duration, probes int, gap time.Duration) []time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seeds := kafkatest.Bootstrap(b)
	ep := s3test.Bootstrap(b)
	in, out := kafkatest.Topic(b, seeds, 4), kafkatest.Topic(b, seeds, 4)
	name := fmt.Sprintf("lat-%d", time.Now().UnixNano())
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: []string{
		"job.name=" + name, "job.type=wordcount", "job.parallelism=1", "job.mode=" + mode, "job.partition_groups=4",
		"kafka.brokers=" + strings.Join(seeds, ","), "source.topic=" + in, "sink.topic=" + out,
		"sink.transactional_id_prefix=" + name, "sink.transaction_timeout=2m",
		"checkpoint.interval=" + interval.String(), "checkpoint.timeout=30s",
		"checkpoint.dir=s3://" + ep.Bucket + "/" + strings.TrimSuffix(s3test.Prefix(b), "/"),
		"checkpoint.s3.endpoint=" + ep.URL, "checkpoint.s3.region=" + ep.Region, "checkpoint.s3.path_style=true",
		"checkpoint.s3.access_key_id=" + ep.AccessKeyID, "checkpoint.s3.secret_access_key=" + ep.SecretAccessKey,
		"state.backend=pebble", "state.dir=" + b.TempDir(),
		"restart.strategy=fixed-delay", "restart.attempts=3", "restart.delay=100ms",
	}})
	if err != nil {
		b.Fatal(err)
	}
	env := jobs.Env{ClientOpts: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	type pipeline interface {
		Run(context.Context) error
		StopWithSavepoint(context.Context) (string, error)
	}
	var ps []pipeline
	if mode == "single" {
		built, err := jobs.Build(ctx, cfg, env)
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, built.Job)
	} else {
		for g := range cfg.Job.PartitionGroups {
			env.Group = &jobs.Group{Index: g, Count: cfg.Job.PartitionGroups}
			p, err := jobs.BuildGroup(ctx, cfg, env)
			if err != nil {
				b.Fatal(err)
			}
			ps = append(ps, p)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			if err := p.Run(rctx); err != nil && !errors.Is(err, engine.ErrStopped) && rctx.Err() == nil {
				b.Errorf("%s: Run: %v", mode, err)
			}
		})
	}
	defer wg.Wait()
	defer func() {
		for _, p := range ps {
			if _, err := p.StopWithSavepoint(ctx); err != nil {
				b.Errorf("stop: %v", err)
			}
		}
	}()

	feeder := kafkatest.Client(b, seeds, kgo.DefaultProduceTopic(in))
	tail := kafkatest.Client(b, seeds, kgo.ConsumeTopics(out), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(20*time.Millisecond))
	var mu sync.Mutex
	sent := map[string]time.Time{}
	send := func(w string) {
		mu.Lock()
		sent[w] = time.Now()
		mu.Unlock()
		if err := feeder.ProduceSync(ctx, &kgo.Record{Key: []byte(w), Value: []byte(w)}).FirstErr(); err != nil {
			b.Errorf("producing %s: %v", w, err)
		}
	}
	seen := func(deadline time.Time, want int) []time.Duration {
		var lat []time.Duration
		for len(lat) < want && time.Now().Before(deadline) {
			pctx, cancel := context.WithDeadline(ctx, deadline)
			fs := tail.PollFetches(pctx)
			cancel()
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				mu.Lock()
				at, ok := sent[string(r.Key)]
				mu.Unlock()
				if ok {
					lat = append(lat, now.Sub(at))
				}
			})
		}
		return lat
	}
	// A first word shows the job (every stage) running.
	send("warmup")
	if len(seen(time.Now().Add(60*time.Second), 1)) == 0 {
		b.Fatalf("%s: the first word took more than 60s", mode)
	}
	sctx, stopSending := context.WithCancel(ctx)
	var sender sync.WaitGroup
	sender.Go(func() {
		for i := range probes {
			send(fmt.Sprintf("probe-%d", i))
			select {
			case <-sctx.Done():
				return
			case <-time.After(gap):
			}
		}
	})
	lat := seen(time.Now().Add(time.Duration(probes)*gap+30*time.Second), probes)
	stopSending()
	sender.Wait()
	if len(lat) < probes {
		b.Fatalf("%s: %d of %d probes seen", mode, len(lat), probes)
	}
	slices.Sort(lat)
	b.Logf("%s, checkpoint.interval %s: p50 %s, p90 %s, max %s over %d probes", mode, interval,
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*9/10].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat))
	return lat
}
