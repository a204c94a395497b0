package objstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/objstore/objstoretest"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// s3Env returns the test binary's S3 service and options for it. Tests
// that need a server skip under -short, like the other real-server tests.
func s3Env(t *testing.T) (s3test.Endpoint, objstore.Options) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	ep := s3test.Bootstrap(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log ends with:\n%s", s3test.ServerLog(30))
		}
	})
	return ep, objstore.Options{
		Bucket:          ep.Bucket,
		Endpoint:        ep.URL,
		Region:          ep.Region,
		PathStyle:       true,
		AccessKeyID:     ep.AccessKeyID,
		SecretAccessKey: ep.SecretAccessKey,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newS3(t *testing.T, o objstore.Options) *objstore.S3 {
	t.Helper()
	s, err := objstore.New(testCtx(t), o)
	if err != nil {
		t.Fatalf("New(%s): %v", o, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// The S3 store against a real S3-compatible server (versitygw, or
// ONCEFLOW_S3_ENDPOINT's). versitygw does not decide simultaneous
// create-only puts atomically, so the race is only logged.
func TestS3Conformance(t *testing.T) {
	_, o := s3Env(t)
	start := time.Now()
	objstoretest.Run(t, objstoretest.Suite{
		New:     func(t *testing.T) objstore.Store { return newS3(t, o) },
		Prefix:  func(t *testing.T) string { return s3test.Prefix(t) },
		Cleanup: os.Getenv(s3test.EnvEndpoint) != "", // the local server's folder goes with it
	})
	t.Logf("suite took %s", time.Since(start).Round(time.Millisecond))
}

// New checks the bucket and says what is wrong, naming the endpoint and
// the bucket, and never the secret.
func TestS3NewErrors(t *testing.T) {
	_, good := s3Env(t)
	const secret = "not-the-secret-0123456789"
	cases := []struct {
		name string
		edit func(*objstore.Options)
		want []string
	}{
		{"wrong secret", func(o *objstore.Options) { o.SecretAccessKey = secret },
			[]string{"refused the credentials", "access key " + good.AccessKeyID, "bucket " + good.Bucket, "403", "secret access key is wrong"}},
		{"unknown access key", func(o *objstore.Options) { o.AccessKeyID, o.SecretAccessKey = "nobody", secret },
			[]string{"refused the credentials", "access key nobody", "bucket " + good.Bucket, "no such access key"}},
		{"missing bucket", func(o *objstore.Options) { o.Bucket = "no-such-bucket-here" },
			[]string{"bucket no-such-bucket-here does not exist", "404", good.Endpoint}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.edit(&o)
			start := time.Now()
			s, err := objstore.New(testCtx(t), o)
			took := time.Since(start)
			if err == nil {
				_ = s.Close()
				t.Fatalf("New(%s) succeeded", o)
			}
			t.Logf("after %s: %v", took.Round(time.Millisecond), err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q", w)
				}
			}
			if !strings.Contains(err.Error(), o.Endpoint) {
				t.Errorf("the error does not name the endpoint %s", o.Endpoint)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), good.SecretAccessKey) {
				t.Errorf("the error shows a secret")
			}
		})
	}
}

// Without static keys New takes the SDK's default chain: the AWS_*
// environment variables work, and no credentials at all is a clear error
// before any request.
func TestS3NewDefaultCredentials(t *testing.T) {
	ep, o := s3Env(t)
	o.AccessKeyID, o.SecretAccessKey = "", ""
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_ACCESS_KEY_ID", ep.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", ep.SecretAccessKey)
	s := newS3(t, o)
	if _, err := s.List(testCtx(t), "none/"); err != nil {
		t.Fatalf("list with credentials from the environment: %v", err)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := objstore.New(testCtx(t), o)
	if err == nil || !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), o.Bucket) || !strings.Contains(err.Error(), o.Endpoint) {
		t.Fatalf("New without any credentials: %v; want a refusal saying so, naming the bucket and endpoint", err)
	}
	t.Log(err)
}

// faultProxy stands between the store and the server; handle decides,
// per request, what the store gets: forward passes the request on.
type faultProxy struct {
	mu   sync.Mutex
	reqs []string // "PUT /bucket/key", in order
}

func newFaultProxy(t *testing.T, target string, handle func(w http.ResponseWriter, r *http.Request, n int, forward http.HandlerFunc)) (*faultProxy, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u) // keeps the Host header the request was signed with
	p := &faultProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
		n := len(p.reqs)
		p.mu.Unlock()
		handle(w, r, n, rp.ServeHTTP)
	}))
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// count returns how many requests with this method and path suffix the
// proxy saw.
func (p *faultProxy) count(method, suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.reqs {
		if strings.HasPrefix(r, method+" ") && strings.HasSuffix(r, suffix) {
			n++
		}
	}
	return n
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test's proxy</Message><RequestId>test</RequestId></Error>`, code)
}

