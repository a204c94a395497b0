package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/groups"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/internal/webui"
	"github.com/onceflow/onceflow/jobs"
)

// checkDistributedFlags refuses the run flags job.mode distributed has no
// use for: each partition group resumes from its own latest checkpoint
// (claimed in S3), so neither one restore point for the whole job (--from)
// nor a fresh start (--fresh) can be given.
func checkDistributedFlags(cfg *config.Config, f runFlags) error {
	if cfg.Job.Mode != "distributed" {
		return nil
	}
	if f.from != "" {
		return usagef("--from is not supported with job.mode distributed: each partition group resumes from its own latest checkpoint under %s/pg-<g>",
			checkpointLocation(cfg))
	}
	if f.fresh {
		return usagef("--fresh is not supported with job.mode distributed: start the job under another job.name or checkpoint.dir prefix instead")
	}
	return nil
}

// runDistributed is processor run for job.mode distributed: this process
// joins the job's consumer group (source.group) and runs the partition
// groups Kafka assigns it (internal/groups), until a signal or a failure.
//
//   - The local lock is <state.dir>/<job>.lock, as for any job with S3
//     checkpoints: one instance per job on a machine.
//   - G is job.partition_groups, or the input topic's partition count; a
//     missing input topic or G above its partition count is refused
//     (exit 2) naming the key.
//   - Each group is built by jobs.BuildGroup (one stage for copy, two
//     joined by a repartition topic for wordcount and aggregate, the
//     stages a Go job's dataflow cuts it into), its input offsets
//     committed through the member.
//   - SIGTERM or SIGINT leaves: every group stops with a final savepoint
//     (bounded by distributed.revoke_timeout, else cancelled) and the
//     member leaves the group so that the other instances take the groups
//     over at once; exit 0. A second signal cancels at once (exit 1).
//   - A group that fails for a reason other than fencing ends the process
//     with that error (after its other groups left with savepoints), so
//     that it is restarted; a fenced group is given up and the process
//     goes on (see internal/groups).
//
// HTTP serves /healthz, /metrics, /api/v1/job (distributedAPI) and the
// web page at / (internal/webui); the
// job's POST endpoints are refused: there is no single job to stop or
// savepoint.
func runDistributed(ctx context.Context, d deps, dataflow jobs.Dataflow, f runFlags, cfg *config.Config, sigs <-chan os.Signal, stderr io.Writer) error {
	st, err := takeRun(cfg, f, stderr)
	if err != nil {
		return err
	}
	defer st.close()
	log, opts, ln := st.log, st.opts, st.ln
	pingCtx, cancelPing := context.WithTimeout(ctx, f.connectTimeout)
	err = d.ping(pingCtx, opts, cfg.Kafka.Brokers)
	if err == nil {
		var G int
		G, err = partitionGroups(pingCtx, d, cfg, opts)
		cfg.Job.PartitionGroups = G
	}
	cancelPing()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kafka.brokers: %w (no answer within --connect-timeout %s)", err, f.connectTimeout)
	}
	if err != nil {
		return err
	}
	G := cfg.Job.PartitionGroups

	buildGroup := d.buildGroup
	if buildGroup == nil {
		buildGroup = func(ctx context.Context, cfg *config.Config, env jobs.Env) (groups.Pipeline, error) {
			p, err := jobs.BuildGroup(ctx, cfg, env)
			if err != nil {
				return nil, err // not a nil *GroupPipeline in an interface
			}
			return p, nil
		}
	}
	runCtx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	d2 := cfg.Distributed
	var runner *groups.Runner
	commit := func(ctx context.Context, o kadm.Offsets) error {
		return runner.CommitOffsets(ctx, offsetsOf(o))
	}
	runner, err = groups.New(groups.Options{
		G: G,
		Build: func(ctx context.Context, g int) (groups.Pipeline, error) {
			return buildGroup(ctx, cfg, jobs.Env{ClientOpts: opts, Logger: log, AllowNonRestoredState: f.allowNonRestoredState,
				Version: version, Group: &jobs.Group{Index: g, Count: G, CommitOffsets: commit}, Dataflow: dataflow})
		},
		Membership: membership.Config{Brokers: cfg.Kafka.Brokers, Job: cfg.Job.Name, GroupID: cfg.Source.Group,
			Topics: []string{cfg.Source.Topic}, SessionTimeout: d2.SessionTimeout, RebalanceTimeout: d2.RebalanceTimeout,
			RevokeTimeout: d2.RevokeTimeout, Logger: log, ClientOpts: opts},
		NewMember: d.member,
		Logger:    log,
	})
	if err != nil {
		return err
	}

	if ln != nil {
		stopServing := serveDistributed(ln, d, f, cfg, runner, log)
		defer stopServing()
	}

	runDone := make(chan error, 1)
	go func() { runDone <- runner.Run(runCtx) }()

	var wg sync.WaitGroup
	defer wg.Wait()
	runErr := untilDone(runDone, sigs, func(sig os.Signal) {
		log.Info("leaving: this instance's partition groups stop with final savepoints and move to the other instances; a second signal cancels at once",
			"signal", sig.String(), "revoke_timeout", d2.RevokeTimeout)
		wg.Go(func() {
			// Revoking is bounded by the revoke timeout; the rest is
			// the LeaveGroup request.
			leaveCtx, cancel := context.WithTimeout(runCtx, d2.RevokeTimeout+30*time.Second)
			defer cancel()
			if err := runner.Leave(leaveCtx); err != nil {
				log.Warn("leaving the job's consumer group", "err", err)
			}
		})
	}, func(sig os.Signal) { cancelRun(fmt.Errorf("cancelled by a second signal (%s)", sig)) })
	switch {
	case runErr == nil:
		log.Info("left the job's consumer group", "job", cfg.Job.Name, "consumer_group", cfg.Source.Group)
		return nil
	case errors.Is(runErr, context.Canceled) && context.Cause(runCtx) != nil:
		return fmt.Errorf("job %s cancelled without final savepoints: %w", cfg.Job.Name, runErr)
	default:
		return runErr
	}
}

