package joblock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holdEnv makes the test binary a process that takes the lock at that path,
// says so on stdout and waits to be killed.
const holdEnv = "JOBLOCK_TEST_HOLD"

func TestMain(m *testing.M) {
	if path := os.Getenv(holdEnv); path != "" {
		if _, err := Acquire(path); err != nil {
			fmt.Println("error:", err)
			os.Exit(3)
		}
		fmt.Println("held")
		select {} // until killed
	}
	os.Exit(m.Run())
}

// holder starts another process holding the lock at path.
func holder(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "held" {
		t.Fatalf("the holder said %q (%v)", line, err)
	}
	return cmd
}

// A second process is refused with the lock's path and the holder's pid;
// once the holder dies by SIGKILL the lock is taken over.
func TestSecondProcessRefusedUntilHolderDies(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "checkpoints"), "wc")
	h := holder(t, path)

	_, err := Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("Acquire while another process holds it: %v, want *HeldError", err)
	}
	if held.PID != h.Process.Pid || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprint(h.Process.Pid)) {
		t.Fatalf("the refusal must name %s and pid %d: %v", path, h.Process.Pid, err)
	}

	if err := h.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = h.Wait()
	var l *Lock
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err = Acquire(path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the kernel drops the lock as the process is reaped
	}
	if err != nil {
		t.Fatalf("the lock of a killed process was not taken over: %v", err)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("the lock file holds %q, want this process's pid %d", b, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("a second Release: %v", err)
	}
}

// Within one process a second Acquire (another open file description) is
// refused too, and a Release lets the next one in.
func TestReleaseLetsTheNextIn(t *testing.T) {
	path := Path(t.TempDir(), "job")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(path); err == nil {
		t.Fatal("a second Acquire of a held lock succeeded")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	_ = l2.Release()
}
