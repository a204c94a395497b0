package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/broker"
)

const (
	// dockerProbeTimeout bounds the ping that decides whether a Docker
	// engine answers.
	dockerProbeTimeout = 3 * time.Second
	// dockerStartTimeout bounds pulling the image, starting the container
	// and waiting until the broker answers from the host.
	dockerStartTimeout = 5 * time.Minute
	// kafkaPort is the container's PLAINTEXT listener for clients; the host
	// reaches it through a port Docker maps.
	kafkaPort = "9092/tcp"
	// starterScript is copied into the container once its mapped port is
	// known; the container's command waits for it (see startDocker).
	starterScript = "/tmp/onceflow-kafkatest-start.sh"
	// dockerClusterID is the KRaft cluster id (16 bytes, base64url), fixed
	// because every container is formatted afresh.
	dockerClusterID = "b25jZWZsb3cta2Fma2F0ZQ"
)

// dockerImage is the image Bootstrap starts when it uses Docker: the
// release the local jar broker runs, $ONCEFLOW_KAFKA_VERSION or else
// broker.DefaultVersion (apache/kafka:4.1.1).
func dockerImage(getenv func(string) string) string {
	v := strings.TrimSpace(getenv("ONCEFLOW_KAFKA_VERSION"))
	if v == "" {
		v = broker.DefaultVersion
	}
	return "apache/kafka:" + v
}

// dockerEnv configures the apache/kafka image as one KRaft node (broker
// and controller) with the settings of the local single-node cluster
// (package broker): internal topics, the transaction state log included,
// have replication factor 1 and min ISR 1, so transactions work on the one
// node; no topic is created automatically. The image turns KAFKA_X_Y into
// the broker property x.y. KAFKA_ADVERTISED_LISTENERS is left to the
// starter script (starterScriptFor).
func dockerEnv() map[string]string {
	return map[string]string{
		"CLUSTER_ID":                           dockerClusterID,
		"KAFKA_NODE_ID":                        "1",
		"KAFKA_PROCESS_ROLES":                  "broker,controller",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":       "1@localhost:9094",
		"KAFKA_LISTENERS":                      "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"KAFKA_INTER_BROKER_LISTENER_NAME":     "BROKER",
		"KAFKA_CONTROLLER_LISTENER_NAMES":      "CONTROLLER",
		"KAFKA_LOG_DIRS":                       "/tmp/kraft-combined-logs",

		"KAFKA_NUM_PARTITIONS":                                              "1",
		"KAFKA_DEFAULT_REPLICATION_FACTOR":                                  "1",
		"KAFKA_MIN_INSYNC_REPLICAS":                                         "1",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                            "1",
		"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                                "1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":                    "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                               "1",
		"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS":                        "1",
		"KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "1000",
		"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                            "0",
		"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                                   "false",
	}
}

// starterScriptFor is the script the container runs: it advertises the
// client listener at endpoint (host:port of the mapped port as the test
// process reaches it, known only once the container has started) and the
// inter-broker listener at the container's hostname, then hands over to
// the image's own start script.
func starterScriptFor(endpoint, hostname string) string {
	return fmt.Sprintf("#!/bin/sh\nexport KAFKA_ADVERTISED_LISTENERS='PLAINTEXT://%s,BROKER://%s:9093'\nexec /etc/kafka/docker/run\n",
		endpoint, hostname)
}

// dockerCluster is the single-node container Bootstrap started.
type dockerCluster struct {
	ctr   testcontainers.Container
	image string
	seeds []string
}

// startDocker starts image (an apache/kafka one) as one node and returns
// when a client on the host gets an answer from the broker at its
// advertised address. On error no container is left running
// (testcontainers' reaper also removes it if the test binary dies before
// Main stops it).
func startDocker(ctx context.Context, image string) (*dockerCluster, error) {
	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithExposedPorts(kafkaPort),
		testcontainers.WithEnv(dockerEnv()),
		// The advertised address needs the mapped port, which exists only
		// once the container runs: the command waits for the starter
		// script that the hook below copies in.
		testcontainers.WithEntrypoint("sh"),
		testcontainers.WithCmd("-c", "while [ ! -f "+starterScript+" ]; do sleep 0.1; done; exec sh "+starterScript),
		testcontainers.WithLifecycleHooks(testcontainers.ContainerLifecycleHooks{
			PostStarts: []testcontainers.ContainerHook{advertiseAndWait},
		}),
	)
	if err != nil {
		if ctr != nil {
			err = errors.Join(err, testcontainers.TerminateContainer(ctr))
		}
		return nil, fmt.Errorf("starting %s: %w", image, err)
	}
	d := &dockerCluster{ctr: ctr, image: image}
	endpoint, err := ctr.PortEndpoint(ctx, kafkaPort, "")
	if err == nil {
		d.seeds = []string{endpoint}
		err = answers(ctx, d.seeds)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("%s container: %w", image, err), d.stop())
	}
	return d, nil
}

