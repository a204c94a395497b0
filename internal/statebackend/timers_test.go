package statebackend

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// timerFactories are the backends every timer test runs on.
func timerFactories(t testing.TB) []state.KeyedBackendFactory {
	return []state.KeyedBackendFactory{NewMemoryFactory(), pebbleFactory_(t, false)}
}

// timerRef is one timer of a reference model.
type timerRef struct {
	d   state.TimeDomain
	key string
	ts  int64
}

// timerModel is the reference the backends are compared with: a set of
// timers, fired in (ts, key group, key) order.
type timerModel struct {
	maxP   int
	timers map[timerRef]bool
}

func newTimerModel(maxP int) *timerModel {
	return &timerModel{maxP: maxP, timers: map[timerRef]bool{}}
}

func (m *timerModel) less(a, b timerRef) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	if c := cmp.Compare(state.KeyGroupOf([]byte(a.key), m.maxP), state.KeyGroupOf([]byte(b.key), m.maxP)); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}

// due returns the timers of d at or before upTo in firing order.
func (m *timerModel) due(d state.TimeDomain, upTo int64) []timerRef {
	var out []timerRef
	for r := range m.timers {
		if r.d == d && r.ts <= upTo {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, m.less)
	return out
}

func (m *timerModel) next(d state.TimeDomain) (int64, bool) {
	due := m.due(d, math.MaxInt64)
	if len(due) == 0 {
		return 0, false
	}
	return due[0].ts, true
}

// lines lists the timers like dumpBackend does.
func (m *timerModel) lines() []string {
	var out []string
	for r := range m.timers {
		out = append(out, fmt.Sprintf("timer %s|%q|%d", r.d, r.key, r.ts))
	}
	slices.Sort(out)
	return out
}

func register(t testing.TB, b state.KeyedBackend, m *timerModel, d state.TimeDomain, key string, ts int64) {
	t.Helper()
	b.SetCurrentKey([]byte(key))
	must(t, b.RegisterTimer(d, ts))
	if m != nil {
		m.timers[timerRef{d, key, ts}] = true
	}
}

func deleteTimer(t testing.TB, b state.KeyedBackend, m *timerModel, d state.TimeDomain, key string, ts int64) {
	t.Helper()
	b.SetCurrentKey([]byte(key))
	must(t, b.DeleteTimer(d, ts))
	if m != nil {
		delete(m.timers, timerRef{d, key, ts})
	}
}

// fireAll fires the timers of d up to upTo and returns them in firing
// order, checking that each one's key is current when fn runs.
func fireAll(t testing.TB, b state.KeyedBackend, d state.TimeDomain, upTo int64) []timerRef {
	t.Helper()
	var got []timerRef
	must(t, b.FireTimers(d, upTo, func(key []byte, ts int64) error {
		if !bytes.Equal(b.CurrentKey(), key) {
			return fmt.Errorf("timer of key %q fired with current key %q", key, b.CurrentKey())
		}
		got = append(got, timerRef{d, string(key), ts})
		return nil
	}))
	return got
}

func timerKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("k%03d", i)
	}
	return out
}

