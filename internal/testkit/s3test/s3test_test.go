package s3test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// The service enforces what checkpoint storage relies on: a conditional
// create (If-None-Match: *) of a key that exists is refused with 412, and
// so is a conditional replace (If-Match) naming a stale ETag; the refused
// writes change nothing; listing and deleting work.
func TestServerEnforcesConditionalWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 server")
	}
	start := time.Now()
	ep := Bootstrap(t)
	t.Logf("service %s ready after %s", ep, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log ends with:\n%s", ServerLog(30))
		}
	})
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := Client(t, ep)
	prefix := Prefix(t)
	key := prefix + "_metadata"
	bucket := aws.String(ep.Bucket)

	put := func(body string, edit func(*s3.PutObjectInput)) (string, error) {
		in := &s3.PutObjectInput{Bucket: bucket, Key: aws.String(key), Body: strings.NewReader(body)}
		edit(in)
		out, err := cl.PutObject(ctx, in)
		if err != nil {
			return "", err
		}
		return aws.ToString(out.ETag), nil
	}
	get := func() (body, etag string) {
		t.Helper()
		out, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String(key)})
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		return string(b), aws.ToString(out.ETag)
	}

	first, err := put("epoch 1", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
	if err != nil {
		t.Fatalf("first conditional create of %s: %v", key, err)
	}
	_, err = put("epoch 2 (a zombie)", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
	wantPreconditionFailed(t, "a second PutObject with If-None-Match: * on "+key, err)
	if body, etag := get(); body != "epoch 1" || etag != first {
		t.Fatalf("after the refused create, %s holds %q (ETag %s), want %q (ETag %s)", key, body, etag, "epoch 1", first)
	}

	second, err := put("epoch 2", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(first) })
	if err != nil {
		t.Fatalf("replacing %s with If-Match %s (its current ETag): %v", key, first, err)
	}
	if second == first {
		t.Fatalf("the replacement's ETag %s equals the first's", second)
	}
	_, err = put("epoch 3 (stale)", func(in *s3.PutObjectInput) { in.IfMatch = aws.String(first) })
	wantPreconditionFailed(t, "a PutObject with If-Match naming the stale ETag "+first, err)
	if body, etag := get(); body != "epoch 2" || etag != second {
		t.Fatalf("after the refused replace, %s holds %q (ETag %s), want %q (ETag %s)", key, body, etag, "epoch 2", second)
	}

	other := prefix + "data/0001.sst"
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: aws.String(other), Body: bytes.NewReader(make([]byte, 64<<10))}); err != nil {
		t.Fatalf("put %s: %v", other, err)
	}
	if got := list(t, ctx, cl, ep.Bucket, prefix); !slices.Equal(got, []string{key, other}) {
		t.Fatalf("listing %s: %v, want [%s %s]", prefix, got, key, other)
	}
	for _, k := range []string{key, other} {
		if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: aws.String(k)}); err != nil {
			t.Fatalf("delete %s: %v", k, err)
		}
	}
	if got := list(t, ctx, cl, ep.Bucket, prefix); len(got) != 0 {
		t.Fatalf("listing %s after the deletes: %v, want nothing", prefix, got)
	}
	_, err = cl.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: aws.String(key)})
	var missing *types.NoSuchKey
	if !errors.As(err, &missing) {
		t.Fatalf("get %s after its delete: %v, want NoSuchKey", key, err)
	}
	// After the delete, a conditional create succeeds again.
	if _, err := put("epoch 4", func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") }); err != nil {
		t.Fatalf("conditional create of the deleted %s: %v", key, err)
	}
	if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: bucket, Key: aws.String(key)}); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	t.Logf("requests took %s", time.Since(began).Round(time.Millisecond))
}

// wantPreconditionFailed fails the test unless err is S3's 412
// PreconditionFailed.
func wantPreconditionFailed(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded; want it refused with 412 PreconditionFailed", what)
	}
	var api smithy.APIError
	var resp *awshttp.ResponseError
	if !errors.As(err, &api) || api.ErrorCode() != "PreconditionFailed" || !errors.As(err, &resp) || resp.HTTPStatusCode() != 412 {
		t.Fatalf("%s: %v; want 412 PreconditionFailed", what, err)
	}
}

func list(t *testing.T, ctx context.Context, cl *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("listing %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func TestFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	if _, external, err := fromEnv(env()); external || err != nil {
		t.Fatalf("empty environment: external %v, err %v; want the local server", external, err)
	}
	ep, external, err := fromEnv(env(EnvEndpoint, "http://127.0.0.1:7070/", "AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk"))
	if err != nil || !external {
		t.Fatalf("AWS_* credentials: %v", err)
	}
	want := Endpoint{URL: "http://127.0.0.1:7070", Region: "us-east-1", AccessKeyID: "ak", SecretAccessKey: "sk", Bucket: DefaultExternalBucket}
	if ep != want {
		t.Fatalf("got %+v, want %+v", ep, want)
	}
	ep, _, err = fromEnv(env(EnvEndpoint, "https://s3.example:9000", EnvAccessKey, "k1", EnvSecretKey, "sekret-1",
		"AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk", EnvBucket, "b", EnvRegion, "eu-west-1", "AWS_REGION", "us-west-2"))
	want = Endpoint{URL: "https://s3.example:9000", Region: "eu-west-1", AccessKeyID: "k1", SecretAccessKey: "sekret-1", Bucket: "b"}
	if err != nil || ep != want {
		t.Fatalf("ONCEFLOW_S3_* over AWS_*: got %+v (%v), want %+v", ep, err, want)
	}
	if _, _, err := fromEnv(env(EnvEndpoint, "http://127.0.0.1:7070")); err == nil || !strings.Contains(err.Error(), EnvAccessKey) {
		t.Fatalf("no credentials: err %v, want one naming %s", err, EnvAccessKey)
	}
	if _, _, err := fromEnv(env(EnvEndpoint, "127.0.0.1:7070", EnvAccessKey, "k", EnvSecretKey, "s")); err == nil || !strings.Contains(err.Error(), EnvEndpoint) {
		t.Fatalf("no scheme: err %v, want one naming %s", err, EnvEndpoint)
	}
	if s := want.String(); strings.Contains(s, "sekret") {
		t.Fatalf("Endpoint.String %q shows the secret", s)
	}
}
