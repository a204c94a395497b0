package runner

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/jobs"
)

func TestCheckpointCommandsOnS3Refusals(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	keys := []string{"--set", "checkpoint.s3.endpoint=" + closed, "--set", "checkpoint.s3.path_style=true",
		"--set", "checkpoint.s3.access_key_id=AKID", "--set", "checkpoint.s3.secret_access_key=s3cr3t"}
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{append([]string{"checkpoints", "list", "s3://bucket/prefix/job"}, keys...), 1, []string{closed, "bucket", "unreachable"}},
		{append([]string{"checkpoints", "inspect", "s3://bucket/prefix/job/manifest/chk-3"}, keys...), 1, []string{closed, "unreachable"}},
		{append([]string{"savepoints", "list", "s3://bucket/prefix/job"}, keys...), 1, []string{closed, "bucket", "unreachable"}},
		{append([]string{"savepoints", "prune", "--keep", "1", "s3://bucket/prefix/job"}, keys...), 1, []string{closed, "bucket", "unreachable"}},
		{append([]string{"savepoints", "prune", "--keep", "1", "--dry-run", "s3://bucket/prefix/job"}, keys...), 1, []string{closed, "bucket", "unreachable"}},
		{[]string{"savepoints", "prune", "--keep", "1", "s3://bucket"}, 2, []string{"name the job"}},
		{append([]string{"checkpoints", "inspect", "s3://bucket/prefix/job/chk-3"}, keys...), 2, []string{"name a checkpoint or savepoint: s3://<bucket>/<prefix>/<job.name>/manifest/"}},
		{[]string{"checkpoints", "list", "s3://bucket/prefix/job", "--set", "checkpoint.s3.endpoint=ftp://x"}, 2, []string{"checkpoint.s3.endpoint", "ftp://x"}},
	} {
		code, _, errOut := runCLI(tc.args...)
		ok := code == tc.code && !strings.Contains(errOut, "s3cr3t")
		for _, w := range tc.want {
			ok = ok && strings.Contains(errOut, w)
		}
		if !ok {
			t.Errorf("%v: exit %d %q; want %d with %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// run --fresh with S3 checkpoints reaches the build with Fresh set (jobs
// sets the job's objects aside there).
func TestRunPassesFreshWithS3Checkpoints(t *testing.T) {
	var fresh atomic.Bool
	r := startRunDeps(t, func(d deps) deps {
		d.build = func(_ context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error) {
			fresh.Store(env.Fresh && strings.HasPrefix(cfg.Checkpoint.Dir, "s3://"))
			return nil, errors.New("stop here")
		}
		return d
	}, newMemJob(10, time.Millisecond), nil, "--config", jobConfig(t, t.TempDir(), ""), "--fresh", "--set", "checkpoint.dir=s3://bucket/prefix",
		"--set", "state.dir="+t.TempDir())
	r.wait(30 * time.Second)
	if !fresh.Load() {
		t.Fatal("run --fresh with S3 checkpoints did not reach the build with Fresh and the s3:// checkpoint.dir")
	}
}

func TestRestoreFromTakesAnS3KeyOfTheBucket(t *testing.T) {
	cfg := &config.Config{Checkpoint: config.Checkpoint{Dir: "s3://bucket/prefix"}}
	for from, want := range map[string]string{
		"s3://bucket/prefix/job/manifest/savepoint-7": "prefix/job/manifest/savepoint-7",
		"prefix/job/manifest/chk-3":                   "prefix/job/manifest/chk-3",
		"savepoint-7":                                 "savepoint-7",
	} {
		if got, err := restoreFrom(cfg, from); err != nil || got != want {
			t.Errorf("restoreFrom(%q) = %q, %v; want %q", from, got, err, want)
		}
	}
	if _, err := restoreFrom(cfg, "s3://other/prefix/job/manifest/chk-3"); err == nil || !strings.Contains(err.Error(), "not in the bucket of checkpoint.dir s3://bucket/prefix") {
		t.Errorf("restoreFrom of another bucket: %v; want a refusal naming checkpoint.dir", err)
	}
	dirCfg := &config.Config{Checkpoint: config.Checkpoint{Dir: "/var/chk"}}
	if got, err := restoreFrom(dirCfg, "/var/chk/job/savepoint-2"); err != nil || got != "/var/chk/job/savepoint-2" {
		t.Errorf("restoreFrom with a directory: %q, %v; want the path unchanged", got, err)
	}
}