func TestTimersFireInOrderDeduplicatedPerDomain(t *testing.T) {
	for _, f := range timerFactories(t) {
		t.Run(f.Name(), func(t *testing.T) {
			b := newBackend(t, f, state.KeyedBackendOptions{})
			m := newTimerModel(state.DefaultMaxParallelism)
			keys := timerKeys(60)
			for i, k := range keys {
				// Ties on ts across key groups, negative times, and the
				// extremes of int64.
				for _, ts := range []int64{int64(i % 7), -int64(i%3) - 1, 1000 + int64(i), math.MinInt64, math.MaxInt64} {
					register(t, b, m, state.EventTime, k, ts)
					register(t, b, m, state.EventTime, k, ts) // a duplicate: no-op
				}
				register(t, b, m, state.ProcessingTime, k, int64(i%5))
			}
			for i, k := range keys {
				if i%4 == 0 {
					deleteTimer(t, b, m, state.EventTime, k, int64(i%7))
				}
				deleteTimer(t, b, m, state.EventTime, k, 424242) // absent: no-op
			}
			if d := diffDumps(m.lines(), timerLines(dumpBackend(t, b))); d != "" {
				t.Fatalf("stored timers differ from the model: %s", d)
			}
			for _, d := range []state.TimeDomain{state.EventTime, state.ProcessingTime} {
				ts, ok, err := b.NextTimer(d)
				must(t, err)
				if wts, wok := m.next(d); ts != wts || ok != wok {
					t.Fatalf("%s: NextTimer = %d, %v; want %d, %v", d, ts, ok, wts, wok)
				}
			}
			for _, upTo := range []int64{math.MinInt64, -2, 3, 3, 1020, math.MaxInt64 - 1, math.MaxInt64} {
				want := m.due(state.EventTime, upTo)
				got := fireAll(t, b, state.EventTime, upTo)
				if !slices.Equal(got, want) {
					t.Fatalf("FireTimers(event time, %d) fired\n%v\nwant\n%v", upTo, got, want)
				}
				for _, r := range want {
					delete(m.timers, r)
				}
				ts, ok, err := b.NextTimer(state.EventTime)
				must(t, err)
				if wts, wok := m.next(state.EventTime); ts != wts || ok != wok {
					t.Fatalf("after firing up to %d: NextTimer = %d, %v; want %d, %v", upTo, ts, ok, wts, wok)
				}
			}
			// Firing event time left the processing-time timers alone.
			if len(m.timers) != len(keys) {
				t.Fatalf("model holds %d timers, want the %d processing-time ones", len(m.timers), len(keys))
			}
			want := m.due(state.ProcessingTime, 2)
			if got := fireAll(t, b, state.ProcessingTime, 2); !slices.Equal(got, want) || len(want) == 0 {
				t.Fatalf("processing time fired %v, want %v", got, want)
			}
			for _, r := range want {
				delete(m.timers, r)
			}
			if d := diffDumps(m.lines(), timerLines(dumpBackend(t, b))); d != "" {
				t.Fatalf("timers left differ from the model: %s", d)
			}
		})
	}
}

// timerLines keeps the timer lines of a dump.
func timerLines(dump []string) []string {
	var out []string
	for _, l := range dump {
		if strings.HasPrefix(l, "timer ") {
			out = append(out, l)
		}
	}
	return out
}

func TestTimersChangedByTheCallbackFireInTheSameCall(t *testing.T) {
	for _, f := range timerFactories(t) {
		t.Run(f.Name(), func(t *testing.T) {
			b := newBackend(t, f, state.KeyedBackendOptions{})
			register(t, b, nil, state.EventTime, "a", 10)
			register(t, b, nil, state.EventTime, "b", 20)
			register(t, b, nil, state.EventTime, "c", 30)
			register(t, b, nil, state.EventTime, "d", 40)
			var got []string
			err := b.FireTimers(state.EventTime, 50, func(key []byte, ts int64) error {
				got = append(got, fmt.Sprintf("%s@%d", key, ts))
				switch {
				case string(key) == "a":
					// In the past, due, later than upTo, and in the other
					// domain; and c's timer goes away before it fires.
					register(t, b, nil, state.EventTime, "x", 5)
					register(t, b, nil, state.EventTime, "y", 25)
					register(t, b, nil, state.EventTime, "z", 51)
					register(t, b, nil, state.ProcessingTime, "p", 1)
					deleteTimer(t, b, nil, state.EventTime, "c", 30)
				case string(key) == "b" && ts == 20:
					// Its own key, later but due.
					must(t, b.RegisterTimer(state.EventTime, 45))
				case string(key) == "d":
					if err := b.FireTimers(state.EventTime, 100, func([]byte, int64) error { return nil }); !errors.Is(err, errNestedFire) {
						return fmt.Errorf("nested FireTimers: %v, want errNestedFire", err)
					}
				}
				return nil
			})
			must(t, err)
			want := []string{"a@10", "x@5", "b@20", "y@25", "d@40", "b@45"}
			if !slices.Equal(got, want) {
				t.Fatalf("fired %v, want %v", got, want)
			}
			left := timerLines(dumpBackend(t, b))
			wantLeft := []string{`timer event-time|"z"|51`, `timer processing-time|"p"|1`}
			if !slices.Equal(left, wantLeft) {
				t.Fatalf("left %v, want %v", left, wantLeft)
			}

			// fn's error stops the call and is returned as it is; the
			// timer it failed on is gone, the later ones stay.
			register(t, b, nil, state.EventTime, "e", 60)
			register(t, b, nil, state.EventTime, "f", 70)
			boom := errors.New("boom")
			var fired []string
			err = b.FireTimers(state.EventTime, 100, func(key []byte, ts int64) error {
				fired = append(fired, string(key))
				if string(key) == "e" {
					return boom
				}
				return nil
			})
			if err != boom {
				t.Fatalf("FireTimers returned %v, want fn's error", err)
			}
			if !slices.Equal(fired, []string{"z", "e"}) {
				t.Fatalf("fired %v before the error, want [z e]", fired)
			}
			if got := fireAll(t, b, state.EventTime, 100); !slices.Equal(got, []timerRef{{state.EventTime, "f", 70}}) {
				t.Fatalf("after the error, fired %v, want f@70", got)
			}
		})
	}
}

