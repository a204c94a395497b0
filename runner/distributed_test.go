package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/groups"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/jobs"
)

// testMember stands for the job's consumer group: Join assigns it the
// groups of assign, Close revokes what it owns, as membership.Member does.
type testMember struct {
	cfg    membership.Config
	assign []int
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex
	owned []int
}

func (m *testMember) Join(ctx context.Context) error {
	m.mu.Lock()
	m.owned = append([]int(nil), m.assign...)
	m.mu.Unlock()
	m.cfg.Handler.Assigned(ctx, m.assign)
	return nil
}

func (m *testMember) Close(context.Context) error {
	m.once.Do(func() {
		m.mu.Lock()
		owned := m.owned
		m.owned = nil
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RevokeTimeout)
		defer cancel()
		m.cfg.Handler.Revoked(ctx, owned)
		close(m.closed)
	})
	return nil
}

func (m *testMember) CommitOffsets(context.Context, map[string]map[int32]int64) error { return nil }
func (m *testMember) GroupID() string                                                 { return m.cfg.GroupID }

// distributedRun is processor run of a distributed job over in-memory
// group pipelines: each group is a memJob of its own with its
// checkpoints in a local directory (the real build needs S3).
type distributedRun struct {
	*testRun
	member *testMember

	mu   sync.Mutex
	jobs map[int]*memJob
	envs map[int]jobs.Env
}

func startDistributed(t *testing.T, partitions int, failBuild map[int]error, block chan struct{}, args ...string) *distributedRun {
	t.Helper()
	dir := t.TempDir()
	return startDistributedProgram(t, Job{}, processorName, dir, jobConfig(t, dir, ""), partitions, failBuild, block, args...)
}

// startDistributedProgram is startDistributed for the program of j,
// called name, with the configuration file cfg in dir.
func startDistributedProgram(t *testing.T, j Job, name, dir, cfg string, partitions int, failBuild map[int]error, block chan struct{}, args ...string) *distributedRun {
	t.Helper()
	dr := &distributedRun{member: &testMember{assign: []int{0, 1}, closed: make(chan struct{})}, jobs: map[int]*memJob{}, envs: map[int]jobs.Env{}}
	modify := func(d deps) deps {
		d.partitions = func(context.Context, []kgo.Opt, string) (int, error) { return partitions, nil }
		d.member = func(c membership.Config) (groups.Member, error) {
			dr.member.cfg = c
			return dr.member, nil
		}
		d.buildGroup = func(ctx context.Context, cfg *config.Config, env jobs.Env) (groups.Pipeline, error) {
			if env.Group == nil {
				return nil, errors.New("a distributed run built the whole job")
			}
			g := env.Group.Index
			if err := failBuild[g]; err != nil {
				return nil, err
			}
			m := &memJob{src: &lineSource{limit: 40}, sink: &txnSink{block: block}}
			dr.mu.Lock()
			dr.jobs[g], dr.envs[g] = m, env
			dr.mu.Unlock()
			c := *cfg
			c.Checkpoint.Dir = dir
			c.Job.Name = fmt.Sprintf("%s-pg%d", cfg.Job.Name, g)
			built, err := m.build(ctx, &c, env)
			if err != nil {
				return nil, err
			}
			return built.Job, nil
		}
		d.build = func(context.Context, *config.Config, jobs.Env) (*jobs.Built, error) {
			return nil, errors.New("a distributed run built the whole job")
		}
		return d
	}
	args = append([]string{"--config", cfg, "--set", "job.mode=distributed", "--set", "checkpoint.dir=s3://bucket/prefix",
		"--set", "state.dir=" + dir + "/state"}, args...)
	dr.testRun = startProgramRun(t, j, name, modify, nil, []string{}, args...)
	return dr
}

