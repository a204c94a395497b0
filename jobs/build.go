package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/optcheck"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/internal/statebackend"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
	"github.com/onceflow/onceflow/state"
)

// Env is what Build needs besides the config.
type Env struct {
	// ClientOpts connect to the cluster: brokers, TLS, SASL.
	ClientOpts []kgo.Opt
	// Logger receives the job's logs (nil: slog.Default()).
	Logger *slog.Logger
	// RestoreFrom is a checkpoint or savepoint directory to start from
	// (--from); "" starts from the latest retained checkpoint, if any.
	RestoreFrom string
	// Fresh (--fresh) starts over: the job's retained checkpoints and
	// savepoints are moved aside, not deleted (see Build).
	Fresh bool
	// AllowNonRestoredState lets a restore drop the state of operators the
	// job no longer has.
	AllowNonRestoredState bool
	// Version is the running binary's version, recorded in every
	// checkpoint (engine.Options.Version; "" takes the engine's default).
	Version string
	// Group builds one partition group of a distributed job (see Group);
	// nil builds the whole job. A group needs S3 checkpoints, and neither
	// RestoreFrom nor Fresh. A group of a wordcount or aggregate job has
	// two stages: build it with BuildGroup.
	Group *Group

	// Dataflow is a Go job's graph (job.type go); nil for the built-in
	// job types.
	Dataflow Dataflow

	// stage is the part of a two-stage group BuildGroup asks for.
	stage stageRole
}

// Built is a job ready to Run, with its connectors' statistics for
// metrics.
type Built struct {
	Job *engine.Job
	// Stats is safe for concurrent use.
	Stats func() Stats
}

// Stats are the connectors' statistics of a running job.
type Stats struct {
	// PendingTransactions counts the sink's pre-committed transactions
	// waiting for their checkpoint to complete.
	PendingTransactions int
	// OldestPending is the age of the sink's oldest uncommitted
	// transaction (zero: none).
	OldestPending time.Duration
	// RecordsRead counts every record the source read (skipped and
	// dead-lettered ones included); DecodeSkipped and DeadLettered count
	// the records the decode-error policy skipped or sent to the
	// dead-letter topic. All three only grow.
	RecordsRead, DecodeSkipped, DeadLettered int64
	// OffsetResets counts the source's jumps of positions out of their
	// logs under source.on_offset_out_of_range earliest or latest; it only
	// grows.
	OffsetResets int64
	// LateRecords counts the records the window job found too late for
	// every window (sent to window.late_topic when set); it only grows.
	LateRecords int64
	// ConsumerLag is how many records the source has yet to read; -1 when
	// unknown.
	ConsumerLag int64
	// Cluster is the job's outage tracker's status: whether the job is
	// waiting for the Kafka cluster (since when, the last error) and how
	// many outages it has waited out so far.
	Cluster outage.Status
}

// ConfigError is a configuration the cluster or the disk refuses, found
// while building: Key names the configuration key at fault.
type ConfigError struct {
	Key string
	Err error
}

// Error returns "config: <key>: <refusal>".
func (e *ConfigError) Error() string { return fmt.Sprintf("config: %s: %v", e.Key, e.Err) }

// Unwrap returns the refusal of the cluster or the disk.
func (e *ConfigError) Unwrap() error { return e.Err }

// The uids of the built-in jobs' operators. They name the operators'
// state in every checkpoint: changing one makes old checkpoints
// unrestorable (without AllowNonRestoredState).
const (
	UIDSource    = "source"
	UIDSplit     = "split"
	UIDCount     = "count"
	UIDAggregate = "aggregate"
	UIDFormat    = "format"
	UIDSink      = "sink"
)

// guardTimeout bounds the cluster requests Build makes.
const guardTimeout = 30 * time.Second

