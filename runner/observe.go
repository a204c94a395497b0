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
}

// view is one consistent reading of the job.
type view struct {
	status engine.Status
	stats  jobs.Stats
	counts checkpointCounts
}

func (o *observer) read() view {
	st := o.job.Status()
	v := view{status: st, counts: o.tally.observe(st.Checkpoints)}
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
		case "COMPLETED":
			t.counts.Completed++
		case "FAILED":
			t.counts.Failed++
		case "SUBSUMED":
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
