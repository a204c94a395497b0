package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/outage/outagetest"
)

// These run the built-in jobs on kfake, franz-go's in-process broker, for
// speed; the same jobs are checked on a real broker in package
// integration.

func fakeCluster(t *testing.T, opts ...kfake.Opt) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(4, "in", "out")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
}

// testConfig is a loaded, validated configuration of a job of type typ
// reading "in" and writing "out", with its directories under dir.
func testConfig(t *testing.T, dir, typ string, set ...string) *config.Config {
	t.Helper()
	set = append([]string{
		"job.name=" + typ + "-test", "job.type=" + typ, "job.parallelism=2",
		"source.topic=in", "sink.topic=out",
		"checkpoint.interval=20ms", "checkpoint.timeout=10s", "checkpoint.dir=" + filepath.Join(dir, "checkpoints"),
		"state.dir=" + filepath.Join(dir, "state"),
		"sink.transaction_timeout=1m", "restart.strategy=fixed-delay", "restart.attempts=3", "restart.delay=10ms",
	}, set...)
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: set})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func produceRecords(t *testing.T, ctx context.Context, client []kgo.Opt, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic("in"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// readCommitted returns the records of "out" visible to read_committed
// readers, in partition and offset order.
func readCommitted(t *testing.T, ctx context.Context, client []kgo.Opt) []*kgo.Record {
	t.Helper()
	adm, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	lso, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, "out")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	lso.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics("out"), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("reading out: still waiting for partitions %v", want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	slices.SortFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

// runUntil runs the built job until n records are committed to "out",
// then stops it with a savepoint and returns the committed records.
func runUntil(t *testing.T, ctx context.Context, b *Built, client []kgo.Opt, n int) []*kgo.Record {
	t.Helper()
	return runThenStop(t, ctx, b, client, fmt.Sprintf("%d records committed", n), func() bool {
		return len(readCommitted(t, ctx, client)) >= n
	})
}

// runThenStop runs the built job until cond holds, then stops it with a
// savepoint and returns the committed records.
func runThenStop(t *testing.T, ctx context.Context, b *Built, client []kgo.Opt, what string, cond func() bool) []*kgo.Record {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.Job.Run(ctx) }()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("the job ended early: %v", err)
		case <-deadline:
			t.Fatalf("not reached within 30s: %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := b.Job.StopWithSavepoint(ctx); err != nil {
		t.Fatalf("stop with savepoint: %v", err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	return readCommitted(t, ctx, client)
}

func TestWordCountCountsEveryOccurrenceOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	lines := []string{"a b a", "  c\ta  ", "b", "", "a c c d", "d d d d"}
	var recs []*kgo.Record
	want := map[string][]string{}
	n := 0
	for i := range 10 {
		line := lines[i%len(lines)]
		recs = append(recs, &kgo.Record{Value: []byte(line)})
		for _, w := range strings.Fields(line) {
			want[w] = append(want[w], strconv.Itoa(len(want[w])+1))
			n++
		}
	}
	produceRecords(t, ctx, client, recs...)
	// The decoder recycles each line into the source's pool: a word
	// counted from a line overwritten by a later fetch would show here.
	cfg := testConfig(t, t.TempDir(), "wordcount", "source.fetch_pool_bytes=1048576")
	b, err := Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	out := runUntil(t, ctx, b, client, n)
	got := map[string][]string{}
	for _, r := range out {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	if len(out) != n || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("output (%d records) per word %v, want (%d records) %v", len(out), got, n, want)
	}
	st := b.Stats()
	if st.RecordsRead != 10 || st.PendingTransactions != 0 || st.ConsumerLag != -1 {
		t.Fatalf("stats after the stop: %+v, want 10 read, nothing pending, lag unknown", st)
	}
}

// The copy keeps every record's key, value and headers, also when the
// source fetches into a pool and the sink recycles what it wrote: a
// batch recycled before its records were written would show as records
// overwritten by later ones.
// The copy writes every record once, with its key, value, headers and
// timestamp, to the output partition of its input partition's number
// modulo the output's count (here 3 against the input's 4).
func TestCopyKeepsKeyValueHeadersTimestampAndPartition(t *testing.T) {
	for _, pool := range []string{"0", "1048576"} {
		t.Run("fetch_pool_bytes="+pool, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "in"), kfake.SeedTopics(3, "out"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
			var recs []*kgo.Record
			want := map[string]bool{}
			for i := range 40 {
				r := &kgo.Record{Key: []byte("k" + strconv.Itoa(i%7)), Value: []byte("v" + strconv.Itoa(i)),
					Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}, {Key: "src", Value: []byte("test")}},
					Timestamp: time.UnixMilli(1_600_000_000_000 + int64(i)*1000)}
				recs = append(recs, r)
				want[recordID(r)] = true
			}
			produceRecords(t, ctx, client, recs...)
			partition := map[string]int32{} // the output partition each record belongs in
			for _, r := range recs {
				partition[recordID(r)] = r.Partition % 3
			}
			cfg := testConfig(t, t.TempDir(), "copy", "state.backend=memory", "source.fetch_pool_bytes="+pool)
			b, err := Build(ctx, cfg, Env{ClientOpts: client})
			if err != nil {
				t.Fatal(err)
			}
			out := runUntil(t, ctx, b, client, len(recs))
			got := map[string]bool{}
			for _, r := range out {
				got[recordID(r)] = true
				if p, ok := partition[recordID(r)]; ok && r.Partition != p {
					t.Errorf("%s in output partition %d, want %d (its input partition's modulo 3)", recordID(r), r.Partition, p)
				}
			}
			if len(out) != len(recs) || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("copied %d records %v, want %d: %v", len(out), got, len(recs), want)
			}
		})
	}
}

