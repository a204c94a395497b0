// Package kafkatest gives integration tests a real Kafka cluster.
//
// Which cluster. Bootstrap, the default single-node cluster with the
// release's default transaction version, is chosen once per test binary,
// in this order:
//
//  1. KAFKA_BOOTSTRAP set (comma-separated host:port): that cluster.
//  2. Else, when a Docker engine answers: one apache/kafka:4.1.1 container
//     (the tag follows ONCEFLOW_KAFKA_VERSION like the local broker)
//     started with testcontainers-go: KRaft, one broker-and-controller node,
//     transaction state log and offsets topic with replication factor 1 and
//     min ISR 1, so transactions work on the one node.
//  3. Else the local cluster from the broker's Maven jars (package broker),
//     the same one Local(t, Kind{}) returns.
//
// The Docker probe costs nothing on a machine without Docker: it pings the
// engine (at most 3 s) only when DOCKER_HOST is set, ~/.testcontainers.properties
// exists, or a Docker socket exists (/var/run/docker.sock,
// $XDG_RUNTIME_DIR/docker.sock, ~/.docker/run/docker.sock,
// ~/.docker/desktop/docker.sock, /run/user/<uid>/docker.sock). When Docker
// answers but the container cannot be started (no image, no pull), Bootstrap
// logs why and falls back to the local cluster.
//
// ONCEFLOW_KAFKA=local or ONCEFLOW_KAFKA=docker forces what Bootstrap uses,
// over KAFKA_BOOTSTRAP too; with docker forced, an engine that does not
// answer or a container that does not start fails the test with the reason
// (no fallback). Any other value than local, docker or auto fails the test.
//
// Local clusters stay on the broker's jars whatever the environment:
// Local(t, Kind{...}) is for the clusters a container does not give,
// transaction version 0 (Kind.TransactionVersion) and three nodes, and for
// fault tests that kill and restart nodes. Such tests find where things
// live with Leaders and TransactionCoordinator, place a topic's leaders
// with CreateTopicOn, wait for a restarted node to rejoin every ISR with
// WaitInSync, and move leaders back with ElectPreferredLeaders.
//
// Each test binary starts at most one cluster of each kind (Bootstrap's
// container, each Kind of local cluster), lazily, on the first test that
// asks, and stops them when Main returns. A test that asks for a cluster
// that cannot be had fails with the reason; it never skips. Progress and
// the choice made go to stderr, prefixed "kafkatest:".
//
//	func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		seeds := kafkatest.Bootstrap(t)
//		topic := kafkatest.Topic(t, seeds, 4)
//		...
//	}
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/broker"
)

// clusters are the clusters this test binary started, and Bootstrap's
// choice. The test binary is the owner: Main stops them. (A test kit is the
// one place where process-wide state is the contract: TestMain cannot hand
// values to tests.)
var clusters = struct {
	sync.Mutex
	// started are the local clusters, by Kind.
	started map[string]*shared
	// docker is Bootstrap's container, when it started one.
	docker *dockerCluster
	// bootstrap is Bootstrap's cluster, chosen once.
	bootstrap struct {
		once  sync.Once
		seeds []string // the cluster's seeds, unless local
		local bool     // Bootstrap returns Local(t, Kind{})
		err   error
	}
}{started: map[string]*shared{}}

type shared struct {
	once sync.Once
	c    *broker.Cluster
	err  error
}

var topicSeq atomic.Int64

// Main runs the tests and then stops every cluster they started.
func Main(m *testing.M) int {
	code := m.Run()
	clusters.Lock()
	defer clusters.Unlock()
	for kind, s := range clusters.started {
		if s.c != nil {
			if err := s.c.Stop(); err != nil {
				logf("stopping the %s cluster: %v", kind, err)
			}
		}
	}
	if clusters.docker != nil {
		if err := clusters.docker.stop(); err != nil {
			logf("stopping the Docker cluster: %v", err)
		}
	}
	return code
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kafkatest: "+format+"\n", args...)
}

// Bootstrap returns the seed brokers of the test binary's default
// single-node cluster: KAFKA_BOOTSTRAP's, a Docker container's, or the
// local cluster's, chosen once per test binary as the package doc says
// (ONCEFLOW_KAFKA forces local or docker). It fails the test with the
// reason when no cluster can be had.
func Bootstrap(t testing.TB) []string {
	t.Helper()
	b := &clusters.bootstrap
	b.once.Do(func() { b.seeds, b.local, b.err = openBootstrap() })
	if b.err != nil {
		t.Fatalf("kafkatest: no Kafka cluster: %v", b.err)
	}
	if b.local {
		return Local(t, Kind{}).Addrs()
	}
	return b.seeds
}

