package jobs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/state"
)

// spend is the input of the test dataflow: "<who>:<cents>".
type spend struct {
	Who   string `json:"who"`
	Cents int64  `json:"cents"`
}

func decodeSpend(r *kgo.Record) (spend, error) {
	who, cents, ok := strings.Cut(string(r.Value), ":")
	n, err := strconv.ParseInt(cents, 10, 64)
	if !ok || err != nil || who == "" {
		return spend{}, fmt.Errorf("not <who>:<cents>: %q", r.Value)
	}
	return spend{Who: who, Cents: n}, nil
}

// spent keeps a running total per person.
type spent struct{ total *state.ValueState[int64] }

func (s *spent) Open(ctx *engine.KeyedContext) error {
	var err error
	s.total, err = state.NewValueState(ctx.Backend(), "total", state.Int64Codec{})
	return err
}

func (s *spent) Process(_ *engine.KeyedContext, who string, v spend, out func(spend)) error {
	n, _, err := s.total.Value()
	if err != nil {
		return err
	}
	n += v.Cents
	if err := s.total.Update(n); err != nil {
		return err
	}
	out(spend{Who: who, Cents: n})
	return nil
}

// totalsDataflow is a Go job as a user writes one: source → filter →
// KeyBy(who) → running total → record → sink.
func totalsDataflow(b *Builder) error {
	in := Source(b, "source", decodeSpend)
	paid := engine.Filter(in, "paid", func(s spend) bool { return s.Cents > 0 })
	byWho := KeyBy(b, paid, "totals", func(s spend) string { return s.Who }, state.StringCodec{}, state.JSONCodec[spend]{})
	totals := engine.Process(byWho, "totals", b.Parallelism(), func() engine.KeyedProcessFunction[string, spend, spend] { return &spent{} })
	Sink(b, engine.Map(totals, "format", func(s spend) (*kgo.Record, error) {
		return &kgo.Record{Key: []byte(s.Who), Value: []byte(strconv.FormatInt(s.Cents, 10))}, nil
	}), "sink")
	return nil
}

// spends are n inputs over five people, a refund every seventh; want is
// each person's running totals in order.
func spends(n int) (recs []*kgo.Record, want map[string][]string) {
	want = map[string][]string{}
	totals := map[string]int64{}
	for i := range n {
		who := fmt.Sprintf("p%d", i%5)
		cents := int64(i + 1)
		if i%7 == 3 {
			cents = -cents
		}
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, "%s:%d", who, cents)})
		if cents > 0 {
			totals[who] += cents
			want[who] = append(want[who], strconv.FormatInt(totals[who], 10))
		}
	}
	return recs, want
}

func perKey(out []*kgo.Record) map[string][]string {
	got := map[string][]string{}
	for _, r := range out {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	return got
}

func countAll(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// A Go job in job.mode single: the Dataflow's running totals, each input
// counted once, through a stop with a savepoint and a resume.
func TestDataflowSingleMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	recs, want := spends(40)
	produceRecords(t, ctx, client, recs[:25]...)
	cfg := testConfig(t, t.TempDir(), "go", "job.name=totals")
	build := func() *Built {
		t.Helper()
		b, err := Build(ctx, cfg, Env{ClientOpts: client, Dataflow: totalsDataflow})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	_, wantFirst := spends(25)
	runUntil(t, ctx, build(), client, countAll(wantFirst))
	produceRecords(t, ctx, client, recs[25:]...)
	b := build()
	out := runUntil(t, ctx, b, client, countAll(want))
	if got := perKey(out); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("running totals %v, want %v", got, want)
	}
	if st := b.Stats(); st.RecordsRead != 15 || st.PendingTransactions != 0 {
		t.Fatalf("stats of the resumed run: %+v, want 15 read (the rest before the stop), nothing pending", st)
	}
	if name := b.Job.Status().Name; name != "totals" {
		t.Fatalf("engine job %q, want totals", name)
	}
}

// A Dataflow that breaks a rule fails the build with an error naming the
// uid (or what is missing), in job.mode single already; job.type must be
// go for a Dataflow and nothing else.
func TestDataflowRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fakeCluster(t)
	cfg := testConfig(t, t.TempDir(), "go", "job.name=rules")
	format := func(s spend) (*kgo.Record, error) { return &kgo.Record{Key: []byte(s.Who)}, nil }
	for _, c := range []struct {
		name string
		df   Dataflow
		want string
	}{
		{"no source", func(b *Builder) error { return nil }, "no Source"},
		{"two sources", func(b *Builder) error {
			Source(b, "a", decodeSpend)
			Sink(b, engine.Map(Source(b, "b", decodeSpend), "f", format), "sink")
			return nil
		}, `Source "b": a job has one Source`},
		{"no sink", func(b *Builder) error { Source(b, "source", decodeSpend); return nil }, "rules has no sink"},
		{"two sinks", func(b *Builder) error {
			in := engine.Map(Source(b, "source", decodeSpend), "f", format)
			Sink(b, in, "one")
			Sink(b, in, "two")
			return nil
		}, `Sink "two": rules already has its sink`},
		{"a sink and an own sink", func(b *Builder) error {
			in := engine.Map(Source(b, "source", decodeSpend), "f", format)
			SinkTo(b, in, "own", engine.Sink[*kgo.Record](nopSink{}))
			Sink(b, in, "kafka")
			return nil
		}, `Sink "kafka": rules already has its sink`},
		{"an own sink that is nil", func(b *Builder) error {
			SinkTo[spend](b, Source(b, "source", decodeSpend), "own", nil)
			return nil
		}, `SinkTo "own": no sink`},
		{"uid with a slash", func(b *Builder) error {
			KeyBy(b, Source(b, "source", decodeSpend), "a/b", func(s spend) string { return s.Who }, state.StringCodec{}, state.JSONCodec[spend]{})
			return nil
		}, `KeyBy "a/b": a KeyBy's uid names its repartition topic`},
		{"uid twice", func(b *Builder) error {
			in := Source(b, "source", decodeSpend)
			KeyBy(b, in, "k", func(s spend) string { return s.Who }, state.StringCodec{}, state.JSONCodec[spend]{})
			KeyBy(b, in, "k", func(s spend) string { return s.Who }, state.StringCodec{}, state.JSONCodec[spend]{})
			return nil
		}, `KeyBy "k": uid used by another KeyBy`},
		{"no value codec", func(b *Builder) error {
			KeyBy(b, Source(b, "source", decodeSpend), "k", func(s spend) string { return s.Who }, state.StringCodec{}, nil)
			return nil
		}, `KeyBy "k": needs a key function, a key codec and a value codec`},
		{"the dataflow's own error", func(b *Builder) error { return errors.New("no such table") }, "dataflow of job rules: no such table"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(ctx, cfg, Env{ClientOpts: client, Dataflow: c.df})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("build: %v, want an error containing %q", err, c.want)
			}
		})
	}
	var ce *ConfigError
	if _, err := Build(ctx, testConfig(t, t.TempDir(), "copy"), Env{ClientOpts: client, Dataflow: totalsDataflow}); !errors.As(err, &ce) || ce.Key != "job.type" {
		t.Fatalf("a Dataflow with job.type copy: %v, want a ConfigError naming job.type", err)
	}
	if _, err := Build(ctx, cfg, Env{ClientOpts: client}); !errors.As(err, &ce) || ce.Key != "job.type" || !strings.Contains(err.Error(), "package runner") {
		t.Fatalf("job.type go without a Dataflow: %v, want a ConfigError naming job.type and package runner", err)
	}
}

