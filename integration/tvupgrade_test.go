package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/internal/failpoint"
	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

// privateCluster starts a single-node broker of the test's own (a test
// that changes the cluster's features or timeouts must not share one),
// stopped when the test ends.
func privateCluster(t *testing.T, opts broker.Options) *broker.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts.Logf = t.Logf
	start := time.Now()
	c, err := broker.Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting a private broker: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("stopping the private broker: %v", err)
		}
	})
	t.Logf("private broker up in %s at %s", time.Since(start).Round(time.Millisecond), c.Bootstrap())
	return c
}

// upgradeTransactionVersion finalizes transaction.version at level through
// the UpdateFeatures admin request (what kafka-features.sh upgrade sends)
// and waits until the cluster reports it.
func upgradeTransactionVersion(t *testing.T, seeds []string, level int16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := kmsg.NewPtrUpdateFeaturesRequest()
	req.TimeoutMillis = 30000
	u := kmsg.NewUpdateFeaturesRequestFeatureUpdate()
	u.Feature = "transaction.version"
	u.MaxVersionLevel = level
	u.UpgradeType = 1 // upgrade
	req.FeatureUpdates = append(req.FeatureUpdates, u)
	resp, err := req.RequestWith(ctx, kafkatest.Client(t, seeds))
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
		for _, r := range resp.Results {
			if rerr := kerr.ErrorForCode(r.ErrorCode); rerr != nil && err == nil {
				err = fmt.Errorf("%s: %w (%v)", r.Feature, rerr, r.ErrorMessage)
			}
		}
	}
	if err != nil {
		t.Fatalf("upgrading transaction.version to %d: %v", level, err)
	}
	var got int16
	if !eventually(ctx, 200*time.Millisecond, func() bool {
		cl := kafkatest.Client(t, seeds) // a fresh client asks afresh
		got, err = sinkkafka.TransactionVersion(ctx, cl)
		cl.Close()
		return err == nil && got == level
	}) {
		t.Fatalf("the cluster reports transaction.version %d (%v) after the upgrade to %d", got, err, level)
	}
}

// A job that ran on transaction.version 0 (Kafka 3.x transaction
// semantics) resumes on the same cluster upgraded to version 2 (KIP-890).
// The transactions the restored checkpoint holds were begun under version
// 0, so their commit must go out as EndTxn v4 or lower: Kafka 4.1 reads v5
// as a version-2 end of transaction, which commits an open version-0
// transaction but refuses to repeat the commit of a completed one
// (INVALID_TXN_STATE, which the sink must report as possible data loss).
// Two ways to stop before the upgrade: a stop with a savepoint (SIGTERM
// while records flow: the stop committed the savepoint's transactions, a
// restore may commit them again), and a kill -9 after a checkpoint
// completed, between the commits of its two transactions (the restore
// must commit the second and repeat the first; here the first resume is
// killed too, right after its first recovery commit, so that the second
// resume repeats that one as well). Both end with the exact output under
// read_committed and no transaction left open.
func TestResumeAfterTransactionVersionUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name  string
		job   crashJob
		crash bool
	}{
		{"savepoint/copy", crashJobs[0], false},
		{"kill-between-commits/wordcount", crashJobs[1], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tvUpgradeScenario(t, tc.job, tc.crash)
		})
	}
}

