package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
	"github.com/onceflow/onceflow/state"
)

// A Go job (job.type go) is a Dataflow its program hands to package
// runner, which builds it here with the job's configuration, as it builds
// the built-in jobs. The Dataflow makes its operators with the engine's
// functions (engine.Map, engine.Process, …) and three of the Builder's:
//
//   - Source: the job's input, source.topic, decoded by the program;
//   - KeyBy: a keyBy whose key may not follow the input's partitioning;
//   - Sink: the job's output, sink.topic, as the sink section says.
//
// In job.mode single the job is one engine job, and KeyBy is
// engine.KeyBy: records reach their key's subtask through the process.
//
// In job.mode distributed each partition group builds the Dataflow once.
// A group reads only its own input partitions, so a KeyBy cuts the job
// there, as the built-in wordcount is cut (docs/distributed.md): the
// stage before it writes each record, its key and value encoded by the
// codecs KeyBy is given, to the repartition topic <job.name>-<uid>-
// repartition (G partitions, partition = key group mod G) with the
// exactly-once sink; the stage after it is an engine job of its own, named
// <job.name>/<uid>, that reads the group's partition of that topic
// read_committed, decodes the values and keys them again. Every stage has
// its own checkpoints (<checkpoint.dir>/<job.name>/<uid>/pg-<g>),
// transactional ids (<prefix>/<uid>-pg<g>) and state, as a stage 2 of
// the built-in jobs has.
//
// The rules below hold in both modes, so that a Dataflow that builds in
// one builds in the other: Source is called once; every stage ends in
// one sink (a KeyBy's repartition topic or Sink), so a stream cannot be
// both sunk and keyed by KeyBy, nor keyed twice; KeyBy uids are unique
// and hold no "/". A broken rule fails the build with an error naming the
// uid, and the engine job is never run.

// Dataflow builds the operators of a Go job on b: its program supplies
// it to package runner, which builds and runs it as processor run builds
// and runs the built-in jobs (job.type go). It may be called more than
// once in a process (once per restart of a build, once per partition
// group in job.mode distributed) and must build the same graph each time.
// An error it returns fails the build, as does one the Builder recorded.
type Dataflow func(b *Builder) error

// Builder hands a Dataflow its job's connectors, configured from the
// job's configuration (source, sink, checkpoint, state), and cuts the job
// into stages at KeyBy in job.mode distributed. It is used by one
// goroutine, during the Dataflow's call only.
type Builder struct {
	ctx context.Context
	cfg *config.Config // the job's, unscoped
	env Env
	// stages are the engine jobs built so far: one, or in job.mode
	// distributed one more per KeyBy.
	stages []*stage
	// cuts are the KeyBy uids so far.
	cuts []string
	// sourced: Source was called.
	sourced bool
	// conns replaces the Kafka connectors (BuildWithConnectors); nil in
	// every job Build builds. sunk: Sink was called on them.
	conns Connectors
	sunk  bool
	err   error
}

// Config is the job's configuration. The Dataflow must not change it.
func (b *Builder) Config() *config.Config { return b.cfg }

// Parallelism is job.parallelism, every operator's parallelism unless the
// Dataflow chooses another.
func (b *Builder) Parallelism() int { return b.cfg.Job.Parallelism }

// Distributed reports whether the Dataflow is built for a partition group
// of job.mode distributed, and which: the group's index and G.
func (b *Builder) Distributed() (group, groups int, ok bool) {
	if g := b.env.Group; g != nil {
		return g.Index, g.Count, true
	}
	return 0, 0, false
}

