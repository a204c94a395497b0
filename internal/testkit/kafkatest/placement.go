package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Where things live in a cluster, and waiting for a cluster to be whole
// again: for tests that stop, kill and restart nodes (broker.Cluster's
// Terminate, Kill and Restart). Nodes are named by their node.id
// (broker.Cluster.NodeID); every call takes the seeds of the nodes that
// may answer, and fails the test with the reason when the cluster does
// not answer in time.

// requestWait bounds each helper's requests: long enough for a cluster
// electing leaders after a node was lost, short enough for a test.
const requestWait = time.Minute

// Leaders returns the node id leading each partition of topic, -1 for a
// partition without a leader.
func Leaders(t testing.TB, seeds []string, topic string) map[int32]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestWait)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	md, err := adm.Metadata(ctx, topic)
	if err == nil {
		err = md.Topics[topic].Err
	}
	if err != nil {
		t.Fatalf("kafkatest: metadata of %s: %v", topic, err)
	}
	out := map[int32]int32{}
	for _, p := range md.Topics[topic].Partitions {
		out[p.Partition] = p.Leader
	}
	return out
}

// TransactionCoordinator returns the node id of the transaction
// coordinator of txnID (FindCoordinator with key type transaction: the
// leader of the __transaction_state partition the id hashes to). The id
// need not exist yet. A coordinator that is moving (NOT_COORDINATOR,
// COORDINATOR_NOT_AVAILABLE) is asked again until requestWait.
func TransactionCoordinator(t testing.TB, seeds []string, txnID string) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestWait)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	for {
		r, ok := adm.FindTxnCoordinators(ctx, txnID)[txnID]
		err := r.Err
		if !ok {
			err = errors.New("no answer for the id")
		}
		if err == nil {
			return r.NodeID
		}
		var ke *kerr.Error
		if ctx.Err() != nil || !errors.As(err, &ke) || !ke.Retriable {
			t.Fatalf("kafkatest: the transaction coordinator of %s: %v", txnID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CreateTopicOn creates topic with one replica on each of nodes for every
// partition, nodes[0] first: the partitions' preferred leader, and so
// their leader while it is in sync. ElectPreferredLeaders moves the
// leadership back to it after it was away.
func CreateTopicOn(t testing.TB, seeds []string, topic string, partitions int32, nodes []int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestWait)
	defer cancel()
	cl := Client(t, seeds)
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = int32(requestWait / time.Millisecond)
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	for p := range partitions {
		ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
		ra.Partition, ra.Replicas = p, slices.Clone(nodes)
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err == nil && len(resp.Topics) != 1 {
		err = fmt.Errorf("%d topics in the answer", len(resp.Topics))
	}
	if err == nil {
		err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("kafkatest: creating topic %s on nodes %v: %v", topic, nodes, err)
	}
	waitLeaders(t, ctx, kadm.NewClient(cl), topic, int(partitions))
}

// waitLeaders waits until every partition of a new topic has a leader.
func waitLeaders(t testing.TB, ctx context.Context, adm *kadm.Client, topic string, partitions int) {
	t.Helper()
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			td := md.Topics[topic]
			ready := td.Err == nil && len(td.Partitions) == partitions
			for _, p := range td.Partitions {
				ready = ready && p.Leader >= 0 && p.Err == nil
			}
			if ready {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %s has no leader for every partition: %v", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitInSync waits up to timeout until every partition of every topic,
// the internal ones (__transaction_state, __consumer_offsets) included,
// has a leader and every replica in its ISR: a node that was restarted
// has caught up and rejoined. It fails the test naming the partitions
// still short, and returns how long it waited.
func WaitInSync(t testing.TB, seeds []string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	var short []string
	var err error
	for {
		var md kadm.Metadata
		if md, err = adm.Metadata(ctx); err == nil {
			if short = underReplicated(md); len(short) == 0 {
				return time.Since(start)
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				t.Fatalf("kafkatest: the cluster did not answer within %s: %v", timeout, err)
			}
			t.Fatalf("kafkatest: partitions short of their replicas %s after a restart: %s", timeout, strings.Join(short, ", "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// underReplicated names the partitions of md without a leader or with a
// replica outside the ISR.
func underReplicated(md kadm.Metadata) []string {
	var short []string
	for _, td := range md.Topics.Sorted() {
		if td.Err != nil {
			short = append(short, fmt.Sprintf("%s (%v)", td.Topic, td.Err))
			continue
		}
		for _, p := range td.Partitions.Sorted() {
			missing := slices.DeleteFunc(slices.Clone(p.Replicas), func(r int32) bool { return slices.Contains(p.ISR, r) })
			if p.Leader < 0 || len(missing) > 0 {
				short = append(short, fmt.Sprintf("%s/%d (leader %d, replicas %v, ISR %v)", td.Topic, p.Partition, p.Leader, p.Replicas, p.ISR))
			}
		}
	}
	return short
}

// ElectPreferredLeaders moves the leadership of every partition back to
// its preferred replica (the first), as a broker does by itself every
// five minutes (auto.leader.rebalance.enable): after a rolling restart
// step the restarted node leads again what it led before, so that the
// next step moves leaders too. Partitions already led by their preferred
// replica are left alone; a preferred replica that is not yet able to
// lead is asked again until requestWait.
func ElectPreferredLeaders(t testing.TB, seeds []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestWait)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	for {
		rs, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil)
		var failed []string
		if err == nil {
			for _, ps := range rs {
				for _, r := range ps {
					if r.Err != nil && !errors.Is(r.Err, kerr.ElectionNotNeeded) {
						failed = append(failed, fmt.Sprintf("%s/%d: %v %s", r.Topic, r.Partition, r.Err, r.ErrMessage))
					}
				}
			}
			if len(failed) == 0 {
				return
			}
			slices.Sort(failed)
			err = errors.New(strings.Join(failed, "; "))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: electing the preferred leaders: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