// Build turns a validated configuration into a job of the built-in type
// it names (copy, wordcount or aggregate), reading job.type, source,
// sink, checkpoint, state, restart and aggregate.
//
// Before anything is built it checks the cluster: the source, sink and
// dead-letter topics must exist, and for exactly_once delivery the transaction
// timeout must pass CheckTransactionTimeout against the broker's
// transaction.max.timeout.ms and a budget (sinkkafka.TimeoutBudget) of
// checkpoint.interval, (checkpoint.tolerable_failures + 1) ×
// checkpoint.timeout, the restart strategy's longest delay and
// kafka.outage_tolerance. A refusal is a *ConfigError naming the key.
//
// Checkpoints are stored under checkpoint.dir/<job.name>. Without
// RestoreFrom or Fresh the job resumes from the latest retained
// checkpoint or, when newer, the latest savepoint (a savepoint's
// transactions are committed, so resuming before it would write its
// records twice); a failed attempt restarts from the same choice. With
// Fresh, the job's checkpoints, savepoints included, are set aside under
// <job.name>.set-aside-<UTC time> next to them (a directory renamed, or S3
// objects copied then deleted; see setAside) and logged with what they
// held, so that the new run starts with no checkpoint and its ids start
// at 1; nothing is lost. Fresh and RestoreFrom exclude each other.
// Pending transactions of a set-aside checkpoint are not committed: the
// first writer of the new run aborts them with every other transaction
// of the prefix.
//
// Pebble state lives in state.dir/<job.name>, cleaned of what killed
// processes left.
//
// The source and the sink share one outage.Tracker, with
// kafka.outage_tolerance and the job's logger: a cluster that is away is
// waited for that long by whichever of them meets it, logged once, and
// reported in Stats.Cluster. The topic check above does not wait: a
// cluster that does not answer it is an error naming kafka.brokers, as at
// the run's start. Build starts nothing: the caller runs Built.Job.
func Build(ctx context.Context, cfg *config.Config, env Env) (*Built, error) {
	if err := checkType(cfg, env); err != nil {
		return nil, err
	}
	if env.Dataflow != nil && env.stage == wholeJob {
		if env.Group != nil {
			return nil, errors.New("jobs: a partition group of a Go job may run in stages joined by repartition topics: build it with BuildGroup")
		}
		stages, err := buildDataflow(ctx, cfg, env)
		if err != nil {
			return nil, err
		}
		return stages[0], nil
	}
	st, err := prepare(ctx, cfg, env)
	if err != nil {
		return nil, err
	}
	var extra []kgo.Opt
	if st.cfg.Job.Type == "copy" && env.stage == wholeJob {
		extra = append(extra, kgo.RecordPartitioner(sinkkafka.InputPartitioner()))
	}
	sink, err := st.newSink(st.cfg.Sink, extra)
	if err != nil {
		return nil, err
	}
	st.sink = sink
	cfg, j, src := st.cfg, st.job, st.src
	p := cfg.Job.Parallelism
	// pooled is the reader of the jobs that recycle every record they
	// read (sourcekafka.ReaderOptions.PoolBytes): the copy and the word
	// count.
	pooled := src.reader
	pooled.PoolBytes = cfg.Source.FetchPoolBytes
	switch {
	case env.stage != wholeJob:
		if st.stats, err = stageGraph(j, cfg, env, src, sink); err != nil {
			return nil, err
		}
	case cfg.Job.Type == "copy":
		// The sink recycles each record once written.
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[*kgo.Record]{
			Reader: pooled, OnDecodeError: src.policy, DeadLetterTopic: src.dlq, Decode: copyRecord})
		if err != nil {
			return nil, err
		}
		st.stats = s.Stats
		in := engine.FromSource(j, UIDSource, p, s)
		engine.SinkTo(in, UIDSink, p, sink)
	case cfg.Job.Type == "wordcount":
		// The decoder copies the line and recycles the record.
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[string]{
			Reader: pooled, OnDecodeError: src.policy, DeadLetterTopic: src.dlq,
			Decode: func(r *kgo.Record) (string, error) {
				line := string(r.Value)
				r.Recycle()
				return line, nil
			}})
		if err != nil {
			return nil, err
		}
		st.stats = s.Stats
		lines := engine.FromSource(j, UIDSource, p, s)
		words := engine.FlatMap(lines, UIDSplit, func(line string, out func(string)) error {
			for _, w := range Words([]byte(line)) {
				out(w)
			}
			return nil
		})
		countTo(words, p, sink)
	case cfg.Job.Type == "aggregate":
		a := cfg.Aggregate
		fn := Function(a.Function)
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[observation]{
			Reader: src.reader, OnDecodeError: src.policy, DeadLetterTopic: src.dlq,
			Decode: func(r *kgo.Record) (observation, error) {
				g, x, err := Extract(r.Value, a.GroupBy, a.Field, fn)
				return observation{group: g, x: x}, err
			}})
		if err != nil {
			return nil, err
		}
		st.stats = s.Stats
		obs := engine.FromSource(j, UIDSource, p, s)
		aggregateTo(obs, fn, p, sink)
	case cfg.Job.Type == "window":
		if env.Group != nil {
			return nil, &ConfigError{Key: "job.mode", Err: errors.New("job.type window runs in job.mode single for now: a repartition topic does not carry event time and watermarks yet")}
		}
		if st.stats, st.late, err = windowGraph(j, cfg, src, sink); err != nil {
			return nil, err
		}
	default:
		return nil, &ConfigError{Key: "job.type", Err: fmt.Errorf("%q is not one of copy, wordcount, aggregate, window", cfg.Job.Type)}
	}
	return st.built(), nil
}

