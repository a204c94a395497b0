package tcexample

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/runner"
	"github.com/onceflow/onceflow/testdriver"
)

const (
	// kafkaImage is the broker the example runs (the release the
	// repository's docker-compose.yml runs).
	kafkaImage = "apache/kafka:4.1.1"
	// kafkaHostPort is the broker's listener for the test process, through
	// a port Docker maps; kafkaNetworkAddr is its listener for the other
	// containers on the test's network.
	kafkaHostPort    = "9092/tcp"
	kafkaNetworkAddr = "kafka:9093"
	// kafkaStarter is the script the Kafka container waits for: it can
	// advertise the mapped port only once the container runs.
	kafkaStarter = "/tmp/start-kafka.sh"
)

// TestWordCountExactlyOnceInContainers starts Kafka and the processor's
// image (the repository's Dockerfile, running examples/wordcount.yaml)
// with testcontainers-go, produces lines, waits for their counts, stops
// the processor with docker stop (SIGTERM: a savepoint), and checks with
// a read_committed consumer that every word's counts are 1..n, each once.
// Then it runs a Go job in this process against the same Kafka with
// testdriver.StartKafka. It skips where no Docker engine answers, saying
// where it looked.
func TestWordCountExactlyOnceInContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers")
	}
	if err := dockerEngine(); err != nil {
		t.Skip(err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("creating a Docker network: %v", err)
	}
	bootstrap := startKafka(ctx, t, nw)
	createTopics(ctx, t, bootstrap, "words", "counts")

	processor, err := testcontainers.Run(ctx, "",
		testcontainers.WithDockerfile(testcontainers.FromDockerfile{Context: "../..", Dockerfile: "Dockerfile", KeepImage: true}),
		network.WithNetwork([]string{"processor"}, nw),
		testcontainers.WithEnv(map[string]string{
			"ONCEFLOW_KAFKA_BROKERS":       kafkaNetworkAddr,
			"ONCEFLOW_SOURCE_TOPIC":        "words",
			"ONCEFLOW_SINK_TOPIC":          "counts",
			"ONCEFLOW_CHECKPOINT_INTERVAL": "200ms",
		}),
		testcontainers.WithExposedPorts("8081/tcp"),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/healthz").WithPort("8081/tcp").WithStartupTimeout(5*time.Minute)),
	)
	testcontainers.CleanupContainer(t, processor)
	if err != nil {
		t.Fatalf("starting the processor's image (../../Dockerfile): %v", err)
	}

	words := produceLines(ctx, t, bootstrap, "words", 200)
	total := 0
	for _, n := range words {
		total += n
	}
	readCommitted(ctx, t, bootstrap, "counts", total)
	grace := 2 * time.Minute
	if err := processor.Stop(ctx, &grace); err != nil {
		t.Fatalf("docker stop of the processor: %v", err)
	}
	if st, err := processor.State(ctx); err != nil || st.ExitCode != 0 {
		t.Fatalf("the processor after docker stop: %+v, %v; want exit 0 (stopped with a savepoint)\n%s", st, err, containerLog(ctx, processor))
	}
	if err := wordcount.CheckCounts(readCommitted(ctx, t, bootstrap, "counts", total), words); err != nil {
		t.Fatalf("the processor's counts: %v", err)
	}

	t.Run("in process with testdriver.StartKafka", func(t *testing.T) {
		kd := testdriver.StartKafka(t, runner.Job{Name: "tc-wordcount", Dataflow: wordcount.Dataflow}, testdriver.KafkaOptions{
			Bootstrap: bootstrap, Partitions: 2, Set: []string{"job.parallelism=2"}})
		in, _ := kd.Topics()
		words := produceLines(ctx, t, bootstrap, in, 100)
		n := 0
		for _, c := range words {
			n += c
		}
		kd.WaitCommitted(n, 2*time.Minute)
		kd.Stop()
		if err := wordcount.CheckCounts(kd.Committed(), words); err != nil {
			t.Fatalf("the Go job's counts: %v", err)
		}
	})
}

