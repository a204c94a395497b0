// Package failpoint kills the process at named steps of a protocol, so that
// crash tests can stop a real process exactly where a crash hurts most
// (after a pre-commit but before the ack, between two commits, ...).
//
// Failpoints are armed only through the environment variable
// ONCEFLOW_FAILPOINTS, a comma-separated list of name, name@n, name~d or
// name~d@n entries: name kills the process the first time the step is
// reached, name@n the n-th time; name~d (d a duration like 300ms) kills
// nothing but stalls every hit for d, and name~d@n stalls the n-th hit
// only, so that work piles up behind the step. For example a pre-commit
// stalled past the checkpoint timeout gets its checkpoint aborted; the
// transaction stays pending and the next completed checkpoint commits it
// with its own, which reaches between-commits. With the variable unset,
// Hit costs one atomic load.
//
// The process dies by SIGKILL sent to itself: no deferred function runs, no
// buffer is flushed, no file is closed — like a machine losing power.
package failpoint

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Env is the environment variable that arms failpoints.
const Env = "ONCEFLOW_FAILPOINTS"

// The named steps of the two-phase-commit protocol.
const (
	// AfterPreCommit: the sink pre-committed its transaction at the
	// barrier, the subtask has not acked.
	AfterPreCommit = "after-precommit"
	// BeforeCommit: the checkpoint completed, the sink has not committed.
	BeforeCommit = "before-commit"
	// BetweenCommits: one pending transaction committed, the next not yet.
	BetweenCommits = "between-commits"
	// RestoreBeforeCommit: restoring, before the recovery commit.
	RestoreBeforeCommit = "restore-before-commit"
	// RestoreAfterCommit: restoring, after the recovery commit, before the
	// lingering transactions are aborted.
	RestoreAfterCommit = "restore-after-commit"
)

// Names lists every failpoint.
var Names = []string{AfterPreCommit, BeforeCommit, BetweenCommits, RestoreBeforeCommit, RestoreAfterCommit}

type point struct {
	at    int64         // kill (or, with stall, stall) at this hit; 0: every hit
	stall time.Duration // sleep instead of killing
	hits  atomic.Int64
}

// step counts a hit and says what it does: stall for a duration, kill, or
// (zero, false) nothing.
func (p *point) step() (time.Duration, bool) {
	n := p.hits.Add(1)
	if p.stall > 0 {
		if p.at == 0 || n == p.at {
			return p.stall, false
		}
		return 0, false
	}
	return 0, n == p.at
}

// armed is parsed from the environment once; the map is never written
// after that, only the counters in it.
var armed = sync.OnceValues(func() (map[string]*point, error) { return Parse(os.Getenv(Env)) })

// Parse reads a failpoint list; an empty list arms nothing.
func Parse(spec string) (map[string]*point, error) {
	out := map[string]*point{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if name, d, ok := strings.Cut(item, "~"); ok {
			if !slices.Contains(Names, name) {
				return nil, fmt.Errorf("%s: unknown failpoint %q (known: %s)", Env, name, strings.Join(Names, ", "))
			}
			d, nth, counted := strings.Cut(d, "@")
			stall, err := time.ParseDuration(d)
			if err != nil || stall <= 0 {
				return nil, fmt.Errorf("%s: %q: the stall after ~ must be a positive duration like 300ms", Env, item)
			}
			var at int64
			if counted {
				if at, err = strconv.ParseInt(nth, 10, 64); err != nil || at < 1 {
					return nil, fmt.Errorf("%s: %q: the count after @ must be a positive integer", Env, item)
				}
			}
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("%s: failpoint %q armed twice", Env, name)
			}
			out[name] = &point{stall: stall, at: at}
			continue
		}
		name, nth, found := strings.Cut(item, "@")
		if !slices.Contains(Names, name) {
			return nil, fmt.Errorf("%s: unknown failpoint %q (known: %s)", Env, name, strings.Join(Names, ", "))
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: failpoint %q armed twice", Env, name)
		}
		at := int64(1)
		if found {
			n, err := strconv.ParseInt(nth, 10, 64)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: %q: the count after @ must be a positive integer", Env, item)
			}
			at = n
		}
		out[name] = &point{at: at}
	}
	return out, nil
}

// Check validates ONCEFLOW_FAILPOINTS; call it at start so that a typo is
// an error rather than a failpoint that never fires.
func Check() error {
	_, err := armed()
	return err
}

// Hit marks that the process reached step name, and kills it there when
// that step is armed for this hit (or stalls, when armed with ~d).
func Hit(name string) {
	points, err := armed()
	if err != nil || len(points) == 0 {
		return
	}
	p, ok := points[name]
	if !ok {
		return
	}
	stall, kill := p.step()
	if stall > 0 {
		time.Sleep(stall)
		return
	}
	if kill {
		fmt.Fprintf(os.Stderr, "failpoint %s: killing process %d\n", name, os.Getpid())
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