// recordID is a record's key, value, headers and timestamp (in
// milliseconds, the broker's precision).
func recordID(r *kgo.Record) string {
	id := string(r.Key) + "|" + string(r.Value) + "|" + strconv.FormatInt(r.Timestamp.UnixMilli(), 10)
	for _, h := range r.Headers {
		id += "|" + h.Key + "=" + string(h.Value)
	}
	return id
}

// The aggregate job emits each group's updated sum; a record without the
// field is skipped and counted under on_decode_error skip.
func TestAggregateSumsPerGroupAndSkipsUndecodable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	produceRecords(t, ctx, client,
		&kgo.Record{Value: []byte(`{"customer":"ann","amount":10}`)},
		&kgo.Record{Value: []byte(`{"customer":"bob","amount":1.5}`)},
		&kgo.Record{Value: []byte(`{"customer":"ann"}`)},
		&kgo.Record{Value: []byte(`{"customer":"ann","amount":2.25}`)},
		&kgo.Record{Value: []byte(`{"customer":"bob","amount":-1}`)},
	)
	cfg := testConfig(t, t.TempDir(), "aggregate", "aggregate.group_by=customer", "aggregate.field=amount",
		"aggregate.function=sum", "source.on_decode_error=skip")
	b, err := Build(ctx, cfg, Env{ClientOpts: client, Logger: slog.New(slog.NewTextHandler(&logbuf.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	out := runUntil(t, ctx, b, client, 4)
	got := map[string][]string{}
	for _, r := range out {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	want := map[string][]string{"ann": {"10", "12.25"}, "bob": {"1.5", "0.5"}}
	if len(out) != 4 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("aggregates %v, want %v", got, want)
	}
	if st := b.Stats(); st.RecordsRead != 5 || st.DecodeSkipped != 1 {
		t.Fatalf("stats %+v, want 5 read and 1 skipped", st)
	}
}

// What the cluster refuses is a ConfigError naming the key, before
// anything is built.
func TestBuildRefusesWhatTheClusterRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fakeCluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "60000"}))
	for _, tc := range []struct {
		name string
		set  []string
		env  Env
		key  string
		msg  string
	}{
		{"timeout above the broker's maximum", []string{"sink.transaction_timeout=2m"}, Env{}, "sink.transaction_timeout", "transaction.max.timeout.ms"},
		{"timeout too close to the budget", []string{"sink.transaction_timeout=1m", "checkpoint.timeout=40s"}, Env{}, "sink.transaction_timeout", "not comfortably above"},
		{"missing source topic", []string{"source.topic=nope"}, Env{}, "source.topic", "nope does not exist"},
		{"missing sink topic", []string{"sink.topic=gone"}, Env{}, "sink.topic", "gone does not exist"},
		{"missing dead-letter topic", []string{"source.on_decode_error=dead_letter", "source.dead_letter_topic=dlq"}, Env{},
			"source.dead_letter_topic", "dlq does not exist"},
		{"fresh and from", nil, Env{Fresh: true, RestoreFrom: "x"}, "", "exclude each other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), "copy", tc.set...)
			env := tc.env
			env.ClientOpts = client
			_, err := Build(ctx, cfg, env)
			var ce *ConfigError
			switch {
			case err == nil:
				t.Fatal("Build accepted it")
			case !strings.Contains(err.Error(), tc.msg):
				t.Fatalf("err = %v, want it to say %q", err, tc.msg)
			case tc.key != "" && (!errors.As(err, &ce) || ce.Key != tc.key || !strings.HasPrefix(err.Error(), "config: "+tc.key+": ")):
				t.Fatalf("err = %v, want a ConfigError naming %s", err, tc.key)
			}
		})
	}
	// The same timeouts pass with at_least_once: no transaction.
	cfg := testConfig(t, t.TempDir(), "copy", "sink.transaction_timeout=2m", "sink.delivery=at_least_once")
	if _, err := Build(ctx, cfg, Env{ClientOpts: client}); err != nil {
		t.Fatalf("at_least_once: %v", err)
	}
}

