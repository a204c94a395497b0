package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/integration/broker"
	"github.com/onceflow/onceflow/integration/kafkatest"
)

// A job stopped with a savepoint (SIGTERM while records flow) stays down
// longer than the broker keeps idle transactional ids
// (transactional.id.expiration.ms, 7 days by default, 5 s here). The
// stop committed the savepoint's transactions; the broker has since
// forgotten their ids, so committing them again would be refused as if
// they were lost. The resumed run must not fail: it carries on with the
// exact output and leaves no transaction open.
func TestResumeAfterTransactionalIDsExpired(t *testing.T) {
	began := time.Now()
	cluster := privateCluster(t, broker.Options{Props: []string{
		"transactional.id.expiration.ms=5000",
		"transaction.remove.expired.transaction.cleanup.interval.ms=2000",
	}})
	seeds := cluster.Addrs()
	in := kafkatest.Topic(t, seeds, 2)
	out := kafkatest.Topic(t, seeds, 2)
	dir := t.TempDir()
	name := fmt.Sprintf("longstop-%d", time.Now().UnixNano()%1e6)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
job: {name: %s, type: copy, parallelism: 2}
kafka: {brokers: [%q]}
source: {topic: %s, start: earliest}
sink: {topic: %s, delivery: exactly_once, transactional_id_prefix: %s, transaction_timeout: 2m}
checkpoint: {interval: 100ms, timeout: 30s, retain: 3, dir: %s/checkpoints}
state: {backend: pebble, dir: %s/state}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
`, name, seeds[0], in, out, name, dir, dir))
	f := &feeder{cl: kafkatest.Client(t, seeds, kgo.RequiredAcks(kgo.AllISRAcks())), topic: in, rng: rand.New(rand.NewPCG(3, 14))}
	f.produce(t, 200)

	// Run while records flow, and stop with a savepoint in the middle of
	// the flow, so that the savepoint holds transactions.
	c := startChild(t, nil, "run", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("the processor exited with %v:\n%s", c.err, c.tail())
		}
		f.produce(t, 30)
		return len(kafkatest.ReadCommitted(t, seeds, out)) >= 400 && strings.Contains(c.output.String(), "http listening")
	}) {
		t.Fatalf("no output after 2 minutes:\n%s", c.tail())
	}
	f.feedDuring(t, func() { c.stop(time.Minute) })
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)

	// A long stop: the broker expires the ids of the job's prefix.
	time.Sleep(20 * time.Second)
	listed, err := kadm.NewClient(kafkatest.Client(t, seeds)).ListTransactions(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id := range listed {
		if strings.HasPrefix(id, name+"-") {
			t.Fatalf("transactional id %s is still known to the broker after 20s; the test needs it expired", id)
		}
	}

	// Resume while input keeps arriving, then finish it.
	f.produce(t, 200)
	c = startChild(t, nil, "run", "--config", cfg)
	for range 20 {
		if c.exited() {
			break
		}
		f.produce(t, 40)
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("the resumed processor exited with %v:\n%s", c.err, c.tail())
		}
		got = kafkatest.ReadCommitted(t, seeds, out)
		return len(got) >= len(f.sent) && strings.Contains(c.output.String(), "http listening")
	}) {
		t.Fatalf("output incomplete after the long stop: %d of %d records:\n%s", len(got), len(f.sent), c.tail())
	}
	c.stop(time.Minute)
	got = kafkatest.ReadCommitted(t, seeds, out)
	if d := checkCopy(f.sent, got); d != "" {
		t.Fatalf("output is not exactly once across the long stop (%d input records, %d output): %s", len(f.sent), len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	t.Logf("%d input records, %d output records, exact across a 20s stop with ids expiring after 5s; %s in all",
		len(f.sent), len(got), time.Since(began).Round(time.Second))
}
