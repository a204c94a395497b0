package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// The report of -distributed: every ratio is against onceflow in single
// mode (the contender "onceflow") measured in the same run, and between
// the distributed contenders against one instance.

// distBaseline is the contender every distributed ratio divides by.
const distBaseline = "onceflow"

// distributedMarkdown is results.md of a -distributed run.
func (rep *report) distributedMarkdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := rep.Options
	mode := "full"
	if rep.Quick {
		mode = "quick (-quick: small inputs, not for conclusions)"
	}
	p("# onceflow distributed benchmark results\n\n")
	p("Measured by `bench/cmd/compare -distributed` (`make bench-distributed`) on %s; the run took %s. Mode: %s.\n", rep.Started.Format("2006-01-02 15:04 MST"), rep.Took.Round(time.Second), mode)
	if o.runs > 1 {
		p("Every figure is the median of %d runs of each contender (the lower one of an even count); the runs were interleaved, each measuring every contender once and starting one contender further on than the run before, so that the machine's changing load spreads over all of them. The throughput column gives the range over the runs; every run's figures are at the end and in results.json.\n\n", o.runs)
	} else {
		p("Every figure is from one run (-runs 1), not a median.\n\n")
	}
	p("- Machine: %s, %d CPUs seen by Go; 1-minute load average %s before the run and %s after it. The broker, the S3 server, the harness and every instance share it, and other work on the machine skews every figure.\n", rep.Machine, runtime.NumCPU(), rep.LoadBefore, rep.LoadAfter)
	p("- Cluster: %s (a single local Kafka 4.1.1 node unless KAFKA_BOOTSTRAP was set), with group.initial.rebalance.delay.ms=3000 so that instances started together get their groups in one generation.\n", rep.Brokers)
	if rep.S3 != "" {
		p("- S3: %s, started by the harness for this run; each S3 contender keeps its checkpoints under s3://<bucket>/<its run id>/.\n", rep.S3)
	}
	for _, w := range rep.Workloads {
		if in := rep.Inputs[w]; in != nil {
			p("- Input %s: %s records in 8 partitions (%.1f MB), %s output records expected.\n", w, num(float64(in.Records)), float64(in.Bytes)/1e6, num(float64(in.Expected)))
		}
	}
	ivs := make([]string, len(rep.Intervals))
	for i, iv := range rep.Intervals {
		ivs[i] = iv.String()
	}
	p("- Checkpoint interval: %s. Single mode runs parallelism %d; a distributed job has 8 partition groups (G = 8), each a pipeline of parallelism 1.\n\n", strings.Join(ivs, ", "), o.parallelism)

	p("## Instances of one distributed job: throughput and CPU\n\n")
	p("× single divides by onceflow in single mode (file checkpoints), × 1 instance by onceflow-dist1. CPU is user + system time of the contender's processes, summed over its instances, from their start until the output was complete, per million output records (start-up included; *start-up* is the part before the first write). Cores busy: CPU seconds per second from the first write until the output was complete, of the instances and of the broker and S3 server together: on this machine the two can only add up to its core count, less the harness's share. Peak RSS: the largest instance's, and the sum over the instances.\n\n")
	for _, w := range rep.Workloads {
		for _, iv := range rep.Intervals {
			ivMS := iv.Milliseconds()
			p("### %s, checkpoints every %s\n\n", w, iv)
			p("| contender | instances | throughput rec/s (min–max over the runs) | × single | × 1 instance | CPU s per M records | CPU × single | CPU s of start-up | cores busy: instances / broker + S3 | peak RSS MiB (largest / sum) | groups per instance | revocations | output |\n")
			p("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
			base := rep.find(distBaseline, w, ivMS)
			one := rep.find("onceflow-dist1", w, ivMS)
			for _, r := range rep.Results {
				if r.Workload != w || r.IntervalMS != ivMS {
					continue
				}
				if r.Err != "" && r.Throughput == 0 {
					p("| %s | %d | failed: %s ||||||||||||\n", r.Contender, findContender(r.Contender).count(), mdEscape(r.Err))
					continue
				}
				xs, x1, cx := "", "", ""
				if base != nil && r.Throughput > 0 {
					xs = fmt.Sprintf("%.2f", r.Throughput/base.Throughput)
					if base.CPUPerM > 0 {
						cx = fmt.Sprintf("%.2f", r.CPUPerM/base.CPUPerM)
					}
				}
				if one != nil && r.Throughput > 0 && findContender(r.Contender).distributed {
					x1 = fmt.Sprintf("%.2f", r.Throughput/one.Throughput)
				}
				groups := r.Groups
				if groups == "" {
					groups = "–"
				}
				revs := "–"
				if findContender(r.Contender).distributed {
					revs = fmt.Sprint(r.Revocations)
				}
				p("| %s | %d | %s%s | %s | %s | %.2f | %s | %.2f | %s / %s | %.0f / %.0f | %s | %s | %s |\n",
					r.Contender, r.Instances, num(r.Throughput), spread(r), xs, x1,
					r.CPUPerM, cx, r.CPUStartS, cores(r.Cores), cores(r.InfraCores), r.PeakRSSMB, r.PeakRSSSumMB, groups, revs, mdEscape(outputNote(r)))
			}
			p("\n")
		}
	}

	p("## The repartitioned word count against the in-process one\n\n")
	p("In distributed mode the word count's KeyBy does not follow the input partitioning, so each partition group runs two stages: the first splits lines and writes the words, keyed, into the repartition topic inside its checkpoint's transactions; the second reads that topic read_committed and counts. A word becomes visible only after it crossed two checkpoint commits, where single mode hands it to the counter in-process and commits once. Latency: paced run (%d records/s for %s), produce call → visible under read_committed.\n\n", o.paceRate, o.paceFor)
	p("| interval | contender | throughput rec/s | × single | p50 ms | p99 ms | p99 × single | max ms | commit every (paced) ms |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, iv := range rep.Intervals {
		ivMS := iv.Milliseconds()
		base := rep.find(distBaseline, "wordcount", ivMS)
		for _, name := range []string{distBaseline, "onceflow-s3", "onceflow-dist1"} {
			r := rep.find(name, "wordcount", ivMS)
			if r == nil {
				continue
			}
			xs, xp := "", ""
			if base != nil {
				xs = fmt.Sprintf("%.2f", r.Throughput/base.Throughput)
				if base.P99MS > 0 && r.LatencyN > 0 {
					xp = fmt.Sprintf("%.2f", r.P99MS/base.P99MS)
				}
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", iv, name, num(r.Throughput), xs,
				ms(r.P50MS, r.LatencyN), ms(r.P99MS, r.LatencyN), xp, ms(r.MaxMS, r.LatencyN), msOrDash(r.CommitPacedMS))
		}
	}
	p("\n")
	for _, s := range rep.repartitionSentences() {
		p("%s\n", s)
	}
	p("\n")

	p("## Latency of every contender\n\n| workload | interval | contender | p50 ms | p99 ms | max ms | p99 × single | commit every (load / paced) ms |\n|---|---|---|---|---|---|---|---|\n")
	for _, w := range rep.Workloads {
		for _, iv := range rep.Intervals {
			ivMS := iv.Milliseconds()
			base := rep.find(distBaseline, w, ivMS)
			for _, r := range rep.Results {
				if r.Workload != w || r.IntervalMS != ivMS || r.LatencyN == 0 {
					continue
				}
				xp := ""
				if base != nil && base.P99MS > 0 {
					xp = fmt.Sprintf("%.2f", r.P99MS/base.P99MS)
				}
				p("| %s | %s | %s | %.0f | %.0f | %.0f | %s | %s / %s |\n", w, iv, r.Contender, r.P50MS, r.P99MS, r.MaxMS, xp, msOrDash(r.CommitLoadMS), msOrDash(r.CommitPacedMS))
			}
		}
	}
	p("\n")

	p("## On %d cores\n\n", runtime.NumCPU())
	p("%s\n\n", strings.Join(rep.coresSentences(), " "))

	if len(rep.Runs) > 0 {
		p("## Every run\n\nThroughput in records/s, CPU seconds per million records and p99 latency of each run.\n\n")
		p("| workload | interval | contender |")
		for i := 1; i <= o.runs; i++ {
			p(" run %d |", i)
		}
		p("\n|---|---|---|%s\n", strings.Repeat("---|", o.runs))
		for _, m := range rep.Results {
			p("| %s | %s | %s |", m.Workload, time.Duration(m.IntervalMS)*time.Millisecond, m.Contender)
			for _, r := range rep.Runs {
				if r.Contender != m.Contender || r.Workload != m.Workload || r.IntervalMS != m.IntervalMS {
					continue
				}
				if r.Throughput == 0 {
					p(" failed |")
					continue
				}
				p(" %s (%.2f s/M, p99 %s ms) |", num(r.Throughput), r.CPUPerM, ms(r.P99MS, r.LatencyN))
			}
			p("\n")
		}
		p("\n")
	}

	p("## How each figure is measured\n\n")
	p(`As in the main comparison (bench/results/results.md), from outside the contender's processes:

- **throughput**: backlog run, the whole input in the topic before the instances start; output records divided by the time from the contender's first write (the earliest producer timestamp in its output and repartition topics, read uncommitted) to the poll of a read_committed reader that completed the output. Start-up (process start, joining the consumer group, claiming the groups in S3) is excluded. The main comparison counts from the first visible output less one commit gap instead; here that would flatter distributed mode, whose word count shows its first output only after two commits with the second stage's work piled up, and whose output partitions carry the commit markers of 8 producers at staggered times, so that the marker gap is not the commit interval.
- **output**: "ok" means exactly the expected number of records and, for the word count, every word's last count equal to its number of occurrences (read for 1 s + the interval after completion).
- **CPU**: utime + stime of /proc/<pid>/stat of each instance when the output was complete, summed, divided by the output records (millions). It includes start-up, which the throughput excludes; with a small input that share is visible (*CPU s of start-up*: the CPU time at the last 100 ms sample before the first write). *Cores busy* divides the CPU time from that sample to the end by the time between them, for the instances and for the broker and S3 server together: distributed mode moves work to them (a transaction per group and checkpoint, the repartition topic, S3 requests instead of local files).
- **peak RSS**: VmHWM of each instance in the backlog run; the largest and the sum.
- **groups per instance / revocations**: each instance's /api/v1/job at the end of the backlog run: how many of the 8 partition groups it owned, and the rebalances that took groups from an instance (0: they all joined the first generation and kept their groups).
- **p50 / p99 / max latency**: paced run on fresh topics after a warm-up (a marker to each input partition until every one came out, then 2 s or two intervals more); produce call → visible under read_committed.
- No recovery is measured here: a distributed job recovers by moving a dead instance's groups to the others, which the integration tests time (integration/distributed_test.go).

Contender settings:

`)
	for _, name := range rep.Contenders {
		p("- **%s**: %s. %s\n", name, rep.Labels[name], contenderNotes[name])
	}
	p("\nReproduce: `make bench-distributed` (full), `make bench-distributed BENCH_FLAGS=-quick` (this page's mode when it says quick); `go run ./bench/cmd/compare -h` lists the flags (-runs, -intervals, -contenders, -records, -lines).\n")
	return b.String()
}

