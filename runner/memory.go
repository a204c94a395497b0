package runner

import (
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/docker/go-units"

	"github.com/onceflow/onceflow/config"
)

// applyMemoryLimit makes process.memory_limit the Go runtime's soft memory
// limit and, unless GOGC is in the environment (getenv), turns the
// collector's heap-doubling trigger off, so that it runs only as the heap
// nears the limit (see config.Process). It logs what it set and returns
// what puts the runtime back as it was (jobs also run inside test
// binaries). With no limit configured it changes nothing: GOMEMLIMIT and
// GOGC from the environment, or Go's defaults, hold.
func applyMemoryLimit(p config.Process, getenv func(string) string, log *slog.Logger) (restore func()) {
	if p.MemoryLimit <= 0 {
		return func() {}
	}
	prevLimit := debug.SetMemoryLimit(int64(p.MemoryLimit))
	gc := "off until the limit"
	prevGC := math.MinInt
	if v := getenv("GOGC"); v != "" {
		gc = "GOGC=" + v
	} else {
		prevGC = debug.SetGCPercent(-1)
	}
	log.Info("memory limit", "process.memory_limit", units.BytesSize(float64(p.MemoryLimit)), "gc", gc)
	return func() {
		debug.SetMemoryLimit(prevLimit)
		if prevGC != math.MinInt {
			debug.SetGCPercent(prevGC)
		}
	}
}
