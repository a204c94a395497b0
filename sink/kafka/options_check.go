package kafka

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/optcheck"
)

// DefaultTransactionTimeout is the timeout of every transaction when
// SinkOptions.TransactionTimeout (or TransactorOptions') is 0: 15
// minutes, the broker's usual transaction.max.timeout.ms.
const DefaultTransactionTimeout = 15 * time.Minute

// DefaultMaxBufferedRecords is how many records one producer client of
// the sink holds before a write blocks, when SinkOptions.MaxBufferedRecords
// (or TransactorOptions') is 0: half franz-go's own default. A record of a
// copy job is the fetched one, so while it waits in the producer it keeps
// its whole fetched batch alive. With fetches bounded by the source
// (sourcekafka.DefaultFetchMaxBytes) and no compression, the exactly-once
// copy of a 550 MB backlog peaked at 199-214 MiB with 25,000 and at
// 246-257 MiB with 50,000, at the same throughput within the runs' spread
// (medians 897k / 885k / 980k against 835k / 868k / 991k records/s at
// 50 ms / 100 ms / 1 s; bench/results/copy-tuning/sync-buf). In an
// earlier sitting, with snappy, 10,000 cost a fifth of the throughput
// (bench/results/rss-ab/buffer-ab.md).
const DefaultMaxBufferedRecords = 25_000

// DefaultCompression is the codec of produced batches when
// SinkOptions.Compression (or TransactorOptions') is empty: none, the
// Kafka producer's own default (compression.type), which Flink's and
// Kafka Streams' sinks inherit; franz-go's default is snappy. On the
// bench machine snappy took 12% of the exactly-once copy's CPU and
// gained nothing on its incompressible values, and the broker
// decompresses every compressed batch to validate it.
const DefaultCompression = "none"

// DefaultLinger is the linger of the sink's producers, how long a
// partition's batch waits for more records before it is sent, when
// SinkOptions.Linger (or TransactorOptions') is left 0: none, as Kafka's
// producer before 4.0 (linger.ms=0); franz-go's own default is 10 ms.
// Whenever the producer is full, as it is under a backlog, records pile up
// behind the requests in flight and batches fill anyway; a linger then
// only holds back the first records of each transaction, which start on an
// idle client after every checkpoint: at 100 ms checkpoints 10 ms of a
// subtask's every 100 in which the broker had nothing of its. Without it
// the exactly-once copy's median at 100 ms checkpoints was 4-9% higher in
// three A/B runs, at 50 ms and 1 s the same within the runs' spread
// (bench/results/copy-tuning/linger-ab*).
const DefaultLinger time.Duration = 0

// Compressions are the codecs SinkOptions.Compression accepts.
var compressions = map[string]func() kgo.CompressionCodec{
	"none": kgo.NoCompression, "gzip": kgo.GzipCompression, "snappy": kgo.SnappyCompression,
	"lz4": kgo.Lz4Compression, "zstd": kgo.ZstdCompression,
}

// compressionOpt is the producer option of codec name ("" is
// DefaultCompression); Validate refuses an unknown name first.
func compressionOpt(name string) kgo.Opt {
	if name == "" {
		name = DefaultCompression
	}
	codec, ok := compressions[name]
	if !ok {
		codec = compressions[DefaultCompression]
	}
	return kgo.ProducerBatchCompression(codec())
}

// producerOpts are the options every producer client of the sink starts
// from, before the caller's client options (which override them).
func producerOpts(maxBuffered int, compression string, linger time.Duration) []kgo.Opt {
	return []kgo.Opt{kgo.MaxBufferedRecords(maxBuffered), compressionOpt(compression), kgo.ProducerLinger(linger)}
}

// producerRules are the checks of the producer options that SinkOptions
// and TransactorOptions share.
func producerRules(maxBuffered int, compression string, linger time.Duration) []optcheck.Rule {
	return []optcheck.Rule{
		{Option: "MaxBufferedRecords", Value: maxBuffered,
			Bad: optcheck.NotNegative(maxBuffered, fmt.Sprintf("0 takes the default %d", DefaultMaxBufferedRecords))},
		{Option: "Compression", Value: compression, Bad: compressionBad(compression)},
		{Option: "Linger", Value: linger, Bad: optcheck.NotNegative(linger, "0 sends each batch as soon as the producer can")},
	}
}

func compressionBad(name string) string {
	if _, ok := compressions[name]; ok || name == "" {
		return ""
	}
	return fmt.Sprintf("is not one of none, gzip, snappy, lz4, zstd (empty takes the default %s)", DefaultCompression)
}

