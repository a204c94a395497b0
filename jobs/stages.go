package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
	"github.com/onceflow/onceflow/state"
)

// A partition group of a distributed job reads only its own input
// partitions, so a KeyBy whose key does not follow the input partitioning
// (the word of wordcount, aggregate.group_by) cannot run inside one group:
// every group would count its own share of a word. BuildGroup cuts such a
// job into two stages joined by a repartition topic (docs/distributed.md,
// "Repartition topics"):
//
//   - upstream, stage 1: the group's input partitions → decode (and split)
//     → the exactly-once Kafka sink into <job.name>-<uid>-repartition,
//     whose G partitions are the job's partition groups; a record's key is
//     the KeyBy key and its partition is the key's key group mapped by
//     repartitionPartition;
//   - downstream, stage 2: partition g of the repartition topic, read
//     read_committed → KeyBy → the keyed operator (uid) → format → the
//     job's sink topic.
//
// Each stage of a group is its own checkpointed engine job. Stage 1 keeps
// the group's names (Group); stage 2's are those of a job named
// <job.name>/<uid> (job names hold no "/", so no job can have them):
//
//   - checkpoints: <checkpoint.dir>/<job.name>/<uid>/pg-<g>/;
//   - engine job name: <job.name>/<uid>/pg-<g>;
//   - transactional ids: <sink.transactional_id_prefix>/<uid>-pg<g>-…;
//   - Pebble state: <state.dir>/<job.name>/<uid>/pg-<g>;
//   - consumer group of its checkpointed offsets (lag monitoring only, a
//     group without members): <source.group>/<uid>.

// repartitionPurgeInterval is how often a stage reading a repartition
// topic deletes the records its completed checkpoints consumed
// (sourcekafka.ReaderOptions.PurgeInterval), as Kafka Streams purges its
// repartition topics (repartition.purge.interval.ms, 30 s by default):
// without it the topic keeps every record for the cluster's retention.
const repartitionPurgeInterval = 30 * time.Second

// stageRole is the part of a job a Build makes.
type stageRole int

const (
	// wholeJob is the job's whole pipeline (single mode, or a group of a
	// job without a KeyBy).
	wholeJob stageRole = iota
	// upstream is stage 1: source → decode/split → repartition topic.
	upstream
	// downstream is stage 2: repartition topic → keyed operator → sink.
	downstream
)

// keyCodec encodes the built-in jobs' keys, a word or a group, both for
// their KeyBy and for the repartition partition of a key: the two must
// agree for a stage-2 group to receive exactly the key groups of its
// partition.
type keyCodec = state.StringCodec

// keyedUID is the uid of the keyed operator of a job type, which names its
// repartition topic and its stage 2; "" for a type without a KeyBy.
func keyedUID(typ string) string {
	switch typ {
	case "wordcount":
		return UIDCount
	case "aggregate":
		return UIDAggregate
	}
	return ""
}

// RepartitionTopic is the internal topic of a distributed wordcount or
// aggregate job, <job.name>-<uid of the keyed operator>-repartition (e.g.
// wc-count-repartition), or "" for a job type without a KeyBy.
func RepartitionTopic(cfg *config.Config) string {
	uid := keyedUID(cfg.Job.Type)
	if uid == "" {
		return ""
	}
	return repartitionTopicOf(cfg, uid)
}

// repartitionTopicOf is the repartition topic of the cut at the keyed
// operator uid: <job.name>-<uid>-repartition.
func repartitionTopicOf(cfg *config.Config, uid string) string {
	return cfg.Job.Name + "-" + uid + "-repartition"
}

// RepartitionTopics lists the internal topics a distributed run of the job
// needs (none for copy).
func RepartitionTopics(cfg *config.Config) []string {
	if t := RepartitionTopic(cfg); t != "" {
		return []string{t}
	}
	return nil
}

// maxParallelism is the job's number of key groups, as the engine takes it.
func maxParallelism(cfg *config.Config) int {
	if cfg.Job.MaxParallelism > 0 {
		return cfg.Job.MaxParallelism
	}
	return state.DefaultMaxParallelism
}

