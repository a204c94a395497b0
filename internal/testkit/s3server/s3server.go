// Package s3server runs a real S3-compatible server on 127.0.0.1 for
// onceflow's integration tests and local runs: versitygw with its posix
// backend (objects are files in a directory), built from the Go module
// proxy, so no Docker engine and no download site is needed, only Go.
//
// Build compiles the pinned release (Version) once into a cache outside the
// repository, $ONCEFLOW_CACHE_DIR or ~/.cache/onceflow, next to the Kafka
// jars: <cache>/versitygw-<Version>/versitygw. It runs `go install
// <Package>@<Version>` outside onceflow's module, so onceflow's go.mod is
// never touched. Processes that build at once take turns on a file lock
// (<cache>/versitygw-<Version>.lock); the build goes to a temporary folder
// renamed into place when complete, so a binary in the cache is always
// whole, and one that is there is never built again.
//
// Start builds if needed, starts the server on a free port (or
// Options.Port) with its data and sidecar metadata in a temporary folder
// (or Options.Dir), waits until a signed ListBuckets answers, and creates
// the bucket. Every wait is bounded and every failure says why, with the
// tail of the server's log. Stop ends the server (SIGTERM, then SIGKILL)
// and removes the temporary folder.
package s3server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/freeport"
)

// Version is the versitygw release Build compiles: the one place it is
// pinned. `go list -m -versions github.com/versity/versitygw` lists those the
// module proxy serves.
const Version = "v1.8.0"

// Package is the versitygw command's import path.
const Package = "github.com/versity/versitygw/cmd/versitygw"

// Defaults of Options.
const (
	DefaultAccessKeyID     = "onceflow"
	DefaultSecretAccessKey = "onceflow-secret"
	DefaultRegion          = "us-east-1"
	DefaultBucket          = "onceflow"
)

// Endpoint is where an S3-compatible service answers and how to sign in.
type Endpoint struct {
	// URL is the service's base URL, e.g. http://127.0.0.1:38123.
	URL string
	// Region signs the requests (us-east-1 for the local server).
	Region string
	// AccessKeyID and SecretAccessKey are the static credentials.
	AccessKeyID     string
	SecretAccessKey string
	// Bucket exists on the service.
	Bucket string
}

// String names the endpoint, bucket, region and access key, never the
// secret, so that an Endpoint can be logged.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s (bucket %s, region %s, access key %s)", e.URL, e.Bucket, e.Region, e.AccessKeyID)
}

