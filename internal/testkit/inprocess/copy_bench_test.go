package inprocess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/jobs"
)

// BenchmarkCopyKafka runs the built-in copy job (jobs.Build: the Kafka
// source chained to the exactly-once Kafka sink) in this process on the
// test kit's broker, as bench/cmd/compare runs it (parallelism 2, 8
// partitions, memory backend, exactly_once), over a backlog of
// copyRecords records of about 110 bytes written once before the runs.
// Each of the b.N runs copies the whole backlog to a new topic and
// reports, as medians over the runs: rec/s-read, the records read per
// second until the source has read the last one (the per-record path),
// rec/s-committed, until every record is committed (the last checkpoint
// included), and cpu-ns/rec, the CPU time this process (not the broker)
// spent per record until then, which the other loads of a shared machine
// move less than the rates. Profile it with -cpuprofile or -memprofile:
//
//	go test -run '^$' -bench CopyKafka -benchtime 3x ./internal/testkit/inprocess/
func BenchmarkCopyKafka(b *testing.B) {
	const copyRecords = 2_000_000
	seeds := kafkatest.Bootstrap(b)
	in := kafkatest.Topic(b, seeds, 8)
	fill(b, seeds, in, copyRecords)
	for _, interval := range []time.Duration{time.Second, 100 * time.Millisecond} {
		b.Run("interval="+interval.String(), func(b *testing.B) {
			var read, committed, cpu []float64
			for range b.N {
				before := cpuTime(b)
				r, c := copyOnce(b, seeds, in, copyRecords, interval)
				cpu = append(cpu, float64(cpuTime(b)-before)/copyRecords)
				read, committed = append(read, r), append(committed, c)
			}
			b.ReportMetric(median(read), "rec/s-read")
			b.ReportMetric(median(committed), "rec/s-committed")
			b.ReportMetric(median(cpu), "cpu-ns/rec")
		})
	}
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// fill writes n records (10-byte key, 100-byte value) to topic.
func fill(b *testing.B, seeds []string, topic string, n int) {
	b.Helper()
	cl := kafkatest.Client(b, seeds, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(1<<16))
	value := []byte(strings.Repeat("v", 100))
	ctx := context.Background()
	var failed error
	for i := range n {
		key := fmt.Appendf(nil, "k%09d", i)
		cl.Produce(ctx, &kgo.Record{Key: key, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil && failed == nil {
				failed = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if failed != nil {
		b.Fatalf("filling %s: %v", topic, failed)
	}
}

// copyOnce copies the n records of in to a new topic with the copy job
// and returns the records per second until the source read them all and
// until all were committed.
func copyOnce(b *testing.B, seeds []string, in string, n int, interval time.Duration) (read, committed float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := kafkatest.Topic(b, seeds, 8)
	name := fmt.Sprintf("copybench-%d", time.Now().UnixNano())
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: []string{
		"job.name=" + name, "job.type=copy", "job.parallelism=2",
		"kafka.brokers=" + strings.Join(seeds, ","), "source.topic=" + in, "source.start=earliest", "sink.topic=" + out,
		"sink.delivery=exactly_once", "sink.transactional_id_prefix=" + name,
		"checkpoint.interval=" + interval.String(), "checkpoint.dir=" + b.TempDir(),
		"state.backend=memory", "state.dir=" + b.TempDir(), "restart.strategy=none",
	}})
	if err != nil {
		b.Fatal(err)
	}
	env := jobs.Env{ClientOpts: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	built, err := jobs.Build(ctx, cfg, env)
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- built.Job.Run(rctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, engine.ErrStopped) {
			b.Errorf("Run: %v", err)
		}
	}()
	var readAt time.Time
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case err := <-done:
			done <- err
			b.Fatalf("the job ended before copying: %v", err)
		case <-ctx.Done():
			b.Fatalf("%d of %d records read before the deadline", built.Stats().RecordsRead, n)
		}
		st := built.Stats()
		if readAt.IsZero() && st.RecordsRead >= int64(n) {
			readAt = time.Now()
		}
		if !readAt.IsZero() && st.PendingTransactions == 0 && st.OldestPending == 0 {
			break
		}
	}
	committedAt := time.Now()
	// Every record must reach the output (the transaction markers count
	// too, so the offsets sum to at least n). The coordinator writes the
	// markers after it answered the commit: the last stable offsets may
	// take a moment to follow.
	adm := kadm.NewClient(kafkatest.Client(b, seeds))
	var sum int64
	for deadline := time.Now().Add(10 * time.Second); ; {
		lso, err := adm.ListCommittedOffsets(ctx, out)
		if err != nil {
			b.Fatal(err)
		}
		sum = 0
		lso.Each(func(o kadm.ListedOffset) { sum += o.Offset })
		if sum >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the output's last stable offsets sum to %d, fewer than the %d records copied", sum, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return float64(n) / readAt.Sub(start).Seconds(), float64(n) / committedAt.Sub(start).Seconds()
}
