package kafkatest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// A partition whose last stable offset is the first record of an open
// transaction, right behind the data of a transaction that was aborted
// after the open one began (two producers, interleaved): ReadCommitted
// sees nothing at the offset just below the LSO (a read_committed reader
// drops the aborted data and the abort marker lies beyond the LSO), and
// it must still return promptly with the committed records only.
func TestReadCommittedBehindAnInterleavedAbort(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Kafka broker")
	}
	seeds := Bootstrap(t)
	topic := Topic(t, seeds, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	producer := func(id string) *kgo.Client {
		return Client(t, seeds, kgo.TransactionalID(topic+"-"+id), kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	produce := func(cl *kgo.Client, value string) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	end := func(cl *kgo.Client, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := producer("a"), producer("b"), producer("c")
	produce(c, "committed")
	end(c, kgo.TryCommit)
	produce(a, "aborted")
	produce(b, "open")
	end(a, kgo.TryAbort)
	start := time.Now()
	got := ReadCommitted(t, seeds, topic)
	if len(got) != 1 || string(got[0].Value) != "committed" {
		t.Fatalf("ReadCommitted returned %d records %v, want the one committed record", len(got), got)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("ReadCommitted took %s", took)
	}
	end(b, kgo.TryCommit)
	// EndTransaction returns once the coordinator has decided the commit;
	// it writes the commit marker, and so moves the partition's LSO past
	// the transaction, a moment later. The record shows up then.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := ReadCommitted(t, seeds, topic)
		if len(got) == 2 {
			break
		}
		if len(got) != 1 || time.Now().After(deadline) {
			t.Fatalf("after the open transaction committed: %d records, want 2", len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
