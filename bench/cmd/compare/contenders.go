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
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/testkit/freeport"
	"github.com/onceflow/onceflow/internal/testkit/s3server"
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
	// instances is how many processes one run of it starts (0 is 1): the
	// instances of one distributed job, each with its own state.dir and
	// HTTP port, started together, stopped together, their CPU time
	// summed.
	instances int
	// distributed: job.mode distributed (its instances share the
	// partition groups of one job); s3: its checkpoints go to the run's S3
	// server. Distributed implies s3.
	distributed, s3 bool
}

// count is the number of processes of one run.
func (c *contender) count() int { return max(1, c.instances) }

// spec is one run of a contender.
type spec struct {
	Brokers  []string
	Job      string // copy | wordcount
	In, Out  string
	ID       string // consumer group, application id, transactional id prefix
	Interval time.Duration
	Dir      string // state, checkpoints, logs
	HTTPPort int    // this instance's
	// Ports are the HTTP ports of every instance (one per process of the
	// contender); Instance is this process's index in them.
	Ports    []int
	Instance int
	// S3 is the run's S3 server (nil when none was started).
	S3 *s3server.Endpoint
}

// newSpec is a spec with a distinct free HTTP port for each of c's
// instances (port 0 for each if none could be picked: the contender
// then fails to start, saying so).
func newSpec(c *contender, s spec) spec {
	ports, err := freeport.Pick(c.count())
	if err != nil {
		ports = make([]int, c.count())
	}
	s.Ports = ports
	s.HTTPPort = s.Ports[0]
	return s
}

var contenders = []*contender{
	{
		name: "limit", label: "limit: franz-go partition-assigned consume → produce, acks=all, idempotent, no transactions, a 64 MiB fetch pool",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: false, restartable: true,
		build:   buildGoPipe,
		command: goPipeCmd("limit", "-acks", "all"),
	},
	{
		name: "ceiling", label: "ceiling: as the limit with acks=1, no idempotence",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: false, restartable: true,
		build:   buildGoPipe,
		command: goPipeCmd("limit", "-acks", "leader"),
	},
	{
		name: "pipe", label: "franz-go group consume → produce, no transactions (the limit before issue 19)",
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
		command: onceflowCmd(false, false),
		scrape:  onceflowScrape,
	},
	// The distributed measurements (-distributed, issue 16): single mode
	// with its checkpoints in S3 (what distributed mode costs beyond the
	// storage), and 1, 2 and 3 instances of one job.mode distributed job.
	{
		name: "onceflow-s3", label: "onceflow processor run, checkpoints in S3",
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: true, restartable: true, s3: true,
		build:   buildOnceflow,
		command: onceflowCmd(true, false),
		scrape:  onceflowScrape,
	},
	distContender(1),
	distContender(2),
	distContender(3),
}

// distContender is n instances of one distributed onceflow job.
func distContender(n int) *contender {
	return &contender{
		name: fmt.Sprintf("onceflow-dist%d", n), label: fmt.Sprintf("onceflow job.mode distributed, %d instance%s", n, map[bool]string{true: "s", false: ""}[n > 1]),
		jobs:         map[string]bool{"copy": true, "wordcount": true},
		usesInterval: true, instances: n, distributed: true, s3: true,
		// Recovery of a distributed job is a group moving to another
		// instance (the integration tests time it), not a restart.
		restartable: false,
		build:       buildOnceflow,
		command:     onceflowCmd(true, true),
	}
}