// Client returns an aws-sdk-go-v2 S3 client of the endpoint, with
// path-style addressing (http://host/bucket/key, as local servers need) and
// the static credentials; optFns adjust it further. Unless an optFn sets
// HTTPClient, the client uses the SDK's default HTTP client, whose idle
// connections outlive the client.
func (e Endpoint) Client(optFns ...func(*s3.Options)) *s3.Client {
	return s3.New(s3.Options{
		Region:       e.Region,
		BaseEndpoint: aws.String(e.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(e.AccessKeyID, e.SecretAccessKey, ""),
	}, optFns...)
}

// Options configure Build and Start. The zero value starts a server on a
// free port with the defaults above.
type Options struct {
	// CacheDir holds the built binary (default $ONCEFLOW_CACHE_DIR or
	// ~/.cache/onceflow, as for the Kafka jars).
	CacheDir string
	// Go is the go command that builds versitygw (default go on PATH).
	Go string
	// Binary, when set, is the versitygw executable to run; nothing is built.
	Binary string
	// Dir holds the server's data, sidecar metadata and log (default a new
	// temporary folder, removed by Stop). A Dir given is kept, so a
	// server started again on it serves the same objects.
	Dir string
	// Port is the port on 127.0.0.1 (default a free one).
	Port int
	// AccessKeyID and SecretAccessKey are the root credentials (defaults
	// DefaultAccessKeyID, DefaultSecretAccessKey).
	AccessKeyID     string
	SecretAccessKey string
	// Region is the server's region (default DefaultRegion).
	Region string
	// Bucket is created once the server answers (default DefaultBucket;
	// it must be a valid S3 bucket name). One that exists already is fine.
	Bucket string
	// BuildTimeout bounds the build, including the wait for another
	// process's build (default 15 minutes).
	BuildTimeout time.Duration
	// StartTimeout bounds the start, from launching the process to the
	// bucket being created (default 60s).
	StartTimeout time.Duration
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

func (o *Options) defaults() {
	if o.AccessKeyID == "" {
		o.AccessKeyID = DefaultAccessKeyID
	}
	if o.SecretAccessKey == "" {
		o.SecretAccessKey = DefaultSecretAccessKey
	}
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.BuildTimeout == 0 {
		o.BuildTimeout = 15 * time.Minute
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// BinaryPath is where Build puts the versitygw binary in cacheDir (the
// default cache when empty), whether or not it is there yet.
func BinaryPath(cacheDir string) (string, error) {
	if cacheDir == "" {
		var err error
		if cacheDir, err = broker.CacheDir(); err != nil {
			return "", fmt.Errorf("s3server: %w", err)
		}
	}
	abs, err := filepath.Abs(cacheDir)
	if err != nil {
		return "", fmt.Errorf("s3server: cache directory %s: %w", cacheDir, err)
	}
	return filepath.Join(abs, "versitygw-"+Version, "versitygw"), nil
}

// Build returns the path of the cached versitygw binary, compiling Version
// into the cache first when it is not there. built says whether this call
// compiled it (false when it was cached, or another process built it while
// this one waited for the lock). It fails, with the go command's output,
// when go is missing, the module proxy cannot be reached, or the build does
// not finish within opts.BuildTimeout.
func Build(ctx context.Context, opts Options) (path string, built bool, err error) {
	opts.defaults()
	bin, err := BinaryPath(opts.CacheDir)
	if err != nil {
		return "", false, err
	}
	if isFile(bin) {
		return bin, false, nil
	}
	goTool := opts.Go
	if goTool == "" {
		goTool = "go"
	}
	goPath, err := exec.LookPath(goTool)
	if err != nil {
		return "", false, fmt.Errorf("s3server: versitygw %s is not in %s and the go command (%s) is not there to build it: %w", Version, filepath.Dir(bin), goTool, err)
	}
	final := filepath.Dir(bin)
	cache := filepath.Dir(final)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", false, fmt.Errorf("s3server: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.BuildTimeout)
	defer cancel()
	unlock, err := lockFile(ctx, filepath.Join(cache, "versitygw-"+Version+".lock"), opts.Logf)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if isFile(bin) { // another process built it while this one waited
		return bin, false, nil
	}
	// Folders left by builds that were killed: the lock says none is running.
	stale, _ := filepath.Glob(filepath.Join(cache, "versitygw-"+Version+".partial-*"))
	for _, d := range stale {
		_ = os.RemoveAll(d)
	}
	partial, err := os.MkdirTemp(cache, "versitygw-"+Version+".partial-")
	if err != nil {
		return "", false, fmt.Errorf("s3server: %w", err)
	}
	defer os.RemoveAll(partial) // gone after the rename; a failed build's leftovers otherwise
	opts.Logf("building versitygw %s into %s with go install (once; a few minutes on 2 cores)", Version, final)
	cmd := exec.CommandContext(ctx, goPath, "install", Package+"@"+Version)
	// Outside any module and workspace: `go install pkg@version` then
	// resolves versitygw's own dependencies and leaves onceflow's go.mod
	// alone.
	cmd.Dir = partial
	cmd.Env = append(os.Environ(), "GOBIN="+partial, "GOWORK=off")
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (not done within %s)", err, opts.BuildTimeout)
		}
		return "", false, fmt.Errorf("s3server: go install %s@%s failed: %w\n%s", Package, Version, err, tail(out.String(), 30))
	}
	if !isFile(filepath.Join(partial, "versitygw")) {
		return "", false, fmt.Errorf("s3server: go install %s@%s left no versitygw in %s\n%s", Package, Version, partial, tail(out.String(), 30))
	}
	if err := os.Chmod(partial, 0o755); err != nil { // MkdirTemp made it private
		return "", false, fmt.Errorf("s3server: %w", err)
	}
	if err := os.Rename(partial, final); err != nil {
		return "", false, fmt.Errorf("s3server: moving the build into %s: %w", final, err)
	}
	return bin, true, nil
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// lockFile takes an exclusive flock on path, polling so that ctx bounds
// the wait, and returns its release.
func lockFile(ctx context.Context, path string, logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("s3server: build lock: %w", err)
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("s3server: build lock %s: %w", path, err)
		}
		if !said {
			logf("waiting for another process building versitygw %s (lock %s)", Version, path)
			said = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("s3server: another process held the build lock %s past the build timeout: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Server is a running versitygw.
type Server struct {
	ep      Endpoint
	bin     string
	dir     string
	ownsDir bool
	log     string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	stopOnce sync.Once
	stopErr  error
}

// Start builds versitygw if needed, starts it, waits until it answers and
// creates the bucket. On failure nothing is left running; the folder of a
// server that started but did not become ready is kept, and the error
// names its log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts.defaults()
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, _, err = Build(ctx, opts); err != nil {
			return nil, err
		}
	}
	s := &Server{bin: bin, dir: opts.Dir}
	if s.dir == "" {
		var err error
		if s.dir, err = os.MkdirTemp("", "onceflow-s3-"); err != nil {
			return nil, fmt.Errorf("s3server: %w", err)
		}
		s.ownsDir = true
	}
	data, side := filepath.Join(s.dir, "data"), filepath.Join(s.dir, "sidecar")
	for _, d := range []string{data, side} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			s.removeDir()
			return nil, fmt.Errorf("s3server: %w", err)
		}
	}
	s.log = filepath.Join(s.dir, "versitygw.log")
	port := opts.Port
	if port == 0 {
		ports, err := freeport.Pick(1)
		if err != nil {
			s.removeDir()
			return nil, fmt.Errorf("s3server: picking a port: %w", err)
		}
		port = ports[0]
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s.ep = Endpoint{URL: "http://" + addr, Region: opts.Region, AccessKeyID: opts.AccessKeyID,
		SecretAccessKey: opts.SecretAccessKey, Bucket: opts.Bucket}
	if err := s.launch(addr, data, side); err != nil {
		s.removeDir()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := s.waitReady(ctx, opts.StartTimeout); err != nil {
		_ = s.kill()
		return nil, err
	}
	opts.Logf("versitygw %s ready at %s", Version, s.ep)
	return s, nil
}

func (s *Server) launch(addr, data, side string) error {
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(s.bin, "--port", addr, "--region", s.ep.Region, "posix", "--sidecar", side, data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.ep.AccessKeyID, "ROOT_SECRET_KEY="+s.ep.SecretAccessKey)
	// The log file is passed as the process's own stdout and stderr (no
	// copying goroutine). Own process group, and killed with the process
	// that started it: a test binary that dies leaves no server behind.
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("s3server: starting %s: %w", s.bin, err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { // owned by the Server; ends when the process does, which Stop ensures
		_ = cmd.Wait()
		close(s.done)
	}()
	return nil
}

// httpClient is an HTTP client whose idle connections the caller closes.
func httpClient() (*http.Client, *http.Transport) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{Transport: tr}, tr
}

// waitReady polls a signed ListBuckets until it answers, then creates the
// bucket. It fails when the process exits or ctx ends first.
func (s *Server) waitReady(ctx context.Context, bound time.Duration) error {
	hc, tr := httpClient()
	defer tr.CloseIdleConnections()
	cl := s.ep.Client(func(o *s3.Options) {
		o.HTTPClient = hc
		o.RetryMaxAttempts = 1
	})
	var last error
	for {
		if s.exited() {
			return fmt.Errorf("s3server: versitygw exited while starting (%s)\nits log (%s) ends with:\n%s", s.exitState(), s.log, s.LogTail(20))
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.ListBuckets(rctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			break
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("s3server: versitygw at %s not answering within %s (last: %v)\nits log (%s) ends with:\n%s", s.ep.URL, bound, last, s.log, s.LogTail(20))
		case <-time.After(100 * time.Millisecond):
		}
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(s.ep.Bucket)}
	if s.ep.Region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(s.ep.Region)}
	}
	if _, err := cl.CreateBucket(ctx, in); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if !errors.As(err, &owned) {
			return fmt.Errorf("s3server: creating bucket %s at %s: %w\nthe log (%s) ends with:\n%s", s.ep.Bucket, s.ep.URL, err, s.log, s.LogTail(20))
		}
	}
	return nil
}