// A long random run of registrations, deletions and firings, with
// callbacks that change timers, against the reference model; few key
// groups, so that key groups hold many keys and times tie.
func TestTimersAgainstAModel(t *testing.T) {
	const maxP = 8
	for _, f := range timerFactories(t) {
		t.Run(f.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			b := newBackend(t, f, state.KeyedBackendOptions{MaxParallelism: maxP})
			m := newTimerModel(maxP)
			keys := timerKeys(40)
			domains := []state.TimeDomain{state.EventTime, state.ProcessingTime}
			watermark := int64(0)
			randomOp := func() {
				d := domains[rng.IntN(2)]
				k := keys[rng.IntN(len(keys))]
				ts := watermark + int64(rng.IntN(40)) - 10
				if rng.IntN(3) == 0 {
					deleteTimer(t, b, m, d, k, ts)
				} else {
					register(t, b, m, d, k, ts)
				}
			}
			fires := 0
			for step := 0; step < 3000; step++ {
				if rng.IntN(10) != 0 {
					randomOp()
					continue
				}
				d := domains[rng.IntN(2)]
				watermark += int64(rng.IntN(8))
				err := b.FireTimers(d, watermark, func(key []byte, ts int64) error {
					want := m.due(d, watermark)
					if len(want) == 0 || want[0] != (timerRef{d, string(key), ts}) {
						return fmt.Errorf("fired %s@%d, model says next is %v", key, ts, want[:min(1, len(want))])
					}
					delete(m.timers, want[0])
					fires++
					for range rng.IntN(3) {
						randomOp()
					}
					return nil
				})
				must(t, err)
				if left := m.due(d, watermark); len(left) > 0 {
					t.Fatalf("step %d: FireTimers(%s, %d) left %v", step, d, watermark, left)
				}
				for _, d := range domains {
					ts, ok, err := b.NextTimer(d)
					must(t, err)
					if wts, wok := m.next(d); ts != wts || ok != wok {
						t.Fatalf("step %d: NextTimer(%s) = %d, %v; want %d, %v", step, d, ts, ok, wts, wok)
					}
				}
			}
			if fires < 500 {
				t.Fatalf("only %d timers fired", fires)
			}
			for _, d := range domains {
				if got, want := fireAll(t, b, d, math.MaxInt64), m.due(d, math.MaxInt64); !slices.Equal(got, want) {
					t.Fatalf("the %s timers left are %v, want %v", d, got, want)
				}
			}
		})
	}
}

func TestTimerCallsRefuseBadDomainsAndKeys(t *testing.T) {
	for _, f := range timerFactories(t) {
		t.Run(f.Name(), func(t *testing.T) {
			b := newBackend(t, f, state.KeyedBackendOptions{OperatorUID: "win", Subtask: 1, Parallelism: 2})
			wantErrContains(t, b.RegisterTimer(state.EventTime, 1), "register event-time timer of win/1", "no current key")
			var outside, inside string
			for i := 0; outside == "" || inside == ""; i++ {
				k := fmt.Sprintf("key-%d", i)
				if b.KeyGroups().Contains(state.KeyGroupOf([]byte(k), state.DefaultMaxParallelism)) {
					inside = k
				} else {
					outside = k
				}
			}
			b.SetCurrentKey([]byte(outside))
			wantErrContains(t, b.RegisterTimer(state.EventTime, 1), "win/1", outside, "outside this subtask's range")
			wantErrContains(t, b.DeleteTimer(state.ProcessingTime, 1), "delete processing-time timer", outside)
			b.SetCurrentKey([]byte(inside))
			wantErrContains(t, b.RegisterTimer(0, 1), "unknown time domain 0")
			wantErrContains(t, b.DeleteTimer(3, 1), "unknown time domain 3")
			wantErrContains(t, b.FireTimers(7, 1, func([]byte, int64) error { return nil }), "unknown time domain 7")
			_, _, err := b.NextTimer(0)
			wantErrContains(t, err, "unknown time domain 0")
		})
	}
}

