package broker

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMissingJavaIsAClearErrorAtOnce(t *testing.T) {
	start := time.Now()
	_, err := Start(context.Background(), Options{Java: "/nonexistent/bin/java"})
	if err == nil || !strings.Contains(err.Error(), "java not found") || !strings.Contains(err.Error(), "JAVA_HOME") {
		t.Fatalf("err = %v, want a java-not-found error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s to notice java is missing", d)
	}
}

func TestTakenPortFailsFastWithTheBrokerLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	start := time.Now()
	c, err := Start(context.Background(), Options{Ports: []int{port}, StartTimeout: 90 * time.Second})
	if err == nil {
		c.Stop()
		t.Fatal("started on a port that is taken")
	}
	if !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("err = %v, want the broker's bind failure", err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("took %s to report the failure", d)
	}
}

func TestMissingMavenAndNoCacheIsAClearError(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := FetchJars(context.Background(), "4.1.1", t.TempDir(), t.Logf)
	if err == nil || !strings.Contains(err.Error(), "mvn is not installed") {
		t.Fatalf("err = %v", err)
	}
}

// A three-node cluster (started once: a start costs half a minute on a
// small machine) loses a node in each subtest and gets it back.
func TestThreeNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Run("SurviveTheLossOfOne", func(t *testing.T) { surviveTheLossOfOne(ctx, t, c) })
	t.Run("TerminateMovesLeadershipBeforeExiting", func(t *testing.T) { terminateMovesLeadershipBeforeExiting(ctx, t, c) })
}

// Three nodes with min.insync.replicas 2 keep accepting acks=all writes
// after one node is killed with SIGKILL, and the node comes back.
func surviveTheLossOfOne(ctx context.Context, t *testing.T, c *Cluster) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DefaultProduceTopic("rf3"), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, 1, 3, nil, "rf3")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	produce := func(v string) error {
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return cl.ProduceSync(pctx, &kgo.Record{Value: []byte(v)}).FirstErr()
	}
	if err := produce("before"); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	if err := produce("after-kill"); err != nil {
		t.Fatalf("acks=all write with 2 of 3 replicas alive: %v", err)
	}
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := produce("after-restart"); err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "rf3")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("rf3", 0); o.Offset != 3 {
		t.Fatalf("high watermark %d, want 3", o.Offset)
	}
}

// Terminate is a controlled shutdown: by the time the process has exited,
// the controller has moved the leadership of the node's partitions to the
// other in-sync replicas, so that the cluster never waits for the node's
// session to time out (as it does after Kill: broker.session.timeout.ms,
// 9 s). A write with acks=all then succeeds at once on the new leader, and
// the restarted node rejoins every partition's ISR.
func terminateMovesLeadershipBeforeExiting(ctx context.Context, t *testing.T, c *Cluster) {
	const topic = "terminate"
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 3, 3, nil, topic); err != nil {
		t.Fatal(err)
	}
	// details returns the topic's partitions once each has a leader.
	details := func() kadm.PartitionDetails {
		t.Helper()
		for {
			md, err := adm.Metadata(ctx, topic)
			if err == nil && md.Topics[topic].Err == nil && len(md.Topics[topic].Partitions) == 3 {
				ps := md.Topics[topic].Partitions
				ok := true
				for _, p := range ps {
					ok = ok && p.Leader >= 0
				}
				if ok {
					return ps
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("topic %s has no leader for every partition: %v", topic, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	victim := details()[0].Leader
	i, ok := c.Index(victim)
	if !ok || c.NodeID(i) != victim {
		t.Fatalf("Index(%d) = %d, %v", victim, i, ok)
	}
	start := time.Now()
	if err := c.Terminate(i, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d: controlled shutdown in %s", victim, time.Since(start).Round(time.Millisecond))
	if c.Running(i) {
		t.Fatalf("node %d still runs after Terminate", victim)
	}
	// The survivors learnt of the move before the node exited; their
	// metadata may lag the controller's by a heartbeat, far less than the
	// session timeout a killed node costs.
	moved := time.Now()
	for {
		var still []int32
		for _, p := range details() {
			if p.Leader == victim {
				still = append(still, p.Partition)
			}
		}
		if len(still) == 0 {
			break
		}
		if time.Since(moved) > 3*time.Second {
			t.Fatalf("node %d exited after SIGTERM still leading partitions %v 3s later: no controlled shutdown", victim, still)
		}
		time.Sleep(50 * time.Millisecond)
	}
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	err = cl.ProduceSync(pctx, &kgo.Record{Value: []byte("after-terminate"), Partition: 0}).FirstErr()
	pcancel()
	if err != nil {
		t.Fatalf("acks=all write to the moved partition: %v", err)
	}
	if err := c.Terminate(i, 0); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("Terminate of a stopped node: %v", err)
	}
	if err := c.Restart(ctx, i); err != nil {
		t.Fatal(err)
	}
	for {
		back := 0
		for _, p := range details() {
			if slices.Contains(p.ISR, victim) {
				back++
			}
		}
		if back == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node %d rejoined the ISR of %d of 3 partitions", victim, back)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
