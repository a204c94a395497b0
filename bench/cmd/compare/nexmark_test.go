package main

import (
	"math"
	"strings"
	"testing"
)

// The generator keeps Nexmark's proportions (1 person : 3 auctions : 46
// bids), bids name auctions and people already made, and delayed bids are
// the configured fraction, each delayed by 1..maxDelay ms, so that the
// input is out of order by at most maxDelay.
func TestNexmarkRatiosAndDelays(t *testing.T) {
	const base, rate, frac, maxDelay = 1_700_000_000_000, 10_000.0, 0.1, 2000
	g := newNexmark(7, base, rate, frac, maxDelay)
	const n = 46 * 4000
	delayed := 0
	var newest int64 = base
	for i := range n {
		b := g.next()
		if b.DelayMS < 0 || b.DelayMS > maxDelay {
			t.Fatalf("bid %d delayed by %d ms, want 0..%d", i, b.DelayMS, maxDelay)
		}
		if b.DelayMS > 0 {
			delayed++
		}
		if b.TS < newest-maxDelay {
			t.Fatalf("bid %d at %d is %d ms behind the newest event time %d, beyond the bound %d", i, b.TS, newest-b.TS, newest, maxDelay)
		}
		newest = max(newest, b.TS)
		made := g.n - 1 // this bid's event number
		if b.Auction < nexFirstID || b.Auction > nexFirstID+lastAuction(made) {
			t.Fatalf("bid %d names auction %d, not made yet (newest %d)", i, b.Auction, nexFirstID+lastAuction(made))
		}
		if b.Bidder < nexFirstID || b.Bidder > nexFirstID+lastPerson(made) {
			t.Fatalf("bid %d from bidder %d, not made yet (newest %d)", i, b.Bidder, nexFirstID+lastPerson(made))
		}
		if b.Price < 100 || b.Price > 100_000_000 {
			t.Fatalf("bid %d price %d outside 100..100,000,000", i, b.Price)
		}
	}
	if g.kinds[nexBid] != n || g.kinds[nexPerson]*46 != n || g.kinds[nexAuction]*46 != 3*n {
		t.Errorf("made %d persons, %d auctions, %d bids: want 1 : 3 : 46", g.kinds[nexPerson], g.kinds[nexAuction], g.kinds[nexBid])
	}
	if f := float64(delayed) / n; math.Abs(f-frac) > 0.01 {
		t.Errorf("%.3f of the bids delayed, want %.2f", f, frac)
	}
	// Event time advances by 1/rate per event, persons and auctions
	// included: 50 events per 46 bids.
	if span, want := newest-base, int64(float64(n)*50/46*1000/rate); math.Abs(float64(span-want)) > 2 {
		t.Errorf("the bids span %d ms of event time, want %d", span, want)
	}
}

func TestNexmarkIDs(t *testing.T) {
	for _, c := range []struct{ n, person, auction int64 }{
		{0, 0, -1}, {1, 0, 0}, {3, 0, 2}, {4, 0, 2}, {49, 0, 2}, {50, 1, 2}, {51, 1, 3}, {104, 2, 8},
	} {
		if p, a := lastPerson(c.n), lastAuction(c.n); p != c.person || a != c.auction {
			t.Errorf("event %d: newest person %d, auction %d; want %d, %d", c.n, p, a, c.person, c.auction)
		}
	}
}

func TestWindowReference(t *testing.T) {
	q5, _ := findQuery("q5")
	got := q5.reference([]timedBid{{"a", 10_500}, {"a", 11_999}, {"b", 12_000}})
	want := map[winKey]int64{
		{"a", 2000, 12000}: 2, {"a", 4000, 14000}: 2, {"a", 6000, 16000}: 2, {"a", 8000, 18000}: 2, {"a", 10000, 20000}: 2,
		{"b", 4000, 14000}: 1, {"b", 6000, 16000}: 1, {"b", 8000, 18000}: 1, {"b", 10000, 20000}: 1, {"b", 12000, 22000}: 1,
	}
	if !equalWindows(got, want) {
		t.Errorf("q5 reference %v, want %v", got, want)
	}
	q11, _ := findQuery("q11")
	// a: 0, 10000 (touching: one session), 25000 (a new one); b alone.
	got = q11.reference([]timedBid{{"a", 10_000}, {"a", 0}, {"a", 25_000}, {"b", 5}})
	want = map[winKey]int64{{"a", 0, 20000}: 2, {"a", 25000, 35000}: 1, {"b", 5, 10005}: 1}
	if !equalWindows(got, want) {
		t.Errorf("q11 reference %v, want %v", got, want)
	}
}

func equalWindows(a, b map[winKey]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestParseWinResult(t *testing.T) {
	for _, c := range []struct {
		in   string
		want winKey
		n    int64
	}{
		{`{"key":"1001","start":1700000000000,"end":1700000010000,"value":42}`, winKey{"1001", 1700000000000, 1700000010000}, 42},
		{`{"key":1001,"start":0,"end":10000,"value":7}`, winKey{"1001", 0, 10000}, 7},
	} {
		k, n, err := parseWinResult([]byte(c.in))
		if err != nil || k != c.want || n != c.n {
			t.Errorf("parse %s: %v %d %v, want %v %d", c.in, k, n, err, c.want, c.n)
		}
	}
	for _, bad := range []string{`{"key":"a","start":5,"end":5,"value":1}`, `{"start":0,"end":1,"value":1}`, `{"key":"a","start":0,"end":1,"value":1.5}`, `nope`} {
		if _, _, err := parseWinResult([]byte(bad)); err == nil {
			t.Errorf("parse %s: no error", bad)
		}
	}
}

// The windowed report takes every ratio against onceflow in the same
// run, on both throughput figures, and survives its own results.json.
func TestWinReport(t *testing.T) {
	rep := &winReport{
		Inputs:      map[string]*winInput{"q5": {Query: "q5", Bids: 1000, FirstAt: 100}},
		Queries:     []string{"q5"},
		Contenders:  []string{"onceflow", "flink", "kstreams"},
		IntervalsMS: []int64{100},
		RunsN:       3,
		Results: []*result{
			{Contender: "onceflow", Workload: "q5", IntervalMS: 100, Throughput: 300, WallS: 2, P99MS: 100, Check: "ok"},
			{Contender: "flink", Workload: "q5", IntervalMS: 100, Throughput: 100, WallS: 4, P99MS: 200, Check: "ok"},
			{Contender: "kstreams", Workload: "q5", IntervalMS: 100, Err: "backlog run: exited"},
		},
	}
	ts := rep.targets()
	if len(ts) != 2 || ts[0].Met != "yes / yes" || !strings.Contains(ts[0].Measured, "3.00 × after the first window") ||
		!strings.Contains(ts[0].Measured, "2.00 × over the wall time") || ts[1].Met != "?" {
		t.Errorf("targets %+v", ts)
	}
	if md := rendered(t, rep.write, renderWindows); !strings.Contains(md, "closest built-in equivalents") || !strings.Contains(md, "| flink | 100ms | 100 |") {
		t.Errorf("results.md:\n%s", md)
	}
}
