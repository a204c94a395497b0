package runner

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/onceflow/onceflow/engine"
)

// jobStates are the values of onceflow_job_state's state label: the
// names of engine.JobStates ("CREATED" before the first attempt starts).
func jobStates() []string {
	var out []string
	for _, s := range engine.JobStates() {
		out = append(out, s.String())
	}
	return out
}

// jobCollector exports the job's status and statistics at each scrape.
// Records in/out per operator count the current attempt (they restart
// from zero after a restart, which Prometheus's rate() treats as a counter
// reset); everything else is cumulative for the process.
type jobCollector struct {
	o *observer

	state, restarts                                  *prometheus.Desc
	recordsIn, recordsOut                            *prometheus.Desc
	completed, failed, subsumed, inProgress          *prometheus.Desc
	lastID, lastDuration, lastSize, lastAlign, lastT *prometheus.Desc
	pending, oldestPending                           *prometheus.Desc
	lag, read, skipped, deadLettered, offsetResets   *prometheus.Desc
	lateRecords                                      *prometheus.Desc
	unreachable, outages                             *prometheus.Desc
}

func newJobCollector(o *observer, jobName string) *jobCollector {
	cl := prometheus.Labels{"job_name": jobName}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("onceflow_"+name, help, labels, cl)
	}
	return &jobCollector{
		o:             o,
		state:         d("job_state", "1 for the job's current state, 0 for the others.", "state"),
		restarts:      d("job_restarts_total", "Restarts of the job after failed attempts."),
		recordsIn:     d("operator_records_in_total", "Records an operator received in the current attempt, over its subtasks.", "operator"),
		recordsOut:    d("operator_records_out_total", "Records an operator emitted in the current attempt, over its subtasks.", "operator"),
		completed:     d("checkpoints_completed_total", "Checkpoints and savepoints completed."),
		failed:        d("checkpoints_failed_total", "Checkpoints and savepoints that failed (including expired ones)."),
		subsumed:      d("checkpoints_subsumed_total", "Checkpoints aborted because a newer one completed first."),
		inProgress:    d("checkpoints_in_progress", "Checkpoints triggered and not yet complete."),
		lastID:        d("last_checkpoint_id", "Id of the last completed checkpoint or savepoint (0: none yet)."),
		lastDuration:  d("last_checkpoint_duration_seconds", "Trigger to completion of the last completed checkpoint."),
		lastSize:      d("last_checkpoint_size_bytes", "State bytes the last completed checkpoint refers to."),
		lastAlign:     d("last_checkpoint_alignment_seconds", "Longest barrier alignment of any subtask in the last completed checkpoint."),
		lastT:         d("last_checkpoint_completion_timestamp_seconds", "Unix time the last completed checkpoint completed."),
		pending:       d("sink_pending_transactions", "Pre-committed Kafka transactions waiting for their checkpoint to complete."),
		oldestPending: d("sink_oldest_pending_transaction_age_seconds", "Age of the oldest pending transaction (0: none)."),
		lag:           d("source_consumer_lag", "Records between the source's position and the partitions' ends (absent when unknown)."),
		read:          d("source_records_read_total", "Records the source read from Kafka."),
		skipped:       d("source_decode_skipped_total", "Records skipped because they could not be decoded."),
		deadLettered:  d("source_dead_lettered_total", "Records sent to the dead-letter topic because they could not be decoded."),
		lateRecords:   d("window_late_records_total", "Records the window job found too late for every window (past window.allowed_lateness): written to window.late_topic when set, else only counted."),
		offsetResets:  d("source_offset_resets_total", "Jumps of source positions their partitions' logs no longer held (records deleted before they were read, a log truncated, a topic recreated) to the log start or end, as source.on_offset_out_of_range earliest or latest says; each is logged with the offsets it skipped or reads again."),
		unreachable:   d("cluster_unreachable_seconds", "How long the job has been waiting for the Kafka cluster (0 while it answers); past kafka.outage_tolerance the attempt fails."),
		outages:       d("cluster_outages_total", "Outages of the Kafka cluster the job has waited out or is waiting out."),
	}
}

func (c *jobCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.restarts, c.recordsIn, c.recordsOut, c.completed, c.failed, c.subsumed,
		c.inProgress, c.lastID, c.lastDuration, c.lastSize, c.lastAlign, c.lastT, c.pending, c.oldestPending,
		c.lag, c.read, c.skipped, c.deadLettered, c.offsetResets, c.lateRecords, c.unreachable, c.outages} {
		ch <- d
	}
}

func (c *jobCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.o.read()
	st, stats := v.status, v.stats
	gauge := func(d *prometheus.Desc, x float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, labels...)
	}
	counter := func(d *prometheus.Desc, x float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, x, labels...)
	}
	cur := displayState(st.State)
	for _, s := range jobStates() {
		x := 0.0
		if s == cur {
			x = 1
		}
		gauge(c.state, x, s)
	}
	counter(c.restarts, float64(st.Restarts))
	for _, op := range st.Operators {
		counter(c.recordsIn, float64(op.RecordsIn), op.UID)
		counter(c.recordsOut, float64(op.RecordsOut), op.UID)
	}
	counter(c.completed, float64(v.counts.Completed))
	counter(c.failed, float64(v.counts.Failed))
	counter(c.subsumed, float64(v.counts.Subsumed))
	gauge(c.inProgress, float64(v.counts.InProgress))
	gauge(c.lastID, float64(st.LastCheckpoint))
	if last, ok := engine.LastCompleted(st.Checkpoints); ok {
		gauge(c.lastDuration, last.Duration.Seconds())
		gauge(c.lastSize, float64(last.Size))
		gauge(c.lastAlign, last.Alignment.Seconds())
		gauge(c.lastT, float64(last.Triggered.Add(last.Duration).UnixNano())/1e9)
	}
	gauge(c.pending, float64(stats.PendingTransactions))
	gauge(c.oldestPending, stats.OldestPending.Seconds())
	if stats.ConsumerLag >= 0 {
		gauge(c.lag, float64(stats.ConsumerLag))
	}
	counter(c.read, float64(stats.RecordsRead))
	counter(c.skipped, float64(stats.DecodeSkipped))
	counter(c.deadLettered, float64(stats.DeadLettered))
	counter(c.offsetResets, float64(stats.OffsetResets))
	counter(c.lateRecords, float64(stats.LateRecords))
	away := 0.0
	if stats.Cluster.Down {
		away = stats.Cluster.For.Seconds()
	}
	gauge(c.unreachable, away)
	counter(c.outages, float64(stats.Cluster.Outages))
}

// displayState is the name of a job state, as the API and the metrics
// show it (engine.JobCreated, the zero value, before the first attempt
// starts: "CREATED").
func displayState(s engine.JobState) string { return s.String() }

// newRegistry holds the job's metrics and the Go runtime's and process's.
func newRegistry(o *observer, jobName string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newJobCollector(o, jobName),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