// findContender returns the contender of that name. For tuning, the
// gopipe contenders (limit, ceiling, franz-txn) and onceflow also take
// settings after an @, joined by +: gopipe's flags ("limit@clients=4+
// linger=5ms" runs the limit with -clients 4 -linger 5ms) or onceflow's
// configuration keys ("onceflow@sink.compression=snappy" sets
// ONCEFLOW_SINK_COMPRESSION=snappy), as a contender of its own. A key in
// capitals is an environment variable of the contender's process instead,
// for either kind ("onceflow@GOMEMLIMIT=180MiB").
func findContender(name string) *contender {
	base, settings, tuned := strings.Cut(name, "@")
	for _, c := range contenders {
		if c.name != base {
			continue
		}
		if !tuned {
			return c
		}
		gopipe := base == "limit" || base == "ceiling" || base == "franz-txn"
		if !gopipe && base != "onceflow" || settings == "" {
			return nil
		}
		var flags, env, rawEnv []string
		for _, kv := range strings.Split(settings, "+") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil
			}
			if strings.ToUpper(k) == k {
				rawEnv = append(rawEnv, kv)
				continue
			}
			flags = append(flags, "-"+k, v)
			env = append(env, config.EnvPrefix+"_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))+"="+v)
		}
		env = append(env, rawEnv...)
		t := *c
		command := c.command
		if gopipe {
			t.label = fmt.Sprintf("%s; %s", c.label, strings.Join(append(slices.Clone(rawEnv), flags...), " "))
			t.command = func(o *options, s spec) (*exec.Cmd, error) {
				cmd, err := command(o, s)
				if err == nil {
					cmd.Args = append(cmd.Args, flags...)
					if len(rawEnv) > 0 {
						if cmd.Env == nil {
							cmd.Env = os.Environ()
						}
						cmd.Env = append(cmd.Env, rawEnv...)
					}
				}
				return cmd, err
			}
		} else {
			t.label = fmt.Sprintf("%s; %s", c.label, strings.Join(env, " "))
			t.command = func(o *options, s spec) (*exec.Cmd, error) {
				cmd, err := command(o, s)
				if err == nil {
					if cmd.Env == nil {
						cmd.Env = os.Environ()
					}
					cmd.Env = append(cmd.Env, env...)
				}
				return cmd, err
			}
		}
		t.name = name
		return &t
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

// goPipeCmd runs bench/cmd/gopipe in mode, with extra flags.
func goPipeCmd(mode string, extra ...string) func(o *options, s spec) (*exec.Cmd, error) {
	return func(o *options, s spec) (*exec.Cmd, error) {
		args := []string{"-brokers", strings.Join(s.Brokers, ","), "-in", s.In, "-out", s.Out,
			"-group", s.ID, "-mode", mode, "-job", s.Job}
		args = append(args, extra...)
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

// distGroups is G of the distributed contenders: one partition group per
// input partition (issue 16: 8 input partitions, G = 8).
const distGroups = 8

// onceflowCmd writes the configuration of one onceflow process and returns
// its command. Distributed contenders run job.mode distributed with G =
// distGroups and parallelism 1 (a group reads one partition: a second
// source subtask would idle), each instance with a state.dir of its own;
// they and onceflow-s3 keep their checkpoints under s3://<bucket>/<id>
// on the run's S3 server, signed in through the environment.
func onceflowCmd(useS3, distributed bool) func(o *options, s spec) (*exec.Cmd, error) {
	return func(o *options, s spec) (*exec.Cmd, error) {
		return onceflowProcess(o, s, useS3, distributed)
	}
}

func onceflowProcess(o *options, s spec, useS3, distributed bool) (*exec.Cmd, error) {
	backend := "memory"
	if s.Job == "wordcount" {
		backend = "pebble"
	}
	par, mode, ckDir, s3cfg := o.parallelism, "single", filepath.Join(s.Dir, "checkpoints"), ""
	var env []string
	if useS3 || distributed {
		if s.S3 == nil {
			return nil, errors.New("checkpoints in S3 need the run's S3 server, and none was started")
		}
		ckDir = "s3://" + s.S3.Bucket + "/" + s.ID
		s3cfg = fmt.Sprintf(", s3: {endpoint: %q, region: %q, path_style: true}", s.S3.URL, s.S3.Region)
		env = []string{"ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID=" + s.S3.AccessKeyID,
			"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=" + s.S3.SecretAccessKey}
	}
	groups := ""
	if distributed {
		par, mode = 1, "distributed"
		groups = fmt.Sprintf(", partition_groups: %d", distGroups)
	}
	cfg := fmt.Sprintf(`# written by bench/cmd/compare
job: {name: %q, type: %s, parallelism: %d, mode: %s%s}
kafka: {brokers: [%s]}
source: {topic: %q, start: earliest}
sink: {topic: %q, delivery: exactly_once, transactional_id_prefix: %q}
checkpoint: {interval: %s, dir: %q%s}
state: {backend: %s, dir: %q}
restart: {strategy: none}
http: {listen: "127.0.0.1:%d"}
log: {level: %s}
`, s.ID, s.Job, par, mode, groups, quoteList(s.Brokers), s.In, s.Out, s.ID, s.Interval, ckDir, s3cfg,
		backend, filepath.Join(s.Dir, instanceName("state", s)), s.HTTPPort, o.onceflowLog)
	path := filepath.Join(s.Dir, instanceName("onceflow", s)+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(o.onceflowBin, "run", "--config", path)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	return cmd, nil
}

// instanceName is base for a one-process contender, base-<i> for
// instance i of several.
func instanceName(base string, s spec) string {
	if len(s.Ports) <= 1 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, s.Instance)
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

// proc is a running contender: one process, or the instances of a
// multi-process contender, started together and stopped together.
type proc struct {
	kids []*child
}

// child is one process of a contender.
type child struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts every process of c (c.count(); instance i gets
// s.Ports[i] and logs to <tag>-<i>.log when there are several). The
// commands are all made first and then started in a row, so that the
// instances of a distributed job join its consumer group together. If one
// fails to start, those started are killed.
func startProc(o *options, c *contender, s spec, tag string) (*proc, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	if len(s.Ports) != c.count() {
		s = newSpec(c, s)
	}
	var cmds []*exec.Cmd
	var logs []string
	for i := range c.count() {
		si := s
		si.Instance, si.HTTPPort = i, s.Ports[i]
		cmd, err := c.command(o, si)
		if err != nil {
			return nil, err
		}
		logPath := filepath.Join(s.Dir, instanceName(tag, si)+".log")
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
		cmds, logs = append(cmds, cmd), append(logs, logPath)
	}
	p := &proc{}
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			p.kill()
			return nil, fmt.Errorf("starting %s (process %d of %d): %w", c.name, i+1, len(cmds), err)
		}
		k := &child{cmd: cmd, log: logs[i], done: make(chan struct{})}
		go func() {
			k.err = cmd.Wait()
			close(k.done)
		}()
		p.kids = append(p.kids, k)
	}
	return p, nil
}

// pid is the first process's.
func (p *proc) pid() int { return p.kids[0].pid() }

// pids are every process's.
func (p *proc) pids() []int {
	out := make([]int, len(p.kids))
	for i, k := range p.kids {
		out[i] = k.pid()
	}
	return out
}

func (k *child) pid() int { return k.cmd.Process.Pid }

func (k *child) exited() bool {
	select {
	case <-k.done:
		return true
	default:
		return false
	}
}

// exited reports whether any of the processes exited.
func (p *proc) exited() bool {
	for _, k := range p.kids {
		if k.exited() {
			return true
		}
	}
	return false
}

// kill is SIGKILL to every process group, waiting until they are gone.
func (p *proc) kill() {
	for _, k := range p.kids {
		_ = syscall.Kill(-k.pid(), syscall.SIGKILL)
	}
	for _, k := range p.kids {
		select {
		case <-k.done:
		case <-time.After(30 * time.Second):
		}
	}
}

// stop asks every process to stop (SIGTERM, all at once), and kills those
// still running after grace.
func (p *proc) stop(grace time.Duration) {
	for _, k := range p.kids {
		if !k.exited() {
			_ = syscall.Kill(-k.pid(), syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for _, k := range p.kids {
		select {
		case <-k.done:
		case <-deadline:
			p.kill()
			return
		}
	}
}

// failure describes the first process that exited: its last log line
// first (the report keeps the first line of an error), then the tail of
// its log.
func (p *proc) failure() error {
	k := p.kids[0]
	for _, x := range p.kids {
		if x.exited() {
			k = x
			break
		}
	}
	b, _ := os.ReadFile(k.log)
	last := strings.TrimSpace(tailLines(string(b), 1))
	which := ""
	if len(p.kids) > 1 {
		which = fmt.Sprintf(" (one of %d instances)", len(p.kids))
	}
	return fmt.Errorf("the contender exited%s (%v): %s\n%s ends with:\n%s", which, k.err, last, k.log, tailLines(string(b), 15))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// distGroupsSeen is what the instances of a distributed contender say of
// their partition groups at the end of a backlog run.
type distGroupsSeen struct {
	// assignment is the number of groups each instance owns, e.g. "3+3+2".
	assignment string
	// revocations count the rebalances in which an instance gave groups
	// back or lost them, summed over the instances: 0 when every instance
	// joined the first generation and kept its groups.
	revocations int64
}

// distScrape reads /api/v1/job of every instance of s.
func distScrape(s spec) (distGroupsSeen, error) {
	var seen distGroupsSeen
	var owned []string
	for _, port := range s.Ports {
		resp, err := httpClient().Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/job", port))
		if err != nil {
			return seen, err
		}
		var body struct {
			Groups     []json.RawMessage `json:"groups"`
			Rebalances struct {
				Revoked int64 `json:"revoked"`
				Lost    int64 `json:"lost"`
			} `json:"rebalances"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			return seen, fmt.Errorf("127.0.0.1:%d/api/v1/job: %w", port, err)
		}
		owned = append(owned, strconv.Itoa(len(body.Groups)))
		seen.revocations += body.Rebalances.Revoked + body.Rebalances.Lost
	}
	seen.assignment = strings.Join(owned, "+")
	return seen, nil
}
