package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/state"
)

type noSource[T any] struct{}

func (noSource[T]) NewReader(context.Context, Scope, [][]byte) (SourceReader[T], error) {
	return nil, nil
}

type noSink[T any] struct{}

func (noSink[T]) NewWriter(context.Context, Scope, [][]byte) (SinkWriter[T], error) { return nil, nil }

type noCo struct{}

func (noCo) Process1(string, func(string)) error { return nil }
func (noCo) Process2(string, func(string)) error { return nil }

// TestParallelismRule: every operator inherits its input's parallelism
// unless given a positive one; 0 means "inherit" for every operator that
// takes a parallelism (a source's default is 1), and a negative one is
// refused naming the operator (before: 0 was refused as "outside 1..128"
// by FromSource, Process, Reduce, Sum, Connect, SinkTo and
// WithParallelism, while Map, Filter, FlatMap and Union inherited).
func TestParallelismRule(t *testing.T) {
	j := NewJob("p", Options{})
	key := func(s string) string { return s }
	src0 := FromSource(j, "src0", 0, noSource[string]{})
	src3 := FromSource(j, "src3", 3, noSource[string]{})
	m := Map(src3, "map", func(s string) (string, error) { return s, nil })
	f := Filter(m, "filter", func(string) bool { return true })
	fm := FlatMap(f, "flatmap", func(s string, out func(string)) error { out(s); return nil })
	u := Union("union", fm, src0)
	red := Reduce(KeyBy(u, key, state.StringCodec{}), "reduce", 0, state.StringCodec{}, func(a, _ string) (string, error) { return a, nil })
	red5 := Reduce(KeyBy(red, key, state.StringCodec{}), "reduce5", 5, state.StringCodec{}, func(a, _ string) (string, error) { return a, nil })
	wp := WithParallelism(red5, "rebalance0", 0)
	wp2 := WithParallelism(wp, "rebalance2", 2)
	co := Connect(wp2, src0, "connect", 0, func() CoProcessFunction[string, string, string] { return noCo{} })
	SinkTo(co, "sink0", 0, noSink[string]{})
	SinkTo(red5, "sink4", 4, noSink[string]{})
	want := map[string]int{"src0": 1, "src3": 3, "map": 3, "filter": 3, "flatmap": 3, "union": 3, "reduce": 3, "reduce5": 5,
		"rebalance0": 5, "rebalance2": 2, "connect": 2, "sink0": 2, "sink4": 4}
	if j.err != nil {
		t.Fatalf("the graph was refused: %v", j.err)
	}
	for _, n := range j.nodes {
		if n.parallelism != want[n.uid] {
			t.Errorf("operator %s runs %d subtasks, want %d", n.uid, n.parallelism, want[n.uid])
		}
	}
	if got := len(j.nodes); got != len(want) {
		t.Errorf("%d operators, want %d", got, len(want))
	}

	j = NewJob("neg", Options{})
	SinkTo(FromSource(j, "src", 2, noSource[string]{}), "sink", -1, noSink[string]{})
	if j.err == nil || !strings.Contains(j.err.Error(), "operator sink: parallelism -1") {
		t.Fatalf("a negative parallelism: %v, want a refusal naming operator sink", j.err)
	}
}
