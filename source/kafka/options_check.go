package kafka

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/onceflow/onceflow/internal/optcheck"
)

// DefaultDiscoveryInterval is how often the topics' partition counts are
// checked when ReaderOptions.DiscoveryInterval is 0.
const DefaultDiscoveryInterval = 30 * time.Second

// DefaultLagInterval is SourceOptions.LagInterval when 0.
const DefaultLagInterval = 5 * time.Second

// DefaultFetchMaxBytes is ReaderOptions.FetchMaxBytes when 0: 1.5 MiB
// per fetch response of a subtask, whatever its number of partitions (the
// bound counts compressed bytes). franz-go's own defaults (50 MiB per
// fetch, 1 MiB per partition) let a subtask of the exactly-once copy with
// 4 partitions fetch 4 MiB at a time; with the fetches in flight, their
// decompressed copies and their kgo.Records that was most of the copy's
// 90-120 MB live heap, and its peak RSS went from 273-319 MiB to 134-165
// MiB with 2 MiB (bench/results/rss-ab, snappy in the sink). Without
// compression and with 25,000 buffered records, the copy of the 550 MB
// backlog peaked at 190-224 MiB with 2 MiB, 166-184 MiB with 1.5 MiB and
// 148-165 MiB with 1 MiB; 1.5 MiB kept 2 MiB's throughput at 50 ms and 1 s
// (medians of 4 runs 811k / 991k against 794k / 997k records/s), while
// 1 MiB lost a fifth at 1 s in one A/B of two (bench/results/copy-tuning:
// fetch-15-ab, fetch-12-ab, fetch-pool-ab).
const DefaultFetchMaxBytes = 3 << 19

// Validate reports every option of o that OpenReader (and NewSource)
// refuses, each naming the option as "Reader.<field>" and its value
// (errors.Join of *optcheck.Error); nil when all are acceptable. Zero
// means the default; a negative DiscoveryInterval disables discovery.
func (o ReaderOptions) Validate() error {
	start := o.Start
	if start == "" {
		start = StartEarliest
	}
	var oorBad string
	if o.OnOutOfRange != "" {
		if _, err := ParseOnOffsetOutOfRange(string(o.OnOutOfRange)); err != nil {
			oorBad = "is not one of fail, earliest, latest"
		}
	}
	g := o.PartitionGroup
	return optcheck.Check("kafka source",
		optcheck.Rule{Option: "Reader.Topics", Value: fmt.Sprint(o.Topics), Bad: optcheck.If(len(o.Topics) == 0, "names no topic to read")},
		optcheck.Rule{Option: "Reader.Start", Value: string(o.Start), Bad: optcheck.If(
			start != StartEarliest && start != StartLatest && start != StartCommitted && start != StartTimestamp,
			"is not one of earliest, latest, committed, timestamp")},
		optcheck.Rule{Option: "Reader.Group", Value: o.Group, Bad: optcheck.If(start == StartCommitted && o.Group == "",
			"is empty: start position committed needs a consumer group")},
		optcheck.Rule{Option: "Reader.StartTime", Value: o.StartTime.Format(time.RFC3339), Bad: optcheck.If(start == StartTimestamp && o.StartTime.IsZero(),
			"is the zero time: start position timestamp needs one")},
		optcheck.Rule{Option: "Reader.OnOutOfRange", Value: string(o.OnOutOfRange), Bad: oorBad},
		optcheck.Rule{Option: "Reader.PartitionGroup", Value: fmt.Sprintf("%d of %d", g.Index, g.Count),
			Bad: optcheck.If(g.Count < 0 || g.Count > 0 && (g.Index < 0 || g.Index >= g.Count), "does not exist")},
		optcheck.Rule{Option: "Reader.PurgeInterval", Value: o.PurgeInterval, Bad: optcheck.NotNegative(o.PurgeInterval, "0 keeps every record")},
		optcheck.Rule{Option: "Reader.FetchMaxBytes", Value: o.FetchMaxBytes, Bad: fetchMaxBytesBad(o.FetchMaxBytes)},
		optcheck.Rule{Option: "Reader.PoolBytes", Value: o.PoolBytes, Bad: optcheck.NotNegative(o.PoolBytes, "0 pools nothing")},
	)
}

// Validate reports every option of o that NewSource refuses (the
// Reader's too, as ReaderOptions.Validate names them), each naming the
// option and its value (errors.Join of *optcheck.Error); nil when all are
// acceptable. Zero means the default; a negative LagInterval leaves the
// lag unknown.
func (o SourceOptions[T]) Validate() error {
	policy := o.OnDecodeError
	if policy == "" {
		policy = DecodeFail
	}
	_, perr := ParseOnDecodeError(string(policy))
	return errors.Join(optcheck.Check("kafka source",
		optcheck.Rule{Option: "Decode", Value: "nil", Bad: optcheck.If(o.Decode == nil, "is required: no decoder")},
		optcheck.Rule{Option: "OnDecodeError", Value: string(o.OnDecodeError), Bad: optcheck.If(perr != nil, "is an unknown on_decode_error policy (fail, skip, dead_letter)")},
		optcheck.Rule{Option: "DeadLetterTopic", Value: o.DeadLetterTopic, Bad: optcheck.If(policy == DecodeDeadLetter && o.DeadLetterTopic == "",
			"is empty: the dead_letter policy needs a dead-letter topic")},
		optcheck.Rule{Option: "MaxOutOfOrderness", Value: o.MaxOutOfOrderness, Bad: optcheck.NotNegative(o.MaxOutOfOrderness, "0 for partitions in timestamp order")},
		optcheck.Rule{Option: "IdleTimeout", Value: o.IdleTimeout, Bad: optcheck.NotNegative(o.IdleTimeout, "0: partitions never go idle")},
	), o.Reader.Validate())
}

func fetchMaxBytesBad(n int) string {
	switch {
	case n < 0:
		return fmt.Sprintf("is negative (0 takes the default %d)", DefaultFetchMaxBytes)
	case n > math.MaxInt32:
		return fmt.Sprintf("is above %d, the most a fetch request can ask for", math.MaxInt32)
	}
	return ""
}