// fail records the first error of the build.
func (b *Builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// stageOf is the index of the stage whose engine job j is.
func (b *Builder) stageOf(j *engine.Job) (int, bool) {
	for i, st := range b.stages {
		if st.job == j {
			return i, true
		}
	}
	return 0, false
}

// Source is the job's input: source.topic read as the source section says
// (start position, isolation, consumer group, decode-error policy and
// dead-letter topic), each record decoded by decode; in job.mode
// distributed, only the partition group's partitions. An error decode
// returns is handled by source.on_decode_error, naming the record's
// topic, partition and offset. The source has parallelism
// job.parallelism and operator uid uid. A second call is an error
// (the Builder's: the stream it returns is never run).
func Source[T any](b *Builder, uid string, decode func(*kgo.Record) (T, error)) engine.Stream[T] {
	st := b.stages[0]
	if b.sourced {
		b.fail(fmt.Errorf("jobs: dataflow: Source %q: a job has one Source, called once", uid))
	}
	b.sourced = true
	if decode == nil {
		b.fail(fmt.Errorf("jobs: dataflow: Source %q: no decode function", uid))
		decode = func(*kgo.Record) (T, error) { var zero T; return zero, errors.New("no decode function") }
	}
	if b.conns != nil {
		raw := engine.FromSource(st.job, uid, b.cfg.Job.Parallelism, b.conns.Source(uid))
		return engine.Map(raw, uid+"-decode", func(r *kgo.Record) (T, error) {
			v, err := decode(r)
			if err != nil {
				return v, fmt.Errorf("decoding the record of %s partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			return v, nil
		})
	}
	s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[T]{
		Reader: st.src.reader, OnDecodeError: st.src.policy, DeadLetterTopic: st.src.dlq, Decode: decode})
	if err != nil {
		b.fail(fmt.Errorf("jobs: dataflow: Source %q: %w", uid, err))
	} else if st.stats == nil {
		st.stats = s.Stats
	}
	return engine.FromSource(st.job, uid, b.cfg.Job.Parallelism, s)
}

// Sink writes s to the job's output, sink.topic, as the sink section says
// (delivery, transactional id prefix, transaction timeout), with
// parallelism job.parallelism and operator uid uid. A record whose Topic
// is set goes to that topic instead, in the same transactions (a late-data
// or dead-letter topic); its Partition is kept when the client's
// partitioner keeps it. A stream whose stage already
// has its sink (another Sink, or a KeyBy's repartition topic in the same
// stage) is an error.
func Sink(b *Builder, s engine.Stream[*kgo.Record], uid string) {
	i, ok := b.stageOf(s.Job())
	if !ok {
		b.fail(fmt.Errorf("jobs: dataflow: Sink %q: the stream is not one of this Builder's", uid))
		return
	}
	st := b.stages[i]
	if b.conns != nil {
		if b.sunk {
			b.fail(fmt.Errorf("jobs: dataflow: Sink %q: %s already has its sink", uid, st.job.Status().Name))
			return
		}
		b.sunk = true
		engine.SinkTo(s, uid, b.cfg.Job.Parallelism, b.conns.Sink(uid))
		return
	}
	if st.sink != nil || st.ownSink {
		b.fail(fmt.Errorf("jobs: dataflow: Sink %q: %s already has its sink (one per stage: a KeyBy before it in the stage, or another sink)", uid, st.job.Status().Name))
		return
	}
	sink, err := st.newSink(st.cfg.Sink, nil)
	if err != nil {
		b.fail(fmt.Errorf("jobs: dataflow: Sink %q: %w", uid, err))
		return
	}
	st.sink = sink
	engine.SinkTo(s, uid, b.cfg.Job.Parallelism, sink)
}

// SinkTo writes s to the Dataflow's own sink, with parallelism
// job.parallelism and operator uid uid: a sink of the user's (a database,
// a service), not the job's sink section. Its exactly-once behaviour is
// the sink's: engine.Sink's contract (a writer per subtask, pre-commit at
// SnapshotState, commit at NotifyCheckpointComplete, commits again after a
// restore), which package twophase implements over any transactional
// system. testdriver's Crash shows whether it holds. It is the stage's
// sink, as Sink would be: a stage with a sink already is an error.
func SinkTo[T any](b *Builder, s engine.Stream[T], uid string, sink engine.Sink[T]) {
	i, ok := b.stageOf(s.Job())
	switch {
	case sink == nil:
		b.fail(fmt.Errorf("jobs: dataflow: SinkTo %q: no sink", uid))
		return
	case !ok:
		b.fail(fmt.Errorf("jobs: dataflow: SinkTo %q: the stream is not one of this Builder's", uid))
		return
	}
	st := b.stages[i]
	if b.conns != nil {
		if b.sunk {
			b.fail(fmt.Errorf("jobs: dataflow: SinkTo %q: %s already has its sink", uid, st.job.Status().Name))
			return
		}
		b.sunk = true
	} else {
		if st.sink != nil || st.ownSink {
			b.fail(fmt.Errorf("jobs: dataflow: SinkTo %q: %s already has its sink (one per stage: a KeyBy before it in the stage, or another sink)", uid, st.job.Status().Name))
			return
		}
		st.ownSink = true
	}
	engine.SinkTo(s, uid, b.cfg.Job.Parallelism, sink)
}

// KeyBy keys s by key, as engine.KeyBy does, for a keyed operator whose
// uid is uid (it names the cut and its topic, and is the uid the Dataflow
// gives that operator by convention). keyCodec encodes keys (their key
// groups, as engine.KeyBy computes them); valueCodec encodes the records,
// which cross a Kafka topic in job.mode distributed.
//
// In job.mode single it is engine.KeyBy(s, key, keyCodec). In job.mode
// distributed it cuts the job (see the comment at the top of this file):
// s's stage ends in the repartition topic <job.name>-<uid>-repartition,
// which is created when missing with G partitions (an existing one with
// another count is refused, naming job.partition_groups), and the stream
// returned belongs to the next stage. An encoding error fails the stage
// writing the record; a decoding error fails the stage reading it, naming
// the record.
func KeyBy[K, T any](b *Builder, s engine.Stream[T], uid string, key func(T) K, keyCodec state.Codec[K], valueCodec state.Codec[T]) engine.KeyedStream[K, T] {
	fail := func(format string, args ...any) engine.KeyedStream[K, T] {
		b.fail(fmt.Errorf("jobs: dataflow: KeyBy %q: "+format, append([]any{uid}, args...)...))
		return engine.KeyBy(s, key, keyCodec)
	}
	switch {
	case uid == "" || strings.ContainsAny(uid, `/\ `):
		return fail("a KeyBy's uid names its repartition topic and stage: it must be non-empty, without slashes or spaces")
	case slices.Contains(b.cuts, uid):
		return fail("uid used by another KeyBy")
	case key == nil || keyCodec == nil || valueCodec == nil:
		return fail("needs a key function, a key codec and a value codec")
	}
	b.cuts = append(b.cuts, uid)
	i, ok := b.stageOf(s.Job())
	if !ok {
		return fail("the stream is not one of this Builder's")
	}
	if b.env.Group == nil {
		return engine.KeyBy(s, key, keyCodec)
	}
	up := b.stages[i]
	if up.sink != nil || up.ownSink {
		return fail("%s already has its sink (one per stage: a Sink, or another KeyBy, in the same stage)", up.job.Status().Name)
	}
	next, err := b.cut(up, uid)
	if err != nil {
		return fail("%w", err)
	}
	groups, maxP := b.env.Group.Count, maxParallelism(b.cfg)
	p := b.cfg.Job.Parallelism
	records := engine.Map(s, uid+"-encode", func(v T) (*kgo.Record, error) {
		kb, err := keyCodec.Encode(key(v))
		if err != nil {
			return nil, fmt.Errorf("encoding the key of a record for repartition topic of %s: %w", uid, err)
		}
		vb, err := valueCodec.Encode(v)
		if err != nil {
			return nil, fmt.Errorf("encoding a record for repartition topic of %s: %w", uid, err)
		}
		return &kgo.Record{Key: kb, Value: vb, Partition: partitionOfKeyGroup(state.KeyGroupOf(kb, maxP), groups)}, nil
	})
	engine.SinkTo(records, uid+"-repartition", p, up.sink)

	src, err := sourcekafka.NewSource(sourcekafka.SourceOptions[T]{
		Reader: next.src.reader, OnDecodeError: next.src.policy,
		Decode: func(r *kgo.Record) (T, error) { return valueCodec.Decode(r.Value) }})
	if err != nil {
		return fail("%w", err)
	}
	next.stats = src.Stats
	return engine.KeyBy(engine.FromSource(next.job, UIDSource, p, src), key, keyCodec)
}

// Connectors stand in for the Kafka source and sink of a Dataflow built
// by BuildWithConnectors (package testdriver's in-memory ones). Each
// method is called once per build, with the uid the Dataflow gave
// Source or Sink.
type Connectors interface {
	// Source is the input jobs.Source reads, records as a Kafka consumer
	// would see them (topic, partition, offset, key, value, timestamp).
	Source(uid string) engine.Source[*kgo.Record]
	// Sink is the output jobs.Sink writes to.
	Sink(uid string) engine.Sink[*kgo.Record]
}

// BuildWithConnectors builds df on j in job.mode single with conns in
// place of Kafka: Source reads conns.Source(uid) and decodes each record
// in an operator of its own, uid "<uid>-decode" (a decode error fails the
// job attempt, naming the record's partition and offset: no
// source.on_decode_error policy applies); Sink writes to conns.Sink(uid).
// KeyBy is engine.KeyBy. cfg is what Builder.Config returns (its
// job.parallelism is every connector's); nothing else of it is read, and
// nothing contacts a cluster. The rules of a Dataflow hold (one Source,
// one Sink): a broken one, or an error df returns, is returned and j must
// not run.
func BuildWithConnectors(ctx context.Context, j *engine.Job, cfg *config.Config, conns Connectors, df Dataflow) error {
	if conns == nil || df == nil {
		return errors.New("jobs: BuildWithConnectors needs connectors and a dataflow")
	}
	b := &Builder{ctx: ctx, cfg: cfg, conns: conns, stages: []*stage{{cfg: cfg, job: j}}}
	if err := df(b); err != nil {
		return fmt.Errorf("jobs: dataflow of job %s: %w", cfg.Job.Name, err)
	}
	switch {
	case b.err != nil:
		return b.err
	case !b.sourced:
		return fmt.Errorf("jobs: dataflow of job %s: no Source: a Go job reads its input through jobs.Source", cfg.Job.Name)
	case !b.sunk:
		return fmt.Errorf("jobs: dataflow of job %s: no sink: end it with jobs.Sink or jobs.SinkTo", cfg.Job.Name)
	}
	return nil
}

// cut ends stage up in the repartition topic of uid and prepares the
// stage that reads it.
func (b *Builder) cut(up *stage, uid string) (*stage, error) {
	topic := repartitionTopicOf(b.cfg, uid)
	if err := ensureTopics(b.ctx, b.cfg, b.env.ClientOpts, b.env.Group.Count, []string{topic}); err != nil {
		return nil, err
	}
	upCfg, downCfg := stageConfigs(b.cfg, uid)
	sink, err := up.newSink(upCfg.Sink, []kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())})
	if err != nil {
		return nil, err
	}
	up.sink = sink
	downEnv := b.env
	downEnv.stage = downstream
	g := *b.env.Group
	g.CommitOffsets = nil
	downEnv.Group = &g
	next, err := prepare(b.ctx, downCfg, downEnv)
	if err != nil {
		return nil, fmt.Errorf("stage %s/%s of partition group %d (from %s): %w", b.cfg.Job.Name, uid, g.Index, topic, err)
	}
	b.stages = append(b.stages, next)
	return next, nil
}

