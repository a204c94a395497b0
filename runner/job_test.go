package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/jobs"
)

// goJobConfig writes the configuration of the in-memory word count into
// dir as a Go job's would be, with job as its job section (no job.type
// unless job names it).
func goJobConfig(t *testing.T, dir, job string) string {
	t.Helper()
	text := fmt.Sprintf(`
job: %s
kafka: {brokers: ["127.0.0.1:9092"]}
source: {topic: words}
sink: {topic: counts}
checkpoint: {interval: 50ms, timeout: 10s, dir: %s/checkpoints}
state: {backend: memory}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
`, job, dir)
	p := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// countingDataflow is a Dataflow that only counts its calls: a test
// calls the Dataflow a build was handed to prove it is the program's.
func countingDataflow(calls *atomic.Int32) jobs.Dataflow {
	return func(*jobs.Builder) error {
		calls.Add(1)
		return nil
	}
}

// A Go job's program loads its configuration with job.type go and
// job.name Job.Name as defaults (a file, the environment or --set still
// name the job), and its build is handed the program's Dataflow.
func TestGoJobRunDefaultsTypeAndNameAndBuildsWithTheDataflow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		job      string
		env      []string
		args     []string
		wantName string
	}{
		{"defaults", "{parallelism: 2}", nil, nil, "purchases"},
		{"explicit job.type go", "{type: go, parallelism: 2}", nil, nil, "purchases"},
		{"the file names the job", "{name: fromfile, parallelism: 2}", nil, nil, "fromfile"},
		{"the environment names the job", "{name: fromfile, parallelism: 2}", []string{"ONCEFLOW_JOB_NAME=fromenv"}, nil, "fromenv"},
		{"--set names the job", "{name: fromfile, parallelism: 2}", []string{"ONCEFLOW_JOB_NAME=fromenv"}, []string{"--set", "job.name=fromset"}, "fromset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var calls atomic.Int32
			j := Job{Name: "purchases", Dataflow: countingDataflow(&calls)}
			type buildCall struct {
				cfg *config.Config
				env jobs.Env
			}
			builds := make(chan buildCall, 1)
			capture := func(d deps) deps {
				build := d.build
				d.build = func(ctx context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error) {
					builds <- buildCall{cfg, env}
					return build(ctx, cfg, env)
				}
				return d
			}
			args := append([]string{"--config", goJobConfig(t, dir, tc.job)}, tc.args...)
			r := startProgramRun(t, j, "purchases", capture, newMemJob(10, 0), tc.env, args...)
			var b buildCall
			select {
			case b = <-builds:
			case <-r.done:
				t.Fatalf("exit %d before the job was built:\n%s", r.code, r.stderr.String())
			}
			if b.cfg.Job.Type != "go" || b.cfg.Job.Name != tc.wantName {
				t.Errorf("built with job.type %q, job.name %q; want go, %s", b.cfg.Job.Type, b.cfg.Job.Name, tc.wantName)
			}
			if b.env.Dataflow == nil {
				t.Fatal("built without the program's Dataflow")
			}
			if err := b.env.Dataflow(nil); err != nil || calls.Load() != 1 {
				t.Fatalf("the Dataflow handed to the build is not the program's (err %v, %d calls of it)", err, calls.Load())
			}
			r.sigs <- syscall.SIGTERM
			if code := r.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, r.stderr.String())
			}
			if p := strings.TrimSpace(r.stdout.String()); !strings.HasPrefix(p, filepath.Join(dir, "checkpoints", tc.wantName)+string(filepath.Separator)) {
				t.Fatalf("savepoint %q, want one under the job %s's checkpoints", p, tc.wantName)
			}
		})
	}
}

// In job.mode distributed every partition group of a Go job is built
// with the program's Dataflow, under the default job.name and job.type.
func TestGoJobDistributedBuildsEveryGroupWithTheDataflow(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int32
	j := Job{Name: "purchases", Dataflow: countingDataflow(&calls)}
	r := startDistributedProgram(t, j, "purchases", dir, goJobConfig(t, dir, "{parallelism: 2}"), 2, nil, nil)
	body := waitGroups(t, r.addr(), 2)
	if body.Name != "purchases" || body.ConsumerGroup != "onceflow-purchases" {
		t.Fatalf("/api/v1/job names job %q, consumer group %q; want purchases, onceflow-purchases", body.Name, body.ConsumerGroup)
	}
	r.mu.Lock()
	envs := r.envs
	r.mu.Unlock()
	for g := range 2 {
		df := envs[g].Dataflow
		if df == nil {
			t.Fatalf("group %d built without the program's Dataflow", g)
		}
		if err := df(nil); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 2 {
		t.Fatalf("%d calls of the program's Dataflow through the groups' envs, want 2", calls.Load())
	}
	r.sigs <- syscall.SIGTERM
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, r.stderr.String())
	}
	if logs := r.stderr.String(); !strings.Contains(logs, "type=go") {
		t.Fatalf("the start log does not say job.type go:\n%s", logs)
	}
}