// partitionGroups is G: job.partition_groups, or the input topic's
// partition count when 0. A missing topic, or G above its partition count
// (a group without partitions), is a *jobs.ConfigError.
func partitionGroups(ctx context.Context, d deps, cfg *config.Config, opts []kgo.Opt) (int, error) {
	count := d.partitions
	if count == nil {
		count = topicPartitions
	}
	topic := cfg.Source.Topic
	n, err := count(ctx, opts, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka.brokers: counting the partitions of source.topic %s: %w", topic, err)
	}
	if n == 0 {
		return 0, &jobs.ConfigError{Key: "source.topic", Err: fmt.Errorf("topic %s does not exist (onceflow does not create topics)", topic)}
	}
	G := cfg.Job.PartitionGroups
	if G == 0 {
		return n, nil
	}
	if G > n {
		return 0, &jobs.ConfigError{Key: "job.partition_groups", Err: fmt.Errorf(
			"%d partition groups, but source.topic %s has %d partitions: groups above %d would have none", G, topic, n, n-1)}
	}
	return G, nil
}

// topicPartitions asks the cluster how many partitions topic has (0: it
// does not exist).
func topicPartitions(ctx context.Context, opts []kgo.Opt, topic string) (int, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	t, ok := details[topic]
	switch {
	case !ok || errors.Is(t.Err, kerr.UnknownTopicOrPartition):
		return 0, nil
	case t.Err != nil:
		return 0, t.Err
	}
	return len(t.Partitions), nil
}

// offsetsOf is kadm's offsets as membership.Member.CommitOffsets takes
// them: topic -> partition -> the next offset to read.
func offsetsOf(o kadm.Offsets) map[string]map[int32]int64 {
	out := make(map[string]map[int32]int64, len(o))
	for t, ps := range o {
		out[t] = make(map[int32]int64, len(ps))
		for p, off := range ps {
			out[t][p] = off.At
		}
	}
	return out
}

// serveDistributed serves the distributed API on ln until the returned
// stop is called.
func serveDistributed(ln net.Listener, d deps, f runFlags, cfg *config.Config, r *groups.Runner, log *slog.Logger) (stop func()) {
	timeouts := d.httpTimeouts.orDefaults()
	api := &distributedAPI{r: r, job: cfg.Job.Name, reg: newDistributedRegistry(r, cfg.Job.Name), log: log, writeTimeout: timeouts.write}
	return serveAPI(ln, newAPIGuard(cfg.HTTP, log, nil).wrap(api.handler()), timeouts, f.addrFile, cfg.HTTP, log)
}

// distributedAPI serves the health, metrics and status of one instance
// of a distributed job: the partition groups it owns.
type distributedAPI struct {
	r            *groups.Runner
	job          string
	reg          *prometheus.Registry
	log          *slog.Logger
	writeTimeout time.Duration
}

func (s *distributedAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /api/v1/job", s.jobStatus)
	for _, route := range []string{"GET /api/v1/checkpoints", "POST /api/v1/savepoint", "POST /api/v1/stop"} {
		mux.HandleFunc(route, s.notDistributed)
	}
	webui.Mount(mux) // GET /: the web page over what this API offers
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.writeTimeout > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.writeTimeout))
		}
		mux.ServeHTTP(w, r)
	})
}

// distributedHealth answers /healthz: 200 while the instance joins, runs
// or leaves, 503 once it stopped.
type distributedHealth struct {
	Job         string `json:"job"`
	Mode        string `json:"mode"`
	State       string `json:"state"`
	GroupsOwned int    `json:"groups_owned"`
}

func (s *distributedAPI) healthz(w http.ResponseWriter, _ *http.Request) {
	st := s.r.Status()
	code := http.StatusOK
	if st.State == groups.StateStopped {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, distributedHealth{Job: s.job, Mode: "distributed", State: st.State, GroupsOwned: len(st.Groups)})
}

