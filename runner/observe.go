package runner

import (
	"sync"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/jobs"
)

// observer reads the job's status and statistics for the HTTP API and the
// metrics, and keeps the checkpoint counts cumulative: the engine keeps
// only the last checkpoints in its history.
type observer struct {
	job   *engine.Job
	stats func() jobs.Stats
	tally checkpointTally
	rates rateTracker
	// now is the clock of the rates (time.Now when nil).
	now func() time.Time
}

// view is one consistent reading of the job.
type view struct {
	status engine.Status
	stats  jobs.Stats
	counts checkpointCounts
	// rates are the operators' rates by uid, over the last window (nil
	// until a window has passed).
	rates map[string]operatorRate
}

func (o *observer) read() view {
	st := o.job.Status()
	now := time.Now
	if o.now != nil {
		now = o.now
	}
	v := view{status: st, counts: o.tally.observe(st.Checkpoints), rates: o.rates.observe(now(), st.Operators)}
	if o.stats != nil {
		v.stats = o.stats()
	} else {
		v.stats.ConsumerLag = -1
	}
	return v
}

// cluster is the job's Kafka cluster outage status (none without stats).
func (o *observer) cluster() outage.Status {
	if o.stats == nil {
		return outage.Status{}
	}
	return o.stats().Cluster
}

// checkpointCounts are cumulative over the life of the process.
type checkpointCounts struct {
	Completed  int64 `json:"completed"`
	Failed     int64 `json:"failed"`
	Subsumed   int64 `json:"subsumed"`
	InProgress int64 `json:"in_progress"`
}

// checkpointTally counts each checkpoint of the history once, when it
// reaches a final status. An entry is identified by its id and trigger
// time (a failed attempt's checkpoint id can be used again after a
// restart). Entries that left the history are forgotten; the history must
// be observed before more checkpoints than it holds end, which the run
// command's periodic observation does.
type checkpointTally struct {
	mu      sync.Mutex
	counted map[tallyKey]bool
	counts  checkpointCounts
}

type tallyKey struct {
	id        int64
	triggered time.Time
}

func (t *checkpointTally) observe(hist []engine.CheckpointStats) checkpointCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counted == nil {
		t.counted = map[tallyKey]bool{}
	}
	present := make(map[tallyKey]bool, len(hist))
	inProgress := int64(0)
	for _, cs := range hist {
		k := tallyKey{cs.ID, cs.Triggered}
		present[k] = true
		if t.counted[k] {
			continue
		}
		switch cs.Status {
		case engine.CheckpointCompleted:
			t.counts.Completed++
		case engine.CheckpointFailed:
			t.counts.Failed++
		case engine.CheckpointSubsumed:
			t.counts.Subsumed++
		default:
			inProgress++
			continue
		}
		t.counted[k] = true
	}
	for k := range t.counted {
		if !present[k] {
			delete(t.counted, k)
		}
	}
	c := t.counts
	c.InProgress = inProgress
	return c
}

// rateWindow is the shortest window operator rates are computed over;
// the run command reads the observer every second, so windows are about
// a second long (longer while nothing reads).
const rateWindow = 500 * time.Millisecond

// backpressuredRatio is the share of a window an operator's subtasks wait
// on full channels from which it counts as backpressured: Flink's "high"
// backpressure.
const backpressuredRatio = 0.5

// operatorRate is one operator's activity over the last window.
type operatorRate struct {
	InPerSecond, OutPerSecond float64
	// Backpressure is the share of the window the subtasks waited on
	// full channels to downstream subtasks, 0 to 1.
	Backpressure float64
	// Backpressured: Backpressure is backpressuredRatio or more. Idle:
	// no record came in or went out, and not backpressured.
	Backpressured, Idle bool
}

// rateTracker turns the operators' cumulative counters into rates: it
// keeps the sample that starts the current window and the rates of the
// last complete one. Counters that went back (a restart's new attempt
// counts from zero) count from zero in that window.
type rateTracker struct {
	mu    sync.Mutex
	start time.Time // zero: no sample yet
	prev  map[string]engine.OperatorStats
	last  map[string]operatorRate
}

// observe takes a sample at now and returns the rates of the last
// complete window (nil before the first). Without operators (no attempt
// runs) it forgets both: the next attempt's first window starts anew.
func (r *rateTracker) observe(now time.Time, ops []engine.OperatorStats) map[string]operatorRate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(ops) == 0 {
		r.start, r.prev, r.last = time.Time{}, nil, nil
		return nil
	}
	if r.start.IsZero() {
		r.start, r.prev = now, index(ops)
		return r.last
	}
	dt := now.Sub(r.start)
	if dt < rateWindow {
		return r.last
	}
	rates := make(map[string]operatorRate, len(ops))
	for _, op := range ops {
		p := r.prev[op.UID]
		in, out, bp := since(op.RecordsIn, p.RecordsIn), since(op.RecordsOut, p.RecordsOut), since(int64(op.Backpressured), int64(p.Backpressured))
		rate := operatorRate{InPerSecond: float64(in) / dt.Seconds(), OutPerSecond: float64(out) / dt.Seconds()}
		if op.Parallelism > 0 {
			rate.Backpressure = min(float64(bp)/float64(dt)/float64(op.Parallelism), 1)
		}
		rate.Backpressured = rate.Backpressure >= backpressuredRatio
		rate.Idle = in == 0 && out == 0 && !rate.Backpressured
		rates[op.UID] = rate
	}
	r.start, r.prev, r.last = now, index(ops), rates
	return rates
}

// since is how much a counter grew from prev to cur, cur itself when it
// went back (it counts from zero again).
func since(cur, prev int64) int64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

func index(ops []engine.OperatorStats) map[string]engine.OperatorStats {
	m := make(map[string]engine.OperatorStats, len(ops))
	for _, op := range ops {
		m[op.UID] = op
	}
	return m
}
