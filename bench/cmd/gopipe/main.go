// Command gopipe is the Go contender of the benchmark harness
// (bench/cmd/compare) in two modes:
//
//   - plain: the limit. One franz-go client consumes the input topic in a
//     consumer group and produces to the output topic, no transactions
//     (offsets auto-committed, so at-least-once). With -job wordcount it
//     keeps the counts in a Go map: no state store, no guarantee.
//   - txn: exactly-once copy the Kafka Streams way, with franz-go's
//     GroupTransactSession: consume in a group, produce inside a
//     transaction, commit the consumed offsets with it every -interval.
//
// It runs until SIGTERM or SIGINT.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
	in := flag.String("in", "", "input topic")
	out := flag.String("out", "", "output topic")
	group := flag.String("group", "", "consumer group (and transactional id in txn mode)")
	mode := flag.String("mode", "plain", "plain | txn")
	job := flag.String("job", "copy", "copy | wordcount (wordcount only in plain mode)")
	interval := flag.Duration("interval", time.Second, "txn mode: commit a transaction this often")
	flag.Parse()
	if *in == "" || *out == "" || *group == "" {
		fail(errors.New("-in, -out and -group are required"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DefaultProduceTopic(*out),
		// The harness kills and restarts contenders: a static member
		// takes its partitions back at once, and a short session bounds
		// the wait otherwise.
		kgo.InstanceID(*group + "-member"),
		kgo.SessionTimeout(6 * time.Second),
	}
	var err error
	switch {
	case *mode == "plain" && *job == "copy":
		err = plain(ctx, opts, copyRecord)
	case *mode == "plain" && *job == "wordcount":
		err = plain(ctx, opts, newCounter())
	case *mode == "txn" && *job == "copy":
		err = txn(ctx, opts, *group, *interval)
	default:
		err = fmt.Errorf("mode %q with job %q is not supported", *mode, *job)
	}
	if err != nil && ctx.Err() == nil {
		fail(err)
	}
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

func plain(ctx context.Context, opts []kgo.Opt, f transform) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var perr atomic.Pointer[error] // the first failed produce
	emit := func(r *kgo.Record) {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil && ctx.Err() == nil {
				perr.CompareAndSwap(nil, &err)
			}
		})
	}
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if err := fetchErr(fs); err != nil {
			return err
		}
		fs.EachRecord(func(r *kgo.Record) { f(r, emit) })
		if err := perr.Load(); err != nil {
			return *err
		}
	}
	return nil
}

func txn(ctx context.Context, opts []kgo.Opt, id string, interval time.Duration) error {
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
				s.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
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