// checkType refuses a job.type that does not fit env.Dataflow: go names a
// Go program's dataflow, which only such a program supplies.
func checkType(cfg *config.Config, env Env) error {
	switch {
	case env.Dataflow == nil && cfg.Job.Type == "go":
		return &ConfigError{Key: "job.type", Err: errors.New("go runs a Go dataflow compiled into a program built on package runner; processor runs copy, wordcount and aggregate")}
	case env.Dataflow != nil && cfg.Job.Type != "go":
		return &ConfigError{Key: "job.type", Err: fmt.Errorf("%q names a built-in job, and this program runs its own Go dataflow: leave job.type unset (go)", cfg.Job.Type)}
	}
	return nil
}

// stage is one engine job of a job being built (the whole job, or one
// stage of a partition group), made by prepare: its configuration as the
// stage sees it (a group's transactional id prefix), its source's
// settings and, once the graph is built, its sink and source statistics.
type stage struct {
	cfg     *config.Config
	env     Env
	log     *slog.Logger
	job     *engine.Job
	src     sourceConfig
	tracker *outage.Tracker
	// sink is the stage's one sink; stats its source's statistics (nil:
	// none yet); late the window job's late-record counter (nil: none).
	sink *sinkkafka.Sink
	// ownSink: the stage ends in a Dataflow's own sink (SinkTo), not sink.
	ownSink bool
	stats   func() sourcekafka.SourceStats
	late    *atomic.Int64
}

