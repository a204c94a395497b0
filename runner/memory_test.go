package runner

import (
	"bytes"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
)

// gcPercent reads the collector's GOGC setting.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestMemoryBudgetLimitFollowsTwiceTheLiveHeap(t *testing.T) {
	for _, tc := range []struct{ budget, live, want int64 }{
		{150, 0, 150},
		{150, 75, 150},
		{150, 76, 152},
		{150, math.MaxInt64/2 + 1, math.MaxInt64},
	} {
		if got := limitFor(tc.budget, tc.live); got != tc.want {
			t.Errorf("limitFor(%d, %d) = %d, want %d", tc.budget, tc.live, got, tc.want)
		}
	}
}

// A budget of 0, or GOGC or GOMEMLIMIT in the environment, leaves the
// runtime alone; a budget turns GOGC off and sets the soft limit, and
// stop puts both back.
func TestMemoryBudgetSetsTheRuntimeAndRestores(t *testing.T) {
	limit0, gc0 := debug.SetMemoryLimit(-1), gcPercent()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	noEnv := func(string) string { return "" }
	unchanged := func(what string) {
		t.Helper()
		if l, gc := debug.SetMemoryLimit(-1), gcPercent(); l != limit0 || gc != gc0 {
			t.Fatalf("%s: limit %d, GOGC %d; want %d, %d", what, l, gc, limit0, gc0)
		}
	}

	stop := startMemoryBudget(config.Process{}, noEnv, log)
	unchanged("no budget")
	stop()
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		stop = startMemoryBudget(config.Process{MemoryBudget: 150 << 20}, func(k string) string {
			if k == env {
				return "200"
			}
			return ""
		}, log)
		unchanged(env + " in the environment")
		stop()
		if !strings.Contains(logs.String(), `"memory budget off: the environment sets the collector" `+env+"=200") {
			t.Fatalf("log: %q", logs.String())
		}
	}

	stop = startMemoryBudget(config.Process{MemoryBudget: 1 << 30}, noEnv, log)
	l, gc := debug.SetMemoryLimit(-1), gcPercent()
	stop()
	if l != 1<<30 || gc != -1 {
		t.Fatalf("with a budget: limit %d, GOGC %d; want %d and off", l, gc, 1<<30)
	}
	unchanged("stopped")
	stop() // a second stop changes nothing
	unchanged("stopped twice")
	if !strings.Contains(logs.String(), "process.memory_budget=1GiB") {
		t.Fatalf("log: %q", logs.String())
	}
}

// A live heap beyond half the budget raises the limit to twice itself
// after a collection, and the limit comes back to the budget once the heap
// shrinks: the budget never starves a job whose state grows.
func TestMemoryBudgetGrowsWithTheLiveHeap(t *testing.T) {
	const budget = 64 << 20
	m := newMemoryBudget(budget)
	defer m.stop()
	waitLimit := func(what string, ok func(int64) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(m.current()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: limit %d (runtime %d)", what, m.current(), debug.SetMemoryLimit(-1))
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if got := debug.SetMemoryLimit(-1); got != m.current() {
			t.Fatalf("%s: the runtime's limit %d is not the budget's %d", what, got, m.current())
		}
	}
	live := make([]byte, 96<<20)
	for i := range live {
		live[i] = 1
	}
	waitLimit("96 MiB live", func(l int64) bool { return l >= 2*96<<20 })
	runtime.KeepAlive(live)
	live = nil
	waitLimit("the live heap dropped", func(l int64) bool { return l == budget })
}
