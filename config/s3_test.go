package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestS3CheckpointDirAndKeys(t *testing.T) {
	file := writeFile(t, valid)
	cfg, err := Load(Sources{File: file, Env: []string{
		"ONCEFLOW_CHECKPOINT_DIR=s3://chk-bucket/onceflow/prod/",
		"ONCEFLOW_CHECKPOINT_S3_ENDPOINT=http://127.0.0.1:7070",
		"ONCEFLOW_CHECKPOINT_S3_PATH_STYLE=true",
		"ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID=AKID",
		"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=very-secret",
		// the S3 test kit's variables are not configuration keys
		"ONCEFLOW_S3_ENDPOINT=http://elsewhere:1",
	}})
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ParseS3Dir(cfg.Checkpoint.Dir)
	if err != nil || !ok || d.Bucket != "chk-bucket" || d.Prefix != "onceflow/prod" || d.Job("wc") != "s3://chk-bucket/onceflow/prod/wc" {
		t.Fatalf("ParseS3Dir(%q) = %+v, %t, %v", cfg.Checkpoint.Dir, d, ok, err)
	}
	s := cfg.Checkpoint.S3
	if s.Endpoint != "http://127.0.0.1:7070" || !s.PathStyle || s.AccessKeyID != "AKID" || string(s.SecretAccessKey) != "very-secret" || s.Region != "us-east-1" {
		t.Fatalf("s3 keys not loaded: %+v", s)
	}
	if out := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); strings.Contains(out, "very-secret") {
		t.Fatalf("the secret access key is printed: %s", out)
	}
}

func TestS3CheckpointRefusalsNameTheKey(t *testing.T) {
	file := writeFile(t, valid)
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://Bad_Bucket/x"}, `config: checkpoint.dir: "s3://Bad_Bucket/x": bucket "Bad_Bucket"`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3:/b/x"}, `config: checkpoint.dir: "s3:/b/x": write s3://<bucket>/<prefix>`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket/a//b"}, `config: checkpoint.dir: "s3://bucket/a//b": the prefix`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket/a?x=1"}, `config: checkpoint.dir: "s3://bucket/a?x=1": an s3:// checkpoint.dir`},
		{[]string{"ONCEFLOW_CHECKPOINT_S3_ENDPOINT=http://127.0.0.1:7070"}, `config: checkpoint.s3.endpoint: set, but checkpoint.dir "./data/checkpoints" is a local directory`},
		{[]string{"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=s3cr3t"}, `config: checkpoint.s3.secret_access_key: set, but checkpoint.dir`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_ENDPOINT=127.0.0.1:7070"}, `config: checkpoint.s3.endpoint: "127.0.0.1:7070" is not an http:// or https:// URL`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_ENDPOINT=http://u:s3cr3t@host:1"}, `config: checkpoint.s3.endpoint: the value is not an http:// or https:// URL`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_ENDPOINT=http://h:1", "ONCEFLOW_CHECKPOINT_S3_INSECURE_SKIP_VERIFY=true"}, `config: checkpoint.s3.insecure_skip_verify: set for the plain http endpoint`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_CA_FILE=/nonexistent/ca.pem"}, `config: checkpoint.s3.ca_file: stat /nonexistent/ca.pem`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=s3cr3t"}, `config: checkpoint.s3.access_key_id: required: checkpoint.s3.access_key_id and checkpoint.s3.secret_access_key go together`},
		{[]string{"ONCEFLOW_CHECKPOINT_DIR=s3://bucket", "ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID=AKID"}, `config: checkpoint.s3.secret_access_key: required`},
	} {
		_, err := Load(Sources{File: file, Env: tc.env})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.env, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%v: the error shows the secret: %v", tc.env, err)
		}
	}
}
