package statebackend

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

func TestTypedStatesOnMemoryBackend(t *testing.T) {
	b := newBackend(t, NewMemoryFactory(), state.KeyedBackendOptions{})
	w := newWorkload(t, b)
	b.SetCurrentKey([]byte("a"))
	must(t, w.value.Update(7))
	must(t, w.list.Add("x"))
	must(t, w.list.Add("y"))
	must(t, w.m.Put("b", 2))
	must(t, w.m.Put("a", 1))
	must(t, w.reduce.Add(3))
	must(t, w.reduce.Add(4))
	must(t, w.agg.Add(2))
	must(t, w.agg.Add(4))

	b.SetCurrentKey([]byte("other"))
	if _, ok, err := w.value.Value(); err != nil || ok {
		t.Fatalf("value of untouched key: ok=%v err=%v", ok, err)
	}
	if l, err := w.list.Get(); err != nil || l != nil {
		t.Fatalf("list of untouched key: %v %v", l, err)
	}

	b.SetCurrentKey([]byte("a"))
	if v, ok, err := w.value.Value(); err != nil || !ok || v != 7 {
		t.Fatalf("value = %v %v %v", v, ok, err)
	}
	if l, err := w.list.Get(); err != nil || !slices.Equal(l, []string{"x", "y"}) {
		t.Fatalf("list = %v %v", l, err)
	}
	var keys []string
	must(t, w.m.All(func(k string, v int64) bool { keys = append(keys, k); return true }))
	if !slices.Equal(keys, []string{"a", "b"}) {
		t.Fatalf("map keys in order = %v", keys)
	}
	var onlyKeys []string
	must(t, w.m.Keys(func(k string) bool { onlyKeys = append(onlyKeys, k); return len(onlyKeys) < 1 }))
	if !slices.Equal(onlyKeys, []string{"a"}) {
		t.Fatalf("Keys stopped by fn after the first = %v, want [a]", onlyKeys)
	}
	must(t, w.m.Remove("a"))
	if ok, err := w.m.Contains("a"); err != nil || ok {
		t.Fatalf("removed map key still there: %v %v", ok, err)
	}
	if v, ok, err := w.reduce.Get(); err != nil || !ok || v != 7 {
		t.Fatalf("reduce = %v %v %v", v, ok, err)
	}
	if v, ok, err := w.agg.Get(); err != nil || !ok || v != 3 {
		t.Fatalf("avg = %v %v %v", v, ok, err)
	}
	must(t, w.list.Update(nil))
	if l, err := w.list.Get(); err != nil || l != nil {
		t.Fatalf("list after Update(nil) = %v %v", l, err)
	}
	must(t, w.value.Clear())
	if _, ok, _ := w.value.Value(); ok {
		t.Fatal("value survives Clear")
	}
}

func TestRegisterConflictsNameTheState(t *testing.T) {
	b := newBackend(t, NewMemoryFactory(), state.KeyedBackendOptions{})
	if _, err := state.NewValueState(b, "count", state.Int64Codec{}); err != nil {
		t.Fatal(err)
	}
	_, err := state.NewValueState(b, "count", state.StringCodec{})
	wantErrContains(t, err, `"count"`, "codec")
	_, err = state.NewListState(b, "count", state.Int64Codec{})
	wantErrContains(t, err, `"count"`, "list")
}

func TestTTLExpiresEntries(t *testing.T) {
	for _, f := range []state.KeyedBackendFactory{NewMemoryFactory(), pebbleFactory_(t, false)} {
		t.Run(f.Name(), func(t *testing.T) { testTTL(t, f) })
	}
}