func tvUpgradeScenario(t *testing.T, job crashJob, crash bool) {
	began := time.Now()
	cluster := privateCluster(t, broker.Options{TransactionVersion: broker.TV(0)})
	seeds := cluster.Addrs()
	j := newProcJob(t, seeds, "tvup-"+job.typ, jobSpec{typ: job.typ, partitions: 2, pebble: true, seed: 21})
	f, cfg, out := j.feed, j.cfg, j.out
	f.produce(t, 300)

	// The first run, on transaction.version 0.
	if crash {
		// As in the crash test: the third pre-commit stalls past the
		// checkpoint timeout, its checkpoint is aborted with the
		// transaction pending, and the next completed checkpoint commits
		// both; the process dies between the two commits.
		c := startChild(t, []string{failpoint.Env + "=" + failpoint.AfterPreCommit + "~1500ms@3," + failpoint.BetweenCommits + "@1"},
			"run", "--config", cfg, "--set", "checkpoint.timeout=500ms", "--set", "checkpoint.tolerable_failures=50")
		deadline := time.Now().Add(45 * time.Second)
		for !c.exited() && time.Now().Before(deadline) {
			f.produce(t, 40)
			time.Sleep(50 * time.Millisecond)
		}
		if !c.wait(time.Second) {
			c.kill()
			t.Fatalf("failpoint between-commits did not fire within 45s:\n%s", c.tail())
		}
		if !c.killedBySIGKILL() || !strings.Contains(c.output.String(), "failpoint "+failpoint.BetweenCommits) {
			t.Fatalf("the processor ended with %v, not by failpoint between-commits:\n%s", c.err, c.tail())
		}
	} else {
		c := j.run(nil)
		j.flowUntil(c, "the first run", 300, 30)
		// Stop while records flow, so that the savepoint holds
		// transactions.
		f.feedDuring(t, func() { c.stop(time.Minute) })
		kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	}
	before := len(kafkatest.ReadCommitted(t, seeds, out))

	upgradeTransactionVersion(t, seeds, 2)
	t.Logf("the cluster runs transaction.version 2; %d output records before the upgrade", before)

	if crash {
		// The first resume dies right after its first recovery commit.
		c := startChild(t, []string{failpoint.Env + "=" + failpoint.RestoreAfterCommit + "@1"}, "run", "--config", cfg)
		if !c.wait(time.Minute) {
			c.kill()
			t.Fatalf("failpoint restore-after-commit did not fire within a minute:\n%s", c.tail())
		}
		if !c.killedBySIGKILL() || !strings.Contains(c.output.String(), "failpoint "+failpoint.RestoreAfterCommit) {
			t.Fatalf("the first resume ended with %v, not by failpoint restore-after-commit:\n%s", c.err, c.tail())
		}
	}

	// Resume on version 2 while input keeps arriving, then finish it.
	f.produce(t, 200)
	c := startChild(t, nil, "run", "--config", cfg)
	for range 20 {
		if c.exited() {
			break
		}
		f.produce(t, 40)
		time.Sleep(50 * time.Millisecond)
	}
	wantOut := len(f.sent)
	if job.typ == "wordcount" {
		wantOut = 0
		for _, r := range f.sent {
			wantOut += len(strings.Fields(string(r.Value)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("the resumed processor exited with %v:\n%s", c.err, c.tail())
		}
		got = kafkatest.ReadCommitted(t, seeds, out)
		return len(got) >= wantOut && strings.Contains(c.output.String(), "http listening")
	}) {
		t.Fatalf("output incomplete after the upgrade: %d of %d records:\n%s", len(got), wantOut, c.tail())
	}
	c.stop(time.Minute)
	got = kafkatest.ReadCommitted(t, seeds, out)
	if d := job.check(f.sent, got); d != "" {
		t.Fatalf("output is not exactly once across the upgrade (%d input records, %d output): %s", len(f.sent), len(got), d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	t.Logf("%d input records, %d output records, exact across the upgrade; %s in all", len(f.sent), len(got), time.Since(began).Round(time.Second))
}

// feedDuring produces input records from another goroutine while fn runs
// (a stop, say), so that records are in flight at that moment, and adds
// them to f.sent afterwards.
func (f *feeder) feedDuring(t *testing.T, fn func()) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	var sent []*kgo.Record
	var ferr error
	go func() { // owned by feedDuring, which waits for it
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for {
			batch := make([]*kgo.Record, 0, 10)
			for range 10 {
				r := inputLine(f.rng, len(f.sent)+len(sent)+len(batch))
				r.Topic = f.topic
				batch = append(batch, r)
			}
			if err := f.cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
				ferr = err
				return
			}
			sent = append(sent, batch...)
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	f.sent = append(f.sent, sent...)
	if ferr != nil {
		t.Fatalf("producing input while stopping: %v", ferr)
	}
}
