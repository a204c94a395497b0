package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/fetchpool"
)

// limitOpts are the settings of -mode limit. Their defaults are the
// fastest measured on the bench machine (2 shared cores, one local
// broker; issue 19 §1): see limitFlags for the figures.
type limitOpts struct {
	clients      int
	acks         string // all | leader
	linger       time.Duration
	batchBytes   int
	buffered     int
	inflight     int
	partBytes    int
	poolBytes    int    // limit: fetch into a pool of this many bytes per pair (0: none)
	compression  string // none | snappy
	shared       bool
	partitioning string // keep | hash
	txnKeep      bool   // txn: keep the input's timestamp and partition number
}

// limitFlags registers the flags of -mode limit. The defaults are the
// fastest of what was measured on 2026-12-03 (go run ./bench/cmd/compare
// -records 1000000 -runs 3 -workloads copy -paced=false -contenders
// limit@k=v+...: medians of 3 runs in records/s, each against the plain
// limit, with the earlier defaults, in the same run;
// bench/results/limit-check/tuning.md has the tables). Other work loaded
// the machine (load average 6 to 23 on 2 cores): the absolute figures are
// low and one setting alone moved by tens of percent between rounds.
//   - keep partitioning, 200,000 buffered records and 4 MiB per partition
//     fetch together: 317k (288k–327k) against 216k (205k–262k), the one
//     change whose range cleared the old defaults'; alone in an earlier
//     round, 200,000 buffered 360k and 4 MiB fetch 360k against 240k, and
//     keep 416k against 240k in one round but 0.86× and 0.90× in two
//     others;
//   - 1, 2 and 4 clients with those three: 319k, 317k, 297k, within
//     noise: 2, as many as the contenders' parallelism (8 was 241k against
//     288k with the earlier defaults);
//   - linger 2 ms and 50 ms as 10 ms (314k, 318k); batches of 256 KiB
//     slower than 1 MB (234k; 1 MB is the topic's max.message.bytes);
//     snappy slower than none (222k against 288k); one shared client per
//     pair no faster than two (302k against 288k; 299k with keep).
//
// On 2026-12-04 onceflow's copy with a 64 MiB fetch pool beat those
// defaults (1.55M and 1.61M against 1.42M, bench/results/copy-tuning/
// keep-table) once it kept the input's partitions and timestamps: the
// limit had paid for the collector (800 MiB peak RSS) and the clock. The
// limit keeps the timestamps since, and fetches into the same pool with
// 25,000 buffered records and 1 MiB per partition fetch: lower medians of
// 4 runs 1.65M (1.20M–1.82M) against 1.44M (1.44M–1.61M), CPU 0.50–0.54
// against 0.59–0.77 s per million records, peak RSS 391–446 MiB against
// 793–847 (copy-tuning/limit-pool-ab2; with 50,000 and 2 MiB 1.17M).
func limitFlags() *limitOpts {
	lo := &limitOpts{}
	flag.IntVar(&lo.clients, "clients", 2, "limit: consumer/producer pairs, each consuming every clients-th input partition (the word count always uses one)")
	flag.StringVar(&lo.acks, "acks", "all", "limit: all (idempotent producer: the limit) | leader (acks=1, no idempotence: the ceiling)")
	flag.DurationVar(&lo.linger, "linger", 10*time.Millisecond, "limit: producer linger")
	flag.IntVar(&lo.batchBytes, "batch-bytes", 1_000_012, "limit: producer batch size cap in bytes (ProducerBatchMaxBytes)")
	flag.IntVar(&lo.buffered, "buffered", 25_000, "limit: records a producer buffers before Produce blocks (MaxBufferedRecords)")
	flag.IntVar(&lo.inflight, "inflight", 5, "limit: produce requests in flight per broker with -acks leader (idempotent producers use 5)")
	flag.IntVar(&lo.partBytes, "fetch-partition-bytes", 1<<20, "limit: bytes fetched per partition per fetch (FetchMaxPartitionBytes)")
	flag.IntVar(&lo.poolBytes, "pool-bytes", 64<<20, "limit: each pair's consumer fetches into a pool of this many bytes (kgo.WithPools, onceflow's fetch pool), reused once a record's produce completed; 0: no pool")
	flag.StringVar(&lo.compression, "compression", "none", "every mode's producers: none (Kafka's producer default, as onceflow's sink) | snappy (franz-go's default)")
	flag.BoolVar(&lo.shared, "shared", false, "limit: one client per pair consumes and produces (else a consumer and a producer client)")
	flag.StringVar(&lo.partitioning, "partitioning", "keep", "limit, copy: keep (a record goes to its input partition's number) | hash (franz-go's default partitioner, by key)")
	flag.BoolVar(&lo.txnKeep, "txn-keep", false, "txn: an output record keeps its input's timestamp and goes to its input partition's number modulo the output's count, as onceflow's copy does (default: the time of writing, hashed by key, as franz-go's producer does)")
	return lo
}

