package s3server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// fakeGo writes a stand-in for the go command that records each call in
// calls, waits a little (so that concurrent builds overlap), and then runs
// body (a shell snippet; $GOBIN is set).
func fakeGo(t *testing.T, body string) (goTool, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	goTool = filepath.Join(dir, "go")
	script := "#!/bin/sh\necho \"$@ GOBIN=$GOBIN GOWORK=$GOWORK PWD=$(pwd)\" >> " + calls + "\nsleep 0.5\n" + body + "\n"
	if err := os.WriteFile(goTool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goTool, calls
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// Two builds at once into one cache (as two test binaries starting together
// do) run the go command once; both get the binary; the go command runs
// outside any module, with GOBIN in a temporary folder of the cache.
func TestConcurrentBuildsRunGoOnce(t *testing.T) {
	goTool, calls := fakeGo(t, `printf 'fake' > "$GOBIN/versitygw"; chmod +x "$GOBIN/versitygw"`)
	cache := t.TempDir()
	type result struct {
		path  string
		built bool
		err   error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			p, b, err := Build(context.Background(), Options{CacheDir: cache, Go: goTool, Logf: t.Logf})
			results[i] = result{p, b, err}
		})
	}
	wg.Wait()
	want := filepath.Join(cache, "versitygw-"+Version, "versitygw")
	builds := 0
	for i, r := range results {
		if r.err != nil || r.path != want {
			t.Fatalf("build %d: %q, %v; want %q", i, r.path, r.err, want)
		}
		if r.built {
			builds++
		}
	}
	if builds != 1 {
		t.Fatalf("%d builds say they built; want 1", builds)
	}
	lines := readLines(t, calls)
	if len(lines) != 1 {
		t.Fatalf("the go command ran %d times: %q", len(lines), lines)
	}
	if l := lines[0]; !strings.HasPrefix(l, "install "+Package+"@"+Version+" GOBIN="+filepath.Join(cache, "versitygw-"+Version+".partial-")) ||
		!strings.Contains(l, "GOWORK=off") || !strings.Contains(l, "PWD="+filepath.Join(cache, "versitygw-"+Version+".partial-")) {
		t.Fatalf("go was run as %q", l)
	}
	if b, err := os.ReadFile(want); err != nil || string(b) != "fake" {
		t.Fatalf("cached binary: %q, %v", b, err)
	}
	// Cached: no more go.
	if _, built, err := Build(context.Background(), Options{CacheDir: cache, Go: goTool}); err != nil || built {
		t.Fatalf("third build: built %v, %v; want the cached binary", built, err)
	}
	if n := len(readLines(t, calls)); n != 1 {
		t.Fatalf("the go command ran again for a cached binary (%d calls)", n)
	}
}

// A failed build says why with the go command's output and leaves nothing
// in the cache but the lock; the next build tries again.
func TestFailedBuildLeavesNoBinary(t *testing.T) {
	goTool, calls := fakeGo(t, `echo "go: module lookup disabled by GOPROXY=off" >&2; exit 1`)
	cache := t.TempDir()
	for range 2 {
		_, _, err := Build(context.Background(), Options{CacheDir: cache, Go: goTool})
		if err == nil || !strings.Contains(err.Error(), "go install "+Package+"@"+Version+" failed") || !strings.Contains(err.Error(), "GOPROXY=off") {
			t.Fatalf("err = %v; want the failure with go's output", err)
		}
	}
	if n := len(readLines(t, calls)); n != 2 {
		t.Fatalf("the go command ran %d times; want 2 (a failure is not cached)", n)
	}
	left, _ := filepath.Glob(filepath.Join(cache, "*"))
	if !slices.Equal(left, []string{filepath.Join(cache, "versitygw-"+Version+".lock")}) {
		t.Fatalf("the cache holds %v after failed builds; want only the lock", left)
	}
}

func TestMissingGoIsAClearError(t *testing.T) {
	_, _, err := Build(context.Background(), Options{CacheDir: t.TempDir(), Go: "/nonexistent/bin/go"})
	if err == nil || !strings.Contains(err.Error(), "go command") || !strings.Contains(err.Error(), "/nonexistent/bin/go") {
		t.Fatalf("err = %v; want one naming the missing go command", err)
	}
}

// The real server: starts, serves its bucket, stops, and leaves nothing.
func TestStartServesTheBucketAndStopCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs versitygw")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := Start(ctx, Options{Bucket: "kit-test", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %s", time.Since(start).Round(time.Millisecond))
	ep := s.Endpoint()
	if ep.Bucket != "kit-test" || !strings.HasPrefix(ep.URL, "http://127.0.0.1:") {
		t.Fatalf("endpoint %s", ep)
	}
	hc, tr := httpClient()
	defer tr.CloseIdleConnections()
	cl := ep.Client(func(o *s3.Options) { o.HTTPClient = hc })
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(ep.Bucket), Key: aws.String("a/b"), Body: strings.NewReader("x")}); err != nil {
		t.Fatalf("put: %v\n%s", err, s.LogTail(20))
	}
	// The posix backend keeps the object as a file.
	if b, err := os.ReadFile(filepath.Join(s.Dir(), "data", ep.Bucket, "a", "b")); err != nil || string(b) != "x" {
		t.Fatalf("object file: %q, %v", b, err)
	}
	if !s.Running() {
		t.Fatal("not running")
	}
	stopped := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	if s.Running() {
		t.Fatal("still running after Stop")
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Fatalf("the temporary folder %s is still there (%v)", s.Dir(), err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// A taken port: the server exits at once, and Start says so with its log.
func TestTakenPortFailsFastWithTheLog(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs versitygw")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	start := time.Now()
	s, err := Start(context.Background(), Options{Port: l.Addr().(*net.TCPAddr).Port, Dir: dir, StartTimeout: 30 * time.Second})
	if err == nil {
		s.Stop()
		t.Fatal("started on a port that is taken")
	}
	if !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err = %v; want the server's bind failure", err)
	}
	t.Logf("Start said: %v", err)
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %s to report the failure", d)
	}
}
