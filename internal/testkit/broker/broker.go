// Package broker runs real Apache Kafka brokers on 127.0.0.1 from the
// broker's Maven artifacts, for onceflow's integration tests and local runs:
// no Docker engine and no tarball needed, only Java 17 and mvn.
//
// Start fetches the jars once into a cache outside the repository
// (~/.cache/onceflow/kafka-<version>, or $ONCEFLOW_CACHE_DIR), formats a
// KRaft node (or three) with transactions configured for the cluster's
// size, starts it, and returns when a metadata request lists every broker.
// Every wait is bounded and every failure says why, with the tail of the
// broker's log.
package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/freeport"
)

//go:embed pom.xml
var pom []byte

// DefaultVersion is the Kafka release started when Options.Version is
// empty (overridable with $ONCEFLOW_KAFKA_VERSION).
const DefaultVersion = "4.1.1"

// log4jFor is the log4j release each Kafka line ships with.
func log4jFor(version string) string {
	if strings.HasPrefix(version, "4.0.") || strings.HasPrefix(version, "4.1.") {
		return "2.24.3"
	}
	return "2.25.1"
}

// Options configure a local cluster.
type Options struct {
	// Nodes is 1 (default) or 3. Three nodes replicate every topic three
	// times with min.insync.replicas 2.
	Nodes int
	// TransactionVersion, when set, formats the cluster with that
	// transaction.version: 0 gives Kafka 3.x transaction semantics, 2 the
	// Kafka 4 default (KIP-890). Nil keeps the release's default.
	TransactionVersion *int
	// Version is the Kafka release (default DefaultVersion).
	Version string
	// CacheDir holds the fetched jars (default $ONCEFLOW_CACHE_DIR or
	// ~/.cache/onceflow).
	CacheDir string
	// Java is the java executable (default $JAVA_HOME/bin/java, else java
	// on PATH).
	Java string
	// Dir holds the nodes' data and logs (default a new temporary
	// directory, removed by Stop).
	Dir string
	// Ports fixes the PLAINTEXT ports of the nodes instead of picking free
	// ones (controller ports are always picked).
	Ports []int
	// StartTimeout bounds fetching nothing, formatting and starting
	// (default 120s). Fetching the jars the first time has its own bound.
	StartTimeout time.Duration
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// ServerJVM replaces the brokers' heap, GC and JIT flags. The default
	// (TestJVM) starts fast and fits small machines; benchmarks pass
	// ProductionJVM, so that the broker's pauses do not decide the tail
	// latency of what is measured.
	ServerJVM []string
	// Props are extra server.properties lines ("key=value"), after and
	// so over the defaults.
	Props []string
}

// TestJVM are the default broker JVM flags: a small heap, the serial
// collector and the C1 compiler only, for a fast start in tests.
var TestJVM = []string{"-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"}

// ProductionJVM are the heap and GC flags Kafka's own start scripts use
// (kafka-run-class.sh: a 1 GiB heap, G1 with 20 ms pause goal), with the
// full JIT.
var ProductionJVM = []string{"-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
	"-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent"}

// TV returns a pointer to v, for Options.TransactionVersion.
func TV(v int) *int { return &v }

// Cluster is a running local cluster.
type Cluster struct {
	opts      Options
	jars      string
	dir       string
	ownsDir   bool
	clusterID string
	nodes     []*node
}

type node struct {
	id       int
	port     int
	ctrlPort int
	dir      string
	props    string
	log      string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start fetches the jars if needed, formats and starts the cluster, and
// waits until it answers.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Nodes != 1 && opts.Nodes != 3 {
		return nil, fmt.Errorf("broker: %d nodes; 1 or 3 are supported", opts.Nodes)
	}
	if opts.Version == "" {
		opts.Version = os.Getenv("ONCEFLOW_KAFKA_VERSION")
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 120 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	java, err := findJava(opts.Java)
	if err != nil {
		return nil, err
	}
	opts.Java = java
	jars, err := FetchJars(ctx, opts.Version, opts.CacheDir, opts.Logf)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, jars: jars, dir: opts.Dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "onceflow-kafka-"); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		c.ownsDir = true
	}
	if err := c.configure(); err != nil {
		c.removeDir()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	// The nodes are formatted at once: each format is a JVM start, seconds
	// on a small machine.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = c.format(ctx, n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.removeDir()
		return nil, err
	}
	for _, n := range c.nodes {
		if err := c.launch(n); err != nil {
			c.stopNodes()
			return nil, err
		}
	}
	if err := c.waitReady(ctx, len(c.nodes)); err != nil {
		// The data directory stays, so that the logs can be read.
		c.stopNodes()
		return nil, err
	}
	opts.Logf("kafka %s: %d node(s) ready at %s", opts.Version, len(c.nodes), c.Bootstrap())
	return c, nil
}

