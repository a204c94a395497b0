package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every exactly-once contender whose median is above the limit's is named,
// in the targets and in the page; contenders without an interval (the
// ceiling) may be above it.
func TestLimitBreaches(t *testing.T) {
	rep := &report{
		Workloads: []string{"copy"}, Intervals: []time.Duration{time.Second},
		Contenders: []string{"limit", "ceiling", "franz-txn", "onceflow"},
		Options:    &options{runs: 3, parallelism: 2},
		Results: []*result{
			{Contender: "limit", Workload: "copy", Throughput: 1000, Runs: 3, ThroughputMin: 900, ThroughputMax: 1100},
			{Contender: "ceiling", Workload: "copy", Throughput: 1500, Runs: 3},
			{Contender: "franz-txn", Workload: "copy", IntervalMS: 1000, Throughput: 1200, Runs: 3},
			{Contender: "onceflow", Workload: "copy", IntervalMS: 1000, Throughput: 950, Runs: 3},
		},
	}
	bs := rep.limitBreaches()
	if len(bs) != 1 || !strings.HasPrefix(bs[0], "franz-txn copy at 1s: 1,200 rec/s") {
		t.Fatalf("breaches %q, want franz-txn's alone", bs)
	}
	ts := rep.targets()
	i := slices.IndexFunc(ts, func(c targetCheck) bool { return strings.Contains(c.Target, "≤ the limit") })
	if i < 0 || ts[i].Met != "**no**" || !strings.Contains(ts[i].Measured, "LIMIT IS WRONG") {
		t.Fatalf("limit target %+v, want it unmet and loud", ts)
	}
	if md := rep.markdown(); !strings.Contains(md, "THE LIMIT IS WRONG") || !strings.Contains(md, "1,000 (900–1,100)") {
		t.Errorf("the page has no loud limit warning or no throughput range:\n%s", md)
	}
	rep.Results[2].Throughput = 990
	if bs := rep.limitBreaches(); len(bs) != 0 {
		t.Errorf("breaches %q with every exactly-once contender at or below the limit", bs)
	}
}

// A tuned limit passes its settings as gopipe flags and keeps its name.
func TestTunedLimit(t *testing.T) {
	c := findContender("limit@clients=4+linger=5ms")
	if c == nil {
		t.Fatal("limit@clients=4+linger=5ms not found")
	}
	cmd, err := c.command(&options{parallelism: 2}, spec{Brokers: []string{"b:9092"}, Job: "copy", In: "i", Out: "o", ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(cmd.Args, " ")
	if c.name != "limit@clients=4+linger=5ms" || !strings.Contains(args, "-mode limit -job copy -acks all") || !strings.HasSuffix(args, "-clients 4 -linger 5ms") {
		t.Errorf("name %q, args %q", c.name, args)
	}
	for _, bad := range []string{"limit@", "limit@clients", "kstreams@threads=2", "onceflow@"} {
		if findContender(bad) != nil {
			t.Errorf("findContender(%q) found a contender", bad)
		}
	}
	if got := topicSafe("limit@clients=4+linger=5ms"); got != "limit.clients.4.linger.5ms" {
		t.Errorf("topicSafe: %q", got)
	}
	cmd = tunedGoPipeCmd(t, "franz-txn@compression=snappy")
	if args := strings.Join(cmd.Args, " "); !strings.Contains(args, "-mode txn") || !strings.HasSuffix(args, "-compression snappy") {
		t.Errorf("franz-txn@compression=snappy: args %q", args)
	}
	cmd = tunedGoPipeCmd(t, "franz-txn@GOGC=200")
	if args := strings.Join(cmd.Args, " "); strings.Contains(args, "GOGC") || len(cmd.Env) == 0 || cmd.Env[len(cmd.Env)-1] != "GOGC=200" {
		t.Errorf("franz-txn@GOGC=200: args %q, environment ends %q", args, cmd.Env[max(len(cmd.Env)-1, 0):])
	}
}

// tunedGoPipeCmd is the command of the tuned franz-txn contender name, at
// 1 s.
func tunedGoPipeCmd(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	c := findContender(name)
	if c == nil {
		t.Fatalf("%s not found", name)
	}
	cmd, err := c.command(&options{parallelism: 2}, spec{Brokers: []string{"b:9092"}, Job: "copy", In: "i", Out: "o", ID: "x", Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// A tuned onceflow sets its configuration keys in the processor's
// environment, and a key in capitals as it is.
func TestTunedOnceflow(t *testing.T) {
	c := findContender("onceflow@sink.compression=snappy+source.fetch_max_bytes=4194304+GOMEMLIMIT=180MiB")
	if c == nil {
		t.Fatal("not found")
	}
	dir := t.TempDir()
	cmd, err := c.command(&options{parallelism: 2, onceflowBin: "processor"}, spec{Brokers: []string{"b:9092"}, Job: "copy", In: "i", Out: "o", ID: "x", Dir: dir, Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(cmd.Env, "\n")
	for _, want := range []string{"ONCEFLOW_SINK_COMPRESSION=snappy", "ONCEFLOW_SOURCE_FETCH_MAX_BYTES=4194304", "\nGOMEMLIMIT=180MiB"} {
		if !strings.Contains(env, want) {
			t.Errorf("the processor's environment lacks %s", want)
		}
	}
}

// The copy's targets are issue 19's: a share of the limit by interval (0.5
// at 50 ms, 0.6 at 100 ms, 0.9 at 1 s), 1.1 × franz-txn at the same
// interval, and a peak RSS under 200 MiB.
func TestCopyTargets(t *testing.T) {
	rep := &report{
		Workloads: []string{"copy"}, Intervals: []time.Duration{50 * time.Millisecond, time.Second},
		Contenders: []string{"limit", "franz-txn", "onceflow"},
		Options:    &options{runs: 3, parallelism: 2},
		Results: []*result{
			{Contender: "limit", Workload: "copy", Throughput: 1000, Runs: 3},
			{Contender: "franz-txn", Workload: "copy", IntervalMS: 50, Throughput: 400, Runs: 3},
			{Contender: "franz-txn", Workload: "copy", IntervalMS: 1000, Throughput: 800, Runs: 3},
			{Contender: "onceflow", Workload: "copy", IntervalMS: 50, Throughput: 520, Runs: 3, PeakRSSMB: 150},
			{Contender: "onceflow", Workload: "copy", IntervalMS: 1000, Throughput: 870, Runs: 3, PeakRSSMB: 210},
		},
	}
	got := map[string]string{}
	for _, c := range rep.targets() {
		got[c.Target] = c.Met
	}
	for target, want := range map[string]string{
		"copy at 50ms: onceflow ≥ 0.5 × limit":      "yes",
		"copy at 1s: onceflow ≥ 0.9 × limit":        "**no**",
		"copy at 50ms: onceflow ≥ 1.1 × franz-txn":  "yes",
		"copy at 1s: onceflow ≥ 1.1 × franz-txn":    "**no**",
		"copy at 50ms: onceflow peak RSS < 200 MiB": "yes",
		"copy at 1s: onceflow peak RSS < 200 MiB":   "**no**",
		"copy at 50ms: onceflow p99 ≤ 100 ms":       "–",
	} {
		if got[target] != want {
			t.Errorf("target %q: met %q, want %q (all: %v)", target, got[target], want, got)
		}
	}
}
