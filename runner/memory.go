package runner

import (
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"

	"github.com/docker/go-units"

	"github.com/onceflow/onceflow/config"
)

// memoryBudget holds the Go heap to process.memory_budget (see
// config.Process): the collector's doubling trigger is off (GOGC=off) and
// the runtime's soft memory limit is the budget, or twice the live heap
// when that is larger, raised after every collection. So a job with a
// small live heap is collected as its heap nears the budget instead of
// every time it doubles, and one whose live heap grows is collected where
// Go's default would collect it, never starved against a fixed limit.
type memoryBudget struct {
	budget int64

	prevLimit int64
	prevGC    int

	mu      sync.Mutex // serialises update with stop; guards the rest
	stopped bool
	limit   int64 // the limit set last
	sample  []metrics.Sample
}

// limitFor is the soft memory limit for a live heap of live bytes: the
// budget, or twice the live heap when that is larger.
func limitFor(budget, live int64) int64 {
	if live > math.MaxInt64/2 {
		return math.MaxInt64
	}
	return max(budget, 2*live)
}

// startMemoryBudget applies process.memory_budget unless it is 0 or GOGC
// or GOMEMLIMIT is in the environment (getenv), which then govern. It
// logs what it did and returns what stops it and puts the runtime back as
// it was (jobs also run inside test binaries).
func startMemoryBudget(p config.Process, getenv func(string) string, log *slog.Logger) (stop func()) {
	if p.MemoryBudget <= 0 {
		return func() {}
	}
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		if v := getenv(env); v != "" {
			log.Info("memory budget off: the environment sets the collector", env, v)
			return func() {}
		}
	}
	m := newMemoryBudget(int64(p.MemoryBudget))
	log.Info("memory budget", "process.memory_budget", units.BytesSize(float64(m.budget)))
	return m.stop
}

// newMemoryBudget turns the collector's doubling trigger off and holds the
// heap to budget until stop.
func newMemoryBudget(budget int64) *memoryBudget {
	m := &memoryBudget{budget: budget, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	m.prevLimit = debug.SetMemoryLimit(m.budget)
	m.limit = m.budget
	m.prevGC = debug.SetGCPercent(-1)
	m.update()
	m.arm()
	return m
}

// arm has update run after the next collection: a cleanup of an object
// nothing keeps runs once a collection found it unreachable, and re-arms.
func (m *memoryBudget) arm() {
	// Large enough not to come from the tiny allocator, whose blocks
	// can outlive the object.
	sentinel := new([64]byte)
	runtime.AddCleanup(sentinel, func(m *memoryBudget) {
		if m.update() {
			m.arm()
		}
	}, m)
}

// update sets the limit for the live heap the last collection left; false
// once stopped.
func (m *memoryBudget) update() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return false
	}
	metrics.Read(m.sample)
	if m.sample[0].Value.Kind() != metrics.KindUint64 {
		return true
	}
	live := m.sample[0].Value.Uint64()
	if live > math.MaxInt64 {
		live = math.MaxInt64
	}
	if l := limitFor(m.budget, int64(live)); l != m.limit {
		debug.SetMemoryLimit(l)
		m.limit = l
	}
	return true
}

// current is the limit set last.
func (m *memoryBudget) current() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limit
}

// stop ends the updates and restores the collector's settings.
func (m *memoryBudget) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.stopped = true
	debug.SetMemoryLimit(m.prevLimit)
	debug.SetGCPercent(m.prevGC)
}