func findJava(java string) (string, error) {
	if java == "" {
		if home := os.Getenv("JAVA_HOME"); home != "" {
			java = filepath.Join(home, "bin", "java")
		} else {
			java = "java"
		}
	}
	path, err := exec.LookPath(java)
	if err != nil {
		return "", fmt.Errorf("broker: java not found (%s): install a Java 17+ runtime or set JAVA_HOME: %w", java, err)
	}
	return path, nil
}

// CacheDir is where fetched jars are kept: $ONCEFLOW_CACHE_DIR, else
// ~/.cache/onceflow.
func CacheDir() (string, error) {
	if d := os.Getenv("ONCEFLOW_CACHE_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("broker: no cache directory: %w", err)
	}
	return filepath.Join(base, "onceflow"), nil
}

// FetchJars returns the folder holding the broker's jars for version,
// running mvn to fill it only when its completion stamp is missing.
func FetchJars(ctx context.Context, version, cacheDir string, logf func(string, ...any)) (string, error) {
	if cacheDir == "" {
		var err error
		if cacheDir, err = CacheDir(); err != nil {
			return "", err
		}
	}
	dir := filepath.Join(cacheDir, "kafka-"+version)
	stamp := filepath.Join(dir, ".complete")
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", fmt.Errorf("broker: the jars of Kafka %s are not in %s and mvn is not installed to fetch them: %w", version, dir, err)
	}
	work, err := os.MkdirTemp("", "onceflow-kafka-pom-")
	if err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "pom.xml"), pom, 0o644); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	partial := dir + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	logf("fetching the jars of Kafka %s into %s with mvn (once)", version, dir)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B", "-f", filepath.Join(work, "pom.xml"),
		"-Dkafka.version="+version, "-Dlog4j.version="+log4jFor(version), "-DoutputDirectory="+partial,
		"dependency:copy-dependencies")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("broker: fetching Kafka %s with mvn failed: %w\n%s", version, err, tail(out.String(), 30))
	}
	if err := os.WriteFile(filepath.Join(partial, ".complete"), []byte(version+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	if err := os.Rename(partial, dir); err != nil {
		return "", fmt.Errorf("broker: %w", err)
	}
	return dir, nil
}

func (c *Cluster) configure() error {
	// An id starting with '-' would be read as an option by the storage
	// tool's argument parser (Kafka's own random ids avoid it the same way).
	for c.clusterID == "" || strings.HasPrefix(c.clusterID, "-") {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return fmt.Errorf("broker: cluster id: %w", err)
		}
		c.clusterID = base64.RawURLEncoding.EncodeToString(id)
	}
	// Each node a controller port, and a broker port unless Options.Ports
	// gives it.
	picked, err := freeport.Pick(2*c.opts.Nodes-min(len(c.opts.Ports), c.opts.Nodes), c.opts.Ports...)
	if err != nil {
		return fmt.Errorf("broker: picking ports: %w", err)
	}
	for i := range c.opts.Nodes {
		n := &node{id: i + 1, dir: filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1))}
		if i < len(c.opts.Ports) {
			n.port = c.opts.Ports[i]
		} else {
			n.port, picked = picked[0], picked[1:]
		}
		n.ctrlPort, picked = picked[0], picked[1:]
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		n.props = filepath.Join(n.dir, "server.properties")
		n.log = filepath.Join(n.dir, "broker.log")
		c.nodes = append(c.nodes, n)
	}
	var voters []string
	for _, n := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", n.id, n.ctrlPort))
	}
	rf, isr := 1, 1
	if len(c.nodes) == 3 {
		rf, isr = 3, 2
	}
	for _, n := range c.nodes {
		props := fmt.Sprintf(`process.roles=broker,controller
node.id=%d
controller.quorum.voters=%s
listeners=PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d
advertised.listeners=PLAINTEXT://127.0.0.1:%d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=%s
num.partitions=1
default.replication.factor=%d
min.insync.replicas=%d
offsets.topic.replication.factor=%d
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=%d
transaction.state.log.min.isr=%d
transaction.state.log.num.partitions=1
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=2097152
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
auto.create.topics.enable=false
`, n.id, strings.Join(voters, ","), n.port, n.ctrlPort, n.port, filepath.Join(n.dir, "data"), rf, isr, rf, rf, isr)
		for _, kv := range c.opts.Props {
			props += kv + "\n"
		}
		if err := os.WriteFile(n.props, []byte(props), 0o644); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "log4j2.properties"), []byte(log4jConfig), 0o644); err != nil {
			return fmt.Errorf("broker: %w", err)
		}
	}
	return nil
}