// minTransactorSlots is the least TransactorOptions.Slots: the open
// transaction and one pre-committed one.
const minTransactorSlots = 2

// MinSlots is how many transactional ids an exactly-once sink subtask
// needs with c = maxConcurrent checkpoints in flight (below 1 counts as
// 1): one for the open transaction, c pre-committed ones of checkpoints in
// flight, c of completed checkpoints whose commits run beside the writing,
// and c+1 committed ones that the latest completed checkpoint may still
// refer to (an id is reused only once a checkpoint taken after its commit
// completed, because a restore commits what the checkpoint holds again).
// 5 with one checkpoint at a time, the default of SinkOptions.Slots and
// TransactorOptions.Slots.
func MinSlots(maxConcurrent int) int { return 3*max(maxConcurrent, 1) + 2 }

// Validate reports every option of o that NewSink refuses, each naming
// the option and its value (errors.Join of *optcheck.Error); nil when all
// are acceptable. Zero means the default, except that exactly_once needs
// a TransactionalIDPrefix.
func (o SinkOptions) Validate() error {
	delivery := o.Delivery
	if delivery == "" {
		delivery = DeliveryExactlyOnce
	}
	_, derr := ParseDelivery(string(delivery))
	eo := delivery == DeliveryExactlyOnce
	need := MinSlots(o.MaxConcurrentCheckpoints)
	return optcheck.Check("kafka sink", append([]optcheck.Rule{
		{Option: "Delivery", Value: string(o.Delivery), Bad: optcheck.If(derr != nil, "is not one of none, at_least_once, exactly_once")},
		{Option: "TransactionalIDPrefix", Value: o.TransactionalIDPrefix,
			Bad: optcheck.If(eo && o.TransactionalIDPrefix == "", "is empty: exactly_once delivery needs a transactional id prefix")},
		{Option: "MaxConcurrentCheckpoints", Value: o.MaxConcurrentCheckpoints,
			Bad: optcheck.NotNegative(o.MaxConcurrentCheckpoints, "0 is one checkpoint at a time")},
		{Option: "Slots", Value: o.Slots, Bad: slotsBad(o.Slots, eo, need, o.MaxConcurrentCheckpoints)},
		{Option: "TransactionTimeout", Value: o.TransactionTimeout,
			Bad: optcheck.NotNegative(o.TransactionTimeout, fmt.Sprintf("0 takes the default %s", DefaultTransactionTimeout))},
	}, producerRules(o.MaxBufferedRecords, o.Compression, o.Linger)...)...)
}

func slotsBad(slots int, eo bool, need, maxConcurrent int) string {
	switch {
	case slots < 0:
		return fmt.Sprintf("is negative (0 takes MinSlots(MaxConcurrentCheckpoints), %d)", need)
	case eo && slots > 0 && slots < need:
		return fmt.Sprintf("is too few: exactly_once with MaxConcurrentCheckpoints %d needs at least %d (0 takes that)", max(maxConcurrent, 1), need)
	}
	return ""
}

// Validate reports every option of o that NewTransactor refuses, each
// naming the option and its value (errors.Join of *optcheck.Error); nil
// when all are acceptable. Zero means the default, except Prefix, which is
// required.
func (o TransactorOptions) Validate() error {
	slots := o.Slots
	if slots == 0 {
		slots = MinSlots(1)
	}
	return optcheck.Check("kafka sink", append([]optcheck.Rule{
		{Option: "Prefix", Value: o.Prefix, Bad: optcheck.If(o.Prefix == "", "is empty: exactly_once delivery needs a transactional id prefix")},
		{Option: "Slots", Value: o.Slots, Bad: optcheck.If(o.Slots != 0 && o.Slots < minTransactorSlots,
			fmt.Sprintf("is below %d, the open transaction and a pre-committed one (0 takes the default %d)", minTransactorSlots, MinSlots(1)))},
		{Option: "MaxSlots", Value: o.MaxSlots, Bad: optcheck.If(o.MaxSlots != 0 && o.MaxSlots < slots,
			fmt.Sprintf("is below Slots (%d): the pool cannot grow to it (0 takes 4 × Slots, at least 16)", slots))},
		{Option: "TransactionTimeout", Value: o.TransactionTimeout,
			Bad: optcheck.NotNegative(o.TransactionTimeout, fmt.Sprintf("0 takes the default %s", DefaultTransactionTimeout))},
	}, producerRules(o.MaxBufferedRecords, o.Compression, o.Linger)...)...)
}