func getBody(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitGroups polls /api/v1/job until every group of want runs and has
// completed a checkpoint.
func waitGroups(t *testing.T, addr string, want int) distributedJobBody {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var body distributedJobBody
		getJSON(t, "http://"+addr+"/api/v1/job", &body)
		ready := len(body.Groups) == want
		for _, g := range body.Groups {
			ready = ready && g.State == groups.GroupRunning && g.LastCheckpoint != nil
		}
		if ready {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("groups not all running with a checkpoint after 20s: %+v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDistributedRunServesItsGroupsAndLeavesOnSIGTERM(t *testing.T) {
	r := startDistributed(t, 4, nil, nil, "--set", "job.partition_groups=2")
	addr := r.addr()
	body := waitGroups(t, addr, 2)
	if body.Mode != "distributed" || body.Name != "memwc" || body.ConsumerGroup != "onceflow-memwc" || body.PartitionGroups != 2 ||
		body.State != groups.StateRunning || body.Rebalances.Assigned != 1 || body.Groups[0].Group != 0 || body.Groups[1].Group != 1 {
		t.Fatalf("/api/v1/job: %+v", body)
	}
	if g := body.Groups[0]; g.PipelineState != "RUNNING" || g.LastCheckpoint.ID < 1 || g.LastCheckpoint.Time.IsZero() {
		t.Fatalf("group 0: %+v", g)
	}
	r.mu.Lock()
	env := r.envs[1]
	r.mu.Unlock()
	if env.Group.Count != 2 || env.Group.CommitOffsets == nil || env.RestoreFrom != "" || env.Fresh {
		t.Fatalf("group 1 built with %+v", env)
	}
	cfg := r.member.cfg
	if cfg.GroupID != "onceflow-memwc" || cfg.Groups != 2 || len(cfg.Topics) != 1 || cfg.Topics[0] != "words" ||
		cfg.SessionTimeout != 10*time.Second || cfg.RevokeTimeout != 30*time.Second || cfg.RebalanceTimeout != time.Minute {
		t.Fatalf("membership configured with %+v", cfg)
	}

	code, health := getBody(t, http.MethodGet, "http://"+addr+"/healthz")
	if code != http.StatusOK || !strings.Contains(health, `"mode": "distributed"`) || !strings.Contains(health, `"groups_owned": 2`) {
		t.Fatalf("/healthz: %d %s", code, health)
	}
	_, metrics := getBody(t, http.MethodGet, "http://"+addr+"/metrics")
	for _, want := range []string{
		`onceflow_partition_groups_owned{job_name="memwc"} 2`,
		`onceflow_group_rebalances_total{job_name="memwc",kind="assigned"} 1`,
		`onceflow_group_rebalances_total{job_name="memwc",kind="revoked"} 0`,
		`onceflow_group_fenced_total{job_name="memwc"} 0`,
		`onceflow_group_last_checkpoint_id{group="1",job_name="memwc"} `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, msg := getBody(t, http.MethodPost, "http://"+addr+"/api/v1/stop"); code != http.StatusNotImplemented || !strings.Contains(msg, "job.mode distributed") {
		t.Errorf("POST /api/v1/stop: %d %s", code, msg)
	}

	r.sigs <- syscall.SIGTERM
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, r.stderr.String())
	}
	select {
	case <-r.member.closed:
	default:
		t.Fatal("the member was not closed")
	}
	logs := r.stderr.String()
	if n := strings.Count(logs, "partition group revoked: stopped with a final savepoint"); n != 2 {
		t.Fatalf("%d groups stopped with a final savepoint, want 2:\n%s", n, logs)
	}
	for g, m := range r.jobs {
		if _, open := m.sink.output(); open != 0 {
			t.Errorf("group %d left %d records in an open transaction", g, open)
		}
	}
}

func TestDistributedRunExitsWithAFailedGroup(t *testing.T) {
	r := startDistributed(t, 2, map[int]error{1: errors.New("injected build failure")}, nil)
	if code := r.wait(20 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), "processor: partition group 1: claiming and building: injected build failure") {
		t.Fatalf("stderr lacks the group's failure:\n%s", r.stderr.String())
	}
	select {
	case <-r.member.closed:
	default:
		t.Fatal("the member was not closed")
	}
}

func TestDistributedRunSecondSignalCancels(t *testing.T) {
	block := make(chan struct{}) // no savepoint ever completes
	r := startDistributed(t, 2, nil, block)
	addr := r.addr()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var body distributedJobBody
		getJSON(t, "http://"+addr+"/api/v1/job", &body)
		if len(body.Groups) == 2 && body.Groups[0].PipelineState == "RUNNING" && body.Groups[1].PipelineState == "RUNNING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("groups not running: %+v", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.sigs <- syscall.SIGTERM
	r.sigs <- syscall.SIGINT
	if code := r.wait(20 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), "cancelled by a second signal") {
		t.Fatalf("stderr lacks the cancellation:\n%s", r.stderr.String())
	}
}

func TestDistributedRunRefusals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		partitions int
		args       []string
		want       string
	}{
		{"missing input topic", 0, nil, "processor: config: source.topic: topic words does not exist"},
		{"more groups than partitions", 4, []string{"--set", "job.partition_groups=5"}, "config: job.partition_groups: 5 partition groups, but source.topic words has 4 partitions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startDistributed(t, tc.partitions, nil, nil, tc.args...)
			if code := r.wait(20 * time.Second); code != 2 || !strings.Contains(r.stderr.String(), tc.want) {
				t.Fatalf("exit %d, want 2 with %q:\n%s", code, tc.want, r.stderr.String())
			}
		})
	}
	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	for flag, args := range map[string][]string{
		"--from":  {"--from", "s3://bucket/prefix/memwc/pg-0/manifest/chk-3"},
		"--fresh": {"--fresh"},
	} {
		args = append([]string{"run", "--config", cfg, "--set", "job.mode=distributed", "--set", "checkpoint.dir=s3://bucket/prefix",
			"--set", "state.dir=" + dir}, args...)
		code, _, errOut := runCLI(args...)
		if code != 2 || !strings.Contains(errOut, "processor: "+flag+" is not supported with job.mode distributed") {
			t.Errorf("%s: exit %d %q; want 2 and a refusal naming the flag", flag, code, errOut)
		}
	}
}