// repartitionPartition is the partition of the repartition topic, of
// groups partitions, that holds key: its key group (state.KeyGroupOf, as
// the downstream KeyBy computes it) modulo groups. Partition g so holds
// key groups g, g+G, g+2G, …: every key group is in one partition, every
// partition is used when maxParallelism >= groups, and the key groups of a
// partition spread over all the subtasks of a stage 2 with parallelism p
// (each owning a contiguous range of key groups) as long as
// maxParallelism/p >= groups. Flink's contiguous mapping (kg*G/maxP)
// would put a partition's key groups in the range of one or two of those
// subtasks, leaving the others of every group idle.
func repartitionPartition(key string, groups, maxParallelism int) int32 {
	b, _ := keyCodec{}.Encode(key)
	return partitionOfKeyGroup(state.KeyGroupOf(b, maxParallelism), groups)
}

// partitionOfKeyGroup is the repartition partition of key group kg.
func partitionOfKeyGroup(kg, groups int) int32 { return int32(kg % groups) }

// stageConfigs are the configurations of the two stages of a keyed job
// (uid its keyed operator): stage 1 writes the repartition topic exactly
// once; stage 2 is the job <job.name>/<uid> reading it read_committed from
// its start, every decode error failing the job (the records are
// stage 1's own).
func stageConfigs(cfg *config.Config, uid string) (up, down *config.Config) {
	topic := repartitionTopicOf(cfg, uid)
	u := *cfg
	u.Sink.Topic = topic
	u.Sink.Delivery = string(sinkkafka.DeliveryExactlyOnce)
	d := *cfg
	d.Job.Name = cfg.Job.Name + "/" + uid
	d.Sink.TransactionalIDPrefix = cfg.Sink.TransactionalIDPrefix + "/" + uid
	d.Source = config.Source{
		Topic: topic, Start: string(sourcekafka.StartEarliest), Isolation: "read_committed",
		DiscoveryInterval: cfg.Source.DiscoveryInterval, OnDecodeError: string(sourcekafka.DecodeFail),
		OnOffsetOutOfRange: cfg.Source.OnOffsetOutOfRange,
	}
	if cfg.Source.Group != "" {
		d.Source.Group = cfg.Source.Group + "/" + uid
	}
	return &u, &d
}

// stageGraph builds the operators of stage env.stage of a keyed job on j
// (called by Build after the connectors are made).
func stageGraph(j *engine.Job, cfg *config.Config, env Env, src sourceConfig, sink *sinkkafka.Sink) (func() sourcekafka.SourceStats, error) {
	p := cfg.Job.Parallelism
	groups, maxP := env.Group.Count, maxParallelism(cfg)
	route := func(key string, value []byte) *kgo.Record {
		return &kgo.Record{Key: []byte(key), Value: value, Partition: repartitionPartition(key, groups, maxP)}
	}
	switch {
	case env.stage == upstream && cfg.Job.Type == "wordcount":
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[string]{
			Reader: src.reader, OnDecodeError: src.policy, DeadLetterTopic: src.dlq,
			Decode: func(r *kgo.Record) (string, error) { return string(r.Value), nil }})
		if err != nil {
			return nil, err
		}
		lines := engine.FromSource(j, UIDSource, p, s)
		words := engine.FlatMap(lines, UIDSplit, func(line string, out func(*kgo.Record)) error {
			for _, w := range Words([]byte(line)) {
				out(route(w, nil))
			}
			return nil
		})
		engine.SinkTo(words, UIDSink, p, sink)
		return s.Stats, nil
	case env.stage == upstream && cfg.Job.Type == "aggregate":
		a := cfg.Aggregate
		fn := Function(a.Function)
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[*kgo.Record]{
			Reader: src.reader, OnDecodeError: src.policy, DeadLetterTopic: src.dlq,
			Decode: func(r *kgo.Record) (*kgo.Record, error) {
				g, x, err := Extract(r.Value, a.GroupBy, a.Field, fn)
				if err != nil {
					return nil, err
				}
				var value []byte
				if fn != Count {
					value = strconv.AppendFloat(nil, x, 'g', -1, 64)
				}
				return route(g, value), nil
			}})
		if err != nil {
			return nil, err
		}
		engine.SinkTo(engine.FromSource(j, UIDSource, p, s), UIDSink, p, sink)
		return s.Stats, nil
	case env.stage == downstream && cfg.Job.Type == "wordcount":
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[string]{
			Reader: src.reader, OnDecodeError: src.policy,
			Decode: func(r *kgo.Record) (string, error) { return string(r.Key), nil }})
		if err != nil {
			return nil, err
		}
		countTo(engine.FromSource(j, UIDSource, p, s), p, sink)
		return s.Stats, nil
	case env.stage == downstream && cfg.Job.Type == "aggregate":
		fn := Function(cfg.Aggregate.Function)
		s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[observation]{
			Reader: src.reader, OnDecodeError: src.policy,
			Decode: func(r *kgo.Record) (observation, error) {
				o := observation{group: string(r.Key)}
				if fn == Count {
					return o, nil
				}
				x, err := strconv.ParseFloat(string(r.Value), 64)
				if err != nil {
					return o, fmt.Errorf("repartition record %s/%d at offset %d: value %q is not a number: %w", r.Topic, r.Partition, r.Offset, r.Value, err)
				}
				o.x = x
				return o, nil
			}})
		if err != nil {
			return nil, err
		}
		aggregateTo(engine.FromSource(j, UIDSource, p, s), fn, p, sink)
		return s.Stats, nil
	}
	return nil, &ConfigError{Key: "job.type", Err: fmt.Errorf("%q has no stages", cfg.Job.Type)}
}

