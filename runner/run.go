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
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/joblock"
	"github.com/onceflow/onceflow/jobs"
)

type runFlags struct {
	config                string
	set                   []string
	from                  string
	fresh                 bool
	allowNonRestoredState bool
	connectTimeout        time.Duration
	stopTimeout           time.Duration
	addrFile              string
}

func newRunCmd(d deps, j Job) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run a job until it is stopped: resumes from its latest retained checkpoint unless --from or --fresh says otherwise",
		Long: `Run a job from a YAML configuration file. Keys can also be set through
ONCEFLOW_* environment variables (ONCEFLOW_CHECKPOINT_INTERVAL=500ms) and
--set key=value flags; flags beat the environment, which beats the file.

SIGTERM or SIGINT stops the job with a savepoint (every pending transaction
committed, none left open) and prints the savepoint's path; a second signal
cancels at once. Health, metrics and the job API are served on http.listen.

With job.mode distributed the process is one instance of the job: it runs
the partition groups Kafka assigns it, and SIGTERM or SIGINT stops them with
final savepoints and leaves, so that the other instances take them over
(exit 0); --from and --fresh are refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJob(cmd.Context(), d, j, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "", "the job's YAML configuration file (without one, keys come from the environment and --set)")
	fl.StringArrayVar(&f.set, "set", nil, "set a configuration key, overriding the file and the environment (key=value; repeatable)")
	fl.StringVar(&f.from, "from", "", "resume from this checkpoint or savepoint directory instead of the latest retained checkpoint")
	fl.BoolVar(&f.fresh, "fresh", false, "start over: set the job's retained checkpoints and savepoints aside under <job.name>.set-aside-<UTC time> (not deleted)")
	fl.BoolVar(&f.allowNonRestoredState, "allow-non-restored-state", false, "let a restore drop the state of operators the job no longer has")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 15*time.Second, "how long to wait for the Kafka cluster to answer at start")
	fl.DurationVar(&f.stopTimeout, "stop-timeout", 0, "how long a stop with a savepoint may take before the job is cancelled (default checkpoint.timeout)")
	fl.StringVar(&f.addrFile, "addr-file", "", "write the HTTP listener's bound address to this file (for http.listen with port 0)")
	return cmd
}

// newLogger logs to w as the log section says.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// checkWritableDir creates dir if needed and proves it writable; the
// error names the key.
func checkWritableDir(key, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return usagef("config: %s: %w", key, err)
	}
	f, err := os.CreateTemp(dir, ".onceflow-write-check-*")
	if err != nil {
		return usagef("config: %s: %s is not writable: %w", key, dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("config: %s: %w", key, err)
	}
	return nil
}

// loadRunConfig loads and checks everything a run of j needs before it
// touches the cluster: every error here is bad usage or configuration.
// With j.Dataflow, job.type defaults to go and job.name to j.Name.
func loadRunConfig(d deps, j Job, f runFlags) (*config.Config, error) {
	if f.from != "" && f.fresh {
		return nil, usagef("--from and --fresh exclude each other")
	}
	if f.connectTimeout <= 0 {
		return nil, usagef("--connect-timeout must be positive")
	}
	if f.stopTimeout < 0 {
		return nil, usagef("--stop-timeout must not be negative")
	}
	cfg, err := config.Load(config.Sources{File: f.config, Env: d.env, Set: f.set, Defaults: configDefaults(j)})
	if err != nil {
		return nil, usageError{err}
	}
	if err := checkJobType(cfg, j); err != nil {
		return nil, err
	}
	if err := checkDistributedFlags(cfg, f); err != nil {
		return nil, err
	}
	if cfg.State.Backend == "pebble" {
		if err := checkWritableDir("state.dir", cfg.State.Dir); err != nil {
			return nil, err
		}
	}
	if _, isS3, _ := config.ParseS3Dir(cfg.Checkpoint.Dir); isS3 {
		// The S3 storage checks the bucket when the job is built,
		// resolves --from among the job's own checkpoints there, and sets
		// them aside for --fresh (jobs' setAside).
		return cfg, nil
	}
	if f.from != "" {
		if _, err := os.Stat(f.from); err != nil {
			return nil, usagef("--from: %w", err)
		}
	}
	if err := checkWritableDir("checkpoint.dir", cfg.Checkpoint.Dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

// configDefaults are the defaults j's program gives the configuration:
// none for the processor; job.type go and, when j names it, job.name for a
// Go job.
func configDefaults(j Job) map[string]any {
	if j.Dataflow == nil {
		return nil
	}
	defaults := map[string]any{"job.type": "go"}
	if j.Name != "" {
		defaults["job.name"] = j.Name
	}
	return defaults
}

// checkJobType refuses a job.type the program cannot run: go without a
// Dataflow (the processor), or a built-in type in a Go job's program.
func checkJobType(cfg *config.Config, j Job) error {
	switch {
	case j.Dataflow == nil && cfg.Job.Type == "go":
		return usagef("config: job.type: go runs a Go dataflow compiled into a program built on package runner; processor runs copy, wordcount and aggregate")
	case j.Dataflow != nil && cfg.Job.Type != "go":
		return usagef("config: job.type: %q names a built-in job, and this program runs its own Go dataflow: leave job.type unset (go), or run %s with processor",
			cfg.Job.Type, cfg.Job.Type)
	}
	return nil
}

// acquireJobLock takes the local job lock. With checkpoints in a
// directory it is <checkpoint.dir>/<job>.lock: one process per job and
// directory. With checkpoints in S3 it is <state.dir>/<job>.lock, whatever
// the state backend: a guard on this machine only (it also keeps a second
// process from cleaning the first one's Pebble directory). Nothing local
// can reach another machine: there the S3 storage's epoch stops the older
// process at its next checkpoint (see jobs.newStorage), which does not
// make two processes of one job safe; docs/operations.md says why.
func acquireJobLock(cfg *config.Config) (*joblock.Lock, error) {
	if !config.IsS3Dir(cfg.Checkpoint.Dir) {
		return joblock.Acquire(joblock.Path(cfg.Checkpoint.Dir, cfg.Job.Name))
	}
	lock, err := joblock.Acquire(joblock.Path(cfg.State.Dir, cfg.Job.Name))
	if err != nil {
		return nil, fmt.Errorf("state.dir (the local lock of a job with S3 checkpoints): %w", err)
	}
	return lock, nil
}

// started is what both run paths (single and distributed) hold before
// they touch the cluster: the local job lock, the logger, the Kafka client
// options and the HTTP listener (nil without http.listen).
type started struct {
	lock *joblock.Lock
	log  *slog.Logger
	opts []kgo.Opt
	ln   net.Listener
}

// takeRun takes the job lock first (one process per job and checkpoint
// directory, before anything of the job is touched; the kernel drops the
// lock when this process dies), logs the start, and listens before
// anything else is touched, so that a taken port fails early. On error it
// releases what it took.
func takeRun(cfg *config.Config, f runFlags, stderr io.Writer) (*started, error) {
	lock, err := acquireJobLock(cfg)
	if err != nil {
		return nil, err
	}
	st := &started{lock: lock, log: newLogger(cfg.Log, stderr)}
	logStart(st.log, cfg, f)
	if st.opts, err = clientOpts(cfg.Kafka); err != nil {
		st.close()
		return nil, err
	}
	if cfg.HTTP.Listen != "" {
		if st.ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			st.close()
			return nil, fmt.Errorf("http.listen: %w", err)
		}
	}
	return st, nil
}

// close closes the listener (when serving never started; Serve closes it
// too) and releases the lock.
func (s *started) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	s.lock.Release()
}

// serveAPI serves h on ln, logs where, warns of an open listener without a
// token and writes --addr-file; the returned stop shuts the server down
// (5s, then closes it) and waits for it.
func serveAPI(ln net.Listener, h http.Handler, timeouts httpTimeouts, addrFile string, c config.HTTP, log *slog.Logger) (stop func()) {
	addr := ln.Addr().String()
	srv := newHTTPServer(h, timeouts, log)
	done := make(chan struct{})
	go func() { // owned by stop, which waits for it
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	log.Info("http listening", "addr", addr, "metrics", "http://"+addr+"/metrics", "api", "http://"+addr+"/api/v1/job",
		"token", c.Token != "")
	warnOpenListener(log, ln.Addr(), c)
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(addr+"\n"), 0o644); err != nil {
			log.Warn("writing --addr-file", "path", addrFile, "err", err)
		}
	}
	return func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			srv.Close()
		}
		<-done
	}
}

// untilDone waits for the run's end on runDone and returns it; the first
// signal on sigs calls first (a stop that ends the run), every later one
// calls again (a cancellation).
func untilDone(runDone <-chan error, sigs <-chan os.Signal, first, again func(os.Signal)) error {
	signalled := false
	for {
		select {
		case err := <-runDone:
			return err
		case sig := <-sigs:
			if signalled {
				again(sig)
				continue
			}
			signalled = true
			first(sig)
		}
	}
}

// checkpointLocation names where the job's checkpoints live, for logs.
func checkpointLocation(cfg *config.Config) string {
	if d, isS3, err := config.ParseS3Dir(cfg.Checkpoint.Dir); isS3 && err == nil {
		return d.Job(cfg.Job.Name)
	}
	return filepath.Join(cfg.Checkpoint.Dir, cfg.Job.Name)
}

// restoreFrom is --from as the job's storage takes it: with S3 checkpoints
// an s3://<bucket>/<key> of the configured bucket becomes the key (a
// checkpoint's name, chk-<n> or savepoint-<id>, or its key, is taken as
// it is).
func restoreFrom(cfg *config.Config, from string) (string, error) {
	d, isS3, err := config.ParseS3Dir(cfg.Checkpoint.Dir)
	if !isS3 || err != nil || !strings.HasPrefix(from, config.S3Scheme) {
		return from, nil
	}
	key, ok := strings.CutPrefix(from, config.S3Scheme+d.Bucket+"/")
	if !ok {
		return "", usagef("--from %s: not in the bucket of checkpoint.dir %s", from, d)
	}
	return key, nil
}

// logStart logs what the job runs with; no secret is among these keys.
func logStart(log *slog.Logger, cfg *config.Config, f runFlags) {
	log.Info("starting",
		"job", cfg.Job.Name, "type", cfg.Job.Type, "parallelism", cfg.Job.Parallelism,
		"brokers", strings.Join(cfg.Kafka.Brokers, ","), "outage_tolerance", cfg.Kafka.OutageTolerance,
		"tls", cfg.Kafka.TLS.Enabled || cfg.Kafka.TLS.CAFile != "",
		"sasl", cfg.Kafka.SASL.Mechanism,
		"source", cfg.Source.Topic, "sink", cfg.Sink.Topic, "delivery", cfg.Sink.Delivery,
		"checkpoint_interval", cfg.Checkpoint.Interval, "checkpoint_mode", cfg.Checkpoint.Mode,
		"checkpoint_dir", checkpointLocation(cfg), "state_backend", cfg.State.Backend,
		"restart", cfg.Restart.Strategy, "from", f.from, "fresh", f.fresh)
}

// warnOpenListener warns, once at start, of an API that listens beyond
// loopback (all interfaces, or another address) without a token: anyone
// who reaches it can stop, cancel or savepoint the job.
func warnOpenListener(log *slog.Logger, bound net.Addr, c config.HTTP) {
	tcp, ok := bound.(*net.TCPAddr)
	if !ok || tcp.IP.IsLoopback() || c.Token != "" {
		return
	}
	log.Warn("the HTTP API listens beyond loopback without a token: anyone who reaches it can stop, cancel or savepoint the job; "+
		"set http.token (or ONCEFLOW_HTTP_TOKEN), or listen on 127.0.0.1", "addr", bound.String(), "http.listen", c.Listen)
}

// runJob is processor run of j: load, check, connect, build, serve, run
// until the job ends or is stopped.
func runJob(ctx context.Context, d deps, j Job, f runFlags, stdout, stderr io.Writer) error {
	// Take SIGTERM and SIGINT over first: one that arrives while the job
	// starts (connecting, recovering) stops it with a savepoint once it
	// runs, instead of killing the process.
	sigs, stopSignals := d.signals()
	defer stopSignals()

	cfg, err := loadRunConfig(d, j, f)
	if err != nil {
		return err
	}
	if d.ownsRuntime {
		defer startMemoryBudget(cfg.Process, d.getenv, newLogger(cfg.Log, stderr))()
	}
	if cfg.Job.Mode == "distributed" {
		return runDistributed(ctx, d, j.Dataflow, f, cfg, sigs, stderr)
	}
	st, err := takeRun(cfg, f, stderr)
	if err != nil {
		return err
	}
	defer st.close()
	log, opts, ln := st.log, st.opts, st.ln
	pingCtx, cancelPing := context.WithTimeout(ctx, f.connectTimeout)
	err = d.ping(pingCtx, opts, cfg.Kafka.Brokers)
	cancelPing()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kafka.brokers: %w (no answer within --connect-timeout %s)", err, f.connectTimeout)
	}
	if err != nil {
		return fmt.Errorf("kafka.brokers: %w", err)
	}

	jobCtx, cancelJob := context.WithCancelCause(ctx)
	defer cancelJob(nil)
	from, err := restoreFrom(cfg, f.from)
	if err != nil {
		return err
	}
	built, err := d.build(jobCtx, cfg, jobs.Env{ClientOpts: opts, Logger: log, RestoreFrom: from, Fresh: f.fresh,
		AllowNonRestoredState: f.allowNonRestoredState, Version: version, Dataflow: j.Dataflow})
	if err != nil {
		return fmt.Errorf("building job %s: %w", cfg.Job.Name, err)
	}

	ended, markEnded := context.WithCancel(context.Background())
	defer markEnded()
	stopTimeout := f.stopTimeout
	if stopTimeout == 0 {
		stopTimeout = cfg.Checkpoint.Timeout
	}
	ctl := &control{job: built.Job, cancelJob: cancelJob, ended: ended, stopTimeout: stopTimeout, log: log}
	o := &observer{job: built.Job, stats: built.Stats}

	if ln != nil {
		timeouts := d.httpTimeouts.orDefaults()
		api := &apiServer{o: o, ctl: ctl, reg: newRegistry(o, cfg.Job.Name), log: log, guard: newAPIGuard(cfg.HTTP, log, nil),
			writeTimeout: timeouts.write}
		defer serveAPI(ln, api.handler(), timeouts, f.addrFile, cfg.HTTP, log)()
	}

	runDone := make(chan error, 1)
	go func() { runDone <- built.Job.Run(jobCtx) }()

	// Observe the checkpoint history now and then so that the cumulative
	// counts miss nothing between scrapes.
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ended.Done():
				return
			case <-t.C:
				o.read()
			}
		}
	})

	runErr := untilDone(runDone, sigs, func(sig os.Signal) {
		log.Info("stopping with a savepoint; a second signal cancels at once", "signal", sig.String())
		wg.Go(func() {
			_, err := ctl.stopWithSavepoint(context.Background())
			switch {
			case err == nil:
			case errors.Is(err, errAlreadyStopping):
				log.Info("a stop is already in progress")
			default:
				ctl.cancel(fmt.Errorf("%w; cancelled instead", err))
			}
		})
	}, func(sig os.Signal) { ctl.cancel(fmt.Errorf("cancelled by a second signal (%s)", sig)) })
	markEnded()
	wg.Wait()

	switch {
	case runErr == nil:
		log.Info("job finished", "job", cfg.Job.Name)
		return nil
	case errors.Is(runErr, engine.ErrStopped):
		path := ctl.stoppedPath()
		log.Info("job stopped with a savepoint", "job", cfg.Job.Name, "savepoint", path)
		fmt.Fprintln(stdout, path)
		return nil
	case errors.Is(runErr, context.Canceled) && context.Cause(jobCtx) != nil:
		cause := context.Cause(jobCtx)
		if errors.Is(cause, context.Canceled) {
			cause = errors.New("cancelled")
		}
		return fmt.Errorf("job %s cancelled without a savepoint: %w", cfg.Job.Name, cause)
	default:
		return runErr
	}
}
