package runner

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/config"
)

// gcPercent reads the collector's GOGC setting.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// process.memory_limit becomes the runtime's soft limit with the
// collector's doubling trigger off, unless GOGC is in the environment;
// restore puts both back; no limit changes nothing.
func TestMemoryLimitSetsTheRuntimeAndRestores(t *testing.T) {
	limit0, gc0 := debug.SetMemoryLimit(-1), gcPercent()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	noEnv := func(string) string { return "" }

	applyMemoryLimit(config.Process{}, noEnv, log)()
	if debug.SetMemoryLimit(-1) != limit0 || gcPercent() != gc0 || logs.Len() != 0 {
		t.Fatalf("no limit configured changed the runtime (limit %d, GOGC %d) or logged %q", debug.SetMemoryLimit(-1), gcPercent(), logs.String())
	}

	restore := applyMemoryLimit(config.Process{MemoryLimit: 170 << 20}, noEnv, log)
	if got, gc := debug.SetMemoryLimit(-1), gcPercent(); got != 170<<20 || gc != -1 {
		restore()
		t.Fatalf("with a limit: runtime limit %d, GOGC %d; want %d and off", got, gc, 170<<20)
	}
	restore()
	if debug.SetMemoryLimit(-1) != limit0 || gcPercent() != gc0 {
		t.Fatalf("restore left limit %d, GOGC %d; want %d, %d", debug.SetMemoryLimit(-1), gcPercent(), limit0, gc0)
	}
	if !strings.Contains(logs.String(), `process.memory_limit=170MiB gc="off until the limit"`) {
		t.Fatalf("log: %q", logs.String())
	}

	withGOGC := func(k string) string {
		if k == "GOGC" {
			return "200"
		}
		return ""
	}
	restore = applyMemoryLimit(config.Process{MemoryLimit: 1 << 30}, withGOGC, log)
	got, gc := debug.SetMemoryLimit(-1), gcPercent()
	restore()
	if got != 1<<30 || gc != gc0 {
		t.Fatalf("with GOGC in the environment: limit %d, GOGC %d; want %d and GOGC untouched (%d)", got, gc, 1<<30, gc0)
	}
	if debug.SetMemoryLimit(-1) != limit0 {
		t.Fatalf("restore after GOGC left limit %d", debug.SetMemoryLimit(-1))
	}
}
