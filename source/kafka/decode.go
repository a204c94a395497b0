package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// OnDecodeError says what a source does with a record its decoder refuses.
type OnDecodeError string

const (
	// DecodeFail fails the job without restart: the same record would fail
	// again after every restart. The error names topic, partition and
	// offset.
	DecodeFail OnDecodeError = "fail"
	// DecodeSkip drops the record, counts it and logs it.
	DecodeSkip OnDecodeError = "skip"
	// DecodeDeadLetter writes the raw record, with headers saying where it
	// came from and why it failed, to a dead-letter topic before reading
	// on. The write is synchronous and at-least-once: after a crash a
	// record may reach the dead-letter topic twice, never zero times. A
	// write that takes longer than 30 seconds fails the job attempt.
	DecodeDeadLetter OnDecodeError = "dead_letter"
)

// ParseOnDecodeError checks a configured policy.
func ParseOnDecodeError(s string) (OnDecodeError, error) {
	switch p := OnDecodeError(s); p {
	case DecodeFail, DecodeSkip, DecodeDeadLetter:
		return p, nil
	}
	return "", fmt.Errorf("unknown on_decode_error policy %q (fail, skip, dead_letter)", s)
}

// Decoder turns a Kafka record into a value of the job's input type. A
// source without a SourceOptions.Timestamp function reads nothing of the
// record after a successful decode, so there the decoder may reuse it (as
// the value it returns, say); with one, the record goes to that function
// after Decode and must be left as it is. After a failure the source
// reads the record's topic, partition, offset, key, value, headers and
// timestamp to report it.
type Decoder[T any] func(*kgo.Record) (T, error)

// DecodeError is a record that could not be decoded. Under DecodeFail it is
// non-recoverable.
type DecodeError struct {
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

// Error names the record's topic, partition and offset and the decoder's
// error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("kafka source: record %s/%d@%d cannot be decoded: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns the decoder's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// NonRecoverable: restarting replays the same record into the same error.
func (e *DecodeError) NonRecoverable() bool { return true }

// Decoding reads records through a Reader and decodes them under a policy.
type Decoding[T any] struct {
	r      *Reader
	decode Decoder[T]
	policy OnDecodeError
	dlq    *kgo.Client // nil unless DecodeDeadLetter
	dlqTo  string

	skipped    atomic.Int64
	deadLetter atomic.Int64
}

// NewDecoding wraps r. With DecodeDeadLetter, dlqClient produces to
// deadLetterTopic (the caller owns and closes the client).
func NewDecoding[T any](r *Reader, decode Decoder[T], policy OnDecodeError, dlqClient *kgo.Client, deadLetterTopic string) (*Decoding[T], error) {
	if policy == DecodeDeadLetter && (dlqClient == nil || deadLetterTopic == "") {
		return nil, fmt.Errorf("kafka source: the dead_letter policy needs a dead-letter topic and a client")
	}
	return &Decoding[T]{r: r, decode: decode, policy: policy, dlq: dlqClient, dlqTo: deadLetterTopic}, nil
}

// Next returns the next decodable record's value; false when ctx ended
// first.
func (d *Decoding[T]) Next(ctx context.Context) (T, bool, error) {
	var zero T
	for {
		rec, ok, err := d.r.Next(ctx)
		if err != nil || !ok {
			return zero, false, err
		}
		v, err := d.decode(rec)
		if err == nil {
			return v, true, nil
		}
		derr := &DecodeError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Err: err}
		switch d.policy {
		case DecodeSkip:
			d.skipped.Add(1)
			d.r.opts.Logger.Warn("kafka source: skipping a record that cannot be decoded",
				"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		case DecodeDeadLetter:
			if err := d.sendDeadLetter(ctx, rec, err); err != nil {
				return zero, false, err
			}
			d.deadLetter.Add(1)
		default:
			return zero, false, derr
		}
	}
}

func (d *Decoding[T]) sendDeadLetter(ctx context.Context, rec *kgo.Record, cause error) error {
	out := &kgo.Record{Topic: d.dlqTo, Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp,
		Headers: append(append([]kgo.RecordHeader(nil), rec.Headers...),
			kgo.RecordHeader{Key: "onceflow.source.topic", Value: []byte(rec.Topic)},
			kgo.RecordHeader{Key: "onceflow.source.partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			kgo.RecordHeader{Key: "onceflow.source.offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
			kgo.RecordHeader{Key: "onceflow.error", Value: []byte(cause.Error())},
		)}
	// The record is already read: its offset is in the next snapshot. So
	// the write must not stop when the engine cancels ctx to inject a
	// barrier, only when it takes longer than the outage tolerance (the
	// client retries meanwhile; then the attempt fails and the restore
	// reads the record again).
	tol := d.r.tracker.Tolerance()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tol)
	defer cancel()
	if err := d.dlq.ProduceSync(wctx, out).FirstErr(); err != nil {
		if wctx.Err() != nil {
			err = fmt.Errorf("not written within kafka.outage_tolerance %s: %w", tol, err)
		}
		return fmt.Errorf("kafka source: writing record %s/%d@%d to dead-letter topic %s: %w", rec.Topic, rec.Partition, rec.Offset, d.dlqTo, err)
	}
	d.r.tracker.Succeeded()
	return nil
}

// Reader is the underlying Reader (for snapshots and notifications).
func (d *Decoding[T]) Reader() *Reader { return d.r }

// Skipped counts records dropped under DecodeSkip.
func (d *Decoding[T]) Skipped() int64 { return d.skipped.Load() }

// DeadLettered counts records sent to the dead-letter topic.
func (d *Decoding[T]) DeadLettered() int64 { return d.deadLetter.Load() }