// GroupPipeline is one partition group of a distributed job, built by
// BuildGroup: one stage for copy, two for wordcount and aggregate.
type GroupPipeline struct {
	// Index is the partition group.
	Index int
	// Stages are the group's engine jobs, upstream first. Their Stats are
	// each stage's own.
	Stages []*Built
}

// BuildGroup builds every stage of partition group env.Group of a
// distributed job. For copy that is Build's one pipeline. For wordcount
// and aggregate it is two (see the comment at the top of this file):
// stage 1 from the group's input partitions into the repartition topic,
// stage 2 from partition env.Group.Index of that topic to the sink topic.
// It first ensures the repartition topic (EnsureRepartitionTopics with
// env.Group.Count), creating it if missing.
//
// Stage 1's sink is the exactly-once Kafka sink whatever sink.delivery
// says: its transactions commit with stage 1's checkpoints, and stage 2
// reads read_committed whatever source.isolation says, so that a record
// reaches stage 2 once its stage-1 checkpoint completed. Stage 2 starts
// from the topic's start when it has no checkpoint. env.Group.CommitOffsets
// is stage 1's (the input's offsets); stage 2 commits its offsets of the
// repartition topic to <source.group>/<uid>, a group without members.
//
// Each stage is built by Build, with its refusals, both at once. Build
// starts nothing; a stage built while the other one failed is dropped.
func BuildGroup(ctx context.Context, cfg *config.Config, env Env) (*GroupPipeline, error) {
	g := env.Group
	if g == nil {
		return nil, errors.New("jobs: BuildGroup needs Env.Group, the partition group to build")
	}
	if err := g.validate(); err != nil {
		return nil, err
	}
	if env.Dataflow != nil {
		if err := checkType(cfg, env); err != nil {
			return nil, err
		}
		stages, err := buildDataflow(ctx, cfg, env)
		if err != nil {
			return nil, err
		}
		return &GroupPipeline{Index: g.Index, Stages: stages}, nil
	}
	uid := keyedUID(cfg.Job.Type)
	if uid == "" {
		b, err := Build(ctx, cfg, env)
		if err != nil {
			return nil, err
		}
		return &GroupPipeline{Index: g.Index, Stages: []*Built{b}}, nil
	}
	if err := EnsureRepartitionTopics(ctx, cfg, env.ClientOpts, g.Count); err != nil {
		return nil, err
	}
	upCfg, downCfg := stageConfigs(cfg, uid)
	upEnv := env
	upEnv.stage = upstream
	upEnv.ClientOpts = append(slices.Clone(env.ClientOpts), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	downEnv := env
	downEnv.stage = downstream
	downGroup := *g
	downGroup.CommitOffsets = nil
	downEnv.Group = &downGroup
	// The stages' builds (each a claim of its own checkpoints, a restore
	// read, the cluster checks) are independent: built side by side, a
	// moved group runs sooner.
	var up, down *Built
	var upErr, downErr error
	var wg sync.WaitGroup
	wg.Go(func() { up, upErr = Build(ctx, upCfg, upEnv) })
	wg.Go(func() { down, downErr = Build(ctx, downCfg, downEnv) })
	wg.Wait()
	if upErr != nil {
		return nil, fmt.Errorf("jobs: stage 1 of partition group %d (into %s): %w", g.Index, upCfg.Sink.Topic, upErr)
	}
	if downErr != nil {
		return nil, fmt.Errorf("jobs: stage 2 of partition group %d (from %s): %w", g.Index, downCfg.Source.Topic, downErr)
	}
	return &GroupPipeline{Index: g.Index, Stages: []*Built{up, down}}, nil
}

// Run runs every stage until all have ended. The first stage to fail (an
// error other than engine.ErrStopped, the cancellation of ctx included)
// cancels the others, and its error is returned. Run returns
// engine.ErrStopped when every stage ended and at least one was stopped
// with a savepoint (StopWithSavepoint stops them all), nil when every
// stage finished.
func (p *GroupPipeline) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type ended struct {
		name string
		err  error
	}
	done := make(chan ended, len(p.Stages))
	for _, s := range p.Stages {
		go func() { done <- ended{s.Job.Status().Name, s.Job.Run(ctx)} }()
	}
	var first error
	stopped := false
	for range p.Stages {
		e := <-done
		switch {
		case e.err == nil:
		case errors.Is(e.err, engine.ErrStopped):
			stopped = true
		case first == nil:
			first = fmt.Errorf("jobs: stage %s: %w", e.name, e.err)
			cancel()
		}
	}
	switch {
	case first != nil:
		return first
	case stopped:
		return engine.ErrStopped
	}
	return nil
}

