package kafka

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func atoiDecoder(r *kgo.Record) (int, error) { return strconv.Atoi(string(r.Value)) }

func produceValues(t *testing.T, ctx context.Context, client []kgo.Opt, topic string, vals ...string) {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, v := range vals {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func decodeAll(t *testing.T, ctx context.Context, d *Decoding[int]) ([]int, error) {
	t.Helper()
	var out []int
	for idle := 0; idle < 5; {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		v, ok, err := d.Next(pctx)
		cancel()
		if err != nil {
			return out, err
		}
		if !ok {
			idle++
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

func TestDecodePolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in", "dlq")
	produceValues(t, ctx, client, "in", "1", "two", "3")

	open := func() *Reader {
		r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}

	t.Run("fail names the record and is non-recoverable", func(t *testing.T) {
		d, _ := NewDecoding(open(), atoiDecoder, DecodeFail, nil, "")
		got, err := decodeAll(t, ctx, d)
		var de *DecodeError
		if !errors.As(err, &de) || de.Offset != 1 || !strings.Contains(err.Error(), "in/0@1") {
			t.Fatalf("err = %v, want a decode error naming in/0@1", err)
		}
		if !de.NonRecoverable() || !slices.Equal(got, []int{1}) {
			t.Fatalf("got %v before the failure", got)
		}
	})
	t.Run("skip counts", func(t *testing.T) {
		d, _ := NewDecoding(open(), atoiDecoder, DecodeSkip, nil, "")
		got, err := decodeAll(t, ctx, d)
		if err != nil || !slices.Equal(got, []int{1, 3}) || d.Skipped() != 1 {
			t.Fatalf("got %v err %v skipped %d", got, err, d.Skipped())
		}
	})
	t.Run("dead letter keeps the record with its origin", func(t *testing.T) {
		dlq, err := kgo.NewClient(client...)
		if err != nil {
			t.Fatal(err)
		}
		defer dlq.Close()
		d, err := NewDecoding(open(), atoiDecoder, DecodeDeadLetter, dlq, "dlq")
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeAll(t, ctx, d)
		if err != nil || !slices.Equal(got, []int{1, 3}) || d.DeadLettered() != 1 {
			t.Fatalf("got %v err %v dead-lettered %d", got, err, d.DeadLettered())
		}
		r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"dlq"}}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rec, ok, err := r.Next(ctx)
		if err != nil || !ok || string(rec.Value) != "two" {
			t.Fatalf("dead-letter topic holds %v %v %v", rec, ok, err)
		}
		headers := map[string]string{}
		for _, h := range rec.Headers {
			headers[h.Key] = string(h.Value)
		}
		if headers["onceflow.source.topic"] != "in" || headers["onceflow.source.offset"] != "1" || !strings.Contains(headers["onceflow.error"], "invalid syntax") {
			t.Fatalf("dead-letter headers %v", headers)
		}
	})
}

// A barrier cancels Next's context while a record is on its way to the
// dead-letter topic: the write must go on (the record is already read and
// will be in the checkpoint's offsets), not fail the job.
func TestDeadLetterWriteOutlivesABarrier(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in", "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produceValues(t, ctx, client, "in", "bad")
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dlq, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	d, err := NewDecoding(r, atoiDecoder, DecodeDeadLetter, dlq, "dlq")
	if err != nil {
		t.Fatal(err)
	}
	// The dead-letter producer's first request is its producer id; the
	// barrier comes while it is answered.
	barrier, inject := context.WithCancel(ctx)
	var armed atomic.Bool
	armed.Store(true)
	c.ControlKey(kmsg.InitProducerID.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		if armed.CompareAndSwap(true, false) {
			inject()
			time.Sleep(100 * time.Millisecond)
		}
		return nil, nil, false
	})
	if v, ok, err := d.Next(barrier); err != nil || ok {
		t.Fatalf("Next = %v, %v, %v; want no value and no error", v, ok, err)
	}
	if armed.Load() {
		t.Fatal("the dead-letter producer sent no InitProducerID")
	}
	if d.DeadLettered() != 1 {
		t.Fatalf("dead-lettered %d records, want 1", d.DeadLettered())
	}
}

// A write to the dead-letter topic waits for the cluster as long as the
// outage tolerance (the client retries it meanwhile), then fails the
// attempt naming the record and the tolerance; within it, it succeeds.
func TestDeadLetterWriteWaitsUpToTheOutageTolerance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, faults := range []int{3, -1} {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in", "dlq"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
		produceValues(t, ctx, client, "in", "bad")
		tr, _ := tracker(t, 2*time.Second, nil)
		r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Outage: tr}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// A refused produce waits for fresh metadata, at most every
		// MetadataMinAge (5s by default).
		dlq, err := kgo.NewClient(append(slices.Clone(client), kgo.MetadataMinAge(50*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer dlq.Close()
		d, err := NewDecoding(r, atoiDecoder, DecodeDeadLetter, dlq, "dlq")
		if err != nil {
			t.Fatal(err)
		}
		// The dead-letter topic's leader is away for its first produces,
		// or for all of them.
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "dlq", Err: kerr.NotLeaderForPartition, Count: faults})
		begin := time.Now()
		_, err = decodeAll(t, ctx, d)
		took := time.Since(begin)
		if faults > 0 {
			if err != nil || d.DeadLettered() != 1 {
				t.Fatalf("with %d produces refused: err %v, %d dead-lettered; want the record written", faults, err, d.DeadLettered())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "in/0@0 to dead-letter topic dlq: not written within kafka.outage_tolerance 2s") {
			t.Fatalf("with every produce refused: %v, want the write failed naming the record and the tolerance", err)
		}
		if took < 2*time.Second || took > 10*time.Second {
			t.Fatalf("the write gave up after %s, want the 2s tolerance", took)
		}
	}
}
