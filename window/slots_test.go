package window

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// slidingReference is the sliding count/sum per key and window of events,
// computed directly: a record is in every window [start, start+size) with
// start a multiple of slide and start <= ts < start+size.
func slidingReference(size, slide int64, events ...[]event) []string {
	type kw struct {
		key   string
		start int64
	}
	acc := map[kw]countSum{}
	for _, phase := range events {
		for _, e := range phase {
			last := e.ts - ((e.ts%slide)+slide)%slide
			for start := last; start > e.ts-size; start -= slide {
				c := acc[kw{e.key, start}]
				acc[kw{e.key, start}] = countSum{c.Count + 1, c.Sum + e.n}
			}
		}
	}
	var lines []string
	for _, k := range slices.Collect(maps.Keys(acc)) {
		c := acc[k]
		lines = append(lines, fmt.Sprintf("%s %v %d/%d", k.key, Window{k.start, k.start + size}, c.Count, c.Sum))
	}
	sort.Strings(lines)
	return lines
}

// slidingPhases are records of 5 keys over 6 phases, out of order by up to
// 300 ms within a phase and never behind the previous phase's watermark
// (bound 1 s), so nothing is late.
func slidingPhases() [][]event {
	var phases [][]event
	for p := range 6 {
		var ph []event
		for i := range 60 {
			ts := int64(p*1000 + (i*137)%1000 - (i%4)*100)
			ph = append(ph, event{key: fmt.Sprintf("k%d", i%5), n: int64(i + p), ts: max(ts, int64(p*1000))})
		}
		phases = append(phases, ph)
	}
	return phases
}

// Sliding windows, kept as one value per key, equal a direct computation
// on both backends: every window of every key fires once with its count
// and sum.
func TestSlidingWindowsEqualAReference(t *testing.T) {
	phases := slidingPhases()
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			sw, _ := NewSliding(1000*time.Millisecond, 250*time.Millisecond, 0)
			got := runWindows(t, b, Spec{Assigner: sw}, 1000, phases...)
			if want := slidingReference(1000, 250, phases...); !slices.Equal(got, want) {
				t.Fatalf("sliding results (%d):\n%s\nwant (%d):\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
			}
		})
	}
}

// Within the allowed lateness a record updates each of its sliding
// windows that has fired, which fires again; past it the record is late.
func TestSlidingWindowsAllowedLateness(t *testing.T) {
	sw, _ := NewSliding(10*time.Millisecond, 5*time.Millisecond, 0)
	phases := [][]event{
		{{"a", 1, 3}, {"a", 2, 7}},
		{{"a", 4, 40}}, // watermark 39: [-5,5), [0,10), [5,15) fire; cleanup of [0,10) at 9+25=34: gone
		{{"a", 8, 12}}, // [5,15) (cleanup 39, gone) and [10,20) (cleanup 44): [10,20) gets it, fires at once
		{{"a", 16, 200}},
		{{"a", 32, 13}}, // every window of 13 is past its cleanup: late
	}
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			got := runWindows(t, b, Spec{Assigner: sw, AllowedLateness: 25 * time.Millisecond}, 0, phases...)
			want := []string{
				"a [-5, 5) 1/1",
				"a [0, 10) 2/3",
				"a [10, 20) 1/8",
				"a [195, 205) 1/16",
				"a [200, 210) 1/16",
				"a [35, 45) 1/4",
				"a [40, 50) 1/4",
				"a [5, 15) 1/2",
				"late a 13",
			}
			if !slices.Equal(got, want) {
				t.Fatalf("outputs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// runHalf runs phases through a window operator with assigner a at
// parallelism p on storage dir, restoring from restore when set, and when
// stop is set stops with a savepoint once the phases are read, returning
// its path with the outputs.
func runHalf(t *testing.T, dir string, b state.KeyedBackendFactory, a Assigner, p int, restore string, stop bool, phases ...[]event) ([]string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	storage, err := dirstore.NewFileStorage(dir, "windows", dirstore.StorageOptions{Retained: 3})
	if err != nil {
		t.Fatal(err)
	}
	j := engine.NewJob("windows", engine.Options{Storage: storage, Backend: b, WatermarkInterval: 2 * time.Millisecond, RestoreFrom: restore,
		Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond, Mode: engine.ExactlyOnce, Timeout: time.Minute}})
	src := phasedSource{phases: phases, bound: 1000, hold: stop, held: make(chan struct{})}
	in := engine.FromSource(j, "source", 1, src)
	keyed := engine.KeyBy(in, func(e event) string { return e.key }, state.StringCodec{})
	out := Aggregate(keyed, "windows", p, Spec{Assigner: a}, sumAgg{}, state.JSONCodec[countSum]{})
	sink := &collect[Output[string, event, countSum]]{}
	engine.SinkTo(out, "sink", 1, sink)
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	var path string
	if stop {
		// Once the reader holds, every record was read, and the
		// savepoint's barrier follows them all.
		select {
		case <-src.held:
		case err := <-done:
			return nil, "", fmt.Errorf("the job ended before its input was read: %w", err)
		}
		if path, err = j.StopWithSavepoint(ctx); err != nil {
			return nil, "", fmt.Errorf("savepoint: %w", err)
		}
	}
	if err := <-done; err != nil && !errors.Is(err, engine.ErrStopped) {
		return nil, "", err
	}
	var lines []string
	for _, o := range sink.got {
		lines = append(lines, fmt.Sprintf("%s %v %d/%d", o.Key, o.Window, o.Value.Count, o.Value.Sum))
	}
	return lines, path, nil
}

// Sliding windows' one value per key survives a stop with a savepoint and
// a restore at another parallelism (2 to 3) on both backends: the results
// of both halves together equal a direct computation, each window once.
func TestSlidingWindowsRestoreAndRescale(t *testing.T) {
	phases := slidingPhases()
	sw, _ := NewSliding(1000*time.Millisecond, 250*time.Millisecond, 0)
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			first, sp, err := runHalf(t, dir, b, sw, 2, "", true, phases[:3]...)
			if err != nil {
				t.Fatal(err)
			}
			second, _, err := runHalf(t, dir, b, sw, 3, sp, false, phases[3:]...)
			if err != nil {
				t.Fatal(err)
			}
			got := append(first, second...)
			sort.Strings(got)
			if want := slidingReference(1000, 250, phases...); !slices.Equal(got, want) {
				t.Fatalf("results of both halves (%d + %d):\n%s\nwant (%d):\n%s", len(first), len(second), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
			}
		})
	}
}