// --fresh sets the retained checkpoints and savepoints aside (never
// deletes them), says so, and the job starts over from source.start.
func TestFreshSetsCheckpointsAsideAndStartsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, &kgo.Record{Value: []byte("v" + strconv.Itoa(i))})
	}
	produceRecords(t, ctx, client, recs...)
	dir := t.TempDir()
	cfg := testConfig(t, dir, "copy", "state.backend=memory")
	b, err := Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, ctx, b, client, 10)

	// Without --fresh the job resumes: nothing is copied again.
	b, err = Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	produceRecords(t, ctx, client, &kgo.Record{Value: []byte("v10")})
	if out := runUntil(t, ctx, b, client, 11); len(out) != 11 {
		t.Fatalf("the resumed job's output has %d records, want 11", len(out))
	}

	root := filepath.Join(dir, "checkpoints", cfg.Job.Name)
	before, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	b, err = Build(ctx, cfg, Env{ClientOpts: client, Fresh: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	matches, err := filepath.Glob(root + ".set-aside-*")
	if err != nil || len(matches) != 1 {
		t.Fatalf("set-aside directories %v (%v), want one", matches, err)
	}
	aside, err := os.ReadDir(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range aside {
		kept = append(kept, e.Name())
	}
	for _, e := range before {
		if !slices.Contains(kept, e.Name()) {
			t.Fatalf("%s is not in the set-aside directory (it holds %v)", e.Name(), kept)
		}
	}
	if l := logs.String(); !strings.Contains(l, "fresh start") || !strings.Contains(l, "savepoint-") || !strings.Contains(l, matches[0]) {
		t.Fatalf("the log does not say what was ignored and where it went:\n%s", l)
	}
	if out := runUntil(t, ctx, b, client, 22); len(out) != 22 {
		t.Fatalf("after --fresh the output has %d records, want 22 (every input copied again)", len(out))
	}
}

func TestRestartStrategiesFromConfig(t *testing.T) {
	now := time.Unix(0, 0)
	fixed, err := restartStrategy(config.Restart{Strategy: "fixed-delay", Attempts: 2, Delay: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, false} {
		if d, ok := fixed.OnFailure(now); ok != want || (ok && d != 3*time.Second) {
			t.Fatalf("fixed-delay failure %d: %s %v", i+1, d, ok)
		}
	}
	rate, err := restartStrategy(config.Restart{Strategy: "failure-rate", MaxFailures: 1, Interval: time.Minute, Delay: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rate.OnFailure(now); !ok {
		t.Fatal("failure-rate gave up at the first failure")
	}
	if _, ok := rate.OnFailure(now.Add(time.Second)); ok {
		t.Fatal("failure-rate restarted after 2 failures in its interval with max_failures 1")
	}
	exp, err := restartStrategy(config.Restart{Strategy: "exponential-delay", InitialBackoff: time.Second, MaxBackoff: 3 * time.Second, Multiplier: 2})
	if err != nil {
		t.Fatal(err)
	}
	var delays []time.Duration
	for i := range 3 {
		d, _ := exp.OnFailure(now.Add(time.Duration(i) * time.Second))
		delays = append(delays, d)
	}
	if !slices.Equal(delays, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}) {
		t.Fatalf("exponential-delay pauses %v", delays)
	}
	none, err := restartStrategy(config.Restart{Strategy: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := none.OnFailure(now); ok {
		t.Fatal("none restarted")
	}
	if _, err := restartStrategy(config.Restart{Strategy: "sometimes"}); err == nil {
		t.Fatal("an unknown strategy was accepted")
	}
}

func TestEngineOptionsFromConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "wordcount", "checkpoint.mode=at_least_once", "checkpoint.min_pause=5ms",
		"checkpoint.max_concurrent=3", "checkpoint.tolerable_failures=2", "checkpoint.on_cancel=delete", "job.max_parallelism=64",
		"job.operator_chaining=false")
	o, err := engineOptions(context.Background(), cfg, Env{RestoreFrom: "/some/chk-3", AllowNonRestoredState: true}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	want := engine.CheckpointOptions{Interval: 20 * time.Millisecond, Mode: engine.AtLeastOnce, Timeout: 10 * time.Second,
		MinPause: 5 * time.Millisecond, MaxConcurrent: 3, TolerableFailures: 2, DeleteOnCancel: true, RetainSavepoints: 10}
	if o.Checkpoint != want {
		t.Fatalf("checkpoint options %+v, want %+v", o.Checkpoint, want)
	}
	if o.MaxParallelism != 64 || o.RestoreFrom != "/some/chk-3" || !o.AllowNonRestoredState || o.Restart.String() != "fixed-delay" ||
		!o.DisableChaining {
		t.Fatalf("options %+v", o)
	}
	if o.Backend.Name() != "pebble" {
		t.Fatalf("backend %s, want pebble", o.Backend.Name())
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoints", cfg.Job.Name)); err != nil {
		t.Fatalf("the checkpoint storage is not under checkpoint.dir/job.name: %v", err)
	}
}

// processor stop (a savepoint) and a plain processor run: the job resumes
// from the savepoint, not from an older checkpoint, so nothing between
// the two is written twice. With an hour between checkpoints the
// savepoints are the only restore points.
func TestRunAfterAStopResumesFromTheSavepoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(int(4 * time.Hour / time.Millisecond))}))
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Value: []byte("v" + strconv.Itoa(i))})
		}
		produceRecords(t, ctx, client, recs...)
	}
	cfg := testConfig(t, t.TempDir(), "copy", "checkpoint.interval=1h", "sink.transaction_timeout=3h", "state.backend=memory")
	produce(0, 10)
	for run, want := range []int{10, 15, 20} {
		b, err := Build(ctx, cfg, Env{ClientOpts: client})
		if err != nil {
			t.Fatal(err)
		}
		fresh := int64(10)
		if run > 0 {
			fresh = 5
		}
		// Nothing commits before the stop: wait until the new records are read.
		out := runThenStop(t, ctx, b, client, "the new records read", func() bool { return b.Stats().RecordsRead >= fresh })
		seen := map[string]bool{}
		for _, r := range out {
			if seen[string(r.Value)] {
				t.Fatalf("run %d: %s written twice", run, r.Value)
			}
			seen[string(r.Value)] = true
		}
		if len(out) != want {
			t.Fatalf("run %d: %d records committed, want %d", run, len(out), want)
		}
		produce(want, want+5)
	}
}