const log4jConfig = `status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
`

func (c *Cluster) javaCmd(ctx context.Context, n *node, main string, args ...string) *exec.Cmd {
	tuning := TestJVM
	if main == "kafka.Kafka" && len(c.opts.ServerJVM) > 0 {
		tuning = c.opts.ServerJVM
	}
	jvm := append(slices.Clone(tuning), "-XX:+ExitOnOutOfMemoryError",
		"-Djava.net.preferIPv4Stack=true", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+filepath.Join(n.dir, "log4j2.properties"),
		"-cp", filepath.Join(c.jars, "*"), main)
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, c.opts.Java, append(jvm, args...)...)
	} else {
		cmd = exec.Command(c.opts.Java, append(jvm, args...)...)
	}
	// Own process group, and killed with the process that started it: a
	// test binary that dies never leaves a broker behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (c *Cluster) format(ctx context.Context, n *node) error {
	args := []string{"format", "-t", c.clusterID, "-c", n.props, "-g"}
	if tv := c.opts.TransactionVersion; tv != nil {
		args = append(args, "-f", fmt.Sprintf("transaction.version=%d", *tv))
	}
	cmd := c.javaCmd(ctx, n, "kafka.tools.StorageTool", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("broker: formatting node %d failed: %w\n%s", n.id, err, tail(string(out), 20))
	}
	return nil
}

func (c *Cluster) launch(n *node) error {
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer f.Close()
	cmd := c.javaCmd(nil, n, "kafka.Kafka", n.props)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("broker: starting node %d: %w", n.id, err)
	}
	done := make(chan struct{})
	go func() { // owned by the node; ends when the process does
		_ = cmd.Wait()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	return nil
}

