package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	p, err := Parse("before-commit, after-precommit@3,between-commits~250ms")
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 || p["before-commit"].at != 1 || p["after-precommit"].at != 3 ||
		p["between-commits"].at != 0 || p["between-commits"].stall != 250*time.Millisecond {
		t.Fatalf("parsed %+v", p)
	}
	for _, bad := range []string{"before-commit@0", "before-commit@y", "after-precommit@-1", "befor-commit",
		"before-commit~", "before-commit~0s", "before-commit~1s@0", "before-commit~1s@", "before-commit~@2", "before-commit~soon", "befor-commit~1s", "before-commit,before-commit~1s"} {
		if _, err := Parse(bad); err == nil || !strings.Contains(err.Error(), Env) {
			t.Fatalf("Parse(%q) = %v, want an error naming %s", bad, err, Env)
		}
	}
}

// name~d@n stalls the n-th hit only; name~d every hit; name@n kills at
// the n-th.
func TestStepCountsHits(t *testing.T) {
	p, err := Parse("after-precommit~2s@3,before-commit~5ms,between-commits@2")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"after-precommit": {"-", "-", "stall 2s", "-", "-"},
		"before-commit":   {"stall 5ms", "stall 5ms", "stall 5ms", "stall 5ms", "stall 5ms"},
		"between-commits": {"-", "kill", "-", "-", "-"},
	}
	for name, steps := range want {
		for i, w := range steps {
			stall, kill := p[name].step()
			got := "-"
			switch {
			case kill:
				got = "kill"
			case stall > 0:
				got = "stall " + stall.String()
			}
			if got != w {
				t.Errorf("%s hit %d: %s, want %s", name, i+1, got, w)
			}
		}
	}
}

// The child process reaches the step three times; armed for the second hit
// it must die by SIGKILL right there, after printing "hit 1" only.
func TestHitKillsTheProcessOnTheArmedHit(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		for i := 1; i <= 3; i++ {
			Hit(BetweenCommits)
			os.Stdout.WriteString("hit " + string(rune('0'+i)) + "\n")
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKillsTheProcessOnTheArmedHit$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"=before-commit,between-commits@2")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child did not fail: %v, output %q", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL", ws)
	}
	if string(out) != "hit 1\n" {
		t.Fatalf("child printed %q, want only the first hit", out)
	}
}

// A stalled step sleeps at every hit and never kills.
func TestStallDelaysEveryHit(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		start := time.Now()
		for range 3 {
			Hit(BeforeCommit)
		}
		if time.Since(start) < 300*time.Millisecond {
			os.Stdout.WriteString("too fast\n")
		}
		os.Stdout.WriteString("done\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStallDelaysEveryHit$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Env+"=before-commit~100ms")
	out, err := cmd.Output()
	if err != nil || string(out) != "done\n" {
		t.Fatalf("child: %v, output %q, want three stalls of 100ms and a normal exit", err, out)
	}
}

func TestUnarmedHitIsANoOp(t *testing.T) {
	if os.Getenv(Env) != "" {
		t.Skip("failpoints armed in the environment")
	}
	Hit(BeforeCommit)
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}