// The source and the sink of a built job share one outage tracker with
// kafka.outage_tolerance, reported in Stats.Cluster: a broker away (its
// port refusing connections, its connections cut, as when its process
// dies) for less than the tolerance costs no restart; away for longer,
// the attempt fails, and the restarted attempt waits for the broker anew
// rather than spending the restart strategy's attempts. The output stays
// exact throughout.
func TestBuiltJobWaitsForTheClusterUpToTheTolerance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sw := &outagetest.Switch{}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(sw.Listen), kfake.SeedTopics(4, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Partition discovery every 50ms, answered from the client's cached
	// metadata no older than 100ms (5s by default): the source notices
	// the broker away within a fraction of a second.
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(100 * time.Millisecond)}
	cfg := testConfig(t, t.TempDir(), "copy", "state.backend=memory", "source.discovery_interval=50ms",
		"kafka.outage_tolerance=3s", "restart.attempts=3", "restart.delay=100ms")
	logs := &logbuf.Buffer{}
	b, err := Build(ctx, cfg, Env{ClientOpts: client, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	batch := func(from int) {
		var recs []*kgo.Record
		for i := from; i < from+20; i++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte("v" + strconv.Itoa(i))})
		}
		produceRecords(t, ctx, client, recs...)
	}
	if st := b.Stats().Cluster; st.Down || st.Outages != 0 || st.Tolerance != 3*time.Second {
		t.Fatalf("cluster status before the run: %+v", st)
	}
	batch(0)
	done := make(chan error, 1)
	go func() { done <- b.Job.Run(ctx) }()
	until := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case err := <-done:
				t.Fatalf("%s: the job ended: %v\n%s", what, err, logs)
			case <-ctx.Done():
				t.Fatalf("%s: not within 2 minutes (job %+v, cluster %+v)\n%s", what, b.Job.Status().State, b.Stats().Cluster, logs)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	until("the first 20 records copied", func() bool { return len(readCommitted(t, ctx, client)) >= 20 })

	sw.Down()
	until("the job waiting for the cluster", func() bool { return b.Stats().Cluster.Down })
	if st := b.Stats().Cluster; st.What == "" || st.LastError == "" {
		t.Fatalf("cluster status during the outage: %+v", st)
	}
	time.Sleep(time.Second) // an outage of a second and more, within the 3s tolerance
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
	until("the outage over", func() bool { return !b.Stats().Cluster.Down })
	if st := b.Job.Status(); st.Restarts != 0 || st.State != engine.JobRunning {
		t.Fatalf("an outage within the tolerance cost the job: %+v\n%s", st, logs)
	}

	sw.Down()
	begin := time.Now()
	until("the attempt failed past the tolerance", func() bool { return b.Job.Status().Restarts >= 1 })
	if waited := time.Since(begin); waited < 3*time.Second {
		t.Fatalf("the attempt failed %s into the outage, before the 3s tolerance:\n%s", waited, logs)
	}
	// Run counts the restart before it logs the failed attempt: wait for
	// the log line, then read its error.
	const failedAttempt = "job attempt failed; restarting"
	until("the failed attempt logged", func() bool { return logs.Count(failedAttempt) >= 1 })
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, failedAttempt) && !strings.Contains(line, "beyond kafka.outage_tolerance 3s") {
			t.Fatalf("the failed attempt's error does not name the tolerance:\n%s", logs)
		}
	}
	// The restarted attempt waits for the broker (a new bound of 3s)
	// instead of failing at once.
	time.Sleep(time.Second)
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
	batch(20)
	until("all 40 records copied", func() bool { return len(readCommitted(t, ctx, client)) >= 40 })
	if _, err := b.Job.StopWithSavepoint(ctx); err != nil {
		t.Fatalf("stop with savepoint: %v", err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	if n := b.Job.Status().Restarts; n != 1 {
		t.Fatalf("%d restarts, want exactly 1 (the restarted attempt waits for the broker):\n%s", n, logs)
	}
	out := readCommitted(t, ctx, client)
	got := map[string]int{}
	for _, r := range out {
		got[string(r.Value)]++
	}
	for i := range 40 {
		if n := got["v"+strconv.Itoa(i)]; n != 1 {
			t.Fatalf("record v%d copied %d times; output %v", i, n, got)
		}
	}
	if len(out) != 40 {
		t.Fatalf("copied %d records, want 40", len(out))
	}
	st := b.Stats().Cluster
	if n, m := int64(strings.Count(logs.String(), "does not answer")), int64(strings.Count(logs.String(), "answers again")); st.Down || st.Outages < 2 || n != st.Outages || m != st.Outages {
		t.Fatalf("cluster status after the run: %+v, with %d outage starts and %d ends logged; want two outages or more, each logged once at its start and end:\n%s",
			st, n, m, logs)
	}
}

// Build does not wait for a cluster that does not answer: the run's start
// is where an unreachable cluster is a clear error naming kafka.brokers.
func TestBuildNamesTheBrokersOfAClusterThatDoesNotAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t, t.TempDir(), "copy")
	begin := time.Now()
	_, err = Build(ctx, cfg, Env{ClientOpts: []kgo.Opt{kgo.SeedBrokers(addr)}})
	if err == nil || !strings.HasPrefix(err.Error(), "kafka.brokers: the cluster does not answer") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Build against %s (nothing listening): %v, want an error naming kafka.brokers", addr, err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Fatalf("Build took %s to give up", d)
	}
}