// In job.mode distributed each partition group of a Go job is cut at its
// KeyBy into two stages joined by <job>-<uid>-repartition (G partitions),
// named as a built-in job's stages are, and the groups together count
// every input once: their running totals are exactly single mode's.
func TestDataflowGroupsCutAtKeyBy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	cfg := groupConfig(t)
	cfg.Job.Name, cfg.Job.Type, cfg.Job.Parallelism = "totals", "go", 2
	cfg.Checkpoint.Interval, cfg.State.Dir = 20*time.Millisecond, t.TempDir()
	cfg.Sink.TransactionalIDPrefix = "totals"
	recs, want := spends(60)
	produceRecords(t, ctx, client, recs...)

	const groups = 2
	var pipes []*GroupPipeline
	for g := range groups {
		p, err := BuildGroup(ctx, cfg, Env{ClientOpts: client, Dataflow: totalsDataflow, Group: &Group{Index: g, Count: groups}})
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		var names []string
		for _, st := range p.StageStatus() {
			names = append(names, st.Name)
		}
		if w := []string{fmt.Sprintf("totals/pg-%d", g), fmt.Sprintf("totals/totals/pg-%d", g)}; !slices.Equal(names, w) {
			t.Fatalf("group %d: stages %v, want %v", g, names, w)
		}
		pipes = append(pipes, p)
	}
	adm, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	d, err := kadm.NewClient(adm).ListTopics(ctx, "totals-totals-repartition")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d["totals-totals-repartition"].Partitions); n != groups {
		t.Fatalf("totals-totals-repartition has %d partitions, want %d", n, groups)
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for _, p := range pipes {
		wg.Go(func() { errs <- p.Run(runCtx) })
	}
	deadline := time.Now().Add(time.Minute)
	var out []*kgo.Record
	for {
		out = readCommitted(t, ctx, client)
		if len(out) >= countAll(want) || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-errs:
			t.Fatalf("a group ended early: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, p := range pipes {
		if _, err := p.StopWithSavepoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, engine.ErrStopped) {
			t.Fatalf("a group's run: %v, want ErrStopped", err)
		}
	}
	got := perKey(readCommitted(t, ctx, client))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("running totals of the groups %v, want %v (keys %v)", got, want, slices.Sorted(maps.Keys(want)))
	}
	// Stage 2 purged what its checkpoints consumed of the repartition topic.
	starts, err := kadm.NewClient(adm).ListStartOffsets(ctx, "totals-totals-repartition")
	if err != nil {
		t.Fatal(err)
	}
	var purged []int64
	starts.Each(func(o kadm.ListedOffset) { purged = append(purged, o.Offset) })
	if len(purged) != groups || slices.Contains(purged, 0) {
		t.Fatalf("repartition topic starts at %v, want every partition purged past 0", purged)
	}
}

// nopSink is a Dataflow's own sink that drops what it gets.
type nopSink struct{}

func (nopSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[*kgo.Record], error) {
	return nopSink{}, nil
}
func (nopSink) Write(context.Context, *kgo.Record) error               { return nil }
func (nopSink) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (nopSink) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (nopSink) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (nopSink) Close(context.Context) error                            { return nil }

// A Dataflow that ends in its own sink (SinkTo) builds: the sink counts as
// the stage's.
func TestDataflowWithItsOwnSinkBuilds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "go", "job.name=own")
	df := func(b *Builder) error {
		SinkTo(b, engine.Map(Source(b, "source", decodeSpend), "f", func(s spend) (*kgo.Record, error) { return &kgo.Record{}, nil }),
			"own", engine.Sink[*kgo.Record](nopSink{}))
		return nil
	}
	if _, err := Build(ctx, cfg, Env{ClientOpts: fakeCluster(t), Dataflow: df}); err != nil {
		t.Fatal(err)
	}
}