func (s *Server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// exitState describes how the process ended; call it only after done.
func (s *Server) exitState() string {
	if ps := s.cmd.ProcessState; ps != nil {
		return ps.String()
	}
	return "not started"
}

// Endpoint is where the server answers, with its credentials and bucket.
func (s *Server) Endpoint() Endpoint { return s.ep }

// Dir is the folder holding the server's data (objects as files under
// data/<bucket>/), sidecar metadata and log.
func (s *Server) Dir() string { return s.dir }

// LogPath is the file holding the server's stdout and stderr.
func (s *Server) LogPath() string { return s.log }

// LogTail returns the last lines of the server's log, for failure
// messages.
func (s *Server) LogTail(lines int) string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "(the log is empty)"
	}
	return tail(string(b), lines)
}

// Running reports whether the server's process is alive.
func (s *Server) Running() bool { return !s.exited() }

// Done is closed when the server's process has exited, whether Stop ended
// it or it died.
func (s *Server) Done() <-chan struct{} { return s.done }

// How long Stop waits after SIGTERM, and then after SIGKILL.
const (
	termWait = 10 * time.Second
	killWait = 10 * time.Second
)

// Stop ends the server: SIGTERM to its process group, SIGKILL after 10 s,
// and waits until it is gone; then it removes the folder if Start created
// it. It returns an error when the server had already died (with how, and
// its log's tail) or survived SIGKILL. Safe to call twice.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		if s.exited() {
			s.stopErr = fmt.Errorf("s3server: versitygw at %s had exited before Stop (%s); its log ended with:\n%s", s.ep.URL, s.exitState(), s.LogTail(20))
		} else {
			s.stopErr = s.terminate()
		}
		s.removeDir()
	})
	return s.stopErr
}

func (s *Server) terminate() error {
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(termWait):
	}
	return s.kill()
}

// kill sends SIGKILL to the process group and waits, bounded, until the
// process is gone.
func (s *Server) kill() error {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("s3server: versitygw (pid %d) survived SIGKILL for %s", s.cmd.Process.Pid, killWait)
	}
}

func (s *Server) removeDir() {
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