// StopWithSavepoint stops every stage with a savepoint, all at once
// (engine.Job.StopWithSavepoint: each stage's sink commits its
// savepoint's transactions before it stops), and returns the savepoints'
// paths, upstream first, joined by ", ". The stages need no order: what
// stage 1 commits after stage 2's savepoint stays in the repartition
// topic, above the offsets that savepoint resumes stage 2 at. A stage
// that fails to stop does not keep the others from being stopped; the
// first failure, upstream first, is returned, naming its stage.
func (p *GroupPipeline) StopWithSavepoint(ctx context.Context) (string, error) {
	paths := make([]string, len(p.Stages))
	errs := make([]error, len(p.Stages))
	var wg sync.WaitGroup
	for i, s := range p.Stages {
		wg.Go(func() { paths[i], errs[i] = s.Job.StopWithSavepoint(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return "", fmt.Errorf("jobs: stopping stage %s with a savepoint: %w", p.Stages[i].Job.Status().Name, err)
		}
	}
	return strings.Join(paths, ", "), nil
}

// StageStatus is every stage's engine status, upstream first.
func (p *GroupPipeline) StageStatus() []engine.Status {
	out := make([]engine.Status, len(p.Stages))
	for i, s := range p.Stages {
		out[i] = s.Job.Status()
	}
	return out
}

// Status sums the stages up as one engine status (a group's in the job
// API): the first stage's name (<job>/pg-<g>), checkpoints and last
// checkpoint; the stages' state when they agree, else the first one not
// RUNNING; their restarts added up; every stage's operators, a later
// stage's uids prefixed with its keyed operator's ("count/source"). Each
// stage's own is in StageStatus.
func (p *GroupPipeline) Status() engine.Status {
	all := p.StageStatus()
	out := all[0]
	out.Operators = slices.Clone(out.Operators)
	for _, st := range all[1:] {
		if out.State == engine.JobRunning && st.State != engine.JobRunning {
			out.State = st.State
		}
		out.Restarts += st.Restarts
		for _, op := range st.Operators {
			op.UID = stagePrefix(st.Name) + op.UID
			out.Operators = append(out.Operators, op)
		}
	}
	return out
}

// stagePrefix is "<uid>/" for the engine name <job>/<uid>/pg-<g> of a
// stage 2.
func stagePrefix(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[len(parts)-2] + "/"
}

// Stats sums up the stages for the group's metrics: what the source read
// (RecordsRead, DecodeSkipped, DeadLettered, OffsetResets, ConsumerLag)
// is the first stage's, of the input topic; PendingTransactions is the
// stages' sum and OldestPending their oldest; Cluster is the first stage's
// unless a later stage is waiting for the cluster and the first is not.
// Safe for concurrent use.
func (p *GroupPipeline) Stats() Stats {
	var out Stats
	for i, s := range p.Stages {
		st := s.Stats()
		if i == 0 {
			out = st
			continue
		}
		out.PendingTransactions += st.PendingTransactions
		out.OldestPending = max(out.OldestPending, st.OldestPending)
		if st.Cluster.Down && !out.Cluster.Down {
			out.Cluster = st.Cluster
		}
	}
	return out
}

// leaderWait is how often EnsureRepartitionTopics looks whether a topic it
// created has its leaders.
const leaderWait = 100 * time.Millisecond

// EnsureRepartitionTopics makes sure every repartition topic of the job
// (RepartitionTopics) exists with groups partitions, one per partition
// group: a missing one is created with the cluster's default replication
// factor and topic configuration, and waited for until every partition has
// a leader (within 30s). An existing topic with another partition count is
// refused as a *ConfigError naming job.partition_groups, the topic and its
// count: the key groups of its partitions would not be the groups'. A
// topic another instance creates at the same moment is accepted when its
// count is right. groups above job.max_parallelism is refused too (a
// partition would hold no key group). A cluster that does not answer is an
// error naming kafka.brokers.
func EnsureRepartitionTopics(ctx context.Context, cfg *config.Config, clientOpts []kgo.Opt, groups int) error {
	return ensureTopics(ctx, cfg, clientOpts, groups, RepartitionTopics(cfg))
}

// ensureTopics is EnsureRepartitionTopics for the given topics (a Go
// job's, known once its Dataflow is built).
func ensureTopics(ctx context.Context, cfg *config.Config, clientOpts []kgo.Opt, groups int, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	if mp := maxParallelism(cfg); groups < 1 || groups > mp {
		return &ConfigError{Key: "job.partition_groups", Err: fmt.Errorf("%d partition groups for repartition topic %s: must be within 1..job.max_parallelism (%d), each partition holding key groups", groups, topics[0], mp)}
	}
	ctx, cancel := context.WithTimeout(ctx, guardTimeout)
	defer cancel()
	// The client's metadata must not be older than a wait, or a topic
	// just created stays unknown for kgo's default 5s.
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.MetadataMinAge(leaderWait))...)
	if err != nil {
		return fmt.Errorf("jobs: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	missing, err := checkRepartitionTopics(ctx, adm, topics, groups, false)
	if err != nil || len(missing) == 0 {
		return err
	}
	created, err := adm.CreateTopics(ctx, int32(groups), -1, nil, missing...)
	if err != nil {
		return clusterError(fmt.Sprintf("creating repartition topics %v", missing), err)
	}
	for _, t := range missing {
		if r := created[t]; r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("jobs: creating repartition topic %s with %d partitions: %w", t, groups, r.Err)
		}
	}
	for {
		missing, err := checkRepartitionTopics(ctx, adm, topics, groups, true)
		if err != nil || len(missing) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("jobs: repartition topics %v created but without leaders for every partition after %s", missing, guardTimeout)
		case <-time.After(leaderWait):
		}
	}
}