// registerWorkloadTimers registers and deletes a deterministic set of
// timers for the owned keys among 0..n-1.
func registerWorkloadTimers(t testing.TB, b state.KeyedBackend, m *timerModel, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		k := string(testKey(i))
		if !b.KeyGroups().Contains(state.KeyGroupOf([]byte(k), state.DefaultMaxParallelism)) {
			continue
		}
		register(t, b, m, state.EventTime, k, int64(i%50)*1000)
		register(t, b, m, state.EventTime, k, int64(i%50)*1000+999-int64(i%3))
		register(t, b, m, state.ProcessingTime, k, -int64(i))
		if i%5 == 0 {
			deleteTimer(t, b, m, state.EventTime, k, int64(i%50)*1000)
		}
	}
}

// state.Timers survive a checkpoint of either backend and a savepoint restored
// into either backend, and writes after the barrier are not in the
// snapshot (the memory backend's copy-on-write).
func TestTimersSurviveSnapshotAndRestore(t *testing.T) {
	const keys = 1500
	mem, peb := NewMemoryFactory(), pebbleFactory_(t, true)
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 10})
	id := int64(0)
	for _, from := range []state.KeyedBackendFactory{mem, peb} {
		for _, savepoint := range []bool{false, true} {
			id++
			b := newBackend(t, from, state.KeyedBackendOptions{})
			w := newWorkload(t, b)
			w.apply(t, b, keys, 1)
			m := newTimerModel(state.DefaultMaxParallelism)
			registerWorkloadTimers(t, b, m, keys)
			fired := fireAll(t, b, state.EventTime, 10_500)
			for _, r := range fired {
				delete(m.timers, r)
			}
			want := dumpBackend(t, b)
			if d := diffDumps(m.lines(), timerLines(want)); d != "" || len(fired) == 0 {
				t.Fatalf("%s: timers before the snapshot differ from the model: %s (%d fired)", from.Name(), d, len(fired))
			}

			// The barrier: capture, then change timers before the
			// asynchronous part runs.
			w8r, err := st.Writer(id, "op", 0)
			must(t, err)
			var async state.AsyncSnapshot
			if savepoint {
				async, err = SavepointSnapshot(b, id, w8r)
			} else {
				async, err = b.Snapshot(id, w8r)
			}
			must(t, err)
			fireAll(t, b, state.EventTime, 30_000)
			register(t, b, nil, state.EventTime, string(testKey(1)), 77)
			register(t, b, nil, state.ProcessingTime, string(testKey(2)), 1<<40)
			deleteTimer(t, b, nil, state.ProcessingTime, string(testKey(3)), -3)
			h, err := async(t.Context())
			must(t, err)
			completeOne(t, st, "op", id, savepoint, 1, h)

			targets := []state.KeyedBackendFactory{from}
			if savepoint {
				targets = []state.KeyedBackendFactory{mem, peb}
			}
			for _, to := range targets {
				name := fmt.Sprintf("%s %s into %s", from.Name(), map[bool]string{false: "checkpoint", true: "savepoint"}[savepoint], to.Name())
				r := newBackend(t, to, state.KeyedBackendOptions{Restore: []*checkpoint.Handle{h}, Storage: st})
				newWorkload(t, r)
				if d := diffDumps(want, dumpBackend(t, r)); d != "" {
					t.Fatalf("%s: restored contents differ: %s", name, d)
				}
				// And they fire from the restored backend, in order.
				for _, d := range []state.TimeDomain{state.EventTime, state.ProcessingTime} {
					ts, ok, err := r.NextTimer(d)
					must(t, err)
					if wts, wok := m.next(d); ts != wts || ok != wok {
						t.Fatalf("%s: NextTimer(%s) = %d, %v; want %d, %v", name, d, ts, ok, wts, wok)
					}
					if got, want := fireAll(t, r, d, math.MaxInt64), m.due(d, math.MaxInt64); !slices.Equal(got, want) {
						t.Fatalf("%s: restored %s timers fired %d, want %d (first %v vs %v)", name, d, len(got), len(want), got[:min(3, len(got))], want[:min(3, len(want))])
					}
				}
			}
		}
	}
}