// prepare does everything Build does before the graph: the checks of the
// configuration and the cluster, --fresh, the engine options (the
// storage, claimed for a partition group), the outage tracker, the
// source's settings, and the engine job itself.
func prepare(ctx context.Context, cfg *config.Config, env Env) (*stage, error) {
	log := env.Logger
	if log == nil {
		log = slog.Default()
	}
	if env.Fresh && env.RestoreFrom != "" {
		return nil, errors.New("jobs: --fresh and --from exclude each other")
	}
	if g := env.Group; g != nil {
		if err := g.validate(); err != nil {
			return nil, err
		}
		if env.Fresh || env.RestoreFrom != "" {
			return nil, errors.New("jobs: a partition group resumes from its own latest checkpoint: no --fresh or --from")
		}
		if env.stage == wholeJob && keyedUID(cfg.Job.Type) != "" {
			return nil, fmt.Errorf("jobs: a partition group of a %s job runs in two stages joined by a repartition topic: build it with BuildGroup", cfg.Job.Type)
		}
		cfg = g.scoped(cfg)
		log = log.With("group", g.Index)
	}
	if env.Fresh {
		// Set aside only what a job the cluster accepts would have left.
		if err := checkCluster(ctx, cfg, env.ClientOpts); err != nil {
			return nil, err
		}
		if err := setAside(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	// The cluster check (a client, a listing, the transaction timeout)
	// and the storage (its open and, for a partition group, its claim)
	// ask different services: side by side, a moved group runs sooner. A
	// refused check wins over the storage's error; a group claimed by a
	// build the check then refuses stays claimed, which only fences a
	// former owner that lost the group anyway.
	var opts engine.Options
	var checkErr, optsErr error
	var wg sync.WaitGroup
	if !env.Fresh {
		wg.Go(func() { checkErr = checkCluster(ctx, cfg, env.ClientOpts) })
	}
	opts, optsErr = engineOptions(ctx, cfg, env, log)
	wg.Wait()
	if checkErr != nil {
		return nil, checkErr
	}
	if optsErr != nil {
		return nil, optsErr
	}
	tracker, err := outage.NewTracker(outage.Options{Tolerance: cfg.Kafka.OutageTolerance, Logger: log})
	if err != nil {
		return nil, &ConfigError{Key: "kafka.outage_tolerance", Err: err}
	}
	src, err := sourceSettings(cfg, env, log, tracker)
	if err != nil {
		return nil, err
	}
	if cfg.Checkpoint.Mode == "at_least_once" && cfg.Sink.Delivery == "exactly_once" {
		log.Warn("checkpoint.mode at_least_once does not align barriers: the exactly_once sink may commit records twice after a restore (at-least-once output)")
	}
	return &stage{cfg: cfg, env: env, log: log, job: engine.NewJob(jobName(cfg, env.Group), opts), src: src, tracker: tracker}, nil
}

// built is the stage as Build returns it.
func (st *stage) built() *Built {
	stats, sink, tracker, late := st.stats, st.sink, st.tracker, st.late
	return &Built{Job: st.job, Stats: func() Stats {
		var ss sourcekafka.SourceStats
		if stats != nil {
			ss = stats()
		}
		out := Stats{RecordsRead: ss.RecordsRead, DecodeSkipped: ss.DecodeSkipped, DeadLettered: ss.DeadLettered, ConsumerLag: ss.ConsumerLag,
			OffsetResets: ss.OffsetResets, Cluster: tracker.Status()}
		if late != nil {
			out.LateRecords = late.Load()
		}
		if sink != nil {
			ks := sink.Stats()
			out.PendingTransactions, out.OldestPending = ks.PendingTransactions, ks.OldestPending
		}
		return out
	}}
}

// copyRecord is the copy job's decoder: the output record has the input's
// key, value, headers and timestamp, as Kafka Streams, Flink's KafkaSink
// and MirrorMaker keep them, so that a copy (or a replay) carries the
// times the records happened, and an output topic's retention and
// time-based lookups follow them. (Stamping the time of writing instead
// read the clock once per record in kgo, about 7% of the copy's CPU.) It
// keeps the input's partition too, for the sink's partitioner
// (sinkkafka.InputPartitioner). It reuses the fetched record, which the source hands
// over for good (see sourcekafka.Decoder), instead of allocating one per
// record, and keeps its Context, through which the sink recycles it into
// the reader's pool once written (sourcekafka.ReaderOptions.PoolBytes).
// It clears the fields the fetch set, field by field: the pointers it
// keeps are not written again, each such write being a write barrier
// while the collector marks (TestCopyRecordKeepsOnlyWhatTheCopyCarries).
func copyRecord(r *kgo.Record) (*kgo.Record, error) {
	r.Topic = ""
	r.Attrs, r.ProducerEpoch, r.ProducerID, r.LeaderEpoch, r.Offset = kgo.RecordAttrs{}, 0, 0, 0, 0
	return r, nil
}

// countTo is the word count after the words: KeyBy the word, count,
// format, sink.
func countTo(words engine.Stream[string], p int, sink *sinkkafka.Sink) {
	keyed := engine.KeyBy(words, func(w string) string { return w }, keyCodec{})
	counts := engine.Process(keyed, UIDCount, p, func() engine.KeyedProcessFunction[string, string, wordCount] { return &countWords{} })
	out := engine.Map(counts, UIDFormat, func(c wordCount) (*kgo.Record, error) {
		return &kgo.Record{Key: []byte(c.word), Value: strconv.AppendInt(nil, c.n, 10)}, nil
	})
	engine.SinkTo(out, UIDSink, p, sink)
}

// aggregateTo is the aggregate job after the observations: KeyBy the
// group, fold, format, sink.
func aggregateTo(obs engine.Stream[observation], fn Function, p int, sink *sinkkafka.Sink) {
	keyed := engine.KeyBy(obs, func(o observation) string { return o.group }, keyCodec{})
	aggs := engine.Process(keyed, UIDAggregate, p, func() engine.KeyedProcessFunction[string, observation, groupAcc] {
		return &aggregateFn{fn: fn}
	})
	out := engine.Map(aggs, UIDFormat, func(g groupAcc) (*kgo.Record, error) {
		return &kgo.Record{Key: []byte(g.group), Value: []byte(Format(g.acc.Value))}, nil
	})
	engine.SinkTo(out, UIDSink, p, sink)
}

// wordCount is a word and how often it has been seen so far.
type wordCount struct {
	word string
	n    int64
}

// countWords keeps a count per word (keyed state "count") and emits the
// count after each occurrence.
type countWords struct{ count *state.ValueState[int64] }

func (c *countWords) Open(ctx *engine.KeyedContext) error {
	var err error
	c.count, err = state.NewValueState(ctx.Backend(), "count", state.Int64Codec{})
	return err
}

func (c *countWords) Process(_ *engine.KeyedContext, word, _ string, out func(wordCount)) error {
	n, _, err := c.count.Value()
	if err != nil {
		return fmt.Errorf("reading the count of %q: %w", word, err)
	}
	n++
	if err := c.count.Update(n); err != nil {
		return fmt.Errorf("updating the count of %q: %w", word, err)
	}
	out(wordCount{word: word, n: n})
	return nil
}

// observation is one input record of the aggregate job.
type observation struct {
	group string
	x     float64
}

// groupAcc is a group's aggregate after an observation.
type groupAcc struct {
	group string
	acc   Acc
}

// aggregateFn folds the observations of a group into keyed state "acc".
type aggregateFn struct {
	fn  Function
	acc *state.ValueState[Acc]
}

func (a *aggregateFn) Open(ctx *engine.KeyedContext) error {
	var err error
	a.acc, err = state.NewValueState(ctx.Backend(), "acc", state.JSONCodec[Acc]{})
	return err
}

func (a *aggregateFn) Process(_ *engine.KeyedContext, group string, o observation, out func(groupAcc)) error {
	cur, _, err := a.acc.Value()
	if err != nil {
		return fmt.Errorf("reading the aggregate of group %q: %w", group, err)
	}
	cur = a.fn.Add(cur, o.x)
	if err := a.acc.Update(cur); err != nil {
		return fmt.Errorf("updating the aggregate of group %q: %w", group, err)
	}
	out(groupAcc{group: group, acc: cur})
	return nil
}

// sourceConfig is what every job's source shares.
type sourceConfig struct {
	reader sourcekafka.ReaderOptions
	policy sourcekafka.OnDecodeError
	dlq    string
}

// sourceSettings configures the source, waiting out an outage through
// tracker.
func sourceSettings(cfg *config.Config, env Env, log *slog.Logger, tracker *outage.Tracker) (sourceConfig, error) {
	policy, err := sourcekafka.ParseOnDecodeError(cfg.Source.OnDecodeError)
	if err != nil {
		return sourceConfig{}, &ConfigError{Key: "source.on_decode_error", Err: err}
	}
	outOfRange, err := sourcekafka.ParseOnOffsetOutOfRange(cfg.Source.OnOffsetOutOfRange)
	if err != nil {
		return sourceConfig{}, &ConfigError{Key: "source.on_offset_out_of_range", Err: err}
	}
	src := sourceConfig{
		reader: sourcekafka.ReaderOptions{
			ClientOpts: env.ClientOpts, Topics: []string{cfg.Source.Topic},
			Start: sourcekafka.StartPosition(cfg.Source.Start), StartTime: cfg.Source.StartTimestamp,
			Group: cfg.Source.Group, ReadUncommitted: cfg.Source.Isolation == "read_uncommitted",
			DiscoveryInterval: cfg.Source.DiscoveryInterval, OnOutOfRange: outOfRange, Logger: log, Outage: tracker,
			PartitionGroup: partitionGroup(env.Group), FetchMaxBytes: cfg.Source.FetchMaxBytes,
		},
		policy: policy, dlq: cfg.Source.DeadLetterTopic,
	}
	if env.Group != nil {
		src.reader.CommitOffsets = env.Group.CommitOffsets
	}
	if env.stage == downstream {
		// The repartition topic is the job's own: what a completed
		// checkpoint of the stage reading it consumed is deleted.
		src.reader.PurgeInterval = repartitionPurgeInterval
	}
	return src, nil
}

// newSink configures a sink of the stage as c says (the job's sink
// section, or a repartition topic's), with the stage's transactional id
// prefix, checkpoint.max_concurrent (which sets the default slot count
// and the least exactly_once accepts) and outage tracker, and extra
// client options (a partitioner). Each refusal of the sink's options is a
// *ConfigError under its key (errors.Join of them when there are more).
func (st *stage) newSink(c config.Sink, extra []kgo.Opt) (*sinkkafka.Sink, error) {
	delivery, err := sinkkafka.ParseDelivery(c.Delivery)
	if err != nil {
		return nil, &ConfigError{Key: "sink.delivery", Err: err}
	}
	opts := st.env.ClientOpts
	if len(extra) > 0 {
		opts = append(slices.Clone(opts), extra...)
	}
	maxConcurrent := st.cfg.Checkpoint.MaxConcurrent
	sink, err := sinkkafka.NewSink(sinkkafka.SinkOptions{
		ClientOpts: opts, Topic: c.Topic, Delivery: delivery,
		TransactionalIDPrefix: st.cfg.Sink.TransactionalIDPrefix, Slots: c.Slots, MaxConcurrentCheckpoints: maxConcurrent,
		TransactionTimeout: c.TransactionTimeout, Logger: st.log, Outage: st.tracker,
		MaxBufferedRecords: c.MaxBufferedRecords, Compression: c.Compression, Linger: c.Linger,
		AsyncPreCommit: c.AsyncPreCommit, AsyncCommit: c.AsyncCommit,
	})
	if err != nil {
		return nil, sinkConfigError(err, c.Topic, delivery, maxConcurrent)
	}
	return sink, nil
}

// sinkConfigError maps the refusals of sinkkafka.SinkOptions.Validate to
// the config keys they came from; a slot count too few also names
// checkpoint.max_concurrent, which decides the least (the topic and
// delivery say which sink: a repartition topic's is exactly_once whatever
// sink.delivery says).
func sinkConfigError(err error, topic string, delivery sinkkafka.Delivery, maxConcurrent int) error {
	var errs []error
	for _, e := range optcheck.Errors(err) {
		var ce *ConfigError
		switch e.Option {
		case "Slots":
			ce = &ConfigError{Key: "sink.slots", Err: fmt.Errorf("the %s sink of topic %s with checkpoint.max_concurrent %d: %w", delivery, topic, maxConcurrent, e)}
		case "MaxConcurrentCheckpoints":
			ce = &ConfigError{Key: "checkpoint.max_concurrent", Err: e}
		case "TransactionTimeout":
			ce = &ConfigError{Key: "sink.transaction_timeout", Err: e}
		case "Delivery":
			ce = &ConfigError{Key: "sink.delivery", Err: e}
		case "MaxBufferedRecords":
			ce = &ConfigError{Key: "sink.max_buffered_records", Err: e}
		case "Compression":
			ce = &ConfigError{Key: "sink.compression", Err: e}
		case "Linger":
			ce = &ConfigError{Key: "sink.linger", Err: e}
		default:
			ce = &ConfigError{Key: "sink.transactional_id_prefix", Err: e}
		}
		errs = append(errs, ce)
	}
	if len(errs) == 0 {
		return &ConfigError{Key: "sink", Err: err}
	}
	return errors.Join(errs...)
}

// engineOptions maps the checkpoint, state and restart sections.
func engineOptions(ctx context.Context, cfg *config.Config, env Env, log *slog.Logger) (engine.Options, error) {
	ck := cfg.Checkpoint
	mode := engine.ExactlyOnce
	if ck.Mode == "at_least_once" {
		mode = engine.AtLeastOnce
	}
	restart, err := restartStrategy(cfg.Restart)
	if err != nil {
		return engine.Options{}, err
	}
	storage, err := newStorage(ctx, cfg, env.Group, log)
	if err != nil {
		return engine.Options{}, err
	}
	var backend state.KeyedBackendFactory
	switch cfg.State.Backend {
	case "memory":
		backend = statebackend.NewMemoryFactory()
	case "pebble":
		dir := stateDir(cfg, env.Group)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return engine.Options{}, &ConfigError{Key: "state.dir", Err: err}
		}
		if err := statebackend.CleanPebbleDir(nil, dir); err != nil {
			return engine.Options{}, &ConfigError{Key: "state.dir", Err: err}
		}
		backend = statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: dir, Incremental: cfg.State.Incremental, LocalRecovery: cfg.State.LocalRecovery, ChangelogLimit: cfg.State.ChangelogLimitBytes,
			Logger: statebackend.SlogLogger(log)})
	default:
		return engine.Options{}, &ConfigError{Key: "state.backend", Err: fmt.Errorf("%q is not one of memory, pebble", cfg.State.Backend)}
	}
	return engine.Options{
		Checkpoint: engine.CheckpointOptions{
			Interval: ck.Interval, Mode: mode, Timeout: ck.Timeout, MinPause: ck.MinPause,
			MaxConcurrent: ck.MaxConcurrent, TolerableFailures: ck.TolerableFailures,
			DeleteOnCancel: ck.OnCancel == "delete", RetainSavepoints: ck.RetainSavepoints,
		},
		Restart:               restart,
		Storage:               storage,
		Backend:               backend,
		MaxParallelism:        cfg.Job.MaxParallelism,
		DisableChaining:       !cfg.Job.OperatorChaining,
		RestoreFrom:           env.RestoreFrom,
		AllowNonRestoredState: env.AllowNonRestoredState,
		Version:               env.Version,
		Logger:                log,
	}, nil
}

