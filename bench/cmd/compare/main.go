// Command compare is onceflow's benchmark harness: it runs onceflow and
// its alternatives side by side on one Kafka broker and measures them from
// the outside, each contender a separate process.
//
//	go run ./bench/cmd/compare            # full run (minutes on 2 cores)
//	go run ./bench/cmd/compare -quick     # a small input, to check the setup
//
// It starts the local broker from Maven jars (internal/testkit/broker), or uses
// $KAFKA_BOOTSTRAP, seeds two input topics of 8 partitions (small records
// for the copy, lines of words for the word count), and for every
// contender, workload and checkpoint/commit interval:
//
//  1. a backlog run: the contender starts on the seeded topic; throughput
//     is the records per second that become visible to a read_committed
//     reader, from the first visible output record until the output is
//     complete; the output is checked (count, and for the word count the
//     final count of every word); resident memory is sampled from /proc;
//     the commit cadence is read off the transaction markers of the output;
//  2. a paced run on fresh topics: records are produced at a fixed rate,
//     latency is produce call -> visible under read_committed (p50, p99);
//     then the contender is killed with SIGKILL while the input keeps
//     coming and restarted, and recovery is the time from the kill to the
//     first committed output of a record produced after it.
//
// Results go to bench/results/ (results.md, results.json, chart.png), with
// ratios onceflow/limit and onceflow/peer computed from the same run.
//
// With -windows (make bench-windows) it runs issue 17's windowed
// comparison instead (windows.go), into bench/results/windows/.
//
// With -state (make bench-state) it runs issue 19's large-state
// comparison instead (state.go), into bench/results/state/.
//
// With -distributed (make bench-distributed) it measures issue 16's
// distributed mode instead, into bench/results/distributed/: onceflow in
// single mode (the baseline; with file and with S3 checkpoints) and 1, 2
// and 3 instances of one job.mode distributed job (G = 8 partition
// groups), on the copy and the word count (which distributed mode runs as
// two stages joined by a repartition topic). It starts a local S3 server
// (versitygw, internal/testkit/s3server) for the run, with a bucket of the
// run's own, and repeats every measurement -runs times (3 by default),
// interleaved, reporting medians: throughput, CPU seconds per million
// records summed over the instances, p50/p99 latency, peak RSS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/s3server"
)

// options are the harness's settings.
type options struct {
	brokers      []string
	quick        bool
	copyRecords  int
	wcLines      int
	wordsPerLine int
	vocabulary   int
	valueBytes   int
	partitions   int32
	parallelism  int
	intervals    []time.Duration
	contenders   []string
	workloads    []string
	paceRate     int
	paceFor      time.Duration
	recovery     bool
	paced        bool
	warmup       bool
	runTimeout   time.Duration
	resultsDir   string
	cacheDir     string
	repoDir      string
	workDir      string
	keepWorkDir  bool
	onceflowBin  string
	onceflowLog  string
	profile      string
	loadBefore   string
	loadAfter    string
	// distributed: the distributed measurements (-distributed).
	distributed bool
	// runs is how many times every measurement is made (medians).
	runs int
	// s3 is the run's S3 server, started when a contender needs it.
	s3 *s3server.Endpoint
	// infraPIDs are the broker's and the S3 server's processes (children
	// of the harness), whose CPU time each backlog run also records;
	// infraNames their command names.
	infraPIDs  []int
	infraNames []string
}

