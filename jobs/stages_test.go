package jobs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	"github.com/onceflow/onceflow/state"
)

// Every key group is in exactly one partition of the repartition topic,
// the partitions are balanced (every one used when there are at least as
// many key groups as partitions), and each partition's key groups reach
// every subtask of a stage 2 whose subtasks own at least G key groups.
// A key's partition is its KeyBy key group's.
func TestRepartitionPartitionsHoldWholeKeyGroups(t *testing.T) {
	for _, maxP := range []int{1, 7, 128, 1000} {
		for _, groups := range []int{1, 2, 3, 4, 8, 12, 64, 128} {
			if groups > maxP {
				continue
			}
			perPartition := make([][]int, groups)
			for kg := range maxP {
				p := partitionOfKeyGroup(kg, groups)
				if p < 0 || int(p) >= groups {
					t.Fatalf("maxP %d, G %d: key group %d maps to partition %d, outside 0..%d", maxP, groups, kg, p, groups-1)
				}
				if again := partitionOfKeyGroup(kg, groups); again != p {
					t.Fatalf("maxP %d, G %d: key group %d maps to %d, then to %d", maxP, groups, kg, p, again)
				}
				perPartition[p] = append(perPartition[p], kg)
			}
			least, most := maxP, 0
			for _, kgs := range perPartition {
				least, most = min(least, len(kgs)), max(most, len(kgs))
			}
			if least == 0 || most-least > 1 {
				t.Fatalf("maxP %d, G %d: partitions hold %d to %d key groups, want all used and within one of each other", maxP, groups, least, most)
			}
			for _, p := range []int{1, 2, 3, 4} {
				if maxP/p < groups {
					continue
				}
				for g, kgs := range perPartition {
					reached := map[int]bool{}
					for _, kg := range kgs {
						reached[state.SubtaskForKeyGroup(kg, p, maxP)] = true
					}
					if len(reached) != p {
						t.Fatalf("maxP %d, G %d: the key groups of partition %d reach %d of the %d subtasks of stage 2", maxP, groups, g, len(reached), p)
					}
				}
			}
		}
	}
	for _, w := range []string{"", "a", "flink", "kafka", "ünïcode", strings.Repeat("x", 300)} {
		b, _ := keyCodec{}.Encode(w)
		kg := state.KeyGroupOf(b, 128)
		if got, want := repartitionPartition(w, 8, 128), partitionOfKeyGroup(kg, 8); got != want {
			t.Fatalf("word %q: partition %d, want %d (its key group %d)", w, got, want, kg)
		}
	}
}

// stageNames are the names one stage of one group owns.
type stageNames struct {
	what, engine, stateDir, prefix, consumerGroup string
}

func namesOf(t *testing.T, cfg *config.Config, groups int) []stageNames {
	t.Helper()
	out := []stageNames{{what: cfg.Job.Name + " single", engine: jobName(cfg, nil), stateDir: stateDir(cfg, nil),
		prefix: cfg.Sink.TransactionalIDPrefix, consumerGroup: cfg.Source.Group}}
	uid := keyedUID(cfg.Job.Type)
	for g := range groups {
		grp := &Group{Index: g, Count: groups}
		stages := []*config.Config{cfg}
		if uid != "" {
			up, down := stageConfigs(cfg, uid)
			stages = []*config.Config{up, down}
		}
		for i, c := range stages {
			out = append(out, stageNames{what: fmt.Sprintf("%s group %d stage %d", cfg.Job.Name, g, i+1),
				engine: jobName(c, grp), stateDir: stateDir(c, grp), prefix: grp.scoped(c).Sink.TransactionalIDPrefix,
				consumerGroup: c.Source.Group})
		}
	}
	return out
}