// buildDataflow builds env.Dataflow: one stage in job.mode single (or a
// partition group without KeyBy), one more per KeyBy in a partition
// group. It checks the rules (see the comment at the top of this file)
// after the Dataflow returns.
func buildDataflow(ctx context.Context, cfg *config.Config, env Env) ([]*Built, error) {
	first, err := prepare(ctx, cfg, env)
	if err != nil {
		return nil, err
	}
	b := &Builder{ctx: ctx, cfg: cfg, env: env, stages: []*stage{first}}
	if err := env.Dataflow(b); err != nil {
		return nil, fmt.Errorf("jobs: dataflow of job %s: %w", cfg.Job.Name, err)
	}
	if b.err != nil {
		return nil, b.err
	}
	if !b.sourced {
		return nil, fmt.Errorf("jobs: dataflow of job %s: no Source: a Go job reads source.topic through jobs.Source", cfg.Job.Name)
	}
	out := make([]*Built, len(b.stages))
	for i, st := range b.stages {
		if st.sink == nil && !st.ownSink {
			return nil, fmt.Errorf("jobs: dataflow of job %s: %s has no sink: end it with jobs.Sink or jobs.SinkTo", cfg.Job.Name, st.job.Status().Name)
		}
		out[i] = st.built()
	}
	return out, nil
}