// A rescale from 2 to 3 subtasks: every timer comes back exactly once, in
// the subtask that owns its key group.
func TestTimersRescaleFrom2To3(t *testing.T) {
	const keys = 3000
	for _, tc := range []struct {
		f         state.KeyedBackendFactory
		savepoint bool
	}{{NewMemoryFactory(), false}, {NewMemoryFactory(), true}, {pebbleFactory_(t, true), false}, {pebbleFactory_(t, false), true}} {
		t.Run(fmt.Sprintf("%s/savepoint=%v", tc.f.Name(), tc.savepoint), func(t *testing.T) {
			st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{Retained: 3})
			m := newTimerModel(state.DefaultMaxParallelism)
			var handles []*checkpoint.Handle
			for s := 0; s < 2; s++ {
				b := newBackend(t, tc.f, state.KeyedBackendOptions{Subtask: s, Parallelism: 2})
				registerWorkloadTimers(t, b, m, keys)
				handles = append(handles, runSnapshot(t, b, st, "op", s, 1, tc.savepoint))
			}
			md := completeOne(t, st, "op", 1, tc.savepoint, 2, handles...)
			seen := map[timerRef]int{}
			for s := 0; s < 3; s++ {
				kgs := state.KeyGroupRangeForSubtask(s, 3, state.DefaultMaxParallelism)
				restore := checkpoint.KeyedHandlesFor(md.Operator("op"), kgs)
				if s == 1 && len(restore) != 2 {
					t.Fatalf("the middle subtask restores from %d handles, want both", len(restore))
				}
				b := newBackend(t, tc.f, state.KeyedBackendOptions{Subtask: s, Parallelism: 3, Restore: restore, Storage: st})
				for _, d := range []state.TimeDomain{state.EventTime, state.ProcessingTime} {
					for _, r := range fireAll(t, b, d, math.MaxInt64) {
						if !kgs.Contains(state.KeyGroupOf([]byte(r.key), state.DefaultMaxParallelism)) {
							t.Fatalf("subtask %d %v fired %v of another subtask", s, kgs, r)
						}
						seen[r]++
					}
				}
			}
			for r := range m.timers {
				if seen[r] != 1 {
					t.Fatalf("timer %v came back %d times", r, seen[r])
				}
			}
			if len(seen) != len(m.timers) {
				t.Fatalf("%d distinct timers came back, %d were registered", len(seen), len(m.timers))
			}
		})
	}
}