// The stages of every group have names of their own: engine job (and S3
// checkpoint) names, Pebble directories and transactional id prefixes,
// and the stage-2 consumer groups are not the job's (its instances are
// members of that one). Stage 2's names start <job>/<uid>, which no
// job's can (job names hold no "/").
func TestStageNamesAreTheirOwn(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "wordcount", "job.name=wc")
	names := namesOf(t, cfg, 12)
	for _, n := range names {
		t.Logf("%-26s engine %-14s state %-40s ids %s-<subtask>-<slot> offsets to %s", n.what, n.engine, n.stateDir, n.prefix, n.consumerGroup)
	}
	for _, field := range []struct {
		name string
		of   func(stageNames) string
	}{
		{"engine job name", func(n stageNames) string { return n.engine }},
		{"state dir", func(n stageNames) string { return n.stateDir }},
		{"transactional id prefix", func(n stageNames) string { return n.prefix }},
	} {
		seen := map[string]string{}
		for _, n := range names {
			v := field.of(n)
			if other, dup := seen[v]; dup {
				t.Fatalf("%s %q is both %s's and %s's", field.name, v, other, n.what)
			}
			seen[v] = n.what
		}
	}
	want := map[string]string{
		"wc group 3 stage 1": "wc/pg-3 " + filepath.Join(dir, "state", "wc", "pg-3") + " wc-pg3 onceflow-wc",
		"wc group 3 stage 2": "wc/count/pg-3 " + filepath.Join(dir, "state", "wc", "count", "pg-3") + " wc/count-pg3 onceflow-wc/count",
	}
	for _, n := range names {
		if w, ok := want[n.what]; ok {
			if got := strings.Join([]string{n.engine, n.stateDir, n.prefix, n.consumerGroup}, " "); got != w {
				t.Fatalf("%s: names %q, want %q", n.what, got, w)
			}
		}
	}
	if got := RepartitionTopics(cfg); !slices.Equal(got, []string{"wc-count-repartition"}) {
		t.Fatalf("repartition topics %v, want [wc-count-repartition]", got)
	}
	agg := testConfig(t, dir, "aggregate", "job.name=agg", "aggregate.group_by=g")
	if got := RepartitionTopics(agg); !slices.Equal(got, []string{"agg-aggregate-repartition"}) {
		t.Fatalf("repartition topics %v, want [agg-aggregate-repartition]", got)
	}
	if got := RepartitionTopics(testConfig(t, dir, "copy")); got != nil {
		t.Fatalf("a copy job has repartition topics %v", got)
	}
}

// No transactional id of one stage or group is taken for another's by the
// sink's own parsing (sinkkafka.ListOpenTransactions lists the ids its
// prefix's recovery would abort): open transactions of every stage of
// groups 0..10 (pg1 beside pg10), of the job in single mode and of a job
// named wc-count (whose ids a "<prefix>-<uid>" stage 2 would share), and
// each prefix lists exactly its own.
func TestTransactionalIDsOfStagesAndGroupsDoNotCollide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fakeCluster(t)
	dir := t.TempDir()
	names := append(namesOf(t, testConfig(t, dir, "wordcount", "job.name=wc"), 11),
		namesOf(t, testConfig(t, dir, "wordcount", "job.name=wc-count"), 2)...)
	own := map[string][]string{}
	for _, n := range names {
		for _, id := range []string{sinkkafka.TransactionalID(n.prefix, 0, 0), sinkkafka.TransactionalID(n.prefix, 10, 1)} {
			cl, err := kgo.NewClient(append(slices.Clone(client), kgo.TransactionalID(id), kgo.DefaultProduceTopic("in"))...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cl.Close)
			if err := cl.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(id)}).FirstErr(); err != nil {
				t.Fatalf("producing in transaction %s: %v", id, err)
			}
			own[n.prefix] = append(own[n.prefix], id)
		}
	}
	adm, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	for _, n := range names {
		open, err := sinkkafka.ListOpenTransactions(ctx, adm, n.prefix)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range open {
			got = append(got, o.TransactionalID)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(own[n.prefix]))
		if !slices.Equal(got, want) {
			t.Fatalf("%s: prefix %s lists open transactions %v, want only its own %v", n.what, n.prefix, got, want)
		}
	}
}

