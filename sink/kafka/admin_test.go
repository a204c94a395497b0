package kafka

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestTransactionTimeoutGuard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "600000"}))
	cl := plainClient(t, client)
	limit, err := BrokerMaxTransactionTimeout(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if limit != 10*time.Minute {
		t.Fatalf("broker limit read as %s, want 10m", limit)
	}
	budget := TimeoutBudget{CheckpointInterval: 10 * time.Second, CheckpointTimeout: time.Minute, RestartDelay: 20 * time.Second}
	for _, tc := range []struct {
		timeout time.Duration
		want    string
	}{
		{11 * time.Minute, "exceeds the broker's transaction.max.timeout.ms"},
		{2 * time.Minute, "not comfortably above"},
		{5 * time.Minute, ""},
	} {
		err := CheckTransactionTimeout(ctx, cl, tc.timeout, budget)
		if tc.want == "" && err != nil {
			t.Fatalf("timeout %s: %v", tc.timeout, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Fatalf("timeout %s: err = %v, want %q", tc.timeout, err, tc.want)
		}
	}

	// Five tolerable failures: a transaction may wait for six checkpoints
	// to time out before one completes with it, then for an outage of the
	// cluster and a restart before its commit: 10s + 6 x 1m + 1m + 20s =
	// 7.5 minutes. A 5 minute timeout could abort it, losing its records.
	budget = TimeoutBudget{CheckpointInterval: 10 * time.Second, CheckpointTimeout: time.Minute, TolerableFailures: 5,
		RestartDelay: 20 * time.Second, OutageTolerance: time.Minute}
	err = CheckTransactionTimeout(ctx, cl, 5*time.Minute, budget)
	if err == nil || !strings.Contains(err.Error(), "not comfortably above") || !strings.Contains(err.Error(), "tolerable_failures 5") {
		t.Fatalf("a 5m timeout with 5 tolerable failures of 1m checkpoints: err = %v, want it refused naming the tolerable failures", err)
	}
	if err := CheckTransactionTimeout(ctx, cl, 10*time.Minute, budget); err != nil {
		t.Fatalf("a 10m timeout, above 7.5 minutes with a margin: %v", err)
	}
}

func TestListAndAbortOpenTransactionsOfAPrefix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fakeCluster(t)
	open := func(id string) {
		cl, err := kgo.NewClient(append(slices.Clone(client), kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(id)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	open(TransactionalID("job", 0, 1))
	open(TransactionalID("job", 1, 0))
	open(TransactionalID("other", 0, 0))
	cl := plainClient(t, client)
	got, err := ListOpenTransactions(ctx, cl, "job")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ot := range got {
		ids = append(ids, ot.TransactionalID)
		if len(ot.Partitions) == 0 {
			t.Errorf("%s lists no partition", ot.TransactionalID)
		}
	}
	if !slices.Equal(ids, []string{"job-0-1", "job-1-0"}) {
		t.Fatalf("open transactions of job: %v", ids)
	}
	aborted, err := AbortOpenTransactions(ctx, cl, "job", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(aborted, ids) {
		t.Fatalf("aborted %v, want %v", aborted, ids)
	}
	if left, err := ListOpenTransactions(ctx, cl, "job"); err != nil || len(left) != 0 {
		t.Fatalf("after abort: %v %v", left, err)
	}
	if left, err := ListOpenTransactions(ctx, cl, "other"); err != nil || len(left) != 1 {
		t.Fatalf("another prefix's transaction must stay: %v %v", left, err)
	}
}
