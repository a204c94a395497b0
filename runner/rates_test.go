package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// TestRateTrackerWindows: rates come from the counters' growth over a
// window of at least rateWindow; backpressure is the share of the window
// the subtasks waited (per subtask); an operator that moved no record and
// is not backpressured is idle; counters that went back (a restart)
// count from zero; without operators the tracker starts anew.
func TestRateTrackerWindows(t *testing.T) {
	var r rateTracker
	t0 := time.Unix(1000, 0)
	ops := func(srcOut, mapIn int64, mapBP time.Duration, sinkIn int64) []engine.OperatorStats {
		return []engine.OperatorStats{
			{UID: "source", Kind: "source", Parallelism: 2, RecordsOut: srcOut},
			{UID: "map", Kind: "operator", Parallelism: 2, Inputs: []string{"source"}, RecordsIn: mapIn, RecordsOut: mapIn, Backpressured: mapBP},
			{UID: "sink", Kind: "sink", Parallelism: 1, Inputs: []string{"map"}, RecordsIn: sinkIn},
		}
	}
	if got := r.observe(t0, ops(0, 0, 0, 0)); got != nil {
		t.Fatalf("rates before a window passed: %+v", got)
	}
	// Too short a window: still nothing.
	if got := r.observe(t0.Add(rateWindow/2), ops(10, 10, 0, 10)); got != nil {
		t.Fatalf("rates after half a window: %+v", got)
	}
	// Two seconds: the map waited 3 s of its 2×2 subtask-seconds.
	got := r.observe(t0.Add(2*time.Second), ops(400, 300, 3*time.Second, 0))
	want := map[string]operatorRate{
		"source": {InPerSecond: 0, OutPerSecond: 200},
		"map":    {InPerSecond: 150, OutPerSecond: 150, Backpressure: 0.75, Backpressured: true},
		"sink":   {Idle: true},
	}
	for uid, w := range want {
		if got[uid] != w {
			t.Errorf("%s: %+v, want %+v", uid, got[uid], w)
		}
	}
	// Between windows the last rates stay.
	if again := r.observe(t0.Add(2*time.Second+rateWindow/2), ops(500, 400, 3*time.Second, 50)); again["map"] != want["map"] {
		t.Errorf("map between windows: %+v, want the last window's %+v", again["map"], want["map"])
	}
	// A restart: counters start from zero again and count as they are.
	got = r.observe(t0.Add(3*time.Second), ops(100, 40, 0, 40))
	if m := got["map"]; m.InPerSecond != 40 || m.Backpressure != 0 || m.Idle || m.Backpressured {
		t.Errorf("map after its counters went back: %+v, want 40/s, not backpressured, not idle", m)
	}
	// No attempt running: forgotten.
	if got := r.observe(t0.Add(4*time.Second), nil); got != nil {
		t.Errorf("rates without operators: %+v", got)
	}
	if got := r.observe(t0.Add(5*time.Second), ops(0, 0, 0, 0)); got != nil {
		t.Errorf("rates at the first sample after a gap: %+v", got)
	}
}

// TestJobAPIDescribesTheGraph: GET /api/v1/job names each operator's
// kind, parallelism and inputs, and after a window its rates and
// backpressure; the page is at /.
func TestJobAPIDescribesTheGraph(t *testing.T) {
	m := newMemJob(1<<30, time.Millisecond)
	r := startRun(t, m, nil, "--config", jobConfig(t, t.TempDir(), ""), "--set", "log.level=info")
	addr := r.addr()
	deadline := time.Now().Add(20 * time.Second)
	var jb jobBody
	for {
		jb = jobBody{}
		getJSON(t, "http://"+addr+"/api/v1/job", &jb)
		if len(jb.Operators) == 4 && jb.Operators[0].RecordsInPerSecond != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no operator rates within 20s: %+v", jb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if jb.Mode != "single" || jb.LastFailure != nil {
		t.Errorf("mode %q, last failure %+v; want single and none", jb.Mode, jb.LastFailure)
	}
	want := map[string]operatorBody{
		"source": {Kind: "source", Parallelism: 2, Inputs: []string{}},
		"split":  {Kind: "operator", Parallelism: 2, Inputs: []string{"source"}},
		"count":  {Kind: "operator", Parallelism: 2, Inputs: []string{"split"}},
		"sink":   {Kind: "sink", Parallelism: 2, Inputs: []string{"count"}},
	}
	for _, op := range jb.Operators {
		w, ok := want[op.UID]
		if !ok || op.Kind != w.Kind || op.Parallelism != w.Parallelism || strings.Join(op.Inputs, ",") != strings.Join(w.Inputs, ",") {
			t.Errorf("operator %s: kind %q, parallelism %d, inputs %q; want %+v", op.UID, op.Kind, op.Parallelism, op.Inputs, w)
		}
		if op.BackpressureRatio == nil || *op.BackpressureRatio < 0 || *op.BackpressureRatio > 1 {
			t.Errorf("operator %s: backpressure ratio %v, want 0 to 1", op.UID, op.BackpressureRatio)
		}
	}
	code, hdr, body := call(t, "GET", "http://"+addr+"/", nil)
	if code != 200 || !strings.Contains(hdr.Get("Content-Type"), "text/html") || !strings.Contains(body, "/ui/app.js") {
		t.Errorf("GET /: %d %s %.200q", code, hdr.Get("Content-Type"), body)
	}
}