// Build refuses a partition group of a job with a KeyBy: counted per
// group, its output would be wrong.
func TestBuildRefusesAGroupOfAKeyedJob(t *testing.T) {
	for _, typ := range []string{"wordcount", "aggregate"} {
		cfg := testConfig(t, t.TempDir(), typ, "aggregate.group_by=g")
		_, err := Build(context.Background(), cfg, Env{Group: &Group{Index: 1, Count: 2}})
		if err == nil || !strings.Contains(err.Error(), "BuildGroup") || !strings.Contains(err.Error(), typ) {
			t.Fatalf("%s: Build of a group returned %v, want a refusal naming BuildGroup", typ, err)
		}
	}
}

// EnsureRepartitionTopics creates the topic with G partitions, accepts it
// as it is on the next call, refuses it under another G naming the topic,
// its count and the key, and refuses more groups than key groups. A copy
// job has no topic to create.
func TestEnsureRepartitionTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fakeCluster(t)
	cfg := testConfig(t, t.TempDir(), "wordcount", "job.name=wc", "job.max_parallelism=16")
	adm, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	partitions := func() int {
		t.Helper()
		d, err := kadm.NewClient(adm).ListTopics(ctx, "wc-count-repartition")
		if err != nil {
			t.Fatal(err)
		}
		return len(d["wc-count-repartition"].Partitions)
	}
	for range 2 {
		if err := EnsureRepartitionTopics(ctx, cfg, client, 3); err != nil {
			t.Fatal(err)
		}
		if n := partitions(); n != 3 {
			t.Fatalf("wc-count-repartition has %d partitions, want 3", n)
		}
	}
	err = EnsureRepartitionTopics(ctx, cfg, client, 4)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "job.partition_groups" || !strings.Contains(err.Error(), "wc-count-repartition has 3 partitions") ||
		!strings.Contains(err.Error(), "job.partition_groups is 4") {
		t.Fatalf("another G: %v, want a refusal naming the topic, its 3 partitions and job.partition_groups 4", err)
	}
	err = EnsureRepartitionTopics(ctx, testConfig(t, t.TempDir(), "wordcount", "job.name=wc2", "job.max_parallelism=16"), client, 17)
	if !errors.As(err, &ce) || ce.Key != "job.partition_groups" || !strings.Contains(err.Error(), "job.max_parallelism (16)") {
		t.Fatalf("G above max parallelism: %v, want a refusal naming job.max_parallelism", err)
	}
	if err := EnsureRepartitionTopics(ctx, testConfig(t, t.TempDir(), "copy", "job.name=cp"), client, 3); err != nil {
		t.Fatal(err)
	}
	d, err := kadm.NewClient(adm).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := d.Names(); !slices.Equal(names, []string{"in", "out", "wc-count-repartition"}) {
		t.Fatalf("topics %v, want in, out and wc-count-repartition only", names)
	}
}

// idleSource never yields a record; a reader fails when its fail channel
// says so.
type idleSource struct{ fail chan error }

func (s idleSource) NewReader(context.Context, engine.Scope, [][]byte) (engine.SourceReader[int], error) {
	return s, nil
}

func (s idleSource) Next(ctx context.Context) (int, bool, error) {
	select {
	case <-ctx.Done():
		return 0, false, nil
	case err := <-s.fail:
		return 0, false, err
	}
}

func (idleSource) SnapshotState(int64) ([][]byte, error)                 { return nil, nil }
func (idleSource) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (idleSource) Close() error                                          { return nil }

type discardSink struct{}

func (discardSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[int], error) {
	return discardSink{}, nil
}
func (discardSink) Write(context.Context, int) error                       { return nil }
func (discardSink) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (discardSink) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (discardSink) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (discardSink) Close(context.Context) error                            { return nil }

// twoStages is a GroupPipeline of two idle engine jobs; fail[i] fails
// stage i.
func twoStages() (*GroupPipeline, []chan error) {
	p := &GroupPipeline{}
	var fail []chan error
	for _, name := range []string{"stage-1", "stage-2"} {
		f := make(chan error, 1)
		j := engine.NewJob(name, engine.Options{})
		engine.SinkTo(engine.FromSource(j, UIDSource, 1, idleSource{f}), UIDSink, 1, discardSink{})
		p.Stages = append(p.Stages, &Built{Job: j, Stats: func() Stats { return Stats{} }})
		fail = append(fail, f)
	}
	return p, fail
}