// checkRepartitionTopics returns the topics that do not exist (with
// leaders, every partition having one) and refuses one with a partition
// count other than groups.
func checkRepartitionTopics(ctx context.Context, adm *kadm.Client, topics []string, groups int, leaders bool) ([]string, error) {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, clusterError(fmt.Sprintf("listing repartition topics %v", topics), err)
	}
	var missing []string
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) || errors.Is(d.Err, kerr.LeaderNotAvailable):
			missing = append(missing, t)
		case d.Err != nil:
			return nil, fmt.Errorf("jobs: repartition topic %s: %w", t, d.Err)
		case len(d.Partitions) != groups:
			return nil, &ConfigError{Key: "job.partition_groups", Err: fmt.Errorf(
				"repartition topic %s has %d partitions, and job.partition_groups is %d: a distributed job keeps its G (delete the topic only with the checkpoints of its stages)",
				t, len(d.Partitions), groups)}
		case leaders && slices.ContainsFunc(d.Partitions.Sorted(), func(p kadm.PartitionDetail) bool { return p.Leader < 0 || p.Err != nil }):
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// clusterError names kafka.brokers when the cluster does not answer.
func clusterError(what string, err error) error {
	if outage.Retriable(err) {
		return fmt.Errorf("kafka.brokers: the cluster does not answer (%s): %w", what, err)
	}
	return fmt.Errorf("jobs: %s: %w", what, err)
}