// The processor (a Job without a Dataflow) refuses job.type go, and a Go
// job's program a built-in job.type, with exit 2 and a line naming
// job.type before anything is built; the line starts with the program's
// name. A Go job without Job.Name needs job.name configured.
func TestJobTypeTheProgramCannotRunIsRefused(t *testing.T) {
	dir := t.TempDir()
	wordcount := jobConfig(t, t.TempDir(), "")
	df := countingDataflow(new(atomic.Int32))
	const processorRefusal = "processor: config: job.type: go runs a Go dataflow compiled into a program built on package runner; processor runs copy, wordcount and aggregate\n"
	for _, tc := range []struct {
		name string
		j    Job
		prog string
		env  []string
		args []string
		want string
	}{
		{"processor, job.type go in the file", Job{}, processorName, nil, []string{"--config", goJobConfig(t, dir, "{name: p, type: go}")}, processorRefusal},
		{"processor, job.type go in --set", Job{}, processorName, nil, []string{"--config", wordcount, "--set", "job.type=go"}, processorRefusal},
		{"processor, job.type go in the environment", Job{}, processorName, []string{"ONCEFLOW_JOB_TYPE=go"}, []string{"--config", wordcount}, processorRefusal},
		{"Go job, job.type wordcount", Job{Name: "purchases", Dataflow: df}, "purchases", nil, []string{"--config", wordcount},
			`purchases: config: job.type: "wordcount" names a built-in job, and this program runs its own Go dataflow: leave job.type unset (go), or run wordcount with processor` + "\n"},
		{"Go job without a name", Job{Dataflow: df}, "purchases", nil, []string{"--config", goJobConfig(t, t.TempDir(), "{parallelism: 2}")},
			"purchases: config: job.name: required\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &testRun{t: t, sigs: make(chan os.Signal, 1)}
			var stdout, stderr logbuf.Buffer
			d := testDeps(newMemJob(10, 0), r, tc.env)
			d.ping = func(context.Context, []kgo.Opt, []string) error { return errors.New("the run went on to the cluster") }
			root := newProgramRoot(tc.j, tc.prog, d)
			code := execute(context.Background(), root, append([]string{"run"}, tc.args...), &stdout, &stderr)
			if code != 2 || !strings.HasPrefix(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2, starting %q", code, stderr.String(), tc.want)
			}
			if r.built.Load() != 0 {
				t.Fatal("the job was built despite the refusal")
			}
		})
	}
}

// Execute takes a whole command line: the processor's lines start with
// "processor" whatever its binary is called, a Go job's with its
// program's base name.
func TestExecuteNamesTheProgram(t *testing.T) {
	cfg := goJobConfig(t, t.TempDir(), "{name: p, type: go}")
	var stdout, stderr bytes.Buffer
	code := Execute(context.Background(), Job{}, []string{"/opt/onceflow/bin/proc", "run", "--config", cfg, "--set", "kafka.brokers=127.0.0.1:1", "--connect-timeout", "1s"}, &stdout, &stderr)
	if code != 2 || !strings.HasPrefix(stderr.String(), "processor: config: job.type: go runs a Go dataflow") {
		t.Fatalf("processor run of job.type go: exit %d, stderr %q; want 2 and the refusal", code, stderr.String())
	}

	df := countingDataflow(new(atomic.Int32))
	for _, tc := range []struct {
		j    Job
		args []string
		want string
	}{
		{Job{}, []string{"/opt/onceflow/bin/proc", "version"}, "onceflow processor dev\n"},
		{Job{}, nil, ""},
		{Job{Name: "purchases", Dataflow: df}, []string{filepath.Join("build", "bin", "purchases-v2"), "version"}, "purchases-v2 (onceflow dev)\n"},
		{Job{Name: "purchases", Dataflow: df}, []string{"purchases.exe", "version"}, "purchases (onceflow dev)\n"},
		{Job{Name: "purchases", Dataflow: df}, []string{"", "version"}, "purchases (onceflow dev)\n"},
		{Job{Dataflow: df}, []string{"", "version"}, "runner (onceflow dev)\n"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := Execute(context.Background(), tc.j, tc.args, &stdout, &stderr); code != 0 || (tc.want != "" && stdout.String() != tc.want) {
			t.Errorf("Execute %q: exit %d, stdout %q, stderr %q; want 0, %q", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}

	stdout.Reset()
	stderr.Reset()
	if code := Execute(context.Background(), Job{Name: "purchases", Dataflow: df}, []string{"./purchases", "frobnicate"}, &stdout, &stderr); code != 2 ||
		!strings.HasPrefix(stderr.String(), `purchases: unknown command "frobnicate" for "purchases"`) {
		t.Fatalf("a mistyped command: exit %d, stderr %q; want 2 naming the program", code, stderr.String())
	}
}
