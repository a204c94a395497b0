package runner

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/jobs"
)

// loadTestConfig is the in-memory word count's configuration with sets.
func loadTestConfig(t *testing.T, dir string, set ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Sources{File: jobConfig(t, dir, ""), Env: []string{}, Set: set})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// scrape GETs /metrics from h and parses the text format.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want; ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["job_name"] != "memwc" {
			continue
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := value(fams, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	if got != want {
		t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// The metrics of a running job: state, records per operator, checkpoint
// counts and the last checkpoint's figures, and the job's statistics.
func TestMetricsOfRunningJob(t *testing.T) {
	dir := t.TempDir()
	cfg := loadTestConfig(t, dir, "checkpoint.interval=1h") // checkpoints only when asked
	m := newMemJob(50, 0)
	built, err := m.build(context.Background(), cfg, jobs.Env{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- built.Job.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()
	// Both source subtasks read their 50 lines, then idle.
	waitFor(t, func() bool {
		for _, op := range built.Job.Status().Operators {
			if op.UID == "sink" && op.RecordsIn == 200 {
				return true
			}
		}
		return false
	})
	var paths []string
	for range 3 {
		p, err := built.Job.TriggerSavepoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}

	stats := jobs.Stats{PendingTransactions: 3, OldestPending: 2500 * time.Millisecond, RecordsRead: 1000, DecodeSkipped: 7, DeadLettered: 2, OffsetResets: 4, ConsumerLag: 42}
	o := &observer{job: built.Job, stats: func() jobs.Stats { return stats }}
	api := &apiServer{o: o, reg: newRegistry(o, "memwc"), log: slog.New(slog.DiscardHandler)}
	fams := scrape(t, api.handler())

	for _, s := range jobStates() {
		want := 0.0
		if s == "RUNNING" {
			want = 1
		}
		mustValue(t, fams, "onceflow_job_state", map[string]string{"state": s}, want)
	}
	mustValue(t, fams, "onceflow_job_restarts_total", nil, 0)
	for uid, io := range map[string][2]float64{"source": {0, 100}, "split": {100, 200}, "count": {200, 200}, "sink": {200, 0}} {
		mustValue(t, fams, "onceflow_operator_records_in_total", map[string]string{"operator": uid}, io[0])
		mustValue(t, fams, "onceflow_operator_records_out_total", map[string]string{"operator": uid}, io[1])
	}
	mustValue(t, fams, "onceflow_checkpoints_completed_total", nil, 3)
	mustValue(t, fams, "onceflow_checkpoints_failed_total", nil, 0)
	mustValue(t, fams, "onceflow_checkpoints_in_progress", nil, 0)
	hist := built.Job.Status().Checkpoints
	last := hist[len(hist)-1]
	if last.Path != paths[2] || last.ID != 3 {
		t.Fatalf("last history entry %+v, want savepoint 3 at %s", last, paths[2])
	}
	mustValue(t, fams, "onceflow_last_checkpoint_id", nil, 3)
	mustValue(t, fams, "onceflow_last_checkpoint_duration_seconds", nil, last.Duration.Seconds())
	mustValue(t, fams, "onceflow_last_checkpoint_size_bytes", nil, float64(last.Size))
	mustValue(t, fams, "onceflow_last_checkpoint_alignment_seconds", nil, last.Alignment.Seconds())
	if last.Size <= 0 {
		t.Fatalf("savepoint size %d: the word counts are state", last.Size)
	}
	mustValue(t, fams, "onceflow_sink_pending_transactions", nil, 3)
	mustValue(t, fams, "onceflow_sink_oldest_pending_transaction_age_seconds", nil, 2.5)
	mustValue(t, fams, "onceflow_source_consumer_lag", nil, 42)
	mustValue(t, fams, "onceflow_source_records_read_total", nil, 1000)
	mustValue(t, fams, "onceflow_source_decode_skipped_total", nil, 7)
	mustValue(t, fams, "onceflow_source_dead_lettered_total", nil, 2)
	mustValue(t, fams, "onceflow_source_offset_resets_total", nil, 4)
	if _, ok := fams["go_goroutines"]; !ok {
		t.Fatal("no Go runtime metrics")
	}

	// An unknown lag is absent, not a made-up number.
	stats.ConsumerLag = -1
	o2 := &observer{job: built.Job, stats: func() jobs.Stats { return stats }}
	api2 := &apiServer{o: o2, reg: newRegistry(o2, "memwc"), log: slog.New(slog.DiscardHandler)}
	if _, ok := value(scrape(t, api2.handler()), "onceflow_source_consumer_lag", nil); ok {
		t.Fatal("consumer lag -1 is exported")
	}

	// The checkpoints API agrees with the metrics.
	srv := httptest.NewServer(api.handler())
	defer srv.Close()
	var cb checkpointsBody
	getJSON(t, srv.URL+"/api/v1/checkpoints", &cb)
	if cb.Counts.Completed != 3 || len(cb.History) != 3 || cb.Latest.Savepoint == nil || cb.Latest.Savepoint.Path != paths[2] ||
		cb.History[0].StateSize != last.Size || cb.History[0].DurationMS != last.Duration.Milliseconds() {
		t.Fatalf("checkpoints API: %+v", cb)
	}
	// So does the job API's source section.
	var jb jobBody
	getJSON(t, srv.URL+"/api/v1/job", &jb)
	if jb.Source.RecordsRead != 1000 || jb.Source.OffsetResets != 4 {
		t.Fatalf("job API source section: %+v", jb.Source)
	}
}

// A failed job is unhealthy (503), and refuses savepoints (409).
func TestHealthzFailedJob(t *testing.T) {
	dir := t.TempDir()
	cfg := loadTestConfig(t, dir)
	m := newMemJob(100, 0)
	m.src.fail = 3
	built, err := m.build(context.Background(), cfg, jobs.Env{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{job: built.Job}
	ended, markEnded := context.WithCancel(context.Background())
	defer markEnded()
	ctl := &control{job: built.Job, cancelJob: func(error) {}, ended: ended, stopTimeout: time.Second, log: slog.New(slog.DiscardHandler)}
	api := &apiServer{o: o, ctl: ctl, reg: newRegistry(o, "memwc"), log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(api.handler())
	defer srv.Close()

	var hb healthBody
	if code := getJSON(t, srv.URL+"/healthz", &hb); code != http.StatusOK || hb.State != "CREATED" {
		t.Fatalf("healthz before the run: %d %+v", code, hb)
	}
	if err := built.Job.Run(context.Background()); err == nil || errors.Is(err, engine.ErrStopped) {
		t.Fatalf("run: %v, want the injected failure", err)
	}
	if code := getJSON(t, srv.URL+"/healthz", &hb); code != http.StatusServiceUnavailable || hb.State != "FAILED" || hb.Job != "memwc" {
		t.Fatalf("healthz of a failed job: %d %+v", code, hb)
	}
	var eb errorBody
	if code := postJSON(t, srv.URL+"/api/v1/savepoint", &eb); code != http.StatusConflict || eb.Error == "" {
		t.Fatalf("savepoint of a failed job: %d %+v", code, eb)
	}
	if code := postJSON(t, srv.URL+"/api/v1/stop", &eb); code != http.StatusConflict {
		t.Fatalf("stop of a failed job: %d %+v", code, eb)
	}
	fams := scrape(t, api.handler())
	mustValue(t, fams, "onceflow_job_state", map[string]string{"state": "FAILED"}, 1)
	mustValue(t, fams, "onceflow_job_state", map[string]string{"state": "RUNNING"}, 0)
}

// The tally counts each checkpoint once when it ends, across scrapes and
// after it left the engine's bounded history.
func TestCheckpointTally(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cs := func(id int64, status engine.CheckpointStatus, sec int) engine.CheckpointStats {
		return engine.CheckpointStats{ID: id, Status: status, Triggered: t0.Add(time.Duration(sec) * time.Second)}
	}
	var tl checkpointTally
	steps := []struct {
		hist []engine.CheckpointStats
		want checkpointCounts
	}{
		{[]engine.CheckpointStats{cs(1, engine.CheckpointCompleted, 1), cs(2, engine.CheckpointInProgress, 2)}, checkpointCounts{Completed: 1, InProgress: 1}},
		{[]engine.CheckpointStats{cs(1, engine.CheckpointCompleted, 1), cs(2, engine.CheckpointCompleted, 2), cs(3, engine.CheckpointFailed, 3)}, checkpointCounts{Completed: 2, Failed: 1}},
		// 1 and 2 left the history; 4 is subsumed by 5.
		{[]engine.CheckpointStats{cs(3, engine.CheckpointFailed, 3), cs(4, engine.CheckpointSubsumed, 4), cs(5, engine.CheckpointCompleted, 5)}, checkpointCounts{Completed: 3, Failed: 1, Subsumed: 1}},
		// After a restart, id 6 failed and id 6 again (a later trigger) completed.
		{[]engine.CheckpointStats{cs(5, engine.CheckpointCompleted, 5), cs(6, engine.CheckpointFailed, 6), cs(6, engine.CheckpointCompleted, 7)}, checkpointCounts{Completed: 4, Failed: 2, Subsumed: 1}},
		{[]engine.CheckpointStats{cs(6, engine.CheckpointCompleted, 7)}, checkpointCounts{Completed: 4, Failed: 2, Subsumed: 1}},
	}
	for i, s := range steps {
		if got := tl.observe(s.hist); got != s.want {
			t.Fatalf("step %d: %+v, want %+v", i, got, s.want)
		}
	}
}

// While the job waits for its Kafka cluster, /healthz stays 200 (the job
// is alive and rides the outage out) but says waiting_for_cluster; the
// job API says since when and why; the metrics give how long (0 while the
// cluster answers) and count the outages.
func TestClusterOutageInHealthAPIAndMetrics(t *testing.T) {
	dir := t.TempDir()
	cfg := loadTestConfig(t, dir, "checkpoint.interval=1h")
	m := newMemJob(5, 0)
	built, err := m.build(context.Background(), cfg, jobs.Env{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- built.Job.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()
	waitFor(t, func() bool { return built.Job.Status().State == engine.JobRunning })

	var mu sync.Mutex
	cluster := outage.Status{Tolerance: time.Minute}
	o := &observer{job: built.Job, stats: func() jobs.Stats {
		mu.Lock()
		defer mu.Unlock()
		return jobs.Stats{ConsumerLag: -1, Cluster: cluster}
	}}
	api := &apiServer{o: o, reg: newRegistry(o, "memwc"), log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(api.handler())
	defer srv.Close()

	var hb healthBody
	var jb jobBody
	if code := getJSON(t, srv.URL+"/healthz", &hb); code != http.StatusOK || hb.WaitingForCluster || !hb.Cluster.Reachable || hb.Cluster.Since != nil {
		t.Fatalf("healthz with the cluster answering: %d %+v", code, hb)
	}
	fams := scrape(t, api.handler())
	mustValue(t, fams, "onceflow_cluster_unreachable_seconds", nil, 0)
	mustValue(t, fams, "onceflow_cluster_outages_total", nil, 0)

	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mu.Lock()
	cluster = outage.Status{Down: true, Since: since, For: 12500 * time.Millisecond, What: "kafka source: fetching in/0",
		LastError: "unable to dial: connection refused", Outages: 3, Tolerance: time.Minute}
	mu.Unlock()
	if code := getJSON(t, srv.URL+"/healthz", &hb); code != http.StatusOK || !hb.WaitingForCluster || hb.State != "RUNNING" ||
		hb.Cluster.Reachable || hb.Cluster.UnreachableSeconds != 12.5 || hb.Cluster.Since == nil || !hb.Cluster.Since.Equal(since) ||
		hb.Cluster.LastError != "unable to dial: connection refused" || hb.Cluster.FirstFailed != "kafka source: fetching in/0" ||
		hb.Cluster.ToleranceSeconds != 60 || hb.Cluster.Outages != 3 {
		t.Fatalf("healthz while waiting for the cluster: %d %+v", code, hb)
	}
	if code := getJSON(t, srv.URL+"/api/v1/job", &jb); code != http.StatusOK || jb.Cluster.Reachable || jb.Cluster.UnreachableSeconds != 12.5 ||
		jb.Cluster.Since == nil || !jb.Cluster.Since.Equal(since) || jb.Cluster.LastError != hb.Cluster.LastError ||
		jb.Cluster.FirstFailed != hb.Cluster.FirstFailed || jb.Cluster.Outages != 3 {
		t.Fatalf("job API while waiting for the cluster: %d %+v", code, jb.Cluster)
	}
	fams = scrape(t, api.handler())
	mustValue(t, fams, "onceflow_cluster_unreachable_seconds", nil, 12.5)
	mustValue(t, fams, "onceflow_cluster_outages_total", nil, 3)

	mu.Lock()
	cluster = outage.Status{Outages: 3, Tolerance: time.Minute}
	mu.Unlock()
	if code := getJSON(t, srv.URL+"/healthz", &hb); code != http.StatusOK || hb.WaitingForCluster || !hb.Cluster.Reachable || hb.Cluster.Outages != 3 {
		t.Fatalf("healthz once the cluster answers again: %d %+v", code, hb)
	}
	fams = scrape(t, api.handler())
	mustValue(t, fams, "onceflow_cluster_unreachable_seconds", nil, 0)
	mustValue(t, fams, "onceflow_cluster_outages_total", nil, 3)
}
