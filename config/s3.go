package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/onceflow/onceflow/internal/objstore"
)

// S3Scheme starts a checkpoint.dir that selects S3 storage.
const S3Scheme = "s3://"

// S3Dir is an s3:// checkpoint.dir: a bucket and a key prefix in it.
type S3Dir struct {
	Bucket string
	// Prefix is the key prefix without leading or trailing "/" (may be
	// empty); a job's objects live under <Prefix>/<job>/.
	Prefix string
}

// String is the s3://<bucket>/<prefix> form.
func (d S3Dir) String() string {
	if d.Prefix == "" {
		return S3Scheme + d.Bucket
	}
	return S3Scheme + d.Bucket + "/" + d.Prefix
}

// Job is the s3:// location of job's objects.
func (d S3Dir) Job(job string) string { return d.String() + "/" + job }

// IsS3Dir reports whether dir asks for S3 storage (starts with s3://, in
// any case); ParseS3Dir says whether it is well formed.
func IsS3Dir(dir string) bool {
	return len(dir) >= len(S3Scheme) && strings.EqualFold(dir[:len(S3Scheme)], S3Scheme)
}

// ParseS3Dir parses an s3://<bucket>/<prefix> checkpoint.dir. ok is false
// for a local directory. A malformed one is an error saying what is
// wrong: a bucket S3 cannot name, an empty, "." or ".." segment in the
// prefix, a query, a fragment or credentials in the URL, or a scheme that
// is not lowercase.
func ParseS3Dir(dir string) (d S3Dir, ok bool, err error) {
	if !IsS3Dir(dir) {
		if strings.HasPrefix(strings.ToLower(dir), "s3:") {
			return S3Dir{}, true, fmt.Errorf("%q: write s3://<bucket>/<prefix>", dir)
		}
		return S3Dir{}, false, nil
	}
	if !strings.HasPrefix(dir, S3Scheme) {
		return S3Dir{}, true, fmt.Errorf("%q: the scheme is s3:// in lowercase", dir)
	}
	rest := dir[len(S3Scheme):]
	if strings.ContainsAny(rest, "?#@\\ ") {
		return S3Dir{}, true, fmt.Errorf("%q: an s3:// checkpoint.dir is s3://<bucket>/<prefix>, without credentials, query, fragment, backslashes or spaces", dir)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := objstore.ValidBucket(bucket); err != nil {
		return S3Dir{}, true, fmt.Errorf("%q: bucket %q: %v", dir, bucket, err)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return S3Dir{}, true, fmt.Errorf("%q: the prefix %q has an empty, \".\" or \"..\" segment", dir, prefix)
			}
		}
	}
	return S3Dir{Bucket: bucket, Prefix: prefix}, true, nil
}

// validateS3 checks checkpoint.dir and checkpoint.s3.*: with an s3://
// dir, the s3 keys' values; with a directory, that none of them is set.
func (c *Config) validateS3(bad func(key, format string, args ...any)) {
	ck := c.Checkpoint
	_, isS3, err := ParseS3Dir(ck.Dir)
	if err != nil {
		bad("checkpoint.dir", "%v", err)
		return
	}
	s := ck.S3
	if !isS3 {
		set := map[string]bool{
			"checkpoint.s3.endpoint": s.Endpoint != "", "checkpoint.s3.region": s.Region != Default().Checkpoint.S3.Region,
			"checkpoint.s3.path_style": s.PathStyle, "checkpoint.s3.ca_file": s.CAFile != "",
			"checkpoint.s3.insecure_skip_verify": s.InsecureSkipVerify, "checkpoint.s3.access_key_id": s.AccessKeyID != "",
			"checkpoint.s3.secret_access_key": s.SecretAccessKey != "",
		}
		for _, k := range Keys() {
			if set[k] {
				bad(k, "set, but checkpoint.dir %q is a local directory (s3://<bucket>/<prefix> selects S3 storage)", ck.Dir)
			}
		}
		return
	}
	var scheme string
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			shown := "the value"
			if !strings.Contains(s.Endpoint, "@") { // userinfo may hold a secret
				shown = fmt.Sprintf("%q", s.Endpoint)
			}
			bad("checkpoint.s3.endpoint", "%s is not an http:// or https:// URL of a host (without credentials, query or fragment)", shown)
		} else {
			scheme = u.Scheme
		}
	}
	if scheme == "http" && s.CAFile != "" {
		bad("checkpoint.s3.ca_file", "set for the plain http endpoint %s: TLS settings need an https:// endpoint", s.Endpoint)
	}
	if scheme == "http" && s.InsecureSkipVerify {
		bad("checkpoint.s3.insecure_skip_verify", "set for the plain http endpoint %s: TLS settings need an https:// endpoint", s.Endpoint)
	}
	if s.CAFile != "" {
		if _, err := os.Stat(s.CAFile); err != nil {
			bad("checkpoint.s3.ca_file", "%v", err)
		}
	}
	if (s.AccessKeyID == "") != (s.SecretAccessKey == "") {
		key := "checkpoint.s3.secret_access_key"
		if s.AccessKeyID == "" {
			key = "checkpoint.s3.access_key_id"
		}
		bad(key, "required: checkpoint.s3.access_key_id and checkpoint.s3.secret_access_key go together "+
			"(set both, or neither for the AWS default chain: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, roles)")
	}
	if strings.TrimSpace(s.Region) == "" {
		bad("checkpoint.s3.region", "required")
	}
}