// startKafka starts one KRaft broker-and-controller node on nw, with
// transactions set up for one node, and returns its address for the test
// process. Other containers on nw reach it at kafkaNetworkAddr.
func startKafka(ctx context.Context, t *testing.T, nw *testcontainers.DockerNetwork) string {
	t.Helper()
	ctr, err := testcontainers.Run(ctx, kafkaImage,
		network.WithNetwork([]string{"kafka"}, nw),
		testcontainers.WithExposedPorts(kafkaHostPort),
		testcontainers.WithEnv(map[string]string{
			"CLUSTER_ID":                                     "dGNleGFtcGxlLWthZmthMQ", // 16 bytes, base64url
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9094",
			"KAFKA_LISTENERS":                                "HOST://0.0.0.0:9092,NETWORK://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "HOST:PLAINTEXT,NETWORK:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"KAFKA_INTER_BROKER_LISTENER_NAME":               "NETWORK",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS":     "1",
			"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":             "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                "false",
		}),
		// The host listener's advertised address is the mapped port, known
		// once the container runs: the command waits for the script the
		// hook below writes.
		testcontainers.WithEntrypoint("sh"),
		testcontainers.WithCmd("-c", "while [ ! -f "+kafkaStarter+" ]; do sleep 0.1; done; exec sh "+kafkaStarter),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{func(ctx context.Context, c testcontainers.Container) error {
				if err := wait.ForMappedPort(kafkaHostPort).WaitUntilReady(ctx, c); err != nil {
					return err
				}
				hostAddr, err := c.PortEndpoint(ctx, kafkaHostPort, "")
				if err != nil {
					return err
				}
				script := fmt.Sprintf("export KAFKA_ADVERTISED_LISTENERS='HOST://%s,NETWORK://%s'\nexec /etc/kafka/docker/run\n", hostAddr, kafkaNetworkAddr)
				if err := c.CopyToContainer(ctx, []byte(script), kafkaStarter, 0o755); err != nil {
					return err
				}
				return wait.ForLog(".*Transitioning from RECOVERY to RUNNING.*").AsRegexp().
					WithStartupTimeout(2*time.Minute).WaitUntilReady(ctx, c)
			}},
		}),
	)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("starting %s: %v", kafkaImage, err)
	}
	addr, err := ctr.PortEndpoint(ctx, kafkaHostPort, "")
	if err != nil {
		t.Fatalf("the address of %s: %v", kafkaImage, err)
	}
	return addr
}

// createTopics creates topics with 2 partitions each.
func createTopics(ctx context.Context, t *testing.T, bootstrap string, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, 2, 1, nil, topics...)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("creating topics %v on %s: %v", topics, bootstrap, err)
	}
}

// produceLines writes n lines of two words each to topic and returns how
// often each word occurs.
func produceLines(ctx context.Context, t *testing.T, bootstrap, topic string, n int) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	words := map[string]int{}
	var rs []*kgo.Record
	for i := range n {
		line := fmt.Sprintf("w%d w%d", i%7, i%5)
		for _, w := range strings.Fields(line) {
			words[w]++
		}
		rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(line)})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("producing to %s on %s: %v", topic, bootstrap, err)
	}
	return words
}

// readCommitted reads topic from its start as a read_committed consumer
// until it has n records, and then for 2 s more to catch any extra.
func readCommitted(ctx context.Context, t *testing.T, bootstrap, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(3 * time.Minute)
	var quietUntil time.Time
	for {
		if len(out) >= n && quietUntil.IsZero() {
			quietUntil = time.Now().Add(2 * time.Second)
		}
		until := deadline
		if !quietUntil.IsZero() {
			until = quietUntil
		}
		pollCtx, cancel := context.WithDeadline(ctx, until)
		fs := cl.PollFetches(pollCtx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
		if time.Now().After(until) {
			break
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("reading %s on %s: %v", topic, bootstrap, err)
		}
	}
	if len(out) < n {
		t.Fatalf("%s on %s: %d committed records within 3 min, want %d", topic, bootstrap, len(out), n)
	}
	return out
}

// containerLog is the container's log, for a failure.
func containerLog(ctx context.Context, c testcontainers.Container) string {
	rc, err := c.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}