// source.on_offset_out_of_range reaches the source: after a stop, the
// records written since are deleted (DeleteRecords up to the end of every
// partition) and more are written. The default, fail, ends the run for
// good, naming the key and writing nothing; earliest skips what was
// deleted, reads what came after once, and counts each partition's jump
// in Stats.OffsetResets.
func TestOnOffsetOutOfRangeFromConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(int(4 * time.Hour / time.Millisecond))}))
	cl, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Value: []byte("v" + strconv.Itoa(i))})
		}
		produceRecords(t, ctx, client, recs...)
	}
	ends := func() kadm.ListedOffsets {
		l, err := adm.ListEndOffsets(ctx, "in")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	dir := t.TempDir()
	set := []string{"checkpoint.interval=1h", "sink.transaction_timeout=3h", "state.backend=memory"}
	cfg := testConfig(t, dir, "copy", set...)
	produce(0, 10)
	b, err := Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	if out := runThenStop(t, ctx, b, client, "10 records read", func() bool { return b.Stats().RecordsRead >= 10 }); len(out) != 10 {
		t.Fatalf("the first run committed %d records, want 10", len(out))
	}
	atStop := ends()
	produce(10, 20)
	del, jumps := kadm.Offsets{}, 0
	ends().Each(func(l kadm.ListedOffset) {
		del.AddOffset(l.Topic, l.Partition, l.Offset, -1)
		if o, _ := atStop.Lookup(l.Topic, l.Partition); l.Offset > o.Offset {
			jumps++
		}
	})
	if resp, err := adm.DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("deleting the records written after the stop: %v %v", err, resp.Error())
	}
	produce(20, 25)

	b, err = Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Job.Run(ctx)
	if !engine.IsNonRecoverable(err) || !strings.Contains(err.Error(), "source.on_offset_out_of_range is fail") || !strings.Contains(err.Error(), "were deleted before they were read") {
		t.Fatalf("the run under the default policy returned %v; want a non-recoverable refusal naming the policy", err)
	}
	if out := readCommitted(t, ctx, client); len(out) != 10 {
		t.Fatalf("the refused run left %d records committed, want the first run's 10", len(out))
	}

	cfg = testConfig(t, dir, "copy", append(set, "source.on_offset_out_of_range=earliest")...)
	b, err = Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	out := runThenStop(t, ctx, b, client, "the 5 records after the deletion read", func() bool { return b.Stats().RecordsRead >= 5 })
	var got []string
	for _, r := range out {
		got = append(got, string(r.Value))
	}
	slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a[1:]); y, _ := strconv.Atoi(b[1:]); return x - y })
	want := []string{"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v20", "v21", "v22", "v23", "v24"}
	if !slices.Equal(got, want) {
		t.Fatalf("after the jump the output is %v, want %v", got, want)
	}
	if n := b.Stats().OffsetResets; n != int64(jumps) || jumps == 0 {
		t.Fatalf("Stats.OffsetResets = %d, want %d (the partitions with deleted records)", n, jumps)
	}
}

