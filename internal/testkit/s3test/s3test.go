// Package s3test gives integration tests a real S3-compatible service.
//
// Which service. Bootstrap's endpoint is chosen once per test binary:
//
//  1. ONCEFLOW_S3_ENDPOINT set (a URL, e.g. http://127.0.0.1:7070): that
//     service, signed in with ONCEFLOW_S3_ACCESS_KEY_ID and
//     ONCEFLOW_S3_SECRET_ACCESS_KEY (else AWS_ACCESS_KEY_ID and
//     AWS_SECRET_ACCESS_KEY), in region ONCEFLOW_S3_REGION (else AWS_REGION,
//     else us-east-1), on bucket ONCEFLOW_S3_BUCKET (default onceflow-test),
//     which is created when it does not exist. Requests use path-style
//     addressing.
//  2. Else a local versitygw (package s3server) on 127.0.0.1 with its posix
//     backend in a temporary folder, built once into the cache
//     (~/.cache/onceflow or $ONCEFLOW_CACHE_DIR) and started on the first
//     test that asks.
//
// The test binary stops the local server when Main returns, or when its own
// TestMain calls Shutdown (for a binary whose TestMain already runs
// kafkatest.Main):
//
//	func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }
//
//	func TestMain(m *testing.M) {
//		code := kafkatest.Main(m)
//		s3test.Shutdown()
//		os.Exit(code)
//	}
//
// Without either, the server dies with the test binary (it is started with
// a parent-death signal) but its temporary folder stays.
//
// Tests share the bucket: each keeps its objects under its own Prefix. A
// test that asks for a service that cannot be had fails with the reason;
// it never skips. Progress and the choice made go to stderr, prefixed
// "s3test:"; secrets are never printed.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/onceflow/onceflow/internal/testkit/s3server"
)

// Endpoint is an S3-compatible service with its credentials and bucket.
type Endpoint = s3server.Endpoint

// The environment variables that name an external service.
const (
	EnvEndpoint  = "ONCEFLOW_S3_ENDPOINT"
	EnvAccessKey = "ONCEFLOW_S3_ACCESS_KEY_ID"
	EnvSecretKey = "ONCEFLOW_S3_SECRET_ACCESS_KEY"
	EnvBucket    = "ONCEFLOW_S3_BUCKET"
	EnvRegion    = "ONCEFLOW_S3_REGION"
)

// DefaultExternalBucket is the bucket used on an external service when
// ONCEFLOW_S3_BUCKET is not set.
const DefaultExternalBucket = "onceflow-test"

// kit is the service this test binary chose and the local server it
// started. The test binary is the owner: Main or Shutdown stops the
// server. (A test kit is the one place where process-wide state is the
// contract: TestMain cannot hand values to tests.)
var kit struct {
	once sync.Once
	ep   Endpoint
	err  error

	mu     sync.Mutex
	server *s3server.Server // the local server, once started
	closed bool             // Shutdown ran: no server is started after it
}

var prefixSeq atomic.Int64

// Main runs the tests and then stops the local server if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	Shutdown()
	return code
}

// Shutdown stops the local server if this test binary started one (its
// folder is removed). Bootstrap fails after it. Safe to call more than once
// and when no server was started.
func Shutdown() {
	kit.mu.Lock()
	defer kit.mu.Unlock()
	kit.closed = true
	if kit.server == nil {
		return
	}
	start := time.Now()
	if err := kit.server.Stop(); err != nil {
		logf("stopping the local server: %v", err)
	} else {
		logf("local server stopped in %s", time.Since(start).Round(time.Millisecond))
	}
	kit.server = nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "s3test: "+format+"\n", args...)
}

// Bootstrap returns the test binary's S3 service, chosen once as the
// package doc says, with its bucket created. It fails the test with the
// reason when no service can be had.
func Bootstrap(t testing.TB) Endpoint {
	t.Helper()
	kit.once.Do(func() { kit.ep, kit.err = open() })
	if kit.err != nil {
		t.Fatalf("s3test: no S3 service: %v", kit.err)
	}
	return kit.ep
}