// distributedContenders are the contenders of -distributed: the baseline
// first.
const distributedContenders = "onceflow,onceflow-s3,onceflow-dist1,onceflow-dist2,onceflow-dist3"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var intervals, contenders, workloads string
	flag.BoolVar(&o.quick, "quick", false, "a small input and short paced runs, to check the setup in a few minutes")
	flag.IntVar(&o.copyRecords, "records", 0, "records in the copy input (default 5,000,000; 200,000 with -quick)")
	flag.IntVar(&o.wcLines, "lines", 0, "lines in the word-count input (default 500,000; 40,000 with -quick)")
	flag.IntVar(&o.wordsPerLine, "words-per-line", 5, "words per word-count line")
	flag.IntVar(&o.vocabulary, "vocabulary", 10000, "distinct words (drawn with a Zipf distribution)")
	flag.IntVar(&o.valueBytes, "value-bytes", 100, "value size of a copy record")
	flag.IntVar(&o.parallelism, "parallelism", 2, "parallelism / stream threads of every contender")
	flag.StringVar(&intervals, "intervals", "50ms,100ms,1s", "checkpoint/commit intervals")
	flag.StringVar(&contenders, "contenders", "limit,ceiling,franz-txn,kstreams,flink,onceflow",
		"contenders to run (also pipe, the group pipe that was the limit before issue 19; for tuning, limit@k=v+k=v runs the limit with gopipe's -k v flags)")
	flag.StringVar(&workloads, "workloads", "copy,wordcount", "workloads to run")
	flag.IntVar(&o.paceRate, "pace-rate", 2000, "records per second in the paced (latency) run")
	flag.DurationVar(&o.paceFor, "pace-for", 0, "length of the paced run (default 10s; 5s with -quick)")
	flag.BoolVar(&o.recovery, "recovery", true, "measure recovery (SIGKILL and restart) in the paced run")
	flag.BoolVar(&o.paced, "paced", true, "make the paced run (latency, recovery) after each backlog run; -paced=false measures throughput only, e.g. to tune the limit")
	flag.BoolVar(&o.warmup, "warmup", true, "before measuring, run the limit and franz-txn once on the copy input, unmeasured, so that the first measured contender does not meet a cold broker")
	flag.DurationVar(&o.runTimeout, "run-timeout", 10*time.Minute, "bound of one backlog run")
	flag.StringVar(&o.resultsDir, "out", "", "where results.md, results.json and chart.png go (default bench/results, bench/results/quick with -quick)")
	flag.StringVar(&o.cacheDir, "cache", "", "build cache for the Java contenders and binaries (default ~/.cache/onceflow)")
	flag.StringVar(&o.workDir, "work", "", "scratch directory for state and logs (default a new temporary one)")
	flag.BoolVar(&o.keepWorkDir, "keep", false, "keep the scratch directory (contender logs) after the run")
	flag.StringVar(&o.profile, "profile", "", "record a CPU profile of this contender's backlog runs with perf (cpu-clock), into the results folder")
	flag.StringVar(&o.onceflowLog, "processor-log", "warn", "onceflow's log level (info logs slow commits; with -keep the logs stay in the work dir)")
	flag.StringVar(&o.onceflowBin, "processor", "", "onceflow processor binary (default: built from ./cmd/processor)")
	flag.BoolVar(&o.distributed, "distributed", false, "the distributed measurements instead (issue 16): contenders "+distributedContenders+
		", interval 1s, 3 runs, no recovery unless these flags say otherwise; an S3 server for the run; results to bench/results/distributed")
	flag.IntVar(&o.runs, "runs", 0, "measure every contender, workload and interval this many times, interleaved, and report medians (default 3; 1 with -quick; 3 with -distributed)")
	wo := windowFlags()
	so := stateFlags()
	renderDir := flag.String("render", "", "measure nothing: write results.md (and chart.png) of this results folder again from its results.json")
	flag.Parse()
	if *renderDir != "" && wo.on {
		return renderWindows(*renderDir)
	}
	if *renderDir != "" && so.on {
		return renderState(*renderDir)
	}
	if *renderDir != "" {
		return render(*renderDir)
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.distributed {
		// One checkpoint interval, several runs; recovery of a distributed
		// job is a group moving (the integration tests time it). Quick
		// inputs are larger than -quick's own: the copy's 200,000 records
		// take less than one 1 s checkpoint in single mode.
		if !set["contenders"] {
			contenders = distributedContenders
		}
		if !set["intervals"] {
			intervals = "1s"
		}
		if !set["recovery"] {
			o.recovery = false
		}
		if o.runs == 0 {
			o.runs = 3
		}
		if o.copyRecords == 0 && o.quick {
			o.copyRecords = 1_000_000
		}
		if o.wcLines == 0 && o.quick {
			o.wcLines = 100_000
		}
	}
	if o.runs <= 0 {
		// Figures move by tens of percent between runs on shared cores:
		// the full comparison reports medians of 3 (issue 19 §6), the
		// quick check of the setup measures once.
		o.runs = pick(o.quick, 1, 3)
	}
	if o.copyRecords == 0 {
		o.copyRecords = pick(o.quick, 200_000, 5_000_000)
	}
	if o.wcLines == 0 {
		o.wcLines = pick(o.quick, 40_000, 500_000)
	}
	if o.paceFor == 0 {
		o.paceFor = time.Duration(pick(o.quick, 5, 10)) * time.Second
	}
	o.partitions = 8
	for _, s := range strings.Split(intervals, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return fmt.Errorf("-intervals: %q is not a positive duration", s)
		}
		o.intervals = append(o.intervals, d)
	}
	o.contenders = splitList(contenders)
	o.workloads = splitList(workloads)
	for _, c := range o.contenders {
		if findContender(c) == nil {
			return fmt.Errorf("-contenders: unknown contender %q", c)
		}
	}
	for _, w := range o.workloads {
		if w != "copy" && w != "wordcount" {
			return fmt.Errorf("-workloads: unknown workload %q (copy, wordcount)", w)
		}
	}
	var err error
	if o.repoDir, err = repoRoot(); err != nil {
		return err
	}
	if wo.on {
		return runWindows(&o, wo, set)
	}
	if so.on {
		return runState(&o, so, set)
	}
	resultsDir := "bench/results"
	switch {
	case o.distributed:
		resultsDir = "bench/results/distributed"
	case o.quick:
		resultsDir = "bench/results/quick"
	}
	props := benchBrokerProps
	if o.distributed {
		props = append(slices.Clone(props), distributedBrokerProps...)
	}
	su, err := setUp(&o, "copy and word count", resultsDir, "onceflow-bench-", props)
	if err != nil {
		return err
	}
	defer su.close()
	ctx, started, built, k := su.ctx, su.started, su.built, su.k
	runID := fmt.Sprintf("b%d", time.Now().Unix()%1_000_000)

	if slices.ContainsFunc(o.contenders, func(n string) bool { return findContender(n).s3 }) {
		srv, err := s3server.Start(ctx, s3server.Options{Bucket: "onceflow-bench-" + runID, Logf: logf})
		if err != nil {
			return fmt.Errorf("starting the S3 server: %w", err)
		}
		defer func() {
			if err := srv.Stop(); err != nil {
				logf("stopping the S3 server: %v", err)
			}
		}()
		ep := srv.Endpoint()
		o.s3 = &ep
		logf("S3 server: %s", ep)
	}
	o.infraPIDs, o.infraNames = infraProcs()
	logf("broker and S3 server processes (their CPU time is recorded too): %v %v", o.infraNames, o.infraPIDs)

	inputs := map[string]*input{}
	for _, w := range o.workloads {
		t := time.Now()
		in, err := k.seed(ctx, &o, w, runID+"-"+w+"-in")
		if err != nil {
			return fmt.Errorf("seeding the %s input: %w", w, err)
		}
		inputs[w] = in
		logf("seeded %s: %d records in %s, %d output records expected (%s)", in.Topic, in.Records, w, in.Expected, time.Since(t).Round(time.Millisecond))
	}

	if o.warmup {
		warmUp(ctx, k, &o, built, inputs["copy"], runID)
	}

	// Every run measures every contender once, so that several runs
	// spread the machine's changing load over all of them, and each run
	// starts one contender further on, so that a load that rises or falls
	// during a run does not favour the same contender every time.
	var results []*result
	seq := 0
	for run := 1; run <= o.runs; run++ {
		shift := (run - 1) % len(o.contenders)
		order := append(slices.Clone(o.contenders[shift:]), o.contenders[:shift]...)
		for _, w := range o.workloads {
			for _, name := range order {
				c := findContender(name)
				if !c.jobs[w] {
					continue
				}
				ivs := o.intervals
				if !c.usesInterval {
					ivs = []time.Duration{0}
				}
				for _, iv := range ivs {
					if ctx.Err() != nil {
						break
					}
					seq++
					r := &result{Contender: name, Workload: w, IntervalMS: iv.Milliseconds(), RecoveryS: -1}
					if o.runs > 1 {
						r.Run = run
					}
					results = append(results, r)
					if err := built[name]; err != nil {
						r.Err = "build: " + firstLine(err.Error())
						continue
					}
					id := fmt.Sprintf("%s-%d-%s-%s", runID, seq, topicSafe(name), w)
					logf("=== %s %s interval %s%s", name, w, ivName(iv), runName(run, o.runs))
					t := time.Now()
					runOne(ctx, k, &o, c, inputs[w], id, iv, r)
					logf("%s %s %s%s: %s (%s)", name, w, ivName(iv), runName(run, o.runs), r.summary(), time.Since(t).Round(time.Second))
				}
			}
		}
	}
	o.loadAfter = loadAvg()
	interrupted := ctx.Err()
	if interrupted != nil {
		// Keep what was measured; the unfinished run is marked.
		for _, r := range results {
			if r.Err == "" && r.Throughput == 0 {
				r.Err = "interrupted"
			}
		}
	}
	rep := &report{
		Started:    started,
		Took:       time.Since(started),
		Quick:      o.quick,
		Brokers:    strings.Join(o.brokers, ","),
		Machine:    machine(),
		Inputs:     inputs,
		Results:    medians(results),
		Intervals:  o.intervals,
		Options:    &o,
		Workloads:  o.workloads,
		Contenders: o.contenders,
	}
	if o.runs > 1 {
		rep.Runs = results
	}
	if err := rep.write(o.resultsDir); err != nil {
		return err
	}
	for _, b := range rep.limitBreaches() {
		logf("THE LIMIT IS WRONG: %s", b)
	}
	logf("done in %s: %s", time.Since(started).Round(time.Second), filepath.Join(o.resultsDir, "results.md"))
	return interrupted
}

