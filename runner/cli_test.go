package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/jobs"
)

func newMemJob(limit int, gap time.Duration) *memJob {
	return &memJob{src: &lineSource{limit: limit, gap: gap}, sink: &txnSink{}}
}

// Every bad usage or configuration is exit 2 with one line naming the key
// (or flag, file, variable) at fault, and nothing is built or run.
func TestRunConfigErrorsExit2NamingTheKey(t *testing.T) {
	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	aFile := filepath.Join(dir, "a-file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.yaml")
	body, _ := os.ReadFile(cfg)
	if err := os.WriteFile(typo, append(body, []byte("chekpoint: {interval: 1s}\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"unknown key in the file", nil, []string{"--config", typo}, []string{"typo.yaml", `unknown key "chekpoint.interval"`}},
		{"unknown key in --set", nil, []string{"--config", cfg, "--set", "checkpoint.intervall=1s"}, []string{`"checkpoint.intervall"`, `did you mean "checkpoint.interval"`}},
		{"bad duration in the environment", []string{"ONCEFLOW_CHECKPOINT_TIMEOUT=soon"}, []string{"--config", cfg}, []string{"checkpoint.timeout", `"soon"`}},
		{"environment variable of no key", []string{"ONCEFLOW_CHECKPOINT_INTERVALL=1s"}, []string{"--config", cfg}, []string{"ONCEFLOW_CHECKPOINT_INTERVALL"}},
		{"missing topic", nil, []string{"--config", cfg, "--set", "source.topic="}, []string{"source.topic: required"}},
		{"out of range", nil, []string{"--config", cfg, "--set", "job.parallelism=0"}, []string{"job.parallelism"}},
		{"missing file", nil, []string{"--config", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml"}},
		{"checkpoint dir not writable", nil, []string{"--config", cfg, "--set", "checkpoint.dir=" + aFile + "/chk"}, []string{"checkpoint.dir", "not a directory"}},
		{"state dir not writable", nil, []string{"--config", cfg, "--set", "state.backend=pebble", "--set", "state.dir=" + aFile + "/st"}, []string{"state.dir"}},
		{"bad listen address", nil, []string{"--config", cfg, "--set", "http.listen=8081"}, []string{"http.listen"}},
		{"--from and --fresh", nil, []string{"--config", cfg, "--fresh", "--from", dir}, []string{"--from and --fresh"}},
		{"--from a missing checkpoint", nil, []string{"--config", cfg, "--from", filepath.Join(dir, "chk-9")}, []string{"--from", "chk-9"}},
		{"unknown flag", nil, []string{"--config", cfg, "--savepoint"}, []string{"unknown flag: --savepoint"}},
		{"arguments", nil, []string{"--config", cfg, "extra"}, []string{`unknown command "extra"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &testRun{t: t, sigs: make(chan os.Signal, 1)}
			var stdout, stderr logbuf.Buffer
			root := newRootDeps(testDeps(newMemJob(10, 0), r, tc.env))
			code := execute(context.Background(), root, append([]string{"run"}, tc.args...), &stdout, &stderr)
			msg := stderr.String()
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, msg)
			}
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "processor: ") {
				t.Fatalf("want one line on stderr, got:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("stderr %q does not name %q", msg, w)
				}
			}
			if r.built.Load() != 0 {
				t.Fatal("the job was built despite the configuration error")
			}
		})
	}
}

// An unreachable cluster is one clear line naming the brokers, exit 1,
// before anything is built.
func TestRunUnreachableBrokerExit1(t *testing.T) {
	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	r := &testRun{t: t, sigs: make(chan os.Signal, 1)}
	d := testDeps(newMemJob(10, 0), r, nil)
	d.ping = productionDeps().ping
	var stdout, stderr logbuf.Buffer
	start := time.Now()
	// Port 1 on loopback refuses connections.
	code := execute(context.Background(), newRootDeps(d), []string{"run", "--config", cfg, "--set", "kafka.brokers=127.0.0.1:1", "--connect-timeout", "5s"}, &stdout, &stderr)
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "kafka.brokers") || !strings.Contains(last, "127.0.0.1:1") || !strings.Contains(last, "unreachable") {
		t.Fatalf("exit %d, last line %q; want exit 1 naming kafka.brokers and the broker", code, last)
	}
	if r.built.Load() != 0 {
		t.Fatal("the job was built without a cluster")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

// The HTTP API over a running job: health, job status, checkpoint
// history, a savepoint, bad requests, and the savepoint and stop
// subcommands; the stop commits everything and exits 0 printing the path.
func TestRunHTTPAPIAndStopCommand(t *testing.T) {
	dir := t.TempDir()
	m := newMemJob(300, 2*time.Millisecond)
	r := startRun(t, m, nil, "--config", jobConfig(t, dir, ""))
	addr := r.addr()
	base := "http://" + addr

	var hb healthBody
	deadline := time.Now().Add(10 * time.Second)
	for {
		code := getJSON(t, base+"/healthz", &hb)
		if code != http.StatusOK || hb.Job != "memwc" {
			t.Fatalf("healthz: %d %+v", code, hb)
		}
		if hb.State == "RUNNING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz never RUNNING: %+v", hb)
		}
		time.Sleep(10 * time.Millisecond)
	}

	cb := waitCheckpoints(t, addr, 2)
	if cb.Latest.Completed == nil || cb.Latest.Completed.Status != "COMPLETED" || cb.Latest.Completed.Savepoint {
		t.Fatalf("latest completed checkpoint: %+v", cb.Latest.Completed)
	}
	if _, err := os.Stat(filepath.Join(cb.Latest.Completed.Path, "_metadata")); err != nil {
		t.Fatalf("latest completed checkpoint's path: %v", err)
	}
	if !strings.HasPrefix(cb.Latest.Completed.Path, filepath.Join(dir, "checkpoints", "memwc")) {
		t.Fatalf("checkpoint %s is not under checkpoint.dir/job.name", cb.Latest.Completed.Path)
	}
	for i := 1; i < len(cb.History); i++ {
		if cb.History[i].ID >= cb.History[i-1].ID {
			t.Fatalf("history not newest first: %d before %d", cb.History[i-1].ID, cb.History[i].ID)
		}
	}
	if cb.Latest.Failed != nil || cb.Counts.Failed != 0 {
		t.Fatalf("failed checkpoints: %+v", cb)
	}

	var jb jobBody
	if code := getJSON(t, base+"/api/v1/job", &jb); code != http.StatusOK {
		t.Fatalf("job: %d", code)
	}
	ops := map[string]operatorBody{}
	for _, op := range jb.Operators {
		ops[op.UID] = op
	}
	if jb.Name != "memwc" || jb.State != "RUNNING" || len(ops) != 4 || ops["source"].RecordsOut == 0 || ops["split"].RecordsIn == 0 {
		t.Fatalf("job status: %+v", jb)
	}
	if jb.Source.ConsumerLag != nil || jb.Source.RecordsRead == 0 {
		t.Fatalf("source statistics: %+v", jb.Source)
	}

	var sp savepointBody
	if code := postJSON(t, base+"/api/v1/savepoint", &sp); code != http.StatusOK {
		t.Fatalf("savepoint: %d", code)
	}
	if _, err := os.Stat(filepath.Join(sp.Path, "_metadata")); err != nil || !strings.Contains(filepath.Base(sp.Path), "savepoint") {
		t.Fatalf("savepoint path %q: %v", sp.Path, err)
	}
	if code := getJSON(t, base+"/api/v1/savepoint", nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/v1/savepoint: %d, want 405", code)
	}
	var eb errorBody
	if code := postJSON(t, base+"/api/v1/stop?savepoint=maybe", &eb); code != http.StatusBadRequest || !strings.Contains(eb.Error, "maybe") {
		t.Fatalf("stop?savepoint=maybe: %d %+v", code, eb)
	}
	cb = waitCheckpoints(t, addr, 1)
	if cb.Latest.Savepoint == nil || cb.Latest.Savepoint.Path != sp.Path {
		t.Fatalf("latest savepoint in the history: %+v, want %s", cb.Latest.Savepoint, sp.Path)
	}

	// processor savepoint --http
	var out, errOut logbuf.Buffer
	if code := execute(context.Background(), newRoot(), []string{"savepoint", "--http", addr}, &out, &errOut); code != 0 {
		t.Fatalf("processor savepoint: exit %d: %s", code, errOut.String())
	}
	if p := strings.TrimSpace(out.String()); p == sp.Path || !dirHasMetadata(p) {
		t.Fatalf("processor savepoint printed %q", p)
	}

	// processor stop --savepoint --http
	out, errOut = logbuf.Buffer{}, logbuf.Buffer{}
	if code := execute(context.Background(), newRoot(), []string{"stop", "--savepoint", "--http", addr}, &out, &errOut); code != 0 {
		t.Fatalf("processor stop: exit %d: %s", code, errOut.String())
	}
	stopPath := strings.TrimSpace(out.String())
	if !dirHasMetadata(stopPath) {
		t.Fatalf("processor stop printed %q", stopPath)
	}
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("processor run exited %d after the stop:\n%s", code, r.stderr.String())
	}
	if got := strings.TrimSpace(r.stdout.String()); got != stopPath {
		t.Fatalf("processor run printed %q, want the stop's savepoint %q", got, stopPath)
	}
	committed, open := m.sink.output()
	checkExactOutput(t, committed, m.src.read.Load())
	if st := m.sink.stats(m.src); open != 0 || st.PendingTransactions != 0 {
		t.Fatalf("after the stop: %d records in open transactions, %d pending transactions", open, st.PendingTransactions)
	}

	// The listener is gone with the job.
	errOut = logbuf.Buffer{}
	if code := execute(context.Background(), newRoot(), []string{"savepoint", "--http", addr, "--timeout", "2s"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "job API at http://"+addr) {
		t.Fatalf("savepoint of a stopped job: exit %d: %s", code, errOut.String())
	}
}

func dirHasMetadata(p string) bool {
	_, err := os.Stat(filepath.Join(p, "_metadata"))
	return p != "" && err == nil
}

// SIGTERM stops with a savepoint: exit 0, the path on stdout, everything
// read committed, no transaction open or pending. A run --from that
// savepoint goes on exactly where it stopped.
func TestRunSignalStopsWithSavepointAndFromResumes(t *testing.T) {
	dir := t.TempDir()
	cfg := jobConfig(t, dir, "")
	m := newMemJob(400, time.Millisecond)
	// Held at half the input until the stop, so that the stop is midway
	// however slow the machine (the sources were once exhausted first).
	m.src.pauseAt, m.src.release = 200, make(chan struct{})
	r := startRun(t, m, nil, "--config", cfg)
	waitCheckpoints(t, r.addr(), 2)
	r.sigs <- syscall.SIGTERM
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, r.stderr.String())
	}
	path := strings.TrimSpace(r.stdout.String())
	if !dirHasMetadata(path) || !strings.Contains(path, "savepoint") {
		t.Fatalf("stdout %q is not a savepoint path", path)
	}
	committed, open := m.sink.output()
	firstRead := m.src.read.Load()
	checkExactOutput(t, committed, firstRead)
	if st := m.sink.stats(m.src); open != 0 || st.PendingTransactions != 0 {
		t.Fatalf("after SIGTERM: %d records in open transactions, %d pending transactions", open, st.PendingTransactions)
	}
	if firstRead >= 800 {
		t.Fatalf("the sources were exhausted (%d lines) before the stop; the test proves nothing", firstRead)
	}

	// Resume from the savepoint until every line is read.
	close(m.src.release)
	r = startRun(t, m, nil, "--config", cfg, "--from", path)
	addr := r.addr()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var jb jobBody
		getJSON(t, "http://"+addr+"/api/v1/job", &jb)
		if m.src.read.Load() == 800 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resumed job read %d of 800 lines in 30s", m.src.read.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.sigs <- syscall.SIGINT
	if code := r.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), path) {
		t.Fatalf("the resumed run does not log restoring from %s:\n%s", path, r.stderr.String())
	}
	committed, _ = m.sink.output()
	checkExactOutput(t, committed, 800)
}

// A second signal cancels at once while the stop waits for a savepoint
// that cannot complete.
func TestRunSecondSignalCancels(t *testing.T) {
	dir := t.TempDir()
	m := newMemJob(1000, time.Millisecond)
	m.sink.block = make(chan struct{}) // no barrier ever passes the sink
	r := startRun(t, m, nil, "--config", jobConfig(t, dir, ""), "--stop-timeout", "1m")
	r.addr()
	r.sigs <- syscall.SIGTERM
	waitFor(t, func() bool { return strings.Contains(r.stderr.String(), "stopping the job with a savepoint") })
	start := time.Now()
	r.sigs <- syscall.SIGINT
	if code := r.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit %d after the second signal, want 1:\n%s", code, r.stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the second signal took %s to cancel", d)
	}
	last := lastLine(r.stderr.String())
	if !strings.Contains(last, "cancelled without a savepoint") || !strings.Contains(last, "second signal") {
		t.Fatalf("last line %q", last)
	}
	if r.stdout.String() != "" {
		t.Fatalf("stdout %q: no savepoint path expected", r.stdout.String())
	}
}

// A stop that cannot finish within --stop-timeout cancels the job and
// fails, saying so.
func TestRunStopTimeoutCancels(t *testing.T) {
	dir := t.TempDir()
	m := newMemJob(1000, time.Millisecond)
	m.sink.block = make(chan struct{})
	r := startRun(t, m, nil, "--config", jobConfig(t, dir, ""), "--stop-timeout", "300ms")
	r.addr()
	r.sigs <- syscall.SIGTERM
	if code := r.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, r.stderr.String())
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "no savepoint within 300ms") || !strings.Contains(last, "cancelled") {
		t.Fatalf("last line %q", last)
	}
}

// POST /api/v1/stop?savepoint=false cancels at once; processor stop
// --savepoint=false does that.
func TestRunCancelThroughAPI(t *testing.T) {
	dir := t.TempDir()
	m := newMemJob(1000, time.Millisecond)
	r := startRun(t, m, nil, "--config", jobConfig(t, dir, ""))
	addr := r.addr()
	var out, errOut logbuf.Buffer
	if code := execute(context.Background(), newRoot(), []string{"stop", "--savepoint=false", "--http", addr}, &out, &errOut); code != 0 {
		t.Fatalf("processor stop --savepoint=false: exit %d: %s", code, errOut.String())
	}
	if code := r.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit %d after cancel, want 1:\n%s", code, r.stderr.String())
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "cancelled through the HTTP API") {
		t.Fatalf("last line %q", last)
	}
}

// A job that fails for good exits 1 with its failure.
func TestRunJobFailureExit1(t *testing.T) {
	dir := t.TempDir()
	m := newMemJob(1000, 0)
	m.src.fail = 5
	r := startRun(t, m, nil, "--config", jobConfig(t, dir, ""))
	if code := r.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, r.stderr.String())
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "injected failure") || !strings.Contains(last, "memwc") {
		t.Fatalf("last line %q", last)
	}
}

// The SASL password reaches the job but never the logs, in either format.
func TestRunSecretsNeverLogged(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			const password = "pa55-w0rd-never-logged"
			m := newMemJob(100, time.Millisecond)
			env := []string{"ONCEFLOW_KAFKA_SASL_MECHANISM=scram-sha-512", "ONCEFLOW_KAFKA_SASL_USERNAME=alice",
				"ONCEFLOW_KAFKA_SASL_PASSWORD=" + password, "ONCEFLOW_LOG_FORMAT=" + format}
			var got atomic.Value
			r := startRunDeps(t, func(d deps) deps {
				build := d.build
				d.build = func(ctx context.Context, cfg *config.Config, e jobs.Env) (*jobs.Built, error) {
					got.Store(string(cfg.Kafka.SASL.Password))
					return build(ctx, cfg, e)
				}
				return d
			}, m, env, "--config", jobConfig(t, dir, ""))
			waitCheckpoints(t, r.addr(), 1)
			r.sigs <- syscall.SIGTERM
			if code := r.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d:\n%s", code, r.stderr.String())
			}
			if got.Load() != password {
				t.Fatalf("the job got password %q", got)
			}
			logs := r.stderr.String() + r.stdout.String()
			if !strings.Contains(logs, "scram-sha-512") {
				t.Fatalf("the start is not logged:\n%s", logs)
			}
			if strings.Contains(logs, password) {
				t.Fatalf("the password is in the output:\n%s", logs)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A taken HTTP port fails the run before the job is built.
func TestRunListenAddressTaken(t *testing.T) {
	dir := t.TempDir()
	first := startRun(t, newMemJob(1000, time.Millisecond), nil, "--config", jobConfig(t, dir, ""))
	addr := first.addr()
	r := &testRun{t: t, sigs: make(chan os.Signal, 1)}
	var stdout, stderr logbuf.Buffer
	code := execute(context.Background(), newRootDeps(testDeps(newMemJob(10, 0), r, nil)),
		[]string{"run", "--config", jobConfig(t, t.TempDir(), ""), "--set", "http.listen=" + addr}, &stdout, &stderr)
	if last := lastLine(stderr.String()); code != 1 || !strings.Contains(last, "http.listen") || !strings.Contains(last, addr) {
		t.Fatalf("exit %d, last line %q; want exit 1 naming http.listen and %s", code, last, addr)
	}
	if r.built.Load() != 0 {
		t.Fatal("the job was built without its listener")
	}
}

// A checkpoint the configuration does not fit (a changed max parallelism,
// state of a removed operator) is fixed by changing the configuration, so
// it exits with the code of bad usage, however deeply it is wrapped.
func TestIncompatibleCheckpointExits2(t *testing.T) {
	refusal := engine.NonRecoverable(fmt.Errorf("engine: cannot restore x: %w", engine.ErrIncompatibleCheckpoint))
	if code := exitCode(fmt.Errorf("run: %w", refusal)); code != 2 {
		t.Errorf("an incompatible checkpoint exits %d, want 2", code)
	}
	if code := exitCode(engine.NonRecoverable(errors.New("engine: a sink failed"))); code != 1 {
		t.Errorf("a job failure exits %d, want 1", code)
	}
}
