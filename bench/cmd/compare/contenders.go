package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// contender is one program under test.
type contender struct {
	name  string
	label string
	// jobs are the workloads it runs.
	jobs map[string]bool
	// usesInterval: it commits on a checkpoint/commit interval (the limit
	// does not, so it runs once per workload).
	usesInterval bool
	// restartable: a restarted process resumes where the killed one left
	// off, so recovery can be measured.
	restartable bool
	// build prepares the binary or jars (cached).
	build func(ctx context.Context, o *options) error
	// command returns the process for a spec.
	command func(o *options, s spec) (*exec.Cmd, error)
	// scrape, if set, reads the contender's own figures (onceflow's
	// checkpoint durations) while it runs.
	scrape func(s spec) (*ckStats, error)
}

// spec is one run of a contender.
type spec struct {
	Brokers  []string
	Job      string // copy | wordcount
	In, Out  string
	ID       string // consumer group, application id, transactional id prefix
	Interval time.Duration
	Dir      string // state, checkpoints, logs
	HTTPPort int
}

var contenders = []*contender{
	{
		name: "limit", label: "limit: franz-go pipe, no transactions",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: false, restartable: true,
		build:   buildGoPipe,
		command: goPipeCmd("plain"),
	},
	{
		name: "franz-txn", label: "franz-go GroupTransactSession",
		jobs:         map[string]bool{"copy": true},
		usesInterval: true, restartable: true,
		build:   buildGoPipe,
		command: goPipeCmd("txn"),
	},
	{
		name: "kstreams", label: "Kafka Streams 4.1.1 exactly_once_v2",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: true, restartable: true,
		build:   buildJava("streams", "bench-streams-4.1.1"),
		command: kstreamsCmd,
	},
	{
		name: "flink", label: "Flink 2.0 mini cluster, KafkaSink EXACTLY_ONCE",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: true, restartable: true,
		build:   buildJava("flink", "bench-flink-2.0.0"),
		command: flinkCmd,
	},
	{
		name: "onceflow", label: "onceflow processor run",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: true, restartable: true,
		build:   buildOnceflow,
		command: onceflowCmd,
		scrape:  onceflowScrape,
	},
}

func findContender(name string) *contender {
	for _, c := range contenders {
		if c.name == name {
			return c
		}
	}
	return nil
}

func binDir(o *options) string { return filepath.Join(o.cacheDir, "bench-bin") }

var goPipeOnce sync.Once
var goPipeErr error

func buildGoPipe(ctx context.Context, o *options) error {
	goPipeOnce.Do(func() {
		goPipeErr = goBuild(ctx, o, filepath.Join(binDir(o), "gopipe"), "./bench/cmd/gopipe")
	})
	return goPipeErr
}

func goBuild(ctx context.Context, o *options, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = o.repoDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func goPipeCmd(mode string) func(o *options, s spec) (*exec.Cmd, error) {
	return func(o *options, s spec) (*exec.Cmd, error) {
		args := []string{"-brokers", strings.Join(s.Brokers, ","), "-in", s.In, "-out", s.Out,
			"-group", s.ID, "-mode", mode, "-job", s.Job}
		if s.Interval > 0 {
			args = append(args, "-interval", s.Interval.String())
		}
		args = append(args, "-parallelism", strconv.Itoa(o.parallelism))
		return exec.Command(filepath.Join(binDir(o), "gopipe"), args...), nil
	}
}

// buildJava builds the Maven project bench/<project> into
// <cache>/<dirName> (classes and lib/), again only when its sources
// changed since the last build.
func buildJava(project, dirName string) func(ctx context.Context, o *options) error {
	return func(ctx context.Context, o *options) error {
		src := filepath.Join(o.repoDir, "bench", project)
		out := filepath.Join(o.cacheDir, dirName)
		sum, err := treeHash(src)
		if err != nil {
			return err
		}
		stamp := filepath.Join(out, ".built")
		if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == sum {
			return nil
		}
		if _, err := exec.LookPath("mvn"); err != nil {
			return fmt.Errorf("mvn is not installed: %w", err)
		}
		if err := os.RemoveAll(out); err != nil {
			return err
		}
		logf("building bench/%s with mvn into %s (once)", project, out)
		ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "mvn", "-q", "-B", "-f", filepath.Join(src, "pom.xml"),
			"-DbuildDir="+out, "package", "dependency:copy-dependencies")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("mvn build of bench/%s: %w\n%s", project, err, tailLines(buf.String(), 30))
		}
		return os.WriteFile(stamp, []byte(sum+"\n"), 0o644)
	}
}

