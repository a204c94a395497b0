package runner

import (
	"net"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/config"
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

func TestRunRefusesFreshWithS3Checkpoints(t *testing.T) {
	cfg := jobConfig(t, t.TempDir(), "")
	code, _, errOut := runCLI("run", "--config", cfg, "--fresh", "--set", "checkpoint.dir=s3://bucket/prefix")
	if code != 2 || !strings.Contains(errOut, "--fresh is not supported with S3 checkpoints (checkpoint.dir s3://bucket/prefix)") {
		t.Fatalf("run --fresh with S3 checkpoints: exit %d %q; want 2 and a refusal", code, errOut)
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