// Firing on Pebble reads only timer keys: one seek per key group, one step
// per fired timer, however much other state the key groups hold, and the
// deletions of timers fired earlier are not read again.
func TestPebbleFireTimersDoesNotReadState(t *testing.T) {
	b := newBackend(t, pebbleFactory_(t, false), state.KeyedBackendOptions{}).(*pebbleBackend)
	w := newWorkload(t, b)
	const keys = 20000
	w.apply(t, b, keys, 1) // ~100k state entries over the 128 key groups
	h := runSnapshot(t, b, dirstore.NewMemoryStorage("job", dirstore.StorageOptions{}), "op", 0, 1, false)
	if len(h.Files) == 0 {
		t.Fatal("no files")
	}
	for i := 0; i < 2000; i++ {
		register(t, b, nil, state.EventTime, string(testKey(i)), int64(i))
	}
	kgs := b.KeyGroups().Len()
	count := func(what string, f func()) timerIterCounts {
		t.Helper()
		before := b.timerIters
		f()
		c := b.timerIters
		c.iterators -= before.iterators
		c.seeks -= before.seeks
		c.steps -= before.steps
		c.points -= before.points
		t.Logf("%s: %+v", what, c)
		return c
	}
	c := count("fire 2000", func() {
		if n := len(fireAll(t, b, state.EventTime, 10_000)); n != 2000 {
			t.Fatalf("fired %d, want 2000", n)
		}
	})
	if c.steps > 2000 || c.seeks > 2*kgs || c.points > uint64(2000+2*kgs) {
		t.Fatalf("firing 2000 timers took %+v", c)
	}
	c = count("nothing due", func() { fireAll(t, b, state.EventTime, 10_000) })
	if c.iterators != 0 {
		t.Fatalf("firing with nothing due opened %d iterators", c.iterators)
	}
	register(t, b, nil, state.EventTime, string(testKey(7)), 20_000)
	c = count("fire 1 after 2000", func() {
		if got := fireAll(t, b, state.EventTime, 20_000); len(got) != 1 {
			t.Fatalf("fired %v", got)
		}
	})
	// One seek per key group for the head, one for the fired timer's
	// group, each landing on at most one key; not the 2000 deletions.
	if c.seeks > kgs+2 || c.points > uint64(2*kgs+4) {
		t.Fatalf("firing one timer took %+v", c)
	}
	c = count("next timer", func() {
		if _, ok, err := b.NextTimer(state.EventTime); err != nil || ok {
			t.Fatalf("NextTimer: %v, %v; want none", ok, err)
		}
	})
	if c.seeks > kgs || c.steps > 0 || c.points > uint64(2*kgs) {
		t.Fatalf("NextTimer took %+v", c)
	}
}

// A canonical stream written before timers existed (no timer entries)
// restores into both backends.
func TestCanonicalStreamWithoutTimersStillRestores(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("onceflow-kv\x00v1\n")
	key := []byte("alice")
	kg := state.KeyGroupOf(key, state.DefaultMaxParallelism)
	// entry: 0x01 kg state=0 len key, key, len userKey 0, len value 8, value
	buf.Write([]byte{1, byte(kg), 0, byte(len(key))})
	buf.Write(key)
	buf.Write([]byte{0, 8, 0x80, 0, 0, 0, 0, 0, 0, 42}) // Int64Codec: sign bit flipped
	// trailer: one entry
	buf.Write([]byte{0, 1})
	h := &checkpoint.Handle{Backend: checkpoint.BackendCanonical, KeyGroups: checkpoint.KeyGroupRange{Start: 0, End: state.DefaultMaxParallelism},
		States: []checkpoint.StateMeta{{Name: "count", Kind: checkpoint.KindValue, ValueCodec: state.Int64Codec{}.Name()}}, Inline: buf.Bytes()}
	for _, f := range timerFactories(t) {
		b := newBackend(t, f, state.KeyedBackendOptions{Restore: []*checkpoint.Handle{h}})
		v, err := state.NewValueState(b, "count", state.Int64Codec{})
		must(t, err)
		b.SetCurrentKey(key)
		got, ok, err := v.Value()
		must(t, err)
		if !ok || got != 42 {
			t.Fatalf("%s: restored %d, %v; want 42", f.Name(), got, ok)
		}
		if _, ok, err := b.NextTimer(state.EventTime); err != nil || ok {
			t.Fatalf("%s: NextTimer %v, %v; want none", f.Name(), ok, err)
		}
	}
}

// applyTimerRound is the timer part of a workload round (the crash test's):
// it registers event-time timers of this round and processing-time ones,
// deletes some of the last round's, and fires what the round's watermark
// passed, all deterministically for the owned keys among 0..n-1.
func applyTimerRound(t testing.TB, b state.KeyedBackend, n, round int) {
	t.Helper()
	for i := 0; i < n; i++ {
		k := string(testKey(i))
		if !b.KeyGroups().Contains(state.KeyGroupOf([]byte(k), state.DefaultMaxParallelism)) {
			continue
		}
		register(t, b, nil, state.EventTime, k, int64(round*10+i%10))
		if i%7 == round%7 {
			deleteTimer(t, b, nil, state.EventTime, k, int64((round-1)*10+i%10))
		}
		register(t, b, nil, state.ProcessingTime, k, int64(i%3-round))
	}
	fireAll(t, b, state.EventTime, int64(round*10-5))
}
