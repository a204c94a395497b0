package jobs

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/state"
)

// bidSource replays pre-built JSON bids, each with its event time, and
// watermarks bound ms behind the newest time it returned.
type bidSource struct {
	recs  []*kgo.Record
	bound int64
}

func (s bidSource) NewReader(_ context.Context, sc engine.Scope, _ [][]byte) (engine.SourceReader[*kgo.Record], error) {
	var mine []*kgo.Record
	for i := sc.Subtask; i < len(s.recs); i += sc.Parallelism {
		mine = append(mine, s.recs[i])
	}
	return &bidReader{recs: mine, bound: s.bound, max: engine.NoTimestamp}, nil
}

type bidReader struct {
	recs  []*kgo.Record
	next  int
	bound int64
	max   int64
}

func (r *bidReader) Next(ctx context.Context) (*kgo.Record, bool, error) {
	v, _, ok, err := r.NextTimestamped(ctx)
	return v, ok, err
}

func (r *bidReader) NextTimestamped(context.Context) (*kgo.Record, int64, bool, error) {
	if r.next >= len(r.recs) {
		return nil, 0, false, io.EOF
	}
	rec := r.recs[r.next]
	r.next++
	ts := rec.Timestamp.UnixMilli()
	r.max = max(r.max, ts)
	return rec, ts, true, nil
}

func (r *bidReader) CurrentWatermark() (int64, bool) {
	if r.max == engine.NoTimestamp {
		return engine.NoTimestamp, false
	}
	return r.max - r.bound - 1, false
}

func (r *bidReader) SnapshotState(int64) ([][]byte, error)                 { return nil, nil }
func (r *bidReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *bidReader) Close() error                                          { return nil }

// countingSink counts what reaches it; it has no transactions.
type countingSink struct{ n *atomic.Int64 }

func (s countingSink) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[*kgo.Record], error) {
	return s, nil
}
func (s countingSink) Write(context.Context, *kgo.Record) error { s.n.Add(1); return nil }
func (s countingSink) SnapshotState(context.Context, int64) ([][]byte, error) {
	return nil, nil
}
func (s countingSink) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (s countingSink) NotifyCheckpointAborted(context.Context, int64) error  { return nil }
func (s countingSink) Close(context.Context) error                           { return nil }

// nexmarkBids returns n JSON bids of a Nexmark-like mix (a few hot
// auctions, the rest spread over the recent ones) at rate bids per second
// of event time, 10% of them up to 2 s late.
func nexmarkBids(n, rate int) []*kgo.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]*kgo.Record, n)
	for i := range recs {
		auction := 1000 + i/46*3/1 + rng.IntN(100)
		if rng.IntN(2) == 0 {
			auction = 1000 + rng.IntN(10)
		}
		ts := int64(i) * 1000 / int64(rate)
		if rng.IntN(10) == 0 {
			ts -= 1 + rng.Int64N(2000)
		}
		v := fmt.Sprintf(`{"auction":%d,"bidder":%d,"price":%d,"ts":%d}`, auction, rng.IntN(1000), 100+rng.IntN(10000), ts)
		recs[i] = &kgo.Record{Value: []byte(v), Timestamp: time.UnixMilli(ts)}
	}
	return recs
}

// runWindowJob pushes bids through the window job's chain (decode →
// KeyBy → window.Aggregate → format) and returns bids per second.
func runWindowJob(b *testing.B, bids []*kgo.Record, w config.Window, backend state.KeyedBackendFactory) float64 {
	b.Helper()
	assigner, err := windowAssigner(w)
	if err != nil {
		b.Fatal(err)
	}
	j := engine.NewJob("bench", engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: time.Second},
		Backend:    backend,
	})
	decode := decodeWindowEvent(w)
	in := engine.Map(engine.FromSource(j, UIDSource, 2, bidSource{recs: bids, bound: 2000}), "decode", decode)
	var out atomic.Int64
	engine.SinkTo(windowChain(in, w, assigner, 2, &atomic.Int64{}), UIDSink, 2, countingSink{&out})
	start := time.Now()
	if err := j.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	if out.Load() == 0 {
		b.Fatal("no window fired")
	}
	return float64(len(bids)) / time.Since(start).Seconds()
}

// BenchmarkWindowJob measures the window job's chain in memory (no
// Kafka): Nexmark q5-like (count per auction, sliding 10 s every 2 s) and
// q11-like (count per bidder, session gap 10 s), on both backends, with a
// checkpoint every second.
//
//	go test -run '^$' -bench WindowJob ./jobs
func BenchmarkWindowJob(b *testing.B) {
	bids := nexmarkBids(200_000, 2000)
	queries := map[string]config.Window{
		"q5":  {Key: "auction", Aggregate: "count", Time: config.WindowTime{Field: "ts", Format: "epoch_millis"}, Kind: "sliding", Size: 10 * time.Second, Slide: 2 * time.Second},
		"q11": {Key: "bidder", Aggregate: "count", Time: config.WindowTime{Field: "ts", Format: "epoch_millis"}, Kind: "session", Gap: 10 * time.Second},
	}
	for _, q := range []string{"q5", "q11"} {
		for _, be := range []string{"memory", "pebble"} {
			b.Run(q+"/"+be, func(b *testing.B) {
				var sum float64
				for i := 0; i < b.N; i++ {
					f := statebackend.NewMemoryFactory()
					if be == "pebble" {
						f = statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: b.TempDir()})
					}
					sum += runWindowJob(b, bids, queries[q], f)
				}
				b.ReportMetric(sum/float64(b.N), "bids/s")
			})
		}
	}
}