// waitReady polls the cluster's metadata until want brokers are listed, a
// node's process exits, or ctx ends.
func (c *Cluster) waitReady(ctx context.Context, want int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs()...), kgo.RetryTimeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last error
	for {
		for _, n := range c.nodes {
			if n.exited() {
				return fmt.Errorf("broker: node %d exited while starting: %s\nits log (%s) ends with:\n%s", n.id, n.firstError(), n.log, n.logTail(15))
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		brokers, err := adm.ListBrokers(rctx)
		cancel()
		if err == nil && len(brokers) >= want {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("%d of %d brokers listed", len(brokers), want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker: not ready within %s (%v); the log of node 1 ends with:\n%s", c.opts.StartTimeout, last, c.nodes[0].logTail(25))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *node) exited() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func (n *node) logTail(lines int) string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tail(string(b), lines)
}

// firstError returns the first line of the log that reports an error, the
// cause a person looks for, or "no error logged".
func (n *node) firstError() string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		return fmt.Sprintf("no log: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	for _, marks := range [][]string{{"Exception: "}, {" ERROR ", " FATAL "}} {
		for _, line := range lines {
			for _, m := range marks {
				if strings.Contains(line, m) {
					return strings.TrimSpace(line)
				}
			}
		}
	}
	return "no error logged"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", n.port))
	}
	return out
}

// Bootstrap is the comma-separated PLAINTEXT address list.
func (c *Cluster) Bootstrap() string { return strings.Join(c.addrs(), ",") }

// Addrs lists the nodes' PLAINTEXT addresses.
func (c *Cluster) Addrs() []string { return c.addrs() }

// Nodes is the number of nodes.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// TransactionVersion is the transaction.version the cluster was formatted
// with, or -1 for the release's default.
func (c *Cluster) TransactionVersion() int {
	if c.opts.TransactionVersion == nil {
		return -1
	}
	return *c.opts.TransactionVersion
}

// NodeID is the node.id of node i (0-based): i+1. Metadata, leaders and
// coordinators name nodes by this id.
func (c *Cluster) NodeID(i int) int32 { return int32(c.nodes[i].id) }

// Index is the 0-based index of the node whose node.id is id, for Kill,
// Terminate and Restart; false when no node has that id.
func (c *Cluster) Index(id int32) (int, bool) {
	for i, n := range c.nodes {
		if int32(n.id) == id {
			return i, true
		}
	}
	return 0, false
}

// Running reports whether node i's process is alive.
func (c *Cluster) Running(i int) bool { return !c.nodes[i].exited() }

// LogTail returns the last lines of node i's log (stdout and stderr of
// every run of the node), for failure messages.
func (c *Cluster) LogTail(i, lines int) string { return c.nodes[i].logTail(lines) }

// LogPath is the file holding node i's log.
func (c *Cluster) LogPath(i int) string { return c.nodes[i].log }

// killWait is how long Kill waits for a node to be gone after SIGKILL.
const killWait = 30 * time.Second

// DefaultTerminateTimeout is how long Terminate waits for a controlled
// shutdown when given no bound.
const DefaultTerminateTimeout = 60 * time.Second

// Kill ends node i (0-based) with SIGKILL, like a machine losing power,
// and waits until the process is gone. The cluster learns of the loss
// only when the node's session with the controller times out
// (broker.session.timeout.ms, 9 s by default): until then the node stays
// the leader of its partitions in the metadata.
func (c *Cluster) Kill(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || n.exited() {
		return fmt.Errorf("broker: node %d is not running", n.id)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("broker: node %d did not die within %s of SIGKILL", n.id, killWait)
	}
}

// Terminate stops node i (0-based) with SIGTERM, as a rolling restart
// does: the broker asks the controller for a controlled shutdown, the
// controller moves the leadership of the node's partitions to other
// in-sync replicas and lets it go, and the process exits. Terminate
// returns once the process is gone. When it is still running after
// timeout (DefaultTerminateTimeout when zero), the node is killed with
// SIGKILL and the error says the controlled shutdown did not finish, with
// the tail of the node's log; the node is down either way.
func (c *Cluster) Terminate(i int, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTerminateTimeout
	}
	n := c.nodes[i]
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || n.exited() {
		return fmt.Errorf("broker: node %d is not running", n.id)
	}
	// The JVM alone gets the signal: the controlled shutdown is its
	// shutdown hook's work.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(killWait):
		return fmt.Errorf("broker: node %d survived SIGTERM for %s and SIGKILL for %s", n.id, timeout, killWait)
	}
	return fmt.Errorf("broker: node %d did not finish its controlled shutdown within %s of SIGTERM and was killed; its log (%s) ends with:\n%s",
		n.id, timeout, n.log, n.logTail(20))
}

// Restart starts node i again on the same ports and data, and waits until
// the whole cluster answers.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	n := c.nodes[i]
	if !n.exited() {
		return fmt.Errorf("broker: node %d is still running", n.id)
	}
	if err := c.launch(n); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	return c.waitReady(ctx, len(c.nodes))
}

// Stop shuts every node down (SIGTERM, then SIGKILL after 20s) and removes
// the data directory if Start created it. It is safe to call twice.
func (c *Cluster) Stop() error {
	err := c.stopNodes()
	c.removeDir()
	return err
}

// stopWait is how long Stop waits for the nodes to exit after SIGTERM
// before it kills them.
const stopWait = 20 * time.Second

// stopNodes sends SIGTERM to every running node at once and waits for all
// of them, killing those still running after stopWait. At once, because
// one by one the last nodes of a three-node cluster would each wait for a
// controlled shutdown that the controller quorum, gone with the first
// nodes, can no longer grant.
func (c *Cluster) stopNodes() error {
	type running struct {
		n    *node
		pid  int
		done chan struct{}
	}
	var rs []running
	for _, n := range c.nodes {
		n.mu.Lock()
		cmd, done := n.cmd, n.done
		n.mu.Unlock()
		if cmd == nil || n.exited() {
			continue
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		rs = append(rs, running{n, cmd.Process.Pid, done})
	}
	deadline := time.NewTimer(stopWait)
	defer deadline.Stop()
	expired := false
	var errs []error
	for _, r := range rs {
		if !expired {
			select {
			case <-r.done:
				continue
			case <-deadline.C:
				expired = true
			}
		}
		select {
		case <-r.done:
			continue
		default:
		}
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
		select {
		case <-r.done:
		case <-time.After(killWait):
			errs = append(errs, fmt.Errorf("broker: node %d survived SIGKILL", r.n.id))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) removeDir() {
	if c.ownsDir {
		_ = os.RemoveAll(c.dir)
	}
}
