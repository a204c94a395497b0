package integration

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
)

// Broker trouble is not a job failure (issue 14 §2): the copy and the
// word-count jobs run exactly once on the real brokers, under steady
// input, while brokers are restarted, killed and brought back. Each
// processor runs with restart strategy fixed-delay, so that a failed
// attempt shows in its API's restart count instead of ending it.

// A rolling restart of the three-node cluster (replication factor 3, min
// ISR 2): each node in turn is stopped with SIGTERM (a controlled
// shutdown: its leaderships move to the other replicas first), started
// again, and waited for until every partition has it back in its ISR;
// then the preferred leaders are elected, as the brokers do by
// themselves every five minutes, so that the next step moves leaders too.
// Every job (a copy, a word count, and a word count that flushes each
// checkpoint's transaction beside the next one, sink.async_pre_commit)
// must ride every step out without a single restart, keep completing
// checkpoints, and end with exact output and no transaction left open.
func TestRollingRestartCostsNoJobRestart(t *testing.T) {
	c := kafkatest.Local(t, kafkatest.Kind{Nodes: 3})
	seeds := c.Addrs()
	restartDownNodes(t, c)
	kafkatest.WaitInSync(t, seeds, 2*time.Minute)
	kafkatest.ElectPreferredLeaders(t, seeds)
	t.Cleanup(func() { restartDownNodes(t, c) })
	begin := time.Now()

	var jobs []*troubleJob
	for i, typ := range []string{"copy", "wordcount", "wordcount"} {
		j := newTroubleJob(t, typ, seeds)
		if i == 2 {
			// The flush beside the writing, whose two transactions'
			// records interleaved on a partition before the sink
			// ordered them (a word's count 380 after its 448 here).
			j.env = append(j.env, "ONCEFLOW_SINK_ASYNC_PRE_COMMIT=true")
		}
		j.createTopics()
		j.start(uint64(i + 1))
		jobs = append(jobs, j)
	}
	for i := range c.Nodes() {
		id := c.NodeID(i)
		step := time.Now()
		if err := c.Terminate(i, 0); err != nil {
			t.Fatalf("rolling restart, node %d: %v", id, err)
		}
		stopped := time.Since(step)
		if err := c.Restart(context.Background(), i); err != nil {
			t.Fatalf("rolling restart, node %d: %v", id, err)
		}
		up := time.Since(step)
		kafkatest.WaitInSync(t, seeds, 2*time.Minute)
		insync := time.Since(step)
		kafkatest.ElectPreferredLeaders(t, seeds)
		var flowing []time.Duration
		for _, j := range jobs {
			flowing = append(flowing, j.waitFlowing(50, 2, time.Minute).Round(time.Millisecond))
			if st := j.status(); st.Restarts != 0 {
				t.Fatalf("%s: the restart of node %d cost the job %d restart(s):\n%s", j.name, id, st.Restarts, j.proc.tail())
			}
		}
		t.Logf("node %d: controlled shutdown in %s, up again at %s, in sync at %s, input flowing again %v later, every job checkpointing it at %s",
			id, stopped.Round(time.Millisecond), up.Round(time.Millisecond), insync.Round(time.Millisecond), flowing, time.Since(step).Round(time.Millisecond))
	}
	for _, j := range jobs {
		if st := j.finish(); st.Restarts != 0 {
			t.Errorf("%s: %d restarts during the rolling restart, want 0", j.name, st.Restarts)
		}
	}
	t.Logf("rolling restart of %d nodes under three jobs: %s", c.Nodes(), time.Since(begin).Round(time.Second))
}