// state.changelog_limit_bytes reaches the Pebble backend: with the default
// the word count's checkpoints are changelog handles, with -1 plain Pebble
// checkpoints.
func TestChangelogLimitFromConfig(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{nil, checkpoint.BackendPebbleChangelog},
		{[]string{"state.changelog_limit_bytes=-1"}, checkpoint.BackendPebble},
	} {
		t.Run(tc.want, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			client := fakeCluster(t)
			produceRecords(t, ctx, client, &kgo.Record{Value: []byte("a b c")}, &kgo.Record{Value: []byte("a b")})
			dir := t.TempDir()
			cfg := testConfig(t, dir, "wordcount", tc.set...)
			b, err := Build(ctx, cfg, Env{ClientOpts: client})
			if err != nil {
				t.Fatal(err)
			}
			runUntil(t, ctx, b, client, 5)
			st, err := dirstore.NewFileStorage(filepath.Join(dir, "checkpoints"), cfg.Job.Name, dirstore.StorageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// The newest is the stop's savepoint (canonical): take the
			// newest checkpoint before it.
			infos, err := st.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var path string
			for _, in := range infos {
				if !in.Savepoint && in.Complete {
					path = in.Path
				}
			}
			if path == "" {
				t.Fatalf("no completed checkpoint among %+v", infos)
			}
			md, err := st.Load(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			var backends []string
			for _, op := range md.Operators {
				for _, sub := range op.Subtasks {
					if sub.Keyed != nil {
						backends = append(backends, sub.Keyed.Backend)
					}
				}
			}
			if len(backends) == 0 || slices.ContainsFunc(backends, func(b string) bool { return b != tc.want }) {
				t.Fatalf("keyed handles of checkpoint %d by backend %v, want every one %q", md.CheckpointID, backends, tc.want)
			}
		})
	}
}