// A conditional put whose answer is lost after the server applied it is
// retried, refused (the key now holds it), recognised as its own write by
// its bytes, and reported as the success it was; a different writer's
// bytes stay a refusal.
func TestS3LostAnswerOfConditionalPut(t *testing.T) {
	_, o := s3Env(t)
	var lose, unavailable sync.Map // paths whose next PUT's answer is lost, or a 503
	proxy, url := newFaultProxy(t, o.Endpoint, func(w http.ResponseWriter, r *http.Request, _ int, forward http.HandlerFunc) {
		if r.Method == http.MethodPut {
			if _, ok := lose.LoadAndDelete(r.URL.Path); ok {
				forward(httptest.NewRecorder(), r) // applied; the answer goes nowhere
				s3Error(w, http.StatusInternalServerError, "InternalError")
				return
			}
			if _, ok := unavailable.LoadAndDelete(r.URL.Path); ok {
				_, _ = io.Copy(io.Discard, r.Body) // not applied
				s3Error(w, http.StatusServiceUnavailable, "ServiceUnavailable")
				return
			}
		}
		forward(w, r)
	})
	o.Endpoint = url
	s := newS3(t, o)
	ctx := testCtx(t)
	prefix := s3test.Prefix(t)
	path := func(key string) string { return "/" + o.Bucket + "/" + key }

	key := prefix + "_metadata"
	lose.Store(path(key), true)
	info, err := s.Put(ctx, key, strings.NewReader("epoch 7"), objstore.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only put whose first answer was lost: %v; want success (the key holds its bytes)", err)
	}
	if n := proxy.count("PUT", key); n != 2 {
		t.Fatalf("the put took %d attempts, want 2", n)
	}
	st, err := s.Stat(ctx, key)
	if err != nil || st.ETag != info.ETag || st.Size != 7 {
		t.Fatalf("stat %s: %+v %v; the put said %+v", key, st, err, info)
	}

	lose.Store(path(key), true)
	info2, err := s.Put(ctx, key, strings.NewReader("epoch 8"), objstore.PutOptions{IfMatch: info.ETag})
	if err != nil {
		t.Fatalf("if-match put whose first answer was lost: %v; want success", err)
	}
	if st, err := s.Stat(ctx, key); err != nil || st.ETag != info2.ETag || info2.ETag == info.ETag {
		t.Fatalf("stat %s: %+v %v; the put said %+v", key, st, err, info2)
	}

	// Someone else's bytes there: the refusal stands.
	other := prefix + "other"
	if _, err := s.Put(ctx, other, strings.NewReader("the winner"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	unavailable.Store(path(other), true)
	_, err = s.Put(ctx, other, strings.NewReader("the loser"), objstore.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, objstore.ErrExists) {
		t.Fatalf("create-only put of a key holding other bytes, after a 503: %v; want ErrExists", err)
	}
	if n := proxy.count("PUT", other); n != 3 {
		t.Fatalf("%d PUTs of %s, want 3 (the winner's, then the loser's 503 and 412)", n, other)
	}
	if body, _ := read(t, s, other); body != "the winner" {
		t.Fatalf("%s holds %q, want the winner's bytes", other, body)
	}
}

func read(t *testing.T, s objstore.Store, key string) (string, objstore.Info) {
	t.Helper()
	rc, info, err := s.Get(testCtx(t), key, objstore.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return string(b), info
}

// 409 ConditionalRequestConflict is retried: the put succeeds once the
// conflict is gone; one that lasts through every attempt is reported as
// ErrPreconditionFailed (not ErrExists), saying 409 and the attempts.
func TestS3ConditionalConflictRetried(t *testing.T) {
	_, o := s3Env(t)
	var conflicts sync.Map // path -> remaining 409s
	proxy, url := newFaultProxy(t, o.Endpoint, func(w http.ResponseWriter, r *http.Request, _ int, forward http.HandlerFunc) {
		if v, ok := conflicts.Load(r.URL.Path); ok && r.Method == http.MethodPut && v.(int) > 0 {
			conflicts.Store(r.URL.Path, v.(int)-1)
			_, _ = io.Copy(io.Discard, r.Body)
			s3Error(w, http.StatusConflict, "ConditionalRequestConflict")
			return
		}
		forward(w, r)
	})
	o.Endpoint = url
	o.MaxAttempts = 3
	s := newS3(t, o)
	ctx := testCtx(t)
	prefix := s3test.Prefix(t)

	key := prefix + "a"
	conflicts.Store("/"+o.Bucket+"/"+key, 2)
	if _, err := s.Put(ctx, key, strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("create-only put after two 409s: %v; want success on the third attempt", err)
	}
	if n := proxy.count("PUT", key); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}

	key = prefix + "b"
	conflicts.Store("/"+o.Bucket+"/"+key, 100)
	_, err := s.Put(ctx, key, strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, objstore.ErrPreconditionFailed) || errors.Is(err, objstore.ErrExists) ||
		!strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "3 attempts") || !strings.Contains(err.Error(), key) {
		t.Fatalf("create-only put meeting 409s on every attempt: %v; want ErrPreconditionFailed (not ErrExists) naming the key, the 409 and 3 attempts", err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("stat %s after the refused put: %v; want ErrNotFound", key, err)
	}
}

// An attempt whose answer does not come within RequestTimeout is given up
// and retried; retriable 5xx answers are retried too.
func TestS3StalledAttemptRetried(t *testing.T) {
	_, o := s3Env(t)
	var stall sync.Map // path -> stall the next request there
	stop := make(chan struct{})
	proxy, url := newFaultProxy(t, o.Endpoint, func(w http.ResponseWriter, r *http.Request, _ int, forward http.HandlerFunc) {
		if v, ok := stall.LoadAndDelete(r.URL.Path); ok {
			if v == "stall" {
				_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leave
				select {
				case <-r.Context().Done(): // the client gave up
				case <-stop:
				}
				return
			}
			s3Error(w, http.StatusServiceUnavailable, "ServiceUnavailable")
			return
		}
		forward(w, r)
	})
	t.Cleanup(func() { close(stop) }) // before the proxy's Close, which waits for its handlers
	o.Endpoint = url
	o.RequestTimeout = 300 * time.Millisecond
	s := newS3(t, o)
	ctx := testCtx(t)
	key := s3test.Prefix(t) + "k"
	path := "/" + o.Bucket + "/" + key
	stall.Store(path, "stall")
	start := time.Now()
	if _, err := s.Put(ctx, key, strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("put after a stalled attempt: %v", err)
	}
	t.Logf("put with one stalled attempt took %s", time.Since(start).Round(time.Millisecond))
	stall.Store(path, "503")
	rc, _, err := s.Get(ctx, key, objstore.GetOptions{})
	if err != nil {
		t.Fatalf("get after a 503: %v", err)
	}
	_ = rc.Close()
	if p, g := proxy.count("PUT", key), proxy.count("GET", key); p != 2 || g != 2 {
		t.Fatalf("%d PUT and %d GET attempts, want 2 each", p, g)
	}
}

// List pages through the service with small pages, following the
// continuation tokens.
func TestS3ListSmallPages(t *testing.T) {
	_, o := s3Env(t)
	proxy, url := newFaultProxy(t, o.Endpoint, func(w http.ResponseWriter, r *http.Request, _ int, forward http.HandlerFunc) {
		forward(w, r)
	})
	o.Endpoint = url
	o.ListPageSize = 7
	s := newS3(t, o)
	ctx := testCtx(t)
	prefix := s3test.Prefix(t)
	var want []string
	for i := range 30 {
		k := fmt.Sprintf("%sx/%02d", prefix, i)
		if i%3 == 0 {
			k = fmt.Sprintf("%sx/%02d/deeper", prefix, i)
		}
		want = append(want, k)
		if _, err := s.Put(ctx, k, strings.NewReader("v"), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := s.List(ctx, prefix+"x/")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range infos {
		got = append(got, in.Key)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("list in pages of 7: %q\nwant %q", got, want)
	}
	if n := proxy.count("GET", "/"+o.Bucket); n != 5 {
		t.Fatalf("the listing took %d requests, want 5 (30 keys, 7 a page)", n)
	}
}

// A bucket deleted under the store is never taken for a missing key:
// Get, Stat, List and Delete fail saying the bucket does not exist.
func TestS3BucketGone(t *testing.T) {
	ep, o := s3Env(t)
	cl := s3test.Client(t, ep)
	ctx := testCtx(t)
	o.Bucket = fmt.Sprintf("onceflow-gone-%d", time.Now().UnixNano()%1e9)
	if _, err := cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(o.Bucket)}); err != nil {
		t.Fatalf("creating bucket %s: %v", o.Bucket, err)
	}
	s := newS3(t, o)
	if _, err := cl.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(o.Bucket)}); err != nil {
		t.Fatalf("deleting bucket %s: %v", o.Bucket, err)
	}
	want := "bucket " + o.Bucket + " does not exist"
	check := func(op string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, objstore.ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s in a deleted bucket: %v; want an error saying %q, not ErrNotFound", op, err, want)
		}
	}
	_, _, err := s.Get(ctx, "k", objstore.GetOptions{})
	check("get", err)
	_, err = s.Stat(ctx, "k")
	check("stat", err)
	_, err = s.List(ctx, "")
	check("list", err)
	check("delete", s.Delete(ctx, "k"))
	_, err = s.Put(ctx, "k", strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true})
	check("put", err)
}
