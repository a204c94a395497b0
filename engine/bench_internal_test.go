package engine

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/onceflow/onceflow/state"
)

// countingSink counts records and closes done at the nth.
type countingSink struct {
	n, want int64
	done    chan struct{}
}

func (s *countingSink) write(context.Context, any) error {
	if atomic.AddInt64(&s.n, 1) == s.want {
		close(s.done)
	}
	return nil
}
func (s *countingSink) drain(context.Context) error                            { return nil }
func (s *countingSink) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (s *countingSink) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (s *countingSink) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (s *countingSink) Close(context.Context) error                            { return nil }

// BenchmarkInputLoop measures a sink subtask's input loop alone with two
// input channels (the fast path without reflect.Select): two feeders
// send b.N records in all, with a barrier every 1000 records of each, and
// the loop aligns (or counts) the barriers. ns/op is the cost of one
// record through the loop.
//
//	go test -run '^$' -bench InputLoop ./engine
func BenchmarkInputLoop(b *testing.B) {
	for _, mode := range []CheckpointMode{ExactlyOnce, AtLeastOnce} {
		name := map[CheckpointMode]string{ExactlyOnce: "exactly_once", AtLeastOnce: "at_least_once"}[mode]
		b.Run(name, func(b *testing.B) {
			h := newCoordHarness(b, Options{Checkpoint: CheckpointOptions{Mode: mode}}, 0)
			store, err := state.NewOperatorStateStore(0, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			per := max(b.N/2, 1)
			sink := &countingSink{want: int64(2 * per), done: make(chan struct{})}
			st := &subtask{j: h.j, c: h.c, n: &node{uid: "sink", parallelism: 1, kind: kindSink}, wake: make(chan struct{}, 1),
				sink: sink, opStore: store, log: h.j.opts.Logger}
			for range 2 {
				st.inputs = append(st.inputs, input{ch: make(chan element, 256)})
			}
			h.c.subtasks = []*subtask{st}
			ctx := h.c.ctx
			go func() { // the coordinator's side: take the acks
				for {
					select {
					case <-h.c.acks:
					case <-ctx.Done():
						return
					}
				}
			}()
			loopDone := make(chan error, 1)
			b.ResetTimer()
			go func() { loopDone <- st.runInputs(ctx) }()
			for i := range 2 {
				go func() {
					ch := st.inputs[i].ch
					id := int64(0)
					for k := 1; k <= per; k++ {
						ch <- element{value: k}
						if k%1000 == 0 {
							id++
							ch <- element{barrier: &barrier{id: id}}
						}
					}
				}()
			}
			<-sink.done
			b.StopTimer()
			h.cancel()
			<-loopDone
			st.async.Wait()
		})
	}
}