// advertiseAndWait copies the starter script into the started container
// and waits until the broker runs. It is one hook so that the wait never
// starts when the copy failed.
func advertiseAndWait(ctx context.Context, c testcontainers.Container) error {
	if err := wait.ForMappedPort(kafkaPort).WaitUntilReady(ctx, c); err != nil {
		return fmt.Errorf("waiting for the mapped port %s: %w", kafkaPort, err)
	}
	endpoint, err := c.PortEndpoint(ctx, kafkaPort, "")
	if err != nil {
		return fmt.Errorf("mapped address of %s: %w", kafkaPort, err)
	}
	info, err := c.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("inspecting the container: %w", err)
	}
	script := starterScriptFor(endpoint, info.Config.Hostname)
	if err := c.CopyToContainer(ctx, []byte(script), starterScript, 0o755); err != nil {
		return fmt.Errorf("copying %s: %w", starterScript, err)
	}
	if err := wait.ForLog(".*Transitioning from RECOVERY to RUNNING.*").AsRegexp().
		WithStartupTimeout(2*time.Minute).WaitUntilReady(ctx, c); err != nil {
		return fmt.Errorf("waiting for the broker to run: %w", err)
	}
	return nil
}

// answers returns nil once every broker that the seeds list answers an
// ApiVersions request at its advertised address, as tests will reach it.
func answers(ctx context.Context, seeds []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		vs, err := kadm.NewClient(cl).ApiVersions(ctx)
		if err == nil && len(vs) == 0 {
			err = errors.New("metadata lists no broker")
		}
		for _, v := range vs {
			if err == nil && v.Err != nil {
				err = fmt.Errorf("broker %d at its advertised address: %w", v.NodeID, v.Err)
			}
		}
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer from %v: %w", seeds, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop removes the container and its volumes.
func (d *dockerCluster) stop() error {
	if err := testcontainers.TerminateContainer(d.ctr); err != nil {
		return fmt.Errorf("removing the %s container: %w", d.image, err)
	}
	return nil
}

// dockerSign names the first sign that a Docker engine may be reachable,
// or returns "" when there is none: DOCKER_HOST set, a testcontainers
// properties file (which can name a host), or one of the sockets where
// Docker, rootless Docker and Docker Desktop listen (dockerSockets). It
// only looks at the environment and the file system: no network.
func dockerSign(getenv func(string) string, exists func(string) bool, uid int) string {
	if h := getenv("DOCKER_HOST"); h != "" {
		return "DOCKER_HOST=" + h
	}
	if home := getenv("HOME"); home != "" && exists(filepath.Join(home, ".testcontainers.properties")) {
		return filepath.Join(home, ".testcontainers.properties")
	}
	for _, s := range dockerSockets(getenv, uid) {
		if exists(s) {
			return s
		}
	}
	return ""
}

// dockerSockets lists the sockets a local Docker engine listens on.
func dockerSockets(getenv func(string) string, uid int) []string {
	s := []string{"/var/run/docker.sock"}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		s = append(s, filepath.Join(d, "docker.sock"))
	}
	if home := getenv("HOME"); home != "" {
		s = append(s, filepath.Join(home, ".docker", "run", "docker.sock"),
			filepath.Join(home, ".docker", "desktop", "docker.sock"))
	}
	return append(s, fmt.Sprintf("/run/user/%d/docker.sock", uid))
}

// dockerAnswers returns nil when a Docker engine answers ping within
// dockerProbeTimeout, and otherwise an error saying why not. Without a
// sign of an engine (dockerSign) it returns at once without calling ping,
// so a machine without Docker pays nothing for the probe.
func dockerAnswers(getenv func(string) string, exists func(string) bool, uid int, ping func(context.Context) error) error {
	sign := dockerSign(getenv, exists, uid)
	if sign == "" {
		return fmt.Errorf("no Docker engine: DOCKER_HOST is unset and none of %s exists",
			strings.Join(dockerSockets(getenv, uid), ", "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerProbeTimeout)
	defer cancel()
	if err := ping(ctx); err != nil {
		return fmt.Errorf("no Docker engine answered within %s (%s): %w", dockerProbeTimeout, sign, err)
	}
	return nil
}

// pingDocker pings the engine that testcontainers would use (it resolves
// the host the same way when starting the container).
func pingDocker(ctx context.Context) (err error) {
	// testcontainers panics when it finds no Docker host at all.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers found no Docker host: %v", r)
		}
	}()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}
