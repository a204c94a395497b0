package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/jobs"
)

// jobConfig writes a configuration for the in-memory word count into dir.
func jobConfig(t *testing.T, dir string, extra string) string {
	t.Helper()
	text := fmt.Sprintf(`
job: {name: memwc, type: wordcount, parallelism: 2}
kafka: {brokers: ["127.0.0.1:9092"]}
source: {topic: words}
sink: {topic: counts}
checkpoint: {interval: 50ms, timeout: 10s, dir: %s/checkpoints}
state: {backend: memory}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
log: {level: debug}
%s`, dir, extra)
	p := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testRun is processor run executing in-process over a memJob.
type testRun struct {
	t        *testing.T
	sigs     chan os.Signal
	stdout   *logbuf.Buffer
	stderr   *logbuf.Buffer
	done     chan struct{}
	code     int
	addrFile string
	built    atomic.Int32
}

func testDeps(m *memJob, r *testRun, env []string) deps {
	if env == nil {
		env = []string{}
	}
	return deps{
		build: func(ctx context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error) {
			r.built.Add(1)
			return m.build(ctx, cfg, env)
		},
		ping:    func(context.Context, []kgo.Opt, []string) error { return nil },
		signals: func() (<-chan os.Signal, func()) { return r.sigs, func() {} },
		env:     env,
	}
}

// startRun runs processor run with args (plus --addr-file) in the
// background.
func startRun(t *testing.T, m *memJob, env []string, args ...string) *testRun {
	t.Helper()
	return startRunDeps(t, nil, m, env, args...)
}

// startRunDeps is startRun with the test deps changed by modify.
func startRunDeps(t *testing.T, modify func(deps) deps, m *memJob, env []string, args ...string) *testRun {
	t.Helper()
	return startProgramRun(t, Job{}, processorName, modify, m, env, args...)
}

// startProgramRun is startRunDeps for the program of j, called name.
func startProgramRun(t *testing.T, j Job, name string, modify func(deps) deps, m *memJob, env []string, args ...string) *testRun {
	t.Helper()
	r := &testRun{t: t, sigs: make(chan os.Signal, 2), stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, done: make(chan struct{}),
		addrFile: filepath.Join(t.TempDir(), "addr")}
	d := testDeps(m, r, env)
	if modify != nil {
		d = modify(d)
	}
	root := newProgramRoot(j, name, d)
	args = append([]string{"run", "--addr-file", r.addrFile}, args...)
	go func() {
		defer close(r.done)
		r.code = execute(context.Background(), root, args, r.stdout, r.stderr)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.sigs <- syscall.SIGTERM
			r.sigs <- syscall.SIGINT
			<-r.done
		}
	})
	return r
}

// wait waits for the command to end and returns its exit code.
func (r *testRun) wait(d time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		r.t.Fatalf("processor run still running after %s:\n%s", d, r.stderr.String())
		return -1
	}
}

// addr waits for the HTTP listener's address.
func (r *testRun) addr() string {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(r.addrFile); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		select {
		case <-r.done:
			r.t.Fatalf("processor run exited with %d before listening:\n%s", r.code, r.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	r.t.Fatalf("no HTTP address within 10s:\n%s", r.stderr.String())
	return ""
}

// getJSON GETs url and decodes the JSON answer into out; it returns the
// status code.
func getJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
	return resp.StatusCode
}

func postJSON(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("POST %s: %v in %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// waitCheckpoints polls the API until at least n checkpoints completed.
func waitCheckpoints(t *testing.T, addr string, n int64) checkpointsBody {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var cb checkpointsBody
		getJSON(t, "http://"+addr+"/api/v1/checkpoints", &cb)
		if cb.Counts.Completed >= n {
			return cb
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d checkpoints completed after 20s: %+v", cb.Counts.Completed, cb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectedOutput is the exact committed output of the word count once
// the sources read next lines each: every (word, n) once.
func checkExactOutput(t *testing.T, out []wordCount, read int64) {
	t.Helper()
	seen := map[wordCount]int{}
	maxCount := map[string]int64{}
	for _, wc := range out {
		seen[wc]++
		maxCount[wc.Word] = max(maxCount[wc.Word], wc.Count)
	}
	total := int64(0)
	for w, n := range maxCount {
		for i := int64(1); i <= n; i++ {
			if seen[wordCount{w, i}] != 1 {
				t.Fatalf("output has (%s, %d) %d times, want once", w, i, seen[wordCount{w, i}])
			}
		}
		total += n
	}
	if int64(len(out)) != total || total != 2*read {
		t.Fatalf("%d output records for %d lines read, want %d (2 words a line) and no duplicate", len(out), read, 2*read)
	}
}