// outputNote is the output check, with the runs that failed.
func outputNote(r *result) string {
	s := r.Check
	if r.Err != "" {
		s += "; " + r.Err
	}
	if r.Failed != "" {
		s += "; " + r.Failed
	}
	return s
}

// repartitionSentences compare the distributed word count's latency and
// throughput with single mode's, at each interval.
func (rep *report) repartitionSentences() []string {
	var out []string
	for _, iv := range rep.Intervals {
		ivMS := iv.Milliseconds()
		base, dist, s3 := rep.find(distBaseline, "wordcount", ivMS), rep.find("onceflow-dist1", "wordcount", ivMS), rep.find("onceflow-s3", "wordcount", ivMS)
		if base == nil || dist == nil || base.LatencyN == 0 || dist.LatencyN == 0 {
			continue
		}
		s := fmt.Sprintf("At %s checkpoints the repartitioned word count (one instance) ran at %.2f× the in-process one's throughput, with a p99 of %.0f ms against %.0f ms (%.2f×, %+.0f ms; the interval is %.0f ms).",
			iv, dist.Throughput/base.Throughput, dist.P99MS, base.P99MS, dist.P99MS/base.P99MS, dist.P99MS-base.P99MS, float64(ivMS))
		if s3 != nil && s3.LatencyN > 0 {
			s += fmt.Sprintf(" Single mode with S3 checkpoints, one commit per record like file checkpoints: %.2f× throughput, p99 %.0f ms (%+.0f ms against file checkpoints).",
				s3.Throughput/base.Throughput, s3.P99MS, s3.P99MS-base.P99MS)
		}
		out = append(out, s)
	}
	return out
}

