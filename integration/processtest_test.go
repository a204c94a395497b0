package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/logbuf"
)

// processorBinary builds cmd/processor once per test binary (the tests
// run it as a child process they can SIGKILL).
var processorBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "onceflow-processor-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "processor")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/processor")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/processor: %v\n%s", err, out)
	}
	return bin, nil
})

// programBinaries builds a Go job's program (a package path relative to
// this directory, such as ../examples/gowordcount) once per test binary.
var programBinaries = struct {
	sync.Mutex
	built map[string]func() (string, error)
}{built: map[string]func() (string, error){}}

// program is the built binary of the Go job's program pkg.
func program(t *testing.T, pkg string) string {
	t.Helper()
	programBinaries.Lock()
	build, ok := programBinaries.built[pkg]
	if !ok {
		build = sync.OnceValues(func() (string, error) {
			dir, err := os.MkdirTemp("", "onceflow-program-")
			if err != nil {
				return "", err
			}
			bin := filepath.Join(dir, filepath.Base(pkg))
			if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
				return "", fmt.Errorf("building %s: %v\n%s", pkg, err, out)
			}
			return bin, nil
		})
		programBinaries.built[pkg] = build
	}
	programBinaries.Unlock()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func processor(t *testing.T) string {
	t.Helper()
	bin, err := processorBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// child is a running processor.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	output *logbuf.Buffer
	done   chan struct{}
	err    error
}

// startChild runs the processor with args; env entries are added to the
// test's environment. The child is killed if the test ends first.
func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	return startProgram(t, processor(t), env, args...)
}

// startProgram is startChild for the program bin (the processor, or a Go
// job's program built by program).
func startProgram(t *testing.T, bin string, env []string, args ...string) *child {
	t.Helper()
	c := &child{t: t, output: &logbuf.Buffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting the processor: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// wait waits up to d for the child to exit; false if it still runs.
func (c *child) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exited reports whether the child ended, without waiting.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// killedBySIGKILL reports whether the child died of SIGKILL.
func (c *child) killedBySIGKILL() bool {
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// tail is the end of the child's output, for failure messages.
func (c *child) tail() string {
	s := c.output.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// stop sends SIGTERM (stop with a savepoint) and requires a clean exit.
func (c *child) stop(d time.Duration) {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if !c.wait(d) {
		c.kill()
		c.t.Fatalf("the processor did not stop within %s after SIGTERM:\n%s", d, c.tail())
	}
	if c.err != nil {
		c.t.Fatalf("the processor exited with %v after SIGTERM:\n%s", c.err, c.tail())
	}
}

// writeConfig writes a job config file and returns its path.
func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(p, []byte(strings.TrimLeft(text, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond every interval until it holds or the deadline.
func eventually(ctx context.Context, every time.Duration, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(every):
		}
	}
}