// openBootstrap chooses Bootstrap's cluster and starts the container when
// Docker is chosen. local means Bootstrap uses Local(t, Kind{}).
func openBootstrap() (seeds []string, local bool, err error) {
	probe := func() error {
		return dockerAnswers(os.Getenv, fileExists, os.Getuid(), pingDocker)
	}
	ch, err := choose(os.Getenv, probe)
	if err != nil {
		return nil, false, err
	}
	logf("Bootstrap uses the %s cluster: %s", ch.from, ch.why)
	switch ch.from {
	case fromEnv:
		return ch.seeds, false, nil
	case fromLocal:
		return nil, true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerStartTimeout)
	defer cancel()
	start := time.Now()
	image := dockerImage(os.Getenv)
	d, err := startDocker(ctx, image)
	if err != nil {
		if ch.forced {
			return nil, false, fmt.Errorf("%s=docker: %w", envForce, err)
		}
		logf("falling back to the local cluster: %v", err)
		return nil, true, nil
	}
	clusters.Lock()
	clusters.docker = d
	clusters.Unlock()
	logf("%s container up in %s at %s", image, time.Since(start).Round(time.Millisecond), strings.Join(d.seeds, ","))
	return d.seeds, false, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Kind selects a local cluster.
type Kind struct {
	// Nodes is 1 (default) or 3.
	Nodes int
	// TransactionVersion formats the cluster with that
	// transaction.version; nil keeps the default (2 on Kafka 4).
	TransactionVersion *int
}

func (k Kind) String() string {
	n := max(k.Nodes, 1)
	tv := "default"
	if k.TransactionVersion != nil {
		tv = fmt.Sprint(*k.TransactionVersion)
	}
	return fmt.Sprintf("%d-node tv=%s", n, tv)
}

// Local returns the local cluster of that kind, started from the broker's
// jars on first use, whatever KAFKA_BOOTSTRAP, ONCEFLOW_KAFKA or Docker
// say. Local clusters can be killed and restarted (broker.Cluster.Kill and
// Restart), so fault tests use them. A test that kills a node must restart
// it before it ends. It fails the test with the reason when the cluster
// cannot be started.
func Local(t testing.TB, k Kind) *broker.Cluster {
	t.Helper()
	key := k.String()
	clusters.Lock()
	s, ok := clusters.started[key]
	if !ok {
		s = &shared{}
		clusters.started[key] = s
	}
	clusters.Unlock()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		start := time.Now()
		s.c, s.err = broker.Start(ctx, broker.Options{Nodes: k.Nodes, TransactionVersion: k.TransactionVersion, Logf: logf})
		if s.err == nil {
			logf("%s cluster up in %s at %s", key, time.Since(start).Round(time.Millisecond), s.c.Bootstrap())
		}
	})
	if s.err != nil {
		t.Fatalf("kafkatest: no local %s Kafka cluster from the broker's jars: %v", key, s.err)
	}
	return s.c
}

// Client returns a client of the cluster, closed when the test ends.
func Client(t testing.TB, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Topic creates a topic with a name unique to the test and returns it.
// The replication factor is the cluster's default.
func Topic(t testing.TB, seeds []string, partitions int32) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", sanitize(t.Name()), os.Getpid(), topicSeq.Add(1))
	CreateTopic(t, seeds, name, partitions)
	return name
}

// CreateTopic creates a topic of that name.
func CreateTopic(t testing.TB, seeds []string, name string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	resp, err := adm.CreateTopic(ctx, partitions, -1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: creating topic %s: %v", name, err)
	}
	waitLeaders(t, ctx, adm, name, int(partitions))
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > 120 {
		b = b[len(b)-120:]
	}
	return string(b)
}

// ReadCommitted reads every record of topic visible to read_committed
// readers, up to each partition's last stable offset at the time of the
// call, in partition and offset order.
//
// It reads read_uncommitted up to the high watermark and decides each
// transactional record by its producer's next marker, rather than reading
// read_committed up to the last stable offset: a read_committed reader
// drops aborted data, so when the record just below the last stable offset
// belongs to a transaction aborted after the open one began (two
// producers, interleaved), it would never learn that it reached the end.
// Every transaction with data below the last stable offset has its marker
// below the high watermark listed after it, since the broker holds the
// last stable offset back until a marker is replicated.
func ReadCommitted(t testing.TB, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("kafkatest: last stable offsets of %s: %v", topic, err)
	}
	hwm, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("kafkatest: high watermarks of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	hwm.Each(func(o kadm.ListedOffset) {
		if lsoOf(lso, topic, o.Partition) > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl := Client(t, seeds, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	var out []*kgo.Record
	// open holds each partition's transactional records per producer id
	// until that producer's next marker decides them.
	open := map[int32]map[int64][]*kgo.Record{}
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: reading %s: still waiting for partitions (at their high watermark) %v", topic, want)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("kafkatest: fetching %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			end, reading := want[r.Partition]
			if !reading {
				return
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if r.Offset >= end {
				return
			}
			byProducer := open[r.Partition]
			if byProducer == nil {
				byProducer = map[int64][]*kgo.Record{}
				open[r.Partition] = byProducer
			}
			switch {
			case r.Attrs.IsControl():
				// The key of a transaction marker is a version and a
				// type, both int16: type 1 commits, 0 aborts.
				if len(r.Key) >= 4 && r.Key[3] == 1 {
					out = append(out, byProducer[r.ProducerID]...)
				}
				delete(byProducer, r.ProducerID)
			case r.Attrs.IsTransactional():
				byProducer[r.ProducerID] = append(byProducer[r.ProducerID], r)
			default:
				out = append(out, r)
			}
		})
	}
	out = slices.DeleteFunc(out, func(r *kgo.Record) bool { return r.Offset >= lsoOf(lso, topic, r.Partition) })
	slices.SortFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

func lsoOf(lso kadm.ListedOffsets, topic string, p int32) int64 {
	o, _ := lso.Lookup(topic, p)
	return o.Offset
}

// OpenTransactionsHoldNothing fails the test unless every partition of
// topic has its last stable offset at its high watermark: no transaction
// is left open on it. The coordinator writes commit and abort markers
// after it answered EndTxn, so this waits up to 10 seconds for them.
func OpenTransactionsHoldNothing(t testing.TB, seeds []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	deadline := time.Now().Add(10 * time.Second)
	for {
		lso, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		hwm, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		var held []string
		hwm.Each(func(o kadm.ListedOffset) {
			if l, ok := lso.Lookup(topic, o.Partition); !ok || l.Offset != o.Offset {
				held = append(held, fmt.Sprintf("%d (LSO %d, HWM %d)", o.Partition, l.Offset, o.Offset))
			}
		})
		if len(held) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(held)
			t.Fatalf("kafkatest: open transactions hold partitions of %s: %v", topic, held)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
