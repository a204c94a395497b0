package window

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTumblingHoldsEachTimestampOnce(t *testing.T) {
	tw, err := NewTumbling(10*time.Second, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for ts, want := range map[int64]Window{
		0:      {-7000, 3000},
		2999:   {-7000, 3000},
		3000:   {3000, 13000},
		12999:  {3000, 13000},
		-7001:  {-17000, -7000},
		-17000: {-17000, -7000},
	} {
		got := tw.Assign(nil, ts)
		if len(got) != 1 || got[0] != want {
			t.Errorf("tumbling 10s+3s: %d is in %v, want %v", ts, got, want)
		}
		if w := got[0]; ts < w.Start || ts >= w.End {
			t.Errorf("tumbling: %d assigned to %v, which does not hold it", ts, w)
		}
	}
	if tw.Merging() {
		t.Error("tumbling windows merge")
	}
}

// A sliding window of size s every d holds a timestamp in every window
// that starts on the slide's grid and holds it (floor or ceil of s/d of
// them), earliest first.
func TestSlidingHoldsEachTimestampInSizeOverSlideWindows(t *testing.T) {
	for _, c := range []struct{ size, slide, offset time.Duration }{
		{10 * time.Second, 2 * time.Second, 0},
		{5 * time.Millisecond, 2 * time.Millisecond, time.Millisecond},
		{3 * time.Millisecond, 3 * time.Millisecond, 0},
	} {
		s, err := NewSliding(c.size, c.slide, c.offset)
		if err != nil {
			t.Fatal(err)
		}
		size, slide, offset := c.size.Milliseconds(), c.slide.Milliseconds(), c.offset.Milliseconds()
		for ts := int64(-25); ts < 25; ts++ {
			ws := s.Assign(nil, ts)
			var want []Window
			for start := ts - size - slide; start <= ts; start++ {
				if ((start-offset)%slide+slide)%slide == 0 && ts < start+size {
					want = append(want, Window{start, start + size})
				}
			}
			if !slices.Equal(ws, want) || len(ws) < int(size/slide) || len(ws) > int((size+slide-1)/slide) {
				t.Fatalf("sliding %v: %d is in windows %v, want %v", c, ts, ws, want)
			}
			for i, w := range ws {
				if ts < w.Start || ts >= w.End || w.End-w.Start != size || (w.Start-c.offset.Milliseconds())%slide != 0 {
					t.Fatalf("sliding %v: %d assigned to %v", c, ts, w)
				}
				if i > 0 && w.Start-ws[i-1].Start != slide {
					t.Fatalf("sliding %v: %d in %v, starts not %d apart", c, ts, ws, slide)
				}
			}
		}
	}
}

func TestAssignersRefuseBadSpans(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"zero size", second(NewTumbling(0, 0)), "size 0s is below 1ms"},
		{"sub-millisecond size", second(NewTumbling(1500*time.Microsecond, 0)), "whole milliseconds"},
		{"offset beyond the size", second(NewTumbling(time.Second, time.Second)), "offset 1s is outside 0..1s"},
		{"negative offset", second(NewTumbling(time.Second, -time.Millisecond)), "outside"},
		{"slide above the size", second(NewSliding(time.Second, 2*time.Second, 0)), "size 1s is below the slide 2s"},
		{"zero slide", second(NewSliding(time.Second, 0, 0)), "slide 0s is below 1ms"},
		{"zero gap", second(NewSession(0)), "session gap 0s is below 1ms"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, c.err, c.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// Session merging: a record's window absorbs every session it intersects
// (touching counts), also ones only its cover reaches, and the sessions
// left are disjoint.
func TestMergeSessions(t *testing.T) {
	s, err := NewSession(10 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Merging() {
		t.Fatal("session windows do not merge")
	}
	var sessions []Window
	add := func(ts int64) Window {
		t.Helper()
		w := s.Assign(nil, ts)[0]
		merged, absorbed := MergeSessions(sessions, w)
		sessions = slices.DeleteFunc(sessions, func(x Window) bool { return slices.Contains(absorbed, x) })
		sessions = append(sessions, merged)
		for i, a := range sessions {
			for _, b := range sessions[i+1:] {
				if a.Intersects(b) {
					t.Fatalf("after %d: sessions %v and %v intersect", ts, a, b)
				}
			}
		}
		return merged
	}
	steps := []struct {
		ts   int64
		want Window
		all  string
	}{
		{100, Window{100, 110}, "[[100, 110)]"},
		{130, Window{130, 140}, "[[100, 110) [130, 140)]"},
		{105, Window{100, 115}, "[[100, 115) [130, 140)]"},
		{115, Window{100, 125}, "[[100, 125) [130, 140)]"}, // touches at 115
		{125, Window{100, 140}, "[[100, 140)]"},            // [125,135) reaches both
		{90, Window{90, 140}, "[[90, 140)]"},               // touches at 100
		{200, Window{200, 210}, "[[90, 140) [200, 210)]"},
		{79, Window{79, 89}, "[[79, 89) [90, 140) [200, 210)]"},
	}
	for _, st := range steps {
		if got := add(st.ts); got != st.want {
			t.Fatalf("record at %d: session %v, want %v", st.ts, got, st.want)
		}
		slices.SortFunc(sessions, func(a, b Window) int { return int(a.Start - b.Start) })
		if got := fmt.Sprint(sessions); got != st.all {
			t.Fatalf("after %d: sessions %s, want %s", st.ts, got, st.all)
		}
	}
	// A window reaching two sessions only through its cover of the first.
	merged, absorbed := MergeSessions([]Window{{0, 10}, {25, 30}, {12, 20}}, Window{8, 13})
	if merged != (Window{0, 20}) || len(absorbed) != 2 {
		t.Fatalf("merging [8,13) into [0,10) [12,20) [25,30): %v absorbing %v, want [0, 20) absorbing two", merged, absorbed)
	}
}

// A window is late once its last timestamp plus the allowed lateness is
// at or below the watermark; the cleanup time saturates.
func TestLateness(t *testing.T) {
	w := Window{0, 1000}
	for _, c := range []struct {
		wm       int64
		lateness time.Duration
		late     bool
	}{
		{998, 0, false},
		{999, 0, true},
		{1998, time.Second, false},
		{1999, time.Second, true},
		{math.MinInt64, 0, false},
	} {
		if got := w.Late(c.wm, c.lateness); got != c.late {
			t.Errorf("window %v at watermark %d, lateness %s: late %t, want %t", w, c.wm, c.lateness, got, c.late)
		}
	}
	if got := (Window{0, math.MaxInt64}).CleanupTime(time.Hour); got != math.MaxInt64 {
		t.Errorf("cleanup time of a window ending at the end of time: %d, want MaxInt64", got)
	}
}