// treeHash hashes the names and contents of the files under dir except
// target/.
func treeHash(dir string) (string, error) {
	h := sha256.New()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "target" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// jvmFlags are the same for both JVM contenders: a 1 GiB heap bound.
var jvmFlags = []string{"-Xms256m", "-Xmx1g", "-XX:+ExitOnOutOfMemoryError", "-Djava.net.preferIPv4Stack=true",
	"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
	// Flink warns about a metric name collision at every checkpoint.
	"-Dorg.slf4j.simpleLogger.log.org.apache.flink.metrics=error"}

func javaClasspath(o *options, dirName string) string {
	d := filepath.Join(o.cacheDir, dirName)
	return filepath.Join(d, "classes") + string(os.PathListSeparator) + filepath.Join(d, "lib", "*")
}

func kstreamsCmd(o *options, s spec) (*exec.Cmd, error) {
	args := append(append([]string{}, jvmFlags...), "-cp", javaClasspath(o, "bench-streams-4.1.1"), "onceflow.bench.StreamsBench",
		strings.Join(s.Brokers, ","), s.Job, s.In, s.Out, s.ID, strconv.FormatInt(s.Interval.Milliseconds(), 10),
		filepath.Join(s.Dir, "state"), strconv.Itoa(o.parallelism))
	return exec.Command("java", args...), nil
}

// flinkOpens are the module openings Flink's own launcher passes on Java 17.
var flinkOpens = []string{
	"--add-exports=java.base/sun.net.util=ALL-UNNAMED",
	"--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
	"--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
	"--add-opens=java.base/java.lang=ALL-UNNAMED",
	"--add-opens=java.base/java.net=ALL-UNNAMED",
	"--add-opens=java.base/java.io=ALL-UNNAMED",
	"--add-opens=java.base/java.nio=ALL-UNNAMED",
	"--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
	"--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
	"--add-opens=java.base/java.text=ALL-UNNAMED",
	"--add-opens=java.base/java.time=ALL-UNNAMED",
	"--add-opens=java.base/java.util=ALL-UNNAMED",
	"--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
	"--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
	"--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
}

func flinkCmd(o *options, s spec) (*exec.Cmd, error) {
	args := append(append(append([]string{}, jvmFlags...), flinkOpens...),
		"-Djava.io.tmpdir="+s.Dir,
		"-cp", javaClasspath(o, "bench-flink-2.0.0"), "onceflow.bench.FlinkBench",
		strings.Join(s.Brokers, ","), s.Job, s.In, s.Out, s.ID, strconv.FormatInt(s.Interval.Milliseconds(), 10),
		strconv.Itoa(o.parallelism), filepath.Join(s.Dir, "checkpoints"))
	return exec.Command("java", args...), nil
}

func buildOnceflow(ctx context.Context, o *options) error {
	bin := o.onceflowBin
	if bin == "" {
		bin = filepath.Join(binDir(o), "processor")
		if err := goBuild(ctx, o, bin, "./cmd/processor"); err != nil {
			return err
		}
		o.onceflowBin = bin
	}
	out, err := exec.CommandContext(ctx, bin, "run", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--config") {
		return fmt.Errorf("%s has no working `run --config` subcommand yet (issue 6): %v %s", bin, err, firstLine(string(out)))
	}
	return nil
}

func onceflowCmd(o *options, s spec) (*exec.Cmd, error) {
	backend := "memory"
	if s.Job == "wordcount" {
		backend = "pebble"
	}
	cfg := fmt.Sprintf(`# written by bench/cmd/compare
job: {name: %q, type: %s, parallelism: %d}
kafka: {brokers: [%s]}
source: {topic: %q, start: earliest}
sink: {topic: %q, delivery: exactly_once, transactional_id_prefix: %q}
checkpoint: {interval: %s, dir: %q}
state: {backend: %s, dir: %q}
restart: {strategy: none}
http: {listen: "127.0.0.1:%d"}
log: {level: %s}
`, s.ID, s.Job, o.parallelism, quoteList(s.Brokers), s.In, s.Out, s.ID, s.Interval, filepath.Join(s.Dir, "checkpoints"),
		backend, filepath.Join(s.Dir, "state"), s.HTTPPort, o.onceflowLog)
	path := filepath.Join(s.Dir, "onceflow.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return exec.Command(o.onceflowBin, "run", "--config", path), nil
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// ckStats are onceflow's own checkpoint figures, from its job API.
type ckStats struct {
	Completed  int     `json:"completed"`
	P50MS      float64 `json:"duration_p50_ms"`
	MaxMS      float64 `json:"duration_max_ms"`
	AlignMaxMS float64 `json:"alignment_max_ms"`
	// EveryMS is the median gap between the triggers of completed
	// checkpoints.
	EveryMS float64 `json:"trigger_gap_p50_ms"`
	// Slowest says where the slowest checkpoint's time went (onceflow
	// only): which subtask acked last and when, its longest synchronous
	// and asynchronous parts, the metadata write.
	Slowest string `json:"slowest,omitempty"`
}

// onceflowScrape summarises the processor's checkpoint history
// (/api/v1/checkpoints, newest first).
func onceflowScrape(s spec) (*ckStats, error) {
	resp, err := httpClient().Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/checkpoints", s.HTTPPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		History []struct {
			Savepoint   bool      `json:"savepoint"`
			Status      string    `json:"status"`
			TriggerTime time.Time `json:"trigger_time"`
			DurationMS  float64   `json:"duration_ms"`
			AlignmentMS float64   `json:"alignment_ms"`
			SyncMS      float64   `json:"sync_ms"`
			AsyncMS     float64   `json:"async_ms"`
			LastAck     string    `json:"last_ack"`
			LastAckMS   float64   `json:"last_ack_ms"`
			PersistMS   float64   `json:"persist_ms"`
		} `json:"history"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	st := &ckStats{}
	var durs, gaps []float64
	var slowest float64
	var prev time.Time
	for _, c := range body.History {
		if c.Status != "COMPLETED" || c.Savepoint {
			continue
		}
		st.Completed++
		if len(durs) == 0 || c.DurationMS > slowest {
			slowest = c.DurationMS
			st.Slowest = fmt.Sprintf("%.0f ms: %s acked last at %.1f ms (longest sync part %.1f ms, async %.1f ms, alignment %.0f ms), metadata written in %.1f ms",
				c.DurationMS, c.LastAck, c.LastAckMS, c.SyncMS, c.AsyncMS, c.AlignmentMS, c.PersistMS)
		}
		durs = append(durs, c.DurationMS)
		st.AlignMaxMS = max(st.AlignMaxMS, c.AlignmentMS)
		if !prev.IsZero() {
			gaps = append(gaps, float64(prev.Sub(c.TriggerTime).Microseconds())/1000)
		}
		prev = c.TriggerTime
	}
	if len(durs) == 0 {
		return nil, errors.New("no completed checkpoint in the history")
	}
	sort.Float64s(durs)
	st.P50MS, st.MaxMS = quantile(durs, 0.5), durs[len(durs)-1]
	if len(gaps) > 0 {
		sort.Float64s(gaps)
		st.EveryMS = quantile(gaps, 0.5)
	}
	return st, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a running contender process.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(o *options, c *contender, s spec, tag string) (*proc, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	cmd, err := c.command(o, s)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.Dir, tag+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s\n", strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = s.Dir
	// Own process group, and killed if the harness dies: a crashed
	// harness never leaves a contender behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", c.name, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill is SIGKILL to the whole process group, waiting until it is gone.
func (p *proc) kill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
}

// stop asks the process to stop (SIGTERM), and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// failure describes an exited process: its last log line first (the
// report keeps the first line of an error), then the tail of its log.
func (p *proc) failure() error {
	b, _ := os.ReadFile(p.log)
	last := strings.TrimSpace(tailLines(string(b), 1))
	return fmt.Errorf("the contender exited (%v): %s\n%s ends with:\n%s", p.err, last, p.log, tailLines(string(b), 15))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
