package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
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
	j := newProcJob(t, seeds, "longstop", jobSpec{partitions: 2, pebble: true, seed: 3})
	f := j.feed
	f.produce(t, 200)

	// Run while records flow, and stop with a savepoint in the middle of
	// the flow, so that the savepoint holds transactions.
	c := j.run(nil)
	j.flowUntil(c, "the first run", 400, 30)
	f.feedDuring(t, func() { c.stop(time.Minute) })
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)

	// A long stop: the broker expires the ids of the job's prefix.
	time.Sleep(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	listed, err := kadm.NewClient(kafkatest.Client(t, seeds)).ListTransactions(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id := range listed {
		if strings.HasPrefix(id, j.name+"-") {
			t.Fatalf("transactional id %s is still known to the broker after 20s; the test needs it expired", id)
		}
	}

	// Resume while input keeps arriving, then finish it.
	f.produce(t, 200)
	c = j.run(nil)
	for range 20 {
		if c.exited() {
			break
		}
		f.produce(t, 40)
		time.Sleep(50 * time.Millisecond)
	}
	j.waitOutput(c, "after the long stop", len(f.sent), 3*time.Minute)
	c.stop(time.Minute)
	got := j.output()
	if d := checkCopy(f.sent, got); d != "" {
		t.Fatalf("output is not exactly once across the long stop (%d input records, %d output): %s", len(f.sent), len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("%d input records, %d output records, exact across a 20s stop with ids expiring after 5s; %s in all",
		len(f.sent), len(got), time.Since(began).Round(time.Second))
}