func testTTL(t *testing.T, f state.KeyedBackendFactory) {
	now := time.Unix(1000, 0)
	b := newBackend(t, f, state.KeyedBackendOptions{Now: func() time.Time { return now }})
	v, err := state.NewValueState(b, "v", state.StringCodec{}, state.WithTTL(time.Minute))
	must(t, err)
	l, err := state.NewListState(b, "l", state.StringCodec{}, state.WithTTL(time.Minute))
	must(t, err)
	m, err := state.NewMapState(b, "m", state.StringCodec{}, state.StringCodec{}, state.WithTTL(time.Minute))
	must(t, err)
	b.SetCurrentKey([]byte("k"))
	must(t, v.Update("old"))
	must(t, l.Add("old"))
	must(t, m.Put("old", "1"))
	now = now.Add(40 * time.Second)
	must(t, l.Add("new"))
	must(t, m.Put("new", "2"))
	if got, ok, _ := v.Value(); !ok || got != "old" {
		t.Fatalf("value expired early: %q %v", got, ok)
	}
	now = now.Add(30 * time.Second) // old entries are 70 s old, new ones 30 s
	if _, ok, _ := v.Value(); ok {
		t.Fatal("value did not expire")
	}
	if got, _ := l.Get(); !slices.Equal(got, []string{"new"}) {
		t.Fatalf("list after expiry = %v", got)
	}
	var ks []string
	must(t, m.All(func(k, _ string) bool { ks = append(ks, k); return true }))
	if !slices.Equal(ks, []string{"new"}) {
		t.Fatalf("map after expiry = %v", ks)
	}
	ks = nil
	must(t, m.Keys(func(k string) bool { ks = append(ks, k); return true }))
	if !slices.Equal(ks, []string{"new"}) {
		t.Fatalf("map keys after expiry = %v", ks)
	}
	// Expired entries are physically removed on access.
	raw, _ := b.Register(checkpoint.StateMeta{Name: "m", Kind: checkpoint.KindMap, ValueCodec: "string", UserKeyCodec: "string", TTL: time.Minute})
	if _, ok, _ := raw.Get([]byte("old")); ok {
		t.Fatal("expired map entry still stored")
	}
}

func TestMemorySnapshotRestoreAndCodecMismatch(t *testing.T) {
	ctx := context.Background()
	st := dirstore.NewMemoryStorage("job", dirstore.StorageOptions{})
	f := NewMemoryFactory()
	b := newBackend(t, f, state.KeyedBackendOptions{})
	w := newWorkload(t, b)
	for r := 0; r < 3; r++ {
		w.apply(t, b, 500, r)
	}
	want := dumpBackend(t, b)
	if len(want) < 1000 {
		t.Fatalf("workload wrote only %d entries", len(want))
	}
	h := runSnapshot(t, b, st, "op", 0, 1, false)
	// Changes after the snapshot are not in it.
	w.apply(t, b, 500, 3)
	completeOne(t, st, "op", 1, false, 1, h)

	md, _, err := st.Latest(ctx)
	must(t, err)
	r := newBackend(t, f, state.KeyedBackendOptions{Restore: checkpoint.KeyedHandlesFor(md.Operator("op"), checkpoint.KeyGroupRange{Start: 0, End: 128}), Storage: st})
	newWorkload(t, r)
	if d := diffDumps(want, dumpBackend(t, r)); d != "" {
		t.Fatalf("restored state differs: %s", d)
	}

	// A restore into a subtask owning half the key groups keeps only those.
	half := newBackend(t, f, state.KeyedBackendOptions{Parallelism: 2, Subtask: 1, Restore: []*checkpoint.Handle{h}, Storage: st})
	newWorkload(t, half)
	var wantHalf []string
	for _, line := range dumpBackend(t, r) {
		wantHalf = append(wantHalf, line)
	}
	got := dumpBackend(t, half)
	if len(got) == 0 || len(got) >= len(wantHalf) {
		t.Fatalf("half restore kept %d of %d entries", len(got), len(wantHalf))
	}

	// Declaring a restored state with another codec fails naming it.
	c := newBackend(t, f, state.KeyedBackendOptions{Restore: []*checkpoint.Handle{h}, Storage: st})
	_, err = state.NewValueState(c, "value", state.StringCodec{})
	wantErrContains(t, err, `"value"`, "int64")
	_, err = state.NewMapState(c, "map", state.Int64Codec{}, state.Int64Codec{})
	wantErrContains(t, err, `"map"`, "user key codec")
	_, err = state.NewValueState(c, "sum", state.Int64Codec{}, state.WithTTL(time.Hour))
	wantErrContains(t, err, `"sum"`)
}

func TestKeyOutsideRangeIsAnError(t *testing.T) {
	b := newBackend(t, NewMemoryFactory(), state.KeyedBackendOptions{KeyGroups: checkpoint.KeyGroupRange{Start: 0, End: 1}})
	v, err := state.NewValueState(b, "v", state.Int64Codec{})
	must(t, err)
	b.SetCurrentKey([]byte("laowang")) // key group 25
	wantErrContains(t, v.Update(1), "laowang", "25")
}
