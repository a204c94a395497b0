// Command gopipe is the Go contender of the benchmark harness
// (bench/cmd/compare) in three modes:
//
//   - limit: the fastest consume → produce this machine does without
//     transactions (limit.go): consumers assigned directly to the input's
//     partitions (no group), split over -clients consumer/producer pairs,
//     producers tuned for throughput; -acks all (idempotent) is the
//     harness's limit, -acks leader (no idempotence) its ceiling.
//   - plain: one franz-go client consumes the input topic in a consumer
//     group and produces to the output topic, no transactions (offsets
//     auto-committed, so at-least-once). With -job wordcount it keeps the
//     counts in a Go map: no state store, no guarantee. It was the
//     harness's limit until franz-txn ran faster than it (issue 19).
//   - txn: exactly-once copy the Kafka Streams way, with franz-go's
//     GroupTransactSession: consume in a group, produce inside a
//     transaction, commit the consumed offsets with it every -interval.
//
// -parallelism n matches the other contenders' subtasks or stream
// threads: the plain pipe consumes with one client and produces through n
// (each its own connection and in-flight produce request, one key always
// through the same one), so that a rebalance
// between members cannot duplicate its output; the transactional copy
// runs n group members, each with its own transactional id.
//
// It runs until SIGTERM or SIGINT. With GOPIPE_PPROF set to an address it
// serves net/http/pprof there (internal/pprofserve).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/pprofserve"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
	in := flag.String("in", "", "input topic")
	out := flag.String("out", "", "output topic")
	group := flag.String("group", "", "consumer group (and transactional id in txn mode)")
	mode := flag.String("mode", "plain", "limit | plain | txn")
	job := flag.String("job", "copy", "copy | wordcount (wordcount only in the limit and plain modes)")
	interval := flag.Duration("interval", time.Second, "txn mode: commit a transaction this often")
	parallelism := flag.Int("parallelism", 1, "producer clients (plain) or group members (txn); the limit ignores it (-clients)")
	lo := limitFlags()
	flag.Parse()
	if *in == "" || *out == "" || *group == "" {
		fail(errors.New("-in, -out and -group are required"))
	}
	if *parallelism < 1 {
		fail(fmt.Errorf("-parallelism %d: must be at least 1", *parallelism))
	}
	// CPU profiles for scripts/pgo.sh, which merges them into this
	// command's default.pgo, as it does the processor's.
	pprofserve.FromEnv("GOPIPE_PPROF")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	codec, err := lo.codec()
	if err != nil {
		fail(err)
	}
	// Every mode's producers compress as -compression says (default
	// none, as onceflow's sink and Kafka's producer): the comparison is
	// of the pipelines, not of codecs.
	base := []kgo.Opt{kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.DefaultProduceTopic(*out), codec}
	// consumer is member i's consumer options.
	consumer := func(i int) []kgo.Opt {
		return append(slices.Clone(base),
			kgo.ConsumerGroup(*group),
			kgo.ConsumeTopics(*in),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			// The harness kills and restarts contenders: a static member
			// takes its partitions back at once, and a short session
			// bounds the wait otherwise.
			kgo.InstanceID(fmt.Sprintf("%s-member-%d", *group, i)),
			kgo.SessionTimeout(6*time.Second),
		)
	}
	switch {
	case *mode == "limit":
		err = limit(ctx, strings.Split(*brokers, ","), *in, *out, *job, lo)
	case *mode == "plain" && *job == "copy":
		err = plain(ctx, consumer(0), base, *parallelism, copyRecord)
	case *mode == "plain" && *job == "wordcount":
		err = plain(ctx, consumer(0), base, *parallelism, newCounter())
	case *mode == "txn" && *job == "copy":
		err = members(ctx, *parallelism, func(i int) error {
			return txn(ctx, consumer(i), fmt.Sprintf("%s-%d", *group, i), *interval, lo.txnKeep)
		})
	default:
		err = fmt.Errorf("mode %q with job %q is not supported", *mode, *job)
	}
	if err != nil && ctx.Err() == nil {
		fail(err)
	}
}