// coresSentences say what the instance counts show on this machine,
// from the figures of the first interval.
func (rep *report) coresSentences() []string {
	cpus := runtime.NumCPU()
	ivMS := int64(0)
	if len(rep.Intervals) > 0 {
		ivMS = rep.Intervals[0].Milliseconds()
	}
	out := []string{fmt.Sprintf("This machine has %d CPUs, shared by the broker, the S3 server, the harness and every instance (1-minute load average %s before the run, %s after: other work ran too).",
		cpus, rep.LoadBefore, rep.LoadAfter)}
	// The largest gain of 2 or 3 instances over one, and where.
	type gain struct {
		x         float64
		w         string
		n         int
		one, more *result
	}
	var best *gain
	cpuRose, measured := true, false
	for _, w := range rep.Workloads {
		base := rep.find(distBaseline, w, ivMS)
		var rs []*result
		for n := 1; n <= 3; n++ {
			rs = append(rs, rep.find(fmt.Sprintf("onceflow-dist%d", n), w, ivMS))
		}
		if rs[0] == nil || rs[1] == nil || rs[2] == nil {
			continue
		}
		measured = true
		s := fmt.Sprintf("%s: 1, 2 and 3 instances ran at %s, %s and %s records/s (%.2f×, %.2f× and %.2f× single mode's %s), using %.2f, %.2f and %.2f CPU seconds per million records against %.2f in single mode",
			w, num(rs[0].Throughput), num(rs[1].Throughput), num(rs[2].Throughput),
			ratio(rs[0], base), ratio(rs[1], base), ratio(rs[2], base), numOr(base),
			rs[0].CPUPerM, rs[1].CPUPerM, rs[2].CPUPerM, cpuOr(base))
		s += fmt.Sprintf("; while the output came, the instances kept %s, %s and %s cores busy (single mode %s) and the broker with the S3 server %s, %s and %s (%s).",
			cores(rs[0].Cores), cores(rs[1].Cores), cores(rs[2].Cores), coresOf(base),
			cores(rs[0].InfraCores), cores(rs[1].InfraCores), cores(rs[2].InfraCores), infraOf(base))
		out = append(out, s)
		for i := 1; i <= 2; i++ {
			if x := rs[i].Throughput / rs[0].Throughput; best == nil || x > best.x {
				best = &gain{x: x, w: w, n: i + 1, one: rs[0], more: rs[i]}
			}
		}
		cpuRose = cpuRose && rs[1].CPUPerM >= rs[0].CPUPerM && rs[2].CPUPerM >= rs[0].CPUPerM
	}
	if !measured {
		return append(out, "The three instance counts were not all measured, so nothing is said of them.")
	}
	s := fmt.Sprintf("On %d cores more instances cannot scale: each brings its own Kafka clients, group membership and pipelines onto the same cores that already run one instance, the broker and the S3 server.", cpus)
	if best.x <= 1.05 {
		s += fmt.Sprintf(" Here 2 and 3 instances gained nothing over one (at most %.2f×, %s with %d)", best.x, best.w, best.n)
	} else {
		s += fmt.Sprintf(" The most that 2 or 3 instances gained over one here was %.2f× (%s with %d instances), while the instances' busy cores went from %s to %s: one instance left part of the cores to the rest of the machine, or the load changed between runs (see every run's figures), which is not scaling",
			best.x, best.w, best.n, cores(best.one.Cores), cores(best.more.Cores))
	}
	if cpuRose {
		s += "; the CPU per record rose with every instance added to one."
	} else {
		s += "; the CPU per record did not rise with every instance added (start-up, which the CPU figure includes, is shared by more processes, or the load changed)."
	}
	out = append(out, s, "These figures say what distributed mode costs on one machine; how it scales needs a core (or a machine) per instance, and is not measured here.")
	return out
}

func ratio(r, base *result) float64 {
	if r == nil || base == nil || base.Throughput == 0 {
		return 0
	}
	return r.Throughput / base.Throughput
}

func numOr(r *result) string {
	if r == nil {
		return "(not measured)"
	}
	return num(r.Throughput)
}

func cpuOr(r *result) float64 {
	if r == nil {
		return 0
	}
	return r.CPUPerM
}

func coresOf(r *result) string {
	if r == nil {
		return "–"
	}
	return cores(r.Cores)
}

func infraOf(r *result) string {
	if r == nil {
		return "–"
	}
	return cores(r.InfraCores)
}

// cores is a cores-busy figure; 0 is "not measured" (the output came
// within half a second).
func cores(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// spread is " (min–max)" of the throughput over the runs, empty for one
// run.
func spread(r *result) string {
	if r.Runs <= 1 || r.ThroughputMin == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s–%s)", num(r.ThroughputMin), num(r.ThroughputMax))
}