// A checkpoint whose window state is one map entry per window (as every
// sliding window operator wrote before it kept one value per key, and as
// tumbling windows still do) is refused by a sliding operator of the same
// uid, naming the state, instead of restoring as empty windows.
func TestSlidingWindowsRefuseAMapOfWindows(t *testing.T) {
	tw, _ := NewTumbling(time.Second, 0)
	sw, _ := NewSliding(time.Second, 250*time.Millisecond, 0)
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, sp, err := runHalf(t, dir, b, tw, 2, "", true, slidingPhases()[:2]...)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = runHalf(t, dir, b, sw, 2, sp, false, slidingPhases()[2:]...)
			if err == nil || !strings.Contains(err.Error(), `state "windows"`) || !strings.Contains(err.Error(), "one entry per window") {
				t.Fatalf("restoring map-of-windows state into sliding windows: %v, want a refusal naming state \"windows\"", err)
			}
		})
	}
}

// sessionPhases are records of 7 keys over 6 phases of 1 s, each key
// active in bursts, so that sessions (gap 150 ms) open, extend, merge out
// of order and close all along the input.
func sessionPhases() [][]event {
	var phases [][]event
	for p := range 6 {
		var ph []event
		for i := range 70 {
			k := i % 7
			// a key bids in 3 of every 4 windows of 250 ms, shifted by key
			slotStart := int64(p*1000 + (i/7)*100)
			if (slotStart/250+int64(k))%4 == 0 {
				continue
			}
			ts := slotStart + int64((i*53)%90) - int64(i%3)*40
			ph = append(ph, event{key: fmt.Sprintf("s%d", k), n: int64(i + p), ts: max(ts, int64(p*1000))})
		}
		phases = append(phases, ph)
	}
	return phases
}

// Session windows' one value per key survives a stop with a savepoint and
// a restore at 3 subtasks instead of 2 on both backends: both halves
// together give what one uninterrupted run gives, each session once.
func TestSessionWindowsRestoreAndRescale(t *testing.T) {
	phases := sessionPhases()
	sw, _ := NewSession(150 * time.Millisecond)
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			want := runWindows(t, b, Spec{Assigner: sw}, 1000, phases...)
			if len(want) < 20 {
				t.Fatalf("only %d sessions in one run: the input does not exercise sessions", len(want))
			}
			dir := t.TempDir()
			first, sp, err := runHalf(t, dir, b, sw, 2, "", true, phases[:3]...)
			if err != nil {
				t.Fatal(err)
			}
			second, _, err := runHalf(t, dir, b, sw, 3, sp, false, phases[3:]...)
			if err != nil {
				t.Fatal(err)
			}
			got := append(first, second...)
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Fatalf("sessions of both halves (%d + %d):\n%s\nwant, from one run (%d):\n%s", len(first), len(second), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
			}
		})
	}
}

// A checkpoint whose session windows are one map entry per window and a
// list of sessions (as before they were one value per key) is refused by
// a session operator of the same uid, naming the state.
func TestSessionWindowsRefuseAMapOfWindows(t *testing.T) {
	tw, _ := NewTumbling(time.Second, 0)
	sw, _ := NewSession(150 * time.Millisecond)
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, sp, err := runHalf(t, dir, b, tw, 2, "", true, sessionPhases()[:2]...)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = runHalf(t, dir, b, sw, 2, sp, false, sessionPhases()[2:]...)
			if err == nil || !strings.Contains(err.Error(), `state "windows"`) || !strings.Contains(err.Error(), "one entry per window") {
				t.Fatalf("restoring map-of-windows state into session windows: %v, want a refusal naming state \"windows\"", err)
			}
		})
	}
}