// members runs n group members until they all return, and returns the
// first error; the others stop with ctx.
func members(ctx context.Context, n int, member func(i int) error) error {
	errs := make(chan error, n)
	for i := range n {
		go func() {
			if err := member(i); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("member %d of %d: %w", i, n, err)
				return
			}
			errs <- nil
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gopipe:", err)
	os.Exit(1)
}

// transform turns one input record into output records.
type transform func(r *kgo.Record, emit func(*kgo.Record))

func copyRecord(r *kgo.Record, emit func(*kgo.Record)) {
	emit(&kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers})
}

func newCounter() transform {
	counts := map[string]int64{}
	return func(r *kgo.Record, emit func(*kgo.Record)) {
		for _, w := range bytes.Fields(r.Value) {
			n := counts[string(w)] + 1
			counts[string(w)] = n
			emit(&kgo.Record{Key: w, Value: strconv.AppendInt(nil, n, 10)})
		}
	}
}

// plain consumes with one client and produces through n: a keyed output
// record through the producer its key hashes to (so one word's counts stay
// in order), an unkeyed one through the producer of its input partition.
func plain(ctx context.Context, consumerOpts, producerOpts []kgo.Opt, n int, f transform) error {
	cl, err := kgo.NewClient(consumerOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	producers := make([]*kgo.Client, n)
	for i := range producers {
		if producers[i], err = kgo.NewClient(producerOpts...); err != nil {
			return err
		}
		defer producers[i].Close()
	}
	var perr atomic.Pointer[error] // the first failed produce
	done := func(_ *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			perr.CompareAndSwap(nil, &err)
		}
	}
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if err := fetchErr(fs); err != nil {
			return err
		}
		fs.EachRecord(func(r *kgo.Record) {
			f(r, func(out *kgo.Record) {
				i := int(r.Partition) % n
				if len(out.Key) > 0 {
					h := fnv.New32a()
					h.Write(out.Key)
					i = int(h.Sum32() % uint32(n))
				}
				producers[i].Produce(ctx, out, done)
			})
		})
		if err := perr.Load(); err != nil {
			return *err
		}
	}
	return nil
}

// txn is one member of the transactional copy. With keep, an output
// record keeps its input's timestamp and partition number (modulo the
// output's count), as onceflow's copy does.
func txn(ctx context.Context, opts []kgo.Opt, id string, interval time.Duration, keep bool) error {
	out := func(r *kgo.Record) *kgo.Record { return &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers} }
	if keep {
		opts = append(opts, kgo.RecordPartitioner(sinkkafka.InputPartitioner()))
		out = func(r *kgo.Record) *kgo.Record {
			return &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp, Partition: r.Partition}
		}
	}
	opts = append(opts,
		kgo.TransactionalID(id),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.TransactionTimeout(time.Minute),
	)
	s, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return err
	}
	defer s.Close()
	for ctx.Err() == nil {
		if err := s.Begin(); err != nil {
			return err
		}
		deadline := time.Now().Add(interval)
		for time.Now().Before(deadline) {
			pctx, cancel := context.WithDeadline(ctx, deadline)
			fs := s.PollFetches(pctx)
			cancel()
			if ctx.Err() != nil {
				break
			}
			if err := fetchErr(fs); err != nil {
				return err
			}
			fs.EachRecord(func(r *kgo.Record) {
				s.Produce(ctx, out(r), nil)
			})
		}
		if ctx.Err() != nil {
			// Shutting down: abort what is open (a fresh context, as
			// the signal context is done).
			ectx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = s.End(ectx, kgo.TryAbort)
			cancel()
			return nil
		}
		if _, err := s.End(ctx, kgo.TryCommit); err != nil {
			return err
		}
	}
	return nil
}

// fetchErr returns the first fetch error that is not a context end.
func fetchErr(fs kgo.Fetches) error {
	var first error
	fs.EachError(func(t string, p int32, err error) {
		if first == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			first = fmt.Errorf("fetching %s/%d: %w", t, p, err)
		}
	})
	return first
}
