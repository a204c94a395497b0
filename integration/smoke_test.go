package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

// TestMain stops the local Kafka cluster and, if a test started one, the
// local S3 server after the tests.
func TestMain(m *testing.M) {
	code := kafkatest.Main(m)
	s3test.Shutdown()
	os.Exit(code)
}

func values(rs []*kgo.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, string(r.Value))
	}
	return out
}

// Transactions work on the real broker in both transaction modes: a
// committed transaction is visible to read_committed readers, an aborted one
// never is, and an open one holds the last stable offset until it ends.
func TestTransactionsSmoke(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kind   kafkatest.Kind
		wantTV int16
	}{
		{"kafka4-default-tv2", kafkatest.Kind{}, 2},
		{"kafka3-semantics-tv0", kafkatest.Kind{TransactionVersion: broker.TV(0)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			seeds := kafkatest.Local(t, tc.kind).Addrs()
			topic := kafkatest.Topic(t, seeds, 1)
			plain := kafkatest.Client(t, seeds)
			tv, err := sinkkafka.TransactionVersion(ctx, plain)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.wantTV == 2) != (tv >= 2) {
				t.Fatalf("cluster reports transaction.version %d, want %d", tv, tc.wantTV)
			}
			tx := kafkatest.Client(t, seeds, kgo.TransactionalID(fmt.Sprintf("smoke-%s-%d", tc.name, time.Now().UnixNano())),
				kgo.DefaultProduceTopic(topic))
			run := func(commit bool, vals ...string) {
				t.Helper()
				if err := tx.BeginTransaction(); err != nil {
					t.Fatal(err)
				}
				for _, v := range vals {
					if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
					t.Fatal(err)
				}
			}
			run(true, "c1", "c2")
			run(false, "a1")
			if got := values(kafkatest.ReadCommitted(t, seeds, topic)); !slices.Equal(got, []string{"c1", "c2"}) {
				t.Fatalf("read_committed saw %v, want [c1 c2]", got)
			}

			// An open transaction holds the last stable offset at its first record.
			if err := tx.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			r, err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte("o1")}).First()
			if err != nil {
				t.Fatal(err)
			}
			adm := kadm.NewClient(plain)
			offsets := func() (lso, hwm int64) {
				l, err := adm.ListCommittedOffsets(ctx, topic)
				if err != nil {
					t.Fatal(err)
				}
				h, err := adm.ListEndOffsets(ctx, topic)
				if err != nil {
					t.Fatal(err)
				}
				lo, _ := l.Lookup(topic, 0)
				ho, _ := h.Lookup(topic, 0)
				return lo.Offset, ho.Offset
			}
			if lso, hwm := offsets(); lso != r.Offset || hwm <= lso {
				t.Fatalf("with a transaction open at offset %d: LSO %d, HWM %d", r.Offset, lso, hwm)
			}
			if got := values(kafkatest.ReadCommitted(t, seeds, topic)); !slices.Equal(got, []string{"c1", "c2"}) {
				t.Fatalf("read_committed saw %v while the transaction was open", got)
			}
			if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			kafkatest.OpenTransactionsHoldNothing(t, seeds, topic)
			if got := values(kafkatest.ReadCommitted(t, seeds, topic)); !slices.Equal(got, []string{"c1", "c2", "o1"}) {
				t.Fatalf("read_committed saw %v, want [c1 c2 o1]", got)
			}
		})
	}
}