// runOne measures one contender on one workload at one interval; failures
// end up in r.Err.
func runOne(ctx context.Context, k *kafka, o *options, c *contender, in *input, id string, iv time.Duration, r *result) {
	dir := filepath.Join(o.workDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.Err = err.Error()
		return
	}
	if err := backlogRun(ctx, k, o, c, in, id+"-t", iv, filepath.Join(dir, "backlog"), r); err != nil {
		r.Err = "backlog run: " + firstLine(err.Error())
		logf("%s: %v", id, err)
		return
	}
	if !o.paced {
		return
	}
	if err := pacedRun(ctx, k, o, c, in.Workload, id+"-p", iv, filepath.Join(dir, "paced"), r); err != nil {
		r.Err = "paced run: " + firstLine(err.Error())
		logf("%s: %v", id, err)
	}
}

// warmUp runs the non-transactional and the transactional Go copy once
// on the copy input and throws the figures away. A fresh broker JVM runs
// its fetch and transaction paths interpreted until the JIT has compiled
// them, and its page cache does not yet hold the input: whichever
// contender is measured first pays for that (the limit, measured first,
// once ran at 0.56 instead of 0.88 million records/s).
func warmUp(ctx context.Context, k *kafka, o *options, built map[string]error, in *input, runID string) {
	if in == nil {
		return
	}
	for i, w := range []struct {
		name string
		iv   time.Duration
	}{{"limit", 0}, {"franz-txn", 100 * time.Millisecond}} {
		c := findContender(w.name)
		if built[w.name] != nil || c == nil || ctx.Err() != nil {
			continue
		}
		if _, ok := built[w.name]; !ok {
			if err := c.build(ctx, o); err != nil {
				logf("warm-up: %s: build: %v", w.name, err)
				continue
			}
		}
		id := fmt.Sprintf("%s-warm%d-%s", runID, i, w.name)
		t := time.Now()
		var r result
		if err := backlogRun(ctx, k, o, c, in, id, w.iv, filepath.Join(o.workDir, id), &r); err != nil {
			logf("warm-up: %s: %v (measuring anyway)", w.name, err)
			continue
		}
		logf("warm-up: %s copied the input at %.0f records/s, not counted (%s)", w.name, r.Throughput, time.Since(t).Round(time.Second))
	}
}

