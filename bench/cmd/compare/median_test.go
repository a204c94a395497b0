package main

import (
	"strings"
	"testing"
)

// Medians take each figure from the runs that measured it: the backlog
// figures from runs whose backlog completed, the latencies from runs whose
// paced run saw every record; a merged result fails only when every run
// did, and names the runs that failed.
func TestMedians(t *testing.T) {
	runs := []*result{
		{Contender: "c", Workload: "copy", IntervalMS: 1000, Run: 1, Throughput: 300, CPUPerM: 3, Check: "ok", LatencyN: 10, P99MS: 90, RecoveryS: -1},
		{Contender: "c", Workload: "copy", IntervalMS: 1000, Run: 2, Throughput: 100, CPUPerM: 9, Check: "ok", LatencyN: 10, LatencyMissing: 2, P99MS: 5000, RecoveryS: -1,
			Err: "paced run: 2 of 10 paced records never became visible"},
		{Contender: "c", Workload: "copy", IntervalMS: 1000, Run: 3, Throughput: 200, CPUPerM: 5, Check: "ok", LatencyN: 10, P99MS: 110, RecoveryS: -1},
		{Contender: "d", Workload: "copy", IntervalMS: 1000, Run: 1, Err: "backlog run: exited", RecoveryS: -1},
	}
	ms := medians(runs)
	if len(ms) != 2 {
		t.Fatalf("%d merged results, want 2 (one per contender)", len(ms))
	}
	c := ms[0]
	if c.Throughput != 200 || c.ThroughputMin != 100 || c.ThroughputMax != 300 || c.CPUPerM != 5 || c.Runs != 3 {
		t.Errorf("throughput %v (%v–%v), CPU %v, runs %d: want the median 200 (100–300), CPU 5, 3 runs", c.Throughput, c.ThroughputMin, c.ThroughputMax, c.CPUPerM, c.Runs)
	}
	if c.P99MS != 90 { // the lower median of 90 and 110; run 2 missed records
		t.Errorf("p99 %v, want 90 (run 2's paced run missed records)", c.P99MS)
	}
	if c.Err != "" || !strings.Contains(c.Failed, "1 of 3 runs failed: run 2:") || c.RecoveryS != -1 {
		t.Errorf("err %q, failed %q, recovery %v: want no error, run 2 named as failed, recovery not measured", c.Err, c.Failed, c.RecoveryS)
	}
	if d := ms[1]; d.Err != "run 1: backlog run: exited" || d.Throughput != 0 {
		t.Errorf("a contender whose every run failed: err %q, throughput %v", d.Err, d.Throughput)
	}
	if one := medians(runs[:1:1])[0]; one.Runs != 1 || one.Throughput != 300 {
		t.Errorf("one numbered run: runs %d, throughput %v", one.Runs, one.Throughput)
	}
}