// SIGKILL of the node that leads both jobs' output partitions and is the
// transaction coordinator of their transactional ids, while records flow:
// the survivors fence it after its session times out and elect new
// leaders, and another node loads the transaction state. The node is then
// started again and leads again. Restarts of the job are allowed here,
// but it must not give up, and the output must be exact with no
// transaction left open.
func TestLeaderAndCoordinatorLossIsExact(t *testing.T) {
	c := kafkatest.Local(t, kafkatest.Kind{Nodes: 3})
	seeds := c.Addrs()
	restartDownNodes(t, c)
	kafkatest.WaitInSync(t, seeds, 2*time.Minute)
	begin := time.Now()

	var jobs []*troubleJob
	for _, typ := range []string{"copy", "wordcount"} {
		jobs = append(jobs, newTroubleJob(t, typ, seeds))
	}
	// The victim coordinates the most of the jobs' transactional ids
	// (the sink's first slots of both subtasks); the output partitions
	// are placed on it as their preferred leader.
	var ids []string
	for _, j := range jobs {
		for subtask := range 2 {
			for slot := range 4 {
				ids = append(ids, sinkkafka.TransactionalID(j.name, subtask, slot))
			}
		}
	}
	coordinates := map[int32]int{}
	for _, id := range ids {
		coordinates[kafkatest.TransactionCoordinator(t, seeds, id)]++
	}
	victim := slices.MaxFunc(slices.Sorted(maps.Keys(coordinates)), func(a, b int32) int { return coordinates[a] - coordinates[b] })
	vi, ok := c.Index(victim)
	if !ok {
		t.Fatalf("the coordinator %d is no node of the cluster", victim)
	}
	replicas := []int32{victim}
	var survivors []string
	for i := range c.Nodes() {
		if i != vi {
			replicas = append(replicas, c.NodeID(i))
			survivors = append(survivors, c.Addrs()[i])
		}
	}
	for i, j := range jobs {
		kafkatest.CreateTopic(t, seeds, j.in, 2)
		kafkatest.CreateTopicOn(t, seeds, j.out, 2, replicas)
		j.start(uint64(10 + i))
	}
	for _, j := range jobs {
		j.waitCheckpoints(3, time.Minute)
		for p, l := range kafkatest.Leaders(t, seeds, j.out) {
			if l != victim {
				t.Fatalf("%s/%d is led by node %d, not by the victim %d", j.out, p, l, victim)
			}
		}
	}
	t.Logf("node %d leads the output partitions and coordinates %d of the jobs' %d transactional ids", victim, coordinates[victim], len(ids))

	t.Cleanup(func() { restartDownNodes(t, c) })
	kill := time.Now()
	if err := c.Kill(vi); err != nil {
		t.Fatal(err)
	}
	// The output partitions move once the controller fenced the node.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		for _, j := range jobs {
			j.alive()
			for _, l := range kafkatest.Leaders(t, survivors, j.out) {
				if l == victim || l < 0 {
					return false
				}
			}
		}
		return true
	}) {
		t.Fatalf("the output partitions are still led by the killed node %d a minute later", victim)
	}
	failover := time.Since(kill)
	for _, id := range ids[:1] {
		if co := kafkatest.TransactionCoordinator(t, survivors, id); co == victim {
			t.Fatalf("node %d still coordinates %s after the failover", victim, id)
		}
	}
	for _, j := range jobs {
		j.waitFlowing(50, 2, time.Minute)
	}
	degraded := time.Since(kill)
	if err := c.Restart(context.Background(), vi); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitInSync(t, seeds, 2*time.Minute)
	kafkatest.ElectPreferredLeaders(t, seeds)
	for _, j := range jobs {
		j.waitFlowing(50, 2, time.Minute)
	}
	t.Logf("node %d killed: output partitions failed over in %s, both jobs checkpointing on two nodes at %s, back and leading at %s",
		victim, failover.Round(time.Millisecond), degraded.Round(time.Millisecond), time.Since(kill).Round(time.Millisecond))
	for _, j := range jobs {
		j.finish()
	}
	t.Logf("leader and coordinator loss under two jobs: %s", time.Since(begin).Round(time.Second))
}

// The single-node cluster is SIGKILLed twice and kept down 5 s each time
// (then restarted, which takes 15 s more: see troubleTolerance) while a
// copy job runs with fixed-delay 3 × 1 s: the job waits for the cluster
// instead of spending its restarts, says so while it waits (/healthz 200
// with waiting_for_cluster, /api/v1/job's cluster unreachable), logs each
// outage once when it starts and once when it ends, is still RUNNING at
// the end, and its output is exact.
func TestSingleBrokerOutageJobLives(t *testing.T) { singleBrokerOutage(t, false) }

// TestSingleBrokerOutageJobLives with the job's checkpoints in S3
// (versitygw from the test kit), which stays up while the broker is away:
// the checkpoints that fail during the outages leave nothing the job's
// next checkpoints, its savepoint at SIGTERM or its output depend on.
func TestSingleBrokerOutageJobLivesS3(t *testing.T) { singleBrokerOutage(t, true) }