// distributedJobBody answers /api/v1/job in job.mode distributed.
type distributedJobBody struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// State is the instance's: joining, running, leaving, stopping,
	// stopped.
	State string `json:"state"`
	// ConsumerGroup is the Kafka consumer group the instances share.
	ConsumerGroup   string      `json:"consumer_group"`
	PartitionGroups int         `json:"partition_groups"`
	Groups          []groupBody `json:"groups"`
	// Rebalances count the member's assignments, revocations and losses;
	// Fenced the groups given up because a newer owner fenced them.
	Rebalances rebalancesBody `json:"rebalances"`
	Fenced     int64          `json:"fenced"`
}

// groupBody is one partition group this instance owns.
type groupBody struct {
	Group int `json:"group"`
	// State: claiming, running or stopping; Since when.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// PipelineState is the group's engine state (absent while claiming).
	PipelineState string `json:"pipeline_state,omitempty"`
	// LastCheckpoint is null until the group completes a checkpoint here.
	LastCheckpoint *lastCheckpointBody `json:"last_checkpoint"`
	Restarts       int64               `json:"restarts"`
}

type lastCheckpointBody struct {
	ID   int64     `json:"id"`
	Time time.Time `json:"time"`
}

type rebalancesBody struct {
	Assigned int64 `json:"assigned"`
	Revoked  int64 `json:"revoked"`
	Lost     int64 `json:"lost"`
}

func (s *distributedAPI) jobStatus(w http.ResponseWriter, _ *http.Request) {
	st := s.r.Status()
	body := distributedJobBody{Name: s.job, Mode: "distributed", State: st.State, ConsumerGroup: st.GroupID, PartitionGroups: st.G,
		Groups:     []groupBody{},
		Rebalances: rebalancesBody{Assigned: st.Assignments, Revoked: st.Revocations, Lost: st.Losses}, Fenced: st.Fenced}
	for _, g := range st.Groups {
		gb := groupBody{Group: g.Group, State: g.State, Since: g.Since, PipelineState: g.PipelineState, Restarts: g.Restarts}
		if g.LastCheckpoint > 0 {
			gb.LastCheckpoint = &lastCheckpointBody{ID: g.LastCheckpoint, Time: g.LastCheckpointTime}
		}
		body.Groups = append(body.Groups, gb)
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *distributedAPI) notDistributed(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotImplemented, errorBody{fmt.Sprintf(
		"%s %s is not available with job.mode distributed: each partition group checkpoints on its own; stop an instance with SIGTERM (its groups stop with final savepoints and move)",
		r.Method, r.URL.Path)})
}

// groupsCollector exports the instance's partition groups at each scrape.
type groupsCollector struct {
	r                                           *groups.Runner
	owned, rebalances, fenced, lastID, restarts *prometheus.Desc
}

func newGroupsCollector(r *groups.Runner, jobName string) *groupsCollector {
	cl := prometheus.Labels{"job_name": jobName}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("onceflow_"+name, help, labels, cl)
	}
	return &groupsCollector{
		r:          r,
		owned:      d("partition_groups_owned", "Partition groups this instance holds (claiming, running or stopping)."),
		rebalances: d("group_rebalances_total", "Rebalances that assigned this instance groups, revoked groups from it, or told it groups were lost.", "kind"),
		fenced:     d("group_fenced_total", "Partition groups given up because a newer owner fenced them (this instance was a zombie for them)."),
		lastID:     d("group_last_checkpoint_id", "Id of a held group's last completed checkpoint or savepoint in this instance (0: none yet).", "group"),
		restarts:   d("group_restarts_total", "Restarts of a held group's pipeline after failed attempts.", "group"),
	}
}

func (c *groupsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.owned, c.rebalances, c.fenced, c.lastID, c.restarts} {
		ch <- d
	}
}

func (c *groupsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Status()
	ch <- prometheus.MustNewConstMetric(c.owned, prometheus.GaugeValue, float64(len(st.Groups)))
	for kind, n := range map[string]int64{"assigned": st.Assignments, "revoked": st.Revocations, "lost": st.Losses} {
		ch <- prometheus.MustNewConstMetric(c.rebalances, prometheus.CounterValue, float64(n), kind)
	}
	ch <- prometheus.MustNewConstMetric(c.fenced, prometheus.CounterValue, float64(st.Fenced))
	for _, g := range st.Groups {
		label := strconv.Itoa(g.Group)
		ch <- prometheus.MustNewConstMetric(c.lastID, prometheus.GaugeValue, float64(g.LastCheckpoint), label)
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(g.Restarts), label)
	}
}

// newDistributedRegistry holds the instance's group metrics and the Go
// runtime's and process's.
func newDistributedRegistry(r *groups.Runner, jobName string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newGroupsCollector(r, jobName),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
