package state

import "testing"

// Every key group is owned by exactly one subtask, and the subtask that owns
// it according to the range is the one SubtaskForKeyGroup routes it to.
func TestKeyGroupRangesPartitionAndAgreeWithRouting(t *testing.T) {
	for _, maxP := range []int{1, 7, 128, 1000} {
		for p := 1; p <= maxP && p <= 33; p++ {
			next := 0
			for s := 0; s < p; s++ {
				r := KeyGroupRangeForSubtask(s, p, maxP)
				if r.Start != next {
					t.Fatalf("maxP=%d p=%d subtask %d starts at %d, want %d", maxP, p, s, r.Start, next)
				}
				for kg := r.Start; kg < r.End; kg++ {
					if got := SubtaskForKeyGroup(kg, p, maxP); got != s {
						t.Fatalf("maxP=%d p=%d key group %d in range of %d but routed to %d", maxP, p, kg, s, got)
					}
				}
				next = r.End
			}
			if next != maxP {
				t.Fatalf("maxP=%d p=%d ranges end at %d", maxP, p, next)
			}
		}
	}
}

func TestKeyGroupOfIsStableAndSpread(t *testing.T) {
	// Fixed values: changing the hash would strand every stored key.
	for key, want := range map[string]int{"laowang": 25, "hello": 110, "": 11} {
		if got := KeyGroupOf([]byte(key), 128); got != want {
			t.Fatalf("KeyGroupOf(%q) = %d, want %d: the hash changed", key, got, want)
		}
	}
	counts := make([]int, 128)
	for i := 0; i < 128*100; i++ {
		counts[KeyGroupOf([]byte{byte(i), byte(i >> 8), 'k'}, 128)]++
	}
	for kg, c := range counts {
		if c < 40 || c > 200 {
			t.Fatalf("key group %d got %d of 12800 keys: hash is badly spread", kg, c)
		}
	}
}
