package manualclock

import (
	"testing"
	"time"
)

func filled(ch <-chan time.Time) (time.Time, bool) {
	select {
	case t := <-ch:
		return t, true
	default:
		return time.Time{}, false
	}
}

// After fills its channel at once for d <= 0, else at the Advance that
// reaches its instant (not before), with the clock's time then; Forget
// drops the waits not yet filled.
func TestAfterFillsWhenAdvanceReachesItsInstant(t *testing.T) {
	start := time.UnixMilli(10_000)
	c := New(start)
	if got, ok := filled(c.After(0)); !ok || !got.Equal(start) {
		t.Fatalf("After(0): %v, %v; want %v at once", got, ok, start)
	}
	second, third := c.After(time.Second), c.After(3*time.Second)
	c.Advance(999 * time.Millisecond)
	if _, ok := filled(second); ok {
		t.Fatal("After(1s) filled 999ms on")
	}
	c.Advance(time.Millisecond)
	if got, ok := filled(second); !ok || !got.Equal(start.Add(time.Second)) {
		t.Fatalf("After(1s) at 1s: %v, %v", got, ok)
	}
	c.Advance(5 * time.Second)
	if got, ok := filled(third); !ok || !got.Equal(start.Add(6*time.Second)) {
		t.Fatalf("After(3s) at 6s: %v, %v; want filled with the time then", got, ok)
	}
	if !c.Now().Equal(start.Add(6 * time.Second)) {
		t.Fatalf("Now %v, want %v", c.Now(), start.Add(6*time.Second))
	}
	forgotten := c.After(time.Second)
	c.Forget()
	c.Advance(time.Hour)
	if _, ok := filled(forgotten); ok {
		t.Fatal("a forgotten After filled")
	}
}