func open() (Endpoint, error) {
	ep, external, err := fromEnv(os.Getenv)
	if err != nil {
		return Endpoint{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if external {
		logf("Bootstrap uses the service at %s (%s is set)", ep, EnvEndpoint)
		if err := ensureBucket(ctx, ep); err != nil {
			return Endpoint{}, err
		}
		return ep, nil
	}
	kit.mu.Lock()
	defer kit.mu.Unlock()
	if kit.closed {
		return Endpoint{}, errors.New("Shutdown already ran; no local server is started after it")
	}
	start := time.Now()
	s, err := s3server.Start(ctx, s3server.Options{Logf: logf})
	if err != nil {
		return Endpoint{}, fmt.Errorf("no local versitygw (%s not set): %w", EnvEndpoint, err)
	}
	kit.server = s
	logf("local versitygw %s up in %s at %s", s3server.Version, time.Since(start).Round(time.Millisecond), s.Endpoint())
	return s.Endpoint(), nil
}

// fromEnv reads an external service from the environment; external is
// false when ONCEFLOW_S3_ENDPOINT is not set. It refuses an endpoint that
// is not an http(s) URL or comes without credentials, naming the
// variables.
func fromEnv(getenv func(string) string) (ep Endpoint, external bool, err error) {
	raw := strings.TrimSpace(getenv(EnvEndpoint))
	if raw == "" {
		return Endpoint{}, false, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Endpoint{}, true, fmt.Errorf("%s=%q is not an http:// or https:// URL", EnvEndpoint, raw)
	}
	first := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	ep = Endpoint{
		URL:             strings.TrimRight(raw, "/"),
		AccessKeyID:     first(EnvAccessKey, "AWS_ACCESS_KEY_ID"),
		SecretAccessKey: first(EnvSecretKey, "AWS_SECRET_ACCESS_KEY"),
		Region:          first(EnvRegion, "AWS_REGION"),
		Bucket:          first(EnvBucket),
	}
	if ep.AccessKeyID == "" || ep.SecretAccessKey == "" {
		return Endpoint{}, true, fmt.Errorf("%s is set but the credentials are not: set %s and %s (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
			EnvEndpoint, EnvAccessKey, EnvSecretKey)
	}
	if ep.Region == "" {
		ep.Region = s3server.DefaultRegion
	}
	if ep.Bucket == "" {
		ep.Bucket = DefaultExternalBucket
	}
	return ep, true, nil
}

// ensureBucket creates ep's bucket unless it exists.
func ensureBucket(ctx context.Context, ep Endpoint) error {
	hc, tr := httpClient()
	defer tr.CloseIdleConnections()
	cl := ep.Client(func(o *s3.Options) { o.HTTPClient = hc })
	_, err := cl.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(ep.Bucket)})
	if err == nil {
		return nil
	}
	var missing *types.NotFound
	if !errors.As(err, &missing) {
		return fmt.Errorf("checking bucket %s at %s: %w", ep.Bucket, ep.URL, err)
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(ep.Bucket)}
	if ep.Region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(ep.Region)}
	}
	if _, err := cl.CreateBucket(ctx, in); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if !errors.As(err, &owned) {
			return fmt.Errorf("creating bucket %s at %s: %w", ep.Bucket, ep.URL, err)
		}
	}
	logf("created bucket %s at %s", ep.Bucket, ep.URL)
	return nil
}

func httpClient() (*http.Client, *http.Transport) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{Transport: tr}, tr
}

// Client returns a path-style S3 client of ep whose connections are closed
// when the test ends; optFns adjust it further.
func Client(t testing.TB, ep Endpoint, optFns ...func(*s3.Options)) *s3.Client {
	t.Helper()
	hc, tr := httpClient()
	t.Cleanup(tr.CloseIdleConnections)
	return ep.Client(append([]func(*s3.Options){func(o *s3.Options) { o.HTTPClient = hc }}, optFns...)...)
}

// Prefix returns a key prefix unique to the test (ending in "/"), under
// which it keeps its objects in the shared bucket.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("%s-%d-%d/", sanitize(t.Name()), os.Getpid(), prefixSeq.Add(1))
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 100 {
		b = b[len(b)-100:]
	}
	return string(b)
}

// ServerLog returns the last lines of the local server's log, for failure
// messages, or a note saying there is none (an external service, or no
// server started yet).
func ServerLog(lines int) string {
	kit.mu.Lock()
	defer kit.mu.Unlock()
	if kit.server == nil {
		return "(no local S3 server: an external one, or none started)"
	}
	return kit.server.LogTail(lines)
}
