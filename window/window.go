// Package window holds the windows of event-time and processing-time
// aggregations: the Window itself, the assigners that put a timestamp in
// windows (tumbling, sliding, session), the merging of session windows,
// and the lateness rule that decides when a window's state may go.
//
// Times are epoch milliseconds, as the engine's record timestamps and
// watermarks are. A window is [Start, End): its last timestamp is End-1,
// and it fires when the watermark (or the processing-time clock) reaches
// End-1, as Flink's do.
//
// The package holds no state and starts nothing: the engine's window
// operator keeps each key's windows in keyed state and registers timers at
// their ends.
package window

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Window is the span [Start, End) in epoch milliseconds.
type Window struct {
	Start, End int64
}

// MaxTimestamp is the window's last timestamp, End-1: the time its timer
// fires at.
func (w Window) MaxTimestamp() int64 { return w.End - 1 }

// Intersects reports whether w and o overlap or touch. Session windows
// that touch merge: a record at the end of one session's gap continues
// it.
func (w Window) Intersects(o Window) bool { return w.Start <= o.End && o.Start <= w.End }

// Cover is the smallest window holding both w and o.
func (w Window) Cover(o Window) Window {
	return Window{Start: min(w.Start, o.Start), End: max(w.End, o.End)}
}

// String renders w as the half-open interval "[Start, End)" in epoch
// milliseconds.
func (w Window) String() string { return fmt.Sprintf("[%d, %d)", w.Start, w.End) }

// CleanupTime is when the window's state may go: its last timestamp plus
// the allowed lateness, saturating instead of overflowing.
func (w Window) CleanupTime(allowedLateness time.Duration) int64 {
	l := allowedLateness.Milliseconds()
	if w.MaxTimestamp() > math.MaxInt64-l {
		return math.MaxInt64
	}
	return w.MaxTimestamp() + l
}

// Late reports whether a record for w that arrives at watermark wm is too
// late: the window's state is gone or may go (its cleanup time is at or
// below the watermark). Such a record goes to the late side output.
func (w Window) Late(wm int64, allowedLateness time.Duration) bool {
	return w.CleanupTime(allowedLateness) <= wm
}

// Assigner puts a timestamp in the windows that hold it.
type Assigner interface {
	// Assign appends to dst the windows holding ts, earliest first, and
	// returns the result.
	Assign(dst []Window, ts int64) []Window
	// Merging reports whether the windows merge (sessions): the operator
	// then merges a new window with the key's windows it intersects.
	Merging() bool
}

// Tumbling windows are fixed, back to back, Size long, starting at
// multiples of Size shifted by Offset (both whole milliseconds).
type Tumbling struct {
	Size, Offset time.Duration
}

// NewTumbling validates a tumbling assigner: Size at least 1ms, 0 <= Offset <
// Size.
func NewTumbling(size, offset time.Duration) (Tumbling, error) {
	t := Tumbling{Size: size, Offset: offset}
	return t, checkSpan("size", size, offset)
}

// Assign appends the one window holding ts.
func (t Tumbling) Assign(dst []Window, ts int64) []Window {
	size := t.Size.Milliseconds()
	start := windowStart(ts, t.Offset.Milliseconds(), size)
	return append(dst, Window{Start: start, End: start + size})
}

// Merging is false.
func (Tumbling) Merging() bool { return false }

func (t Tumbling) size() int64 { return t.Size.Milliseconds() }

// Sliding windows are Size long and start every Slide (shifted by Offset),
// so a timestamp is in Size/Slide of them (rounded up).
type Sliding struct {
	Size, Slide, Offset time.Duration
}

// NewSliding validates a sliding assigner: Size and Slide at least 1ms,
// Slide <= Size, 0 <= Offset < Slide.
func NewSliding(size, slide, offset time.Duration) (Sliding, error) {
	s := Sliding{Size: size, Slide: slide, Offset: offset}
	if err := checkSpan("slide", slide, offset); err != nil {
		return s, err
	}
	if size.Milliseconds() < slide.Milliseconds() {
		return s, fmt.Errorf("window: size %s is below the slide %s: records between windows would belong to none", size, slide)
	}
	return s, nil
}

// Assign appends every window holding ts, earliest first.
func (s Sliding) Assign(dst []Window, ts int64) []Window {
	size, slide := s.Size.Milliseconds(), s.Slide.Milliseconds()
	last := windowStart(ts, s.Offset.Milliseconds(), slide)
	first := last - (size-1)/slide*slide
	for start := first; start <= last; start += slide {
		if ts < start+size {
			dst = append(dst, Window{Start: start, End: start + size})
		}
	}
	return dst
}

// Merging is false.
func (Sliding) Merging() bool { return false }

func (s Sliding) size() int64 { return s.Size.Milliseconds() }

// fixedSize is an Assigner whose windows are all size() milliseconds long.
type fixedSize interface{ size() int64 }

// Session windows hold a key's records until a gap of Gap without any: a
// record at ts opens [ts, ts+Gap), which merges with the key's sessions it
// intersects (MergeSessions).
type Session struct {
	Gap time.Duration
}

// NewSession validates a session assigner: Gap at least 1ms.
func NewSession(gap time.Duration) (Session, error) {
	if gap.Milliseconds() < 1 {
		return Session{Gap: gap}, fmt.Errorf("window: session gap %s is below 1ms", gap)
	}
	return Session{Gap: gap}, nil
}

// Assign appends [ts, ts+Gap).
func (s Session) Assign(dst []Window, ts int64) []Window {
	return append(dst, Window{Start: ts, End: ts + s.Gap.Milliseconds()})
}

// Merging is true.
func (Session) Merging() bool { return true }

// MergeSessions adds w to a key's sessions, which are disjoint (no two
// intersect): it returns the session w ends up in (w, or w covered with
// every session it intersects) and those sessions, which the caller merges
// into it (their accumulators folded together, their timers deleted). The
// sessions left are disjoint again. sessions is not modified.
func MergeSessions(sessions []Window, w Window) (merged Window, absorbed []Window) {
	merged = w
	// A cover can reach sessions w alone did not: repeat until none is
	// left. Sessions are disjoint, so one pass over them sorted by start
	// finds them all.
	sorted := slices.SortedFunc(slices.Values(sessions), func(a, b Window) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	for changed := true; changed; {
		changed = false
		for _, s := range sorted {
			if slices.Contains(absorbed, s) || !merged.Intersects(s) {
				continue
			}
			merged = merged.Cover(s)
			absorbed = append(absorbed, s)
			changed = true
		}
	}
	return merged, absorbed
}

// windowStart is the start of the window of length size (shifted by
// offset) holding ts, also for negative timestamps.
func windowStart(ts, offset, size int64) int64 {
	r := (ts - offset) % size
	if r < 0 {
		r += size
	}
	return ts - r
}

var errSubMillisecond = errors.New("window spans are whole milliseconds")

// checkSpan checks a window length (or slide) and its offset.
func checkSpan(what string, span, offset time.Duration) error {
	switch {
	case span.Milliseconds() < 1:
		return fmt.Errorf("window: %s %s is below 1ms", what, span)
	case span%time.Millisecond != 0 || offset%time.Millisecond != 0:
		return fmt.Errorf("window: %s %s, offset %s: %w", what, span, offset, errSubMillisecond)
	case offset < 0 || offset >= span:
		return fmt.Errorf("window: offset %s is outside 0..%s (the %s)", offset, span, what)
	}
	return nil
}
