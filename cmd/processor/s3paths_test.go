package main

import (
	"strings"
	"testing"

	"github.com/onceflow/onceflow/config"
)

func TestCheckpointCommandsRefuseS3Locations(t *testing.T) {
	const loc = "s3://bucket/prefix/job"
	for _, args := range [][]string{
		{"checkpoints", "list", loc},
		{"checkpoints", "inspect", loc + "/manifest/chk-3"},
		{"savepoints", "list", loc},
		{"savepoints", "prune", "--keep", "1", loc},
	} {
		code, _, errOut := runCLI(args...)
		if code != 2 || !strings.Contains(errOut, "checkpoints in S3 are not supported by this command yet") || !strings.Contains(errOut, "s3://bucket/prefix/job") {
			t.Errorf("%v: exit %d %q; want 2 and a refusal of the S3 location", args, code, errOut)
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