func runInBackground(ctx context.Context, p *GroupPipeline) chan error {
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return done
}

// The first stage to fail cancels the other, and Run returns its error
// naming the stage.
func TestGroupPipelineFirstFailureCancelsTheOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, fail := twoStages()
	done := runInBackground(ctx, p)
	boom := errors.New("boom")
	fail[1] <- boom
	err := <-done
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "stage stage-2") {
		t.Fatalf("Run returned %v, want stage stage-2's boom", err)
	}
	if st := p.StageStatus(); st[0].State != engine.JobCanceled || st[1].State != engine.JobFailed {
		t.Fatalf("stage states %s, %s; want CANCELED, FAILED", st[0].State, st[1].State)
	}
	if st := p.Status(); st.Name != "stage-1" || st.State != engine.JobCanceled {
		t.Fatalf("the group's status is %s's %s, want stage-1's CANCELED", st.Name, st.State)
	}
}

// StopWithSavepoint stops both stages and returns both savepoints; Run
// then returns ErrStopped.
func TestGroupPipelineStopsEveryStage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, _ := twoStages()
	done := runInBackground(ctx, p)
	paths, err := p.StopWithSavepoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	if n := len(strings.Split(paths, ", ")); n != 2 {
		t.Fatalf("savepoints %q, want two", paths)
	}
	for _, st := range append(p.StageStatus(), p.Status()) {
		if st.State != engine.JobStopped {
			t.Fatalf("stage %s is %s after the stop", st.Name, st.State)
		}
	}
	if _, err := p.StopWithSavepoint(ctx); err == nil || !strings.Contains(err.Error(), "stage stage-1") {
		t.Fatalf("a second stop returned %v, want an error naming stage stage-1", err)
	}
}

// gatedSink is discardSink whose snapshots wait for release.
type gatedSink struct {
	discardSink
	release chan struct{}
}

func (g gatedSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[int], error) {
	return g, nil
}

func (g gatedSink) SnapshotState(ctx context.Context, _ int64) ([][]byte, error) {
	select {
	case <-g.release:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// The stages stop side by side: stage 2 is stopped while stage 1's
// savepoint still waits (a revoked group moves sooner).
func TestGroupPipelineStopsStagesSideBySide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, _ := twoStages()
	release := make(chan struct{})
	slow := engine.NewJob("stage-1", engine.Options{})
	engine.SinkTo(engine.FromSource(slow, UIDSource, 1, idleSource{make(chan error)}), UIDSink, 1, gatedSink{release: release})
	p.Stages[0] = &Built{Job: slow, Stats: func() Stats { return Stats{} }}
	done := runInBackground(ctx, p)
	stopped := make(chan error, 1)
	go func() { _, err := p.StopWithSavepoint(ctx); stopped <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for p.StageStatus()[1].State != engine.JobStopped {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("stage 2 is %s 10s into the stop while stage 1's savepoint waits, want STOPPED", p.StageStatus()[1].State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
}

// One stage stopped on its own does not end Run: the other still runs,
// and its cancellation is what Run returns.
func TestGroupPipelineIsStoppedOnlyWhenEveryStageIs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, _ := twoStages()
	rctx, stop := context.WithCancel(ctx)
	done := runInBackground(rctx, p)
	if _, err := p.Stages[0].Job.StopWithSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v with stage 2 running", err)
	default:
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want stage 2's cancellation", err)
	}
}

func TestStagePrefix(t *testing.T) {
	for name, want := range map[string]string{"wc/pg-3": "", "wc/count/pg-3": "count/", "wc": ""} {
		if got := stagePrefix(name); got != want {
			t.Errorf("stagePrefix(%q) = %q, want %q", name, got, want)
		}
	}
}