// restartStrategy maps the restart section.
func restartStrategy(r config.Restart) (engine.RestartStrategy, error) {
	switch r.Strategy {
	case "none":
		return engine.NoRestart(), nil
	case "fixed-delay":
		return engine.FixedDelay(r.Attempts, r.Delay), nil
	case "failure-rate":
		return engine.FailureRate(r.MaxFailures, r.Interval, r.Delay), nil
	case "exponential-delay":
		return engine.ExponentialDelay(engine.ExponentialDelayOptions{
			Initial: r.InitialBackoff, Max: r.MaxBackoff, Multiplier: r.Multiplier,
			ResetAfter: r.ResetAfter, Jitter: r.Jitter,
		}), nil
	}
	return nil, &ConfigError{Key: "restart.strategy", Err: fmt.Errorf("%q is not one of fixed-delay, failure-rate, exponential-delay, none", r.Strategy)}
}

// checkCluster refuses topics that do not exist (source, sink and, for
// dead_letter, the dead-letter topic) and, for exactly_once, a transaction
// timeout the broker or the checkpoint budget refuses.
func checkCluster(ctx context.Context, cfg *config.Config, clientOpts []kgo.Opt) error {
	ctx, cancel := context.WithTimeout(ctx, guardTimeout)
	defer cancel()
	cl, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return fmt.Errorf("jobs: kafka client: %w", err)
	}
	defer cl.Close()
	want := []struct{ key, name string }{{"source.topic", cfg.Source.Topic}, {"sink.topic", cfg.Sink.Topic}}
	if cfg.Source.OnDecodeError == "dead_letter" {
		want = append(want, struct{ key, name string }{"source.dead_letter_topic", cfg.Source.DeadLetterTopic})
	}
	names := make([]string, len(want))
	for i, t := range want {
		names[i] = t.name
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx, names...)
	if err != nil {
		if outage.Retriable(err) {
			return fmt.Errorf("kafka.brokers: the cluster does not answer (listing topics %v): %w", names, err)
		}
		return fmt.Errorf("jobs: listing topics %v: %w", names, err)
	}
	for _, t := range want {
		d, ok := topics[t.name]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return &ConfigError{Key: t.key, Err: fmt.Errorf("topic %s does not exist (onceflow does not create topics)", t.name)}
		case d.Err != nil:
			return &ConfigError{Key: t.key, Err: fmt.Errorf("topic %s: %w", t.name, d.Err)}
		}
	}
	if cfg.Sink.Delivery != "exactly_once" {
		return nil
	}
	budget := sinkkafka.TimeoutBudget{
		CheckpointInterval: cfg.Checkpoint.Interval,
		CheckpointTimeout:  cfg.Checkpoint.Timeout,
		TolerableFailures:  cfg.Checkpoint.TolerableFailures,
		RestartDelay:       cfg.Restart.MaxRestartDelay(),
		OutageTolerance:    cfg.Kafka.OutageTolerance,
	}
	if err := sinkkafka.CheckTransactionTimeout(ctx, cl, cfg.Sink.TransactionTimeout, budget); err != nil {
		return &ConfigError{Key: "sink.transaction_timeout", Err: err}
	}
	return nil
}