// producerOpts are the options of a limit producer.
func (lo *limitOpts) producerOpts(out string) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.DefaultProduceTopic(out),
		kgo.ProducerLinger(lo.linger),
		kgo.ProducerBatchMaxBytes(int32(lo.batchBytes)),
		kgo.MaxBufferedRecords(lo.buffered),
	}
	switch lo.acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(),
			kgo.MaxProduceRequestsInflightPerBroker(lo.inflight))
	default:
		return nil, fmt.Errorf("-acks %q: want all or leader", lo.acks)
	}
	codec, err := lo.codec()
	if err != nil {
		return nil, err
	}
	opts = append(opts, codec)
	switch lo.partitioning {
	case "keep":
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	case "hash":
	default:
		return nil, fmt.Errorf("-partitioning %q: want keep or hash", lo.partitioning)
	}
	return opts, nil
}

// codec is the producer option of -compression, for every mode.
func (lo *limitOpts) codec() (kgo.Opt, error) {
	switch lo.compression {
	case "none":
		return kgo.ProducerBatchCompression(kgo.NoCompression()), nil
	case "snappy":
		return kgo.ProducerBatchCompression(kgo.SnappyCompression()), nil
	}
	return nil, fmt.Errorf("-compression %q: want none or snappy", lo.compression)
}

// limit copies (or counts the words of) topic in into topic out as fast
// as it can, without transactions: it reads in's partitions, splits them
// over lo.clients pairs of a consumer assigned to its partitions directly
// (no group, so no join and no rebalance) and a producer, and runs every
// pair in its own goroutine until ctx ends. It commits no offsets: a
// restarted limit copies in from its start again (at least once). It
// returns the first failed fetch or produce.
func limit(ctx context.Context, brokers []string, in, out, job string, lo *limitOpts) error {
	if lo.clients < 1 {
		return fmt.Errorf("-clients %d: must be at least 1", lo.clients)
	}
	var f func() transform
	switch job {
	case "copy":
		f = func() transform { return reuseRecord(out) }
	case "wordcount":
		// One map: the counts of a word must all come from one counter.
		f = newCounter
		lo.clients, lo.partitioning = 1, "hash"
	default:
		return fmt.Errorf("-job %q: the limit runs copy or wordcount", job)
	}
	popts, err := lo.producerOpts(out)
	if err != nil {
		return err
	}
	parts, err := partitions(ctx, brokers, in)
	if err != nil {
		return err
	}
	n := min(lo.clients, len(parts))
	base := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	return members(ctx, n, func(i int) error {
		assigned := map[int32]kgo.Offset{}
		for j, p := range parts {
			if j%n == i {
				assigned[p] = kgo.NewOffset().AtStart()
			}
		}
		copts := []kgo.Opt{
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{in: assigned}),
			kgo.FetchMaxPartitionBytes(int32(lo.partBytes)),
		}
		if lo.poolBytes > 0 && job == "copy" {
			copts = append(copts, kgo.WithPools(fetchpool.New(lo.poolBytes)))
		}
		return limitPair(ctx, base, copts, popts, lo.shared, f())
	})
}

// limitPair consumes with one client and produces with another (or with
// the same one if shared), both with the base options, until ctx ends.
func limitPair(ctx context.Context, base, consumerOpts, producerOpts []kgo.Opt, shared bool, f transform) error {
	var cons, prod *kgo.Client
	var err error
	if shared {
		if cons, err = kgo.NewClient(slices.Concat(base, consumerOpts, producerOpts)...); err != nil {
			return err
		}
		prod = cons
	} else {
		if cons, err = kgo.NewClient(slices.Concat(base, consumerOpts)...); err != nil {
			return err
		}
		if prod, err = kgo.NewClient(slices.Concat(base, producerOpts)...); err != nil {
			cons.Close()
			return err
		}
		defer prod.Close()
	}
	defer cons.Close()
	var perr atomic.Pointer[error] // the first failed produce
	done := func(r *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("producing to %s/%d: %w", r.Topic, r.Partition, err)
			perr.CompareAndSwap(nil, &err)
		}
		r.Recycle() // into the fetch pool, if any (a copied record is the fetched one)
	}
	emit := func(r *kgo.Record) { prod.Produce(ctx, r, done) }
	for ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
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

// reuseRecord produces the fetched record itself to out (its key, value,
// headers, timestamp and partition number): no allocation per record, and
// no clock read per record, which stamping the time of writing costs. The
// fetch does not touch a record once it is returned.
func reuseRecord(out string) transform {
	return func(r *kgo.Record, emit func(*kgo.Record)) {
		r.Topic, r.Attrs = out, kgo.RecordAttrs{}
		r.ProducerEpoch, r.ProducerID, r.LeaderEpoch, r.Offset = 0, 0, 0, 0
		emit(r)
	}
}

// partitions are the partition numbers of topic, in order.
func partitions(ctx context.Context, brokers []string, topic string) ([]int32, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil || len(td.Partitions) == 0 {
		return nil, fmt.Errorf("input topic %s: no partitions (%v)", topic, td.Err)
	}
	var ps []int32
	for p := range td.Partitions {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps, nil
}
