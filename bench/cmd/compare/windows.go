package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The windowed comparison (-windows, make bench-windows; issue 17): the
// closest built-in equivalents of Nexmark q5 and q11 (winQueries) over the
// Go port of the Nexmark generator's model (nexmark.go), exactly once, at
// every -intervals checkpoint/commit interval, for onceflow's window job
// (bin/processor with a generated configuration), Flink
// (bench/flink FlinkWindows: event-time windows, bounded out-of-orderness
// watermarks, KafkaSink EXACTLY_ONCE) and Kafka Streams (bench/streams
// StreamsWindows: windowed count with a grace period,
// suppress(untilWindowCloses), exactly_once_v2, commit.interval.ms the
// interval). Every measurement is made -runs times (3 by default),
// interleaved, and the report gives medians and ratios against onceflow
// measured in the same run.
//
// Inputs: one topic of bids per query, keyed (Kafka key and partition,
// the id modulo the partitions) by the query's grouping field, auction
// for q5 and bidder for q11, so that Kafka Streams groups by key without
// a repartition topic, whose records would reach a window task out of
// event-time order far beyond the bound; Flink and onceflow key by the
// JSON field as they would anyway.
//
// Figures:
//   - throughput: a backlog of -bids bids waits in the topic, followed by
//     one flush bid per partition far in event time (key -1, whose own
//     windows never close) that moves every watermark past every real
//     window. The contender's results are read under read_committed
//     until every window of a reference computed here has appeared, with
//     the right count. Windows fire only once the watermark passes their
//     end, so the first result shows when the contender has read the
//     bids up to the first window's end + the bound, bid n0 of N: the
//     throughput is (N - n0) / (last result - first result + one
//     interval), input bids per second (the interval, because the first
//     visible transaction holds about one interval of work);
//   - latency: bids are produced at -pace-rate per second, each with the
//     wall-clock time of its production as its event time (a delayed one
//     that much earlier). A window [start, end) can fire once a bid with
//     event time end + bound has been produced on every partition, i.e.
//     at wall-clock time end + bound; the latency of a result is its
//     read_committed visibility minus that moment. Every window whose
//     end + bound falls in the measured phase (after the first result
//     and a settling time, for -pace-for) must appear with the reference's
//     count; p50, p99 and max over them.

// winOptions are the -windows settings beyond the shared options.
type winOptions struct {
	on         bool
	queries    string
	bids       int
	boundMS    int64
	delayFrac  float64
	eventRate  float64
	backend    string
	idleTimout time.Duration
}

func windowFlags() *winOptions {
	w := &winOptions{}
	flag.BoolVar(&w.on, "windows", false, "the windowed comparison instead (issue 17): Nexmark q5-like and q11-like windows, onceflow's window job against Flink and Kafka Streams, 3 runs; results to bench/results/windows")
	flag.StringVar(&w.queries, "queries", "q5,q11", "-windows: the queries (q5: bids per auction, sliding 10s every 2s; q11: bids per bidder, sessions with a 10s gap)")
	flag.IntVar(&w.bids, "bids", 0, "-windows: bids in the backlog input (default 2,000,000; 100,000 with -quick)")
	flag.Int64Var(&w.boundMS, "bound-ms", 2000, "-windows: the out-of-orderness bound, the generator's largest delay and every contender's bound or grace")
	flag.Float64Var(&w.delayFrac, "delayed", 0.1, "-windows: the fraction of bids delayed (by 1..bound ms)")
	flag.Float64Var(&w.eventRate, "event-rate", 0, "-windows: events per second of event time in the backlog input (persons and auctions included; default the -pace-rate's)")
	flag.StringVar(&w.backend, "window-backend", "pebble", "-windows: onceflow's state backend (pebble | memory)")
	// Flink's job declares no idleness and Kafka Streams has none, so
	// onceflow's window job is run without it too by default.
	flag.DurationVar(&w.idleTimout, "window-idle", 0, "-windows: onceflow's window.idle_timeout (0: never, as the Flink job, which declares no idleness)")
	return w
}

// winContenders are -windows' contenders: the baseline first.
const winContenders = "onceflow,flink,kstreams"

// winInput is one query's seeded backlog.
type winInput struct {
	Query   string `json:"query"`
	Topic   string `json:"topic"`
	Bids    int    `json:"bids"`
	Windows int    `json:"windows"`
	// FirstAt is the number of bids before the first window can fire
	// (n0): the throughput counts the bids after it.
	FirstAt int   `json:"bids_before_first_window"`
	Bytes   int64 `json:"bytes"`
	ref     map[winKey]int64
}

