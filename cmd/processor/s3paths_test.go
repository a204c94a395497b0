package main

import (
	"strings"
	"testing"
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
