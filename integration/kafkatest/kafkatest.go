// Package kafkatest gives integration tests a real Kafka cluster.
//
// Which cluster: KAFKA_BOOTSTRAP set (comma-separated host:port) uses that
// cluster; otherwise a local cluster started from the broker's Maven jars
// (package broker). Each test binary starts at most one cluster of each
// kind, lazily, on the first test that asks, and stops it when Main
// returns. A test that asks for a cluster that cannot be had fails with the
// reason; it never skips.
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

	"github.com/onceflow/onceflow/integration/broker"
)

// clusters are the clusters this test binary started, by kind. The test
// binary is the owner: Main stops them. (A test kit is the one place where
// process-wide state is the contract: TestMain cannot hand values to
// tests.)
var clusters = struct {
	sync.Mutex
	started map[string]*shared
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
				fmt.Fprintf(os.Stderr, "kafkatest: stopping the %s cluster: %v\n", kind, err)
			}
		}
	}
	return code
}

// Bootstrap returns the seed brokers of the test binary's cluster:
// KAFKA_BOOTSTRAP, or a local single-node cluster with the release's
// default transaction version.
func Bootstrap(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv("KAFKA_BOOTSTRAP"); env != "" {
		return strings.Split(env, ",")
	}
	return Local(t, Kind{}).Addrs()
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

// Local returns the local cluster of that kind, starting it on first use.
// Local clusters can be killed and restarted (broker.Cluster.Kill and
// Restart), so fault tests use them even when KAFKA_BOOTSTRAP is set. A
// test that kills a node must restart it before it ends.
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
		s.c, s.err = broker.Start(ctx, broker.Options{Nodes: k.Nodes, TransactionVersion: k.TransactionVersion,
			Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "kafkatest: "+format+"\n", args...) }})
		if s.err == nil {
			fmt.Fprintf(os.Stderr, "kafkatest: %s cluster up in %s at %s\n", key, time.Since(start).Round(time.Millisecond), s.c.Bootstrap())
		}
	})
	if s.err != nil {
		t.Fatalf("kafkatest: no %s Kafka cluster (set KAFKA_BOOTSTRAP to use an existing one): %v", key, s.err)
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
	// Wait until every partition has a leader.
	for {
		md, err := adm.Metadata(ctx, name)
		if err == nil {
			td := md.Topics[name]
			ready := td.Err == nil && len(td.Partitions) == int(partitions)
			for _, p := range td.Partitions {
				ready = ready && p.Leader >= 0 && p.Err == nil
			}
			if ready {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %s has no leader for every partition: %v", name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
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
func ReadCommitted(t testing.TB, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(Client(t, seeds))
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("kafkatest: last stable offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	lso.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	// Control records (transaction markers) are kept so that the read
	// position is known exactly: a partition is done once the position
	// reaches its last stable offset, markers included.
	cl := Client(t, seeds, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: reading %s: still waiting for partitions %v", topic, want)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("kafkatest: fetching %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if !r.Attrs.IsControl() && r.Offset < lsoOf(lso, topic, r.Partition) {
				out = append(out, r)
			}
		})
	}
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