func runWindows(o *options, w *winOptions, set map[string]bool) error {
	if !set["contenders"] {
		o.contenders = splitList(winContenders)
	}
	for _, c := range o.contenders {
		if winCommand(c, winQuery{}, w) == nil {
			return fmt.Errorf("-contenders: %q has no windowed job (onceflow, flink, kstreams)", c)
		}
	}
	var queries []winQuery
	for _, n := range splitList(w.queries) {
		q, ok := findQuery(n)
		if !ok {
			return fmt.Errorf("-queries: unknown query %q (q5, q11)", n)
		}
		queries = append(queries, q)
	}
	if !set["runs"] {
		o.runs = 3
	}
	if !set["run-timeout"] {
		// A backlog that stalls costs one measurement, not the run.
		o.runTimeout = time.Duration(pick(o.quick, 2, 5)) * time.Minute
	}
	if w.bids == 0 {
		w.bids = pick(o.quick, 100_000, 2_000_000)
	}
	if !set["pace-for"] {
		o.paceFor = time.Duration(pick(o.quick, 5, 30)) * time.Second
	}
	if w.eventRate == 0 {
		w.eventRate = float64(o.paceRate)
	}
	if w.backend != "pebble" && w.backend != "memory" {
		return fmt.Errorf("-window-backend: %q is neither pebble nor memory", w.backend)
	}
	resultsDir := filepath.Join("bench", "results", "windows")
	if o.quick {
		resultsDir = filepath.Join(resultsDir, "quick")
	}
	su, err := setUp(o, "windows", resultsDir, "onceflow-bench-windows-", benchBrokerProps)
	if err != nil {
		return err
	}
	defer su.close()
	ctx, started, built, k := su.ctx, su.started, su.built, su.k
	o.infraPIDs, o.infraNames = infraProcs()
	runID := fmt.Sprintf("w%d", time.Now().Unix()%1_000_000)

	inputs := map[string]*winInput{}
	for _, q := range queries {
		t := time.Now()
		in, err := seedWindows(ctx, k, o, w, q, runID+"-"+q.Name+"-in")
		if err != nil {
			return fmt.Errorf("seeding the %s input: %w", q.Name, err)
		}
		inputs[q.Name] = in
		logf("seeded %s: %d bids, %d windows expected, the first after bid %d (%s)", in.Topic, in.Bids, in.Windows, in.FirstAt, time.Since(t).Round(time.Millisecond))
	}

	var results []*result
	seq := 0
	for run := 1; run <= o.runs; run++ {
		shift := (run - 1) % len(o.contenders)
		order := append(slices.Clone(o.contenders[shift:]), o.contenders[:shift]...)
		for _, q := range queries {
			for _, name := range order {
				for _, iv := range o.intervals {
					if ctx.Err() != nil {
						break
					}
					seq++
					r := &result{Contender: name, Workload: q.Name, IntervalMS: iv.Milliseconds(), RecoveryS: -1, Run: run}
					results = append(results, r)
					if err := built[name]; err != nil {
						r.Err = "build: " + firstLine(err.Error())
						continue
					}
					c := *findContender(name)
					c.command, c.scrape, c.instances = winCommand(name, q, w), nil, 0
					id := fmt.Sprintf("%s-%d-%s-%s", runID, seq, name, q.Name)
					logf("=== %s %s interval %s%s", name, q.Name, ivName(iv), runName(run, o.runs))
					t := time.Now()
					dir := filepath.Join(o.workDir, id)
					if err := winBacklog(ctx, k, o, w, &c, q, inputs[q.Name], id+"-t", iv, filepath.Join(dir, "backlog"), r); err != nil {
						r.Err = "backlog run: " + firstLine(err.Error())
						logf("%s: %v", id, err)
					} else if err := winPaced(ctx, k, o, w, &c, q, id+"-p", iv, filepath.Join(dir, "paced"), r); err != nil {
						r.Err = "paced run: " + firstLine(err.Error())
						logf("%s: %v", id, err)
					}
					logf("%s %s %s%s: %.0f bids/s, p50 %.0f ms, p99 %.0f ms (%d windows), output %s%s (%s)", name, q.Name, ivName(iv), runName(run, o.runs),
						r.Throughput, r.P50MS, r.P99MS, r.LatencyN, r.Check, errSuffix(r.Err), time.Since(t).Round(time.Second))
				}
			}
		}
	}
	o.loadAfter = loadAvg()
	interrupted := ctx.Err()
	if interrupted != nil {
		for _, r := range results {
			if r.Err == "" && r.Throughput == 0 {
				r.Err = "interrupted"
			}
		}
	}
	rep := &winReport{
		Started: started, Took: time.Since(started), Quick: o.quick, Brokers: strings.Join(o.brokers, ","),
		Machine: machine(), Inputs: inputs, Results: medians(results), Runs: results,
		Contenders: o.contenders, RunsN: o.runs, Parallelism: o.parallelism, PaceRate: o.paceRate, PaceFor: o.paceFor,
		BoundMS: w.boundMS, Delayed: w.delayFrac, EventRate: w.eventRate, Backend: w.backend,
		LoadBefore: o.loadBefore, LoadAfter: o.loadAfter,
	}
	for _, iv := range o.intervals {
		rep.IntervalsMS = append(rep.IntervalsMS, iv.Milliseconds())
	}
	for _, q := range queries {
		rep.Queries = append(rep.Queries, q.Name)
	}
	if err := rep.write(o.resultsDir); err != nil {
		return err
	}
	logf("done in %s: %s", time.Since(started).Round(time.Second), filepath.Join(o.resultsDir, "results.md"))
	return interrupted
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ", error: " + e
}