func singleBrokerOutage(t *testing.T, onS3 bool) {
	c := kafkatest.Local(t, kafkatest.Kind{})
	seeds := c.Addrs()
	restartDownNodes(t, c)
	t.Cleanup(func() { restartDownNodes(t, c) })
	begin := time.Now()

	j := newTroubleJob(t, "copy", seeds)
	if onS3 {
		j.onS3()
	}
	j.createTopics()
	j.start(20)
	if onS3 && !strings.Contains(j.proc.output.String(), `msg="checkpoints in S3" location=`+j.s3Location+" ") {
		t.Fatalf("%s: the processor did not say it keeps its checkpoints in S3 at %s:\n%s", j.name, j.s3Location, j.proc.tail())
	}
	for round := 1; round <= 2; round++ {
		kill := time.Now()
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		// While the broker is away, the job says it waits for it and
		// stays healthy.
		var waiting jobStatus
		for time.Since(kill) < 5*time.Second {
			if h := j.health(); h.WaitingForCluster && waiting.Code == 0 {
				waiting = h
			}
			time.Sleep(100 * time.Millisecond)
		}
		if waiting.Code != http.StatusOK || waiting.State != "RUNNING" {
			t.Fatalf("%s: /healthz while the broker was away 5s: first answer saying it waits: %+v; want 200, RUNNING, waiting_for_cluster", j.name, waiting)
		}
		if st := j.status(); st.Cluster.Reachable || st.Cluster.UnreachableSeconds <= 0 || st.Cluster.ToleranceSeconds != troubleTolerance.Seconds() {
			t.Fatalf("%s: /api/v1/job's cluster while the broker was away: %+v; want unreachable for some seconds, tolerance %s", j.name, st.Cluster, troubleTolerance)
		}
		if err := c.Restart(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		down := time.Since(kill)
		if down >= troubleTolerance {
			t.Fatalf("the broker took %s to come back, beyond the job's kafka.outage_tolerance %s: the run shows nothing", down, troubleTolerance)
		}
		// Three seconds of input before the next outage.
		flowing := j.waitFlowing(300, 2, time.Minute)
		st := j.status()
		t.Logf("outage %d: broker down %s, input flowing again %s later, job checkpointing it at %s (%d restarts so far)",
			round, down.Round(time.Millisecond), flowing.Round(time.Millisecond), time.Since(kill).Round(time.Millisecond), st.Restarts)
	}
	st := j.status()
	if st.State != "RUNNING" {
		t.Fatalf("%s: state %s after the outages, want RUNNING:\n%s", j.name, st.State, j.proc.tail())
	}
	// Each outage is logged once when it starts and once when it ends, not
	// once per call. (A broker that answers some calls while it starts
	// may split one outage in two: the counts must still agree.)
	logs := j.proc.output.String()
	starts, ends := strings.Count(logs, outageStartLog), strings.Count(logs, outageEndLog)
	if !st.Cluster.Reachable || st.Cluster.Outages < 2 || int64(starts) != st.Cluster.Outages || int64(ends) != st.Cluster.Outages {
		t.Errorf("%s: after two outages the API says %+v, and the log has %d lines %q and %d lines %q; want the cluster reachable, at least 2 outages, one start and one end line each",
			j.name, st.Cluster, starts, outageStartLog, ends, outageEndLog)
	}
	j.finish()
	if onS3 {
		if _, err := os.Stat(filepath.Join(j.dir, "checkpoints")); err == nil {
			t.Fatalf("%s: the local checkpoint directory %s exists, though the checkpoints are in %s", j.name, filepath.Join(j.dir, "checkpoints"), j.s3Location)
		}
	}
	t.Logf("two single-broker outages under a copy job: %s", time.Since(begin).Round(time.Second))
}

// restartDownNodes starts again any node of c a test left down (a node
// killed by a test that failed before its restart), so that the next
// test has the whole cluster.
func restartDownNodes(t *testing.T, c *broker.Cluster) {
	t.Helper()
	for i := range c.Nodes() {
		if !c.Running(i) {
			if err := c.Restart(context.Background(), i); err != nil {
				t.Errorf("restarting node %d: %v", c.NodeID(i), err)
			}
		}
	}
}

// A job with nothing to do still waits for its cluster when the broker is
// away: its source cannot fetch. It must say so (/healthz 200 with
// waiting_for_cluster, /api/v1/job's cluster unreachable) as a busy job
// does, and say the cluster answers again once the broker is back. The
// single-broker outage test depends on the same: there, the job is idle
// at the kill whenever its sink has nothing pending.
func TestIdleJobSaysItWaitsForTheCluster(t *testing.T) {
	c := kafkatest.Local(t, kafkatest.Kind{})
	seeds := c.Addrs()
	restartDownNodes(t, c)
	t.Cleanup(func() { restartDownNodes(t, c) })
	begin := time.Now()

	j := newTroubleJob(t, "copy", seeds)
	j.createTopics()
	j.start(40)
	sent := len(j.feed.stopFeeding(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		j.alive()
		return len(kafkatest.ReadCommitted(t, seeds, j.out)) >= sent
	}) {
		t.Fatalf("%s: output incomplete a minute after the input stopped:\n%s", j.name, j.proc.tail())
	}
	j.waitCheckpoints(3, time.Minute)

	kill := time.Now()
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	var waiting jobStatus
	for time.Since(kill) < 10*time.Second && waiting.Code == 0 {
		if h := j.health(); h.WaitingForCluster {
			waiting = h
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := j.status()
	if err := c.Restart(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if waiting.Code != http.StatusOK || waiting.State != "RUNNING" || st.Cluster.Reachable {
		t.Errorf("%s: an idle job with its broker away for 10s: /healthz %+v, /api/v1/job's cluster %+v; want 200, RUNNING, waiting_for_cluster and the cluster unreachable",
			j.name, waiting, st.Cluster)
	}
	if !eventually(ctx, 200*time.Millisecond, func() bool { return j.status().Cluster.Reachable }) {
		t.Errorf("%s: the cluster is still unreachable for the job a minute after the broker came back: %+v", j.name, j.status().Cluster)
	}
	j.finish()
	t.Logf("an idle job's outage: %s", time.Since(begin).Round(time.Second))
}
