package runner

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/logbuf"
)

// The real-signal tests run this test binary again as a processor whose
// job is the in-memory word count, with the process's real signal
// handling, and send it real signals.
const childEnv = "PROCESSOR_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		job := newMemJob(100000, time.Millisecond)
		if mode == "block" {
			job.sink.block = make(chan struct{})
		}
		d := productionDeps()
		d.build = job.build
		d.ping = func(context.Context, []kgo.Opt, []string) error { return nil }
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv(childEnv+"_ARGS")), &args); err != nil {
			os.Exit(3)
		}
		os.Exit(execute(context.Background(), newRootDeps(d), args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// child is the processor running in a child process.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr *logbuf.Buffer
	done           chan struct{}
	code           int
}

// startChild runs the processor child with a job config in dir and waits
// for its HTTP address.
func startChild(t *testing.T, mode, dir string) (*child, string) {
	t.Helper()
	addrFile := filepath.Join(dir, "addr")
	args, _ := json.Marshal([]string{"run", "--config", jobConfig(t, dir, ""), "--addr-file", addrFile})
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, done: make(chan struct{})}
	// The child's configuration comes from the file only.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ONCEFLOW_") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, childEnv+"="+mode, childEnv+"_ARGS="+string(args))
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := c.cmd.Wait()
		c.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.code = ee.ExitCode()
		} else if err != nil {
			c.code = -1
		}
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			return c, strings.TrimSpace(string(b))
		}
		select {
		case <-c.done:
			t.Fatalf("the child exited with %d before listening:\n%s", c.code, c.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not listen within 20s:\n%s", c.stderr.String())
		}
	}
}

// wait waits up to d for the child and returns its exit code.
func (c *child) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
		return c.code
	case <-time.After(d):
		t.Fatalf("the child did not exit within %s:\n%s", d, c.stderr.String())
		return -1
	}
}

func TestRealSIGTERMStopsWithSavepoint(t *testing.T) {
	dir := t.TempDir()
	c, addr := startChild(t, "run", dir)
	waitCheckpoints(t, addr, 2)
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, c.stderr.String())
	}
	path := strings.TrimSpace(c.stdout.String())
	if !dirHasMetadata(path) || !strings.HasPrefix(path, filepath.Join(dir, "checkpoints", "memwc")) {
		t.Fatalf("stdout %q is not a savepoint of the job", path)
	}
}

func TestRealSecondSignalCancels(t *testing.T) {
	dir := t.TempDir()
	c, _ := startChild(t, "block", dir)
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(c.stderr.String(), "stopping the job with a savepoint") })
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(t, 10*time.Second); code != 1 {
		t.Fatalf("exit %d after a second signal, want 1:\n%s", code, c.stderr.String())
	}
	if last := lastLine(c.stderr.String()); !strings.Contains(last, "second signal (interrupt)") {
		t.Fatalf("last line %q", last)
	}
	if c.stdout.String() != "" {
		t.Fatalf("stdout %q after a cancel", c.stdout.String())
	}
}