// seedWindows writes the backlog of q: w.bids bids keyed by q's field,
// then one flush bid per partition an hour of event time after the last.
func seedWindows(ctx context.Context, k *kafka, o *options, w *winOptions, q winQuery, topic string) (*winInput, error) {
	if err := k.createTopic(ctx, topic, o.partitions); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var mu sync.Mutex
	var failed error
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			failed = errors.Join(failed, err)
			mu.Unlock()
		}
	}
	base := time.Now().Add(-24 * time.Hour).UnixMilli()
	g := newNexmark(1, base, w.eventRate, w.delayFrac, w.boundMS)
	in := &winInput{Query: q.Name, Topic: topic, Bids: w.bids}
	bids := make([]timedBid, 0, w.bids)
	var newest int64
	for range w.bids {
		b := g.next()
		key := q.keyOf(b)
		bids = append(bids, timedBid{key, b.TS})
		newest = max(newest, b.TS)
		v := b.JSON()
		in.Bytes += int64(len(key) + len(v))
		cl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: v, Partition: partitionOf(key, o.partitions)}, promise)
	}
	flush := bid{Auction: -1, Bidder: -1, TS: newest + time.Hour.Milliseconds()}
	for p := range o.partitions {
		cl.Produce(ctx, &kgo.Record{Key: []byte("-1"), Value: flush.JSON(), Partition: p}, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	if failed != nil {
		return nil, failed
	}
	in.ref = q.reference(bids)
	in.Windows = len(in.ref)
	// n0: the first bid whose event time reaches the first window's end
	// + the bound.
	first := int64(-1)
	for wk := range in.ref {
		if first < 0 || wk.End < first {
			first = wk.End
		}
	}
	in.FirstAt = len(bids)
	for i, b := range bids {
		if b.ts >= first+w.boundMS {
			in.FirstAt = i
			break
		}
	}
	return in, nil
}

// partitionOf places a key (a decimal id) on partition id mod n.
func partitionOf(key string, n int32) int32 {
	id, _ := strconv.ParseInt(key, 10, 64)
	return int32(floorMod(id, int64(n)))
}

// winCommand returns the command of a contender's windowed job, nil for a
// contender without one.
func winCommand(name string, q winQuery, w *winOptions) func(o *options, s spec) (*exec.Cmd, error) {
	java := func(dirName, class string, extra func(o *options, s spec) []string) func(o *options, s spec) (*exec.Cmd, error) {
		return func(o *options, s spec) (*exec.Cmd, error) {
			args := append(slices.Clone(jvmFlags), extra(o, s)...)
			args = append(args, "-cp", javaClasspath(o, dirName), class,
				strings.Join(s.Brokers, ","), q.Name, s.In, s.Out, s.ID, strconv.FormatInt(s.Interval.Milliseconds(), 10),
				strconv.Itoa(o.parallelism), s.Dir, strconv.FormatInt(w.boundMS, 10))
			return exec.Command("java", args...), nil
		}
	}
	switch name {
	case "onceflow":
		return func(o *options, s spec) (*exec.Cmd, error) { return onceflowWindowProcess(o, s, q, w) }
	case "flink":
		return java("bench-flink-2.0.0", "onceflow.bench.FlinkWindows", func(o *options, s spec) []string {
			return append(slices.Clone(flinkOpens), "-Djava.io.tmpdir="+s.Dir)
		})
	case "kstreams":
		return java("bench-streams-4.1.1", "onceflow.bench.StreamsWindows", func(*options, spec) []string { return nil })
	}
	return nil
}

// onceflowWindowProcess writes the window job's configuration for q and
// returns the processor's command.
func onceflowWindowProcess(o *options, s spec, q winQuery, w *winOptions) (*exec.Cmd, error) {
	shape := fmt.Sprintf("kind: sliding\n  size: %s\n  slide: %s", q.Size, q.Slide)
	if q.Kind == "session" {
		shape = fmt.Sprintf("kind: session\n  gap: %s", q.Gap)
	}
	cfg := fmt.Sprintf(`# written by bench/cmd/compare -windows (%s)
job: {name: %q, type: window, parallelism: %d}
kafka: {brokers: [%s]}
source: {topic: %q, start: earliest}
sink: {topic: %q, delivery: exactly_once, transactional_id_prefix: %q}
window:
  key: %s
  aggregate: count
  time: {field: ts, format: epoch_millis}
  %s
  max_out_of_orderness: %dms
  idle_timeout: %s
  allowed_lateness: 0s
checkpoint: {interval: %s, dir: %q}
state: {backend: %s, dir: %q}
restart: {strategy: none}
http: {listen: "127.0.0.1:%d"}
log: {level: %s}
`, q.Name, s.ID, o.parallelism, quoteList(s.Brokers), s.In, s.Out, s.ID, q.Key, shape, w.boundMS, w.idleTimout,
		s.Interval, filepath.Join(s.Dir, "checkpoints"), w.backend, filepath.Join(s.Dir, "state"), s.HTTPPort, o.onceflowLog)
	path := filepath.Join(s.Dir, "onceflow.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return exec.Command(o.onceflowBin, "run", "--config", path), nil
}
