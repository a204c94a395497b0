package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// verify on a real broker, as the demo runs it after the restart: the
// output topic holds the committed counts, then an aborted transaction of
// replayed counts (what a killed run leaves and its restart aborts) at the
// end of both partitions. The read-back reaches the end past the abort
// markers, leaves the aborted records out and says exact. An open
// transaction makes the read-back refuse, naming the partition; once it
// commits repeated counts, verify says NOT exact and fails.
func TestVerifyOnKafkaReadsPastAbortsAndFailsOnRepeats(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Kafka broker")
	}
	seeds := kafkatest.Bootstrap(t)
	input := kafkatest.Topic(t, seeds, 2)
	output := kafkatest.Topic(t, seeds, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	lines := sampleLines(24)
	in := kafkatest.Client(t, seeds, kgo.DefaultProduceTopic(input))
	var recs []*kgo.Record
	for _, l := range lines {
		recs = append(recs, kgo.StringRecord(l))
	}
	if err := in.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	prefix := "demo-" + output
	sink := kafkatest.Client(t, seeds, kgo.TransactionalID(prefix+"-0-0"), kgo.DefaultProduceTopic(output),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	// begin opens a transaction and writes recs in it.
	begin := func(recs []outputRecord) {
		t.Helper()
		if err := sink.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var krs []*kgo.Record
		for _, r := range recs {
			krs = append(krs, &kgo.Record{Partition: r.Partition, Key: []byte(r.Word), Value: []byte(r.Value)})
		}
		if err := sink.ProduceSync(ctx, krs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	write := func(recs []outputRecord, commit bool) {
		t.Helper()
		begin(recs)
		if err := sink.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	counts := wordCount(lines, 2)
	write(counts, true)
	replay := counts[len(counts)-40:] // both partitions
	write(replay, false)

	var out bytes.Buffer
	if err := verify(ctx, seeds, input, output, 5, &out); err != nil {
		t.Fatalf("verify after an aborted replay: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "demo: exact: ") {
		t.Fatalf("verify does not say exact:\n%s", out.String())
	}

	// The replay again, left open.
	begin(replay)
	open, err := listOpen(ctx, kadm.NewClient(kafkatest.Client(t, seeds)), prefix)
	if err != nil || len(open) != 1 || open[0].ID != prefix+"-0-0" || open[0].State != "Ongoing" {
		t.Fatalf("open transactions of %s: %+v, %v; want %s-0-0 Ongoing", prefix, open, err, prefix)
	}
	out.Reset()
	err = verify(ctx, seeds, input, output, 5, &out)
	if err == nil || !strings.Contains(err.Error(), "an open transaction holds its last stable offset") || !strings.Contains(err.Error(), output+"/") {
		t.Fatalf("verify with an open transaction: %v, want the refusal naming the partition\n%s", err, out.String())
	}

	// Committed: the counts repeat.
	if err := sink.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = verify(ctx, seeds, input, output, 5, &out)
	if err == nil || !strings.Contains(out.String(), "demo: NOT exact: ") || !strings.Contains(out.String(), "repeated") {
		t.Fatalf("verify after a committed replay: %v, want NOT exact with repeated counts\n%s", err, out.String())
	}
}