// benchBrokerProps give the benchmark broker Kafka's default request
// threads (the test broker has 2 of each), and delete a deleted topic's
// files after 1 s instead of 60 s, so that the topics of one measurement
// are gone before the next starts rather than removed in its middle.
var benchBrokerProps = []string{"num.io.threads=8", "num.network.threads=3", "file.delete.delay.ms=1000"}

// distributedBrokerProps: with -distributed the coordinator waits 3 s
// (Kafka's default; the test broker's is 0) before the first generation
// of an empty consumer group, so that the instances of a distributed
// contender, started together, all get their groups in it, instead of
// the first taking all 8 and handing them over as the others join, in the
// middle of the measurement.
var distributedBrokerProps = []string{"group.initial.rebalance.delay.ms=3000"}

// topicSafe replaces what a Kafka topic name may not hold (a tuned
// contender's @, + and =) with '.'.
func topicSafe(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '.'
	}, name)
}

func runName(run, runs int) string {
	if runs <= 1 {
		return ""
	}
	return fmt.Sprintf(" (run %d of %d)", run, runs)
}

func pick(quick bool, small, full int) int {
	if quick {
		return small
	}
	return full
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func ivName(iv time.Duration) string {
	if iv == 0 {
		return "-"
	}
	return iv.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s compare: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// repoRoot finds the module root (the directory holding go.mod) from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/onceflow/onceflow") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the onceflow repository (no go.mod of github.com/onceflow/onceflow above the working directory)")
		}
		dir = parent
	}
}

func machine() string {
	cpus := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := strings.Count(string(b), "\nprocessor")
		if strings.HasPrefix(string(b), "processor") {
			n++
		}
		model := ""
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, model, _ = strings.Cut(line, ":")
				break
			}
		}
		cpus = fmt.Sprintf("%d × %s", n, strings.TrimSpace(model))
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		mem = strings.Join(strings.Fields(line)[1:], " ")
	}
	return fmt.Sprintf("%s, MemTotal %s", cpus, mem)
}

// loadAvg is the 1-minute load average: other work on the machine skews
// every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
