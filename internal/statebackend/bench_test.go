package statebackend

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/state"
)

// BenchmarkStateReadModifyWrite measures a state.ValueState read-modify-write (the
// word-count pattern) on each backend. The pebble sub-benchmark also runs
// the memory backend for the same number of operations and reports how many
// times slower Pebble is ("x-memory").
//
//	go test -run '^$' -bench StateReadModifyWrite ./state
func BenchmarkStateReadModifyWrite(b *testing.B) {
	const keys = 100_000
	run := func(tb testing.TB, be state.KeyedBackend, n int) time.Duration {
		v, err := state.NewValueState(be, "count", state.Int64Codec{})
		must(tb, err)
		keyBuf := make([][]byte, keys)
		for i := range keyBuf {
			keyBuf[i] = testKey(i)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		start := time.Now()
		for i := 0; i < n; i++ {
			be.SetCurrentKey(keyBuf[rng.IntN(keys)])
			c, _, err := v.Value()
			if err != nil {
				tb.Fatal(err)
			}
			if err := v.Update(c + 1); err != nil {
				tb.Fatal(err)
			}
		}
		return time.Since(start)
	}
	b.Run("memory", func(b *testing.B) {
		be := newBackend(b, NewMemoryFactory(), state.KeyedBackendOptions{})
		b.ResetTimer()
		d := run(b, be, b.N)
		b.ReportMetric(float64(b.N)/d.Seconds(), "ops/s")
	})
	b.Run("pebble", func(b *testing.B) {
		be := newBackend(b, NewPebbleFactory(PebbleOptions{Dir: b.TempDir()}), state.KeyedBackendOptions{})
		b.ResetTimer()
		d := run(b, be, b.N)
		b.StopTimer()
		mem := newBackend(b, NewMemoryFactory(), state.KeyedBackendOptions{})
		base := run(b, mem, b.N)
		b.ReportMetric(float64(b.N)/d.Seconds(), "ops/s")
		b.ReportMetric(float64(d)/float64(base), "x-memory")
	})
}

// benchSizesMB is the state sizes of BenchmarkCheckpoint: 10 and 100 MB by
// default; set ONCEFLOW_BENCH_STATE_MB=1024 (or a comma-separated list) for
// larger runs.
func benchSizesMB(b *testing.B) []int {
	spec := os.Getenv("ONCEFLOW_BENCH_STATE_MB")
	if spec == "" {
		spec = "10,100"
	}
	var out []int
	for _, s := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("ONCEFLOW_BENCH_STATE_MB=%q: %v", spec, err)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkCheckpoint measures one Pebble checkpoint (barrier part and
// upload, into file storage) after changing a fraction of the keys of a
// state of a given size, in three modes: changelog (incremental with the
// changelog, the default), incremental (SST files only) and full. It
// reports the bytes written per checkpoint and their share of the state:
// incremental cost should follow churn, full cost state size. The churn is
// a contiguous key range (rewritten with new random values); compactions
// it triggers make an SST increment larger than the churn itself, and a
// changelog checkpoint that materializes (every ChangelogLimit bytes of
// writes) costs what an SST increment does: the mean over -benchtime
// checkpoints includes them, ms/ckpt-max shows the largest.
//
//	go test -run '^$' -bench Checkpoint -benchtime 5x ./internal/statebackend
func BenchmarkCheckpoint(b *testing.B) {
	const valueSize = 100
	for _, mb := range benchSizesMB(b) {
		keys := mb << 20 / (valueSize + 20)
		for _, churn := range []float64{0.01, 0.10} {
			for _, mode := range []string{"changelog", "incremental", "full"} {
				opts := PebbleOptions{Incremental: mode != "full"}
				if mode == "incremental" {
					opts.ChangelogLimit = -1
				}
				b.Run(fmt.Sprintf("state=%dMB/churn=%g%%/%s", mb, churn*100, mode), func(b *testing.B) {
					st, err := dirstore.NewFileStorage(b.TempDir(), "bench", dirstore.StorageOptions{Retained: 1})
					must(b, err)
					opts.Dir = b.TempDir()
					be := newBackend(b, NewPebbleFactory(opts), state.KeyedBackendOptions{OperatorUID: "op"})
					v, err := state.NewValueState(be, "v", state.BytesCodec{})
					must(b, err)
					putValues(b, be, v, 0, keys, 'a', valueSize)
					// Let the bulk load settle into the LSM first; otherwise the
					// first increments carry the compactions of the load itself.
					db := be.(*pebbleBackend).db
					must(b, db.Flush())
					must(b, db.Compact(context.Background(), []byte{0, 0}, []byte{0xFF, 0xFF, 0xFF}, true))
					id := int64(1)
					h, _ := checkpointCounted(b, be, st, id)
					completeOne(b, st, "op", id, false, 1, h)
					be.NotifyCheckpointComplete(id)
					rng := rand.New(rand.NewPCG(uint64(mb), 7))
					var written, total int64
					var elapsed, longest time.Duration
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						n := int(float64(keys) * churn)
						start := rng.IntN(keys - n + 1)
						putValues(b, be, v, start, start+n, byte('b'+i%20), valueSize)
						id++
						b.StartTimer()
						t0 := time.Now()
						h, w := checkpointCounted(b, be, st, id)
						d := time.Since(t0)
						elapsed += d
						longest = max(longest, d)
						b.StopTimer()
						completeOne(b, st, "op", id, false, 1, h)
						be.NotifyCheckpointComplete(id)
						written += w
						total += handleSize(h)
						b.StartTimer()
					}
					b.StopTimer()
					b.ReportMetric(float64(written)/float64(b.N), "B-written/ckpt")
					b.ReportMetric(100*float64(written)/float64(total), "%-of-state-written")
					b.ReportMetric(float64(elapsed.Milliseconds())/float64(b.N), "ms/ckpt")
					b.ReportMetric(float64(longest.Milliseconds()), "ms/ckpt-max")
				})
			}
		}
	}
}

// BenchmarkBarrierPause measures the synchronous part of a checkpoint (what
// the subtask goroutine is blocked for at the barrier) for each backend and
// state size: the map copy of the memory backend, flush + DB.Checkpoint of
// Pebble.
//
//	go test -run '^$' -bench BarrierPause ./state
func BenchmarkBarrierPause(b *testing.B) {
	for _, keys := range []int{10_000, 100_000, 1_000_000} {
		for _, name := range []string{"memory", "pebble"} {
			b.Run(fmt.Sprintf("%s/keys=%d", name, keys), func(b *testing.B) {
				var f state.KeyedBackendFactory = NewMemoryFactory()
				if name == "pebble" {
					f = NewPebbleFactory(PebbleOptions{Dir: b.TempDir()})
				}
				be := newBackend(b, f, state.KeyedBackendOptions{OperatorUID: "op"})
				v, err := state.NewValueState(be, "v", state.BytesCodec{})
				must(b, err)
				putValues(b, be, v, 0, keys, 'a', 100)
				st := dirstore.NewMemoryStorage("bench", dirstore.StorageOptions{})
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					putValues(b, be, v, 0, keys/100, byte(i), 100) // something to flush
					w, err := st.Writer(int64(i+1), "op", 0)
					must(b, err)
					b.StartTimer()
					async, err := be.Snapshot(int64(i+1), w)
					b.StopTimer()
					must(b, err)
					_, err = async(context.Background())
					must(b, err)
					must(b, st.Abort(int64(i+1)))
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkRestore measures the restore of a Pebble checkpoint of a state
// of a given size (sizes as BenchmarkCheckpoint) from file storage into a
// new backend, as after a kill -9, both ways on the same checkpoint,
// interleaved (-benchtime Nx: N of each): copying every file from the storage, and with local
// recovery (PebbleOptions.LocalRecovery: the SST files linked from the
// local disk after a CRC32C check). The checkpoint is a changelog
// checkpoint: a materialization and one segment of 1% of the keys to
// replay. It reports the median of each and local ÷ download.
//
//	ONCEFLOW_BENCH_STATE_MB=1024 go test -run '^$' -bench Restore -benchtime 3x -timeout 1h ./internal/statebackend
func BenchmarkRestore(b *testing.B) {
	const valueSize = 100
	for _, mb := range benchSizesMB(b) {
		keys := mb << 20 / (valueSize + 20)
		b.Run(fmt.Sprintf("state=%dMB", mb), func(b *testing.B) {
			st, err := dirstore.NewFileStorage(b.TempDir(), "bench", dirstore.StorageOptions{Retained: 1})
			must(b, err)
			opts := PebbleOptions{Dir: b.TempDir(), Incremental: true, LocalRecovery: true}
			be := newBackend(b, NewPebbleFactory(opts), state.KeyedBackendOptions{OperatorUID: "op"})
			v, err := state.NewValueState(be, "v", state.BytesCodec{})
			must(b, err)
			putValues(b, be, v, 0, keys, 'a', valueSize)
			var h *checkpoint.Handle
			for id := int64(1); id <= 2; id++ {
				if id == 2 {
					putValues(b, be, v, 0, keys/100, 'b', valueSize)
				}
				h, _ = checkpointCounted(b, be, st, id)
				completeOne(b, st, "op", id, false, 1, h)
				be.NotifyCheckpointComplete(id)
			}
			must(b, be.Close())
			restore := func(local bool) time.Duration {
				o := opts
				o.LocalRecovery = local
				start := time.Now()
				r, err := NewPebbleFactory(o).CreateKeyedBackend(context.Background(), state.KeyedBackendOptions{OperatorUID: "op", Restore: []*checkpoint.Handle{h}, Storage: st})
				must(b, err)
				d := time.Since(start)
				if got := r.(*pebbleBackend).restoredLocal; local != (got > 0) {
					b.Fatalf("local recovery %v took %d files from the local disk", local, got)
				}
				must(b, r.Close())
				return d
			}
			var download, local []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				download = append(download, restore(false))
				local = append(local, restore(true))
			}
			median := func(ds []time.Duration) time.Duration {
				slices.Sort(ds)
				return ds[len(ds)/2]
			}
			d, l := median(download), median(local)
			b.ReportMetric(float64(d.Microseconds())/1000, "ms-median/restore-download")
			b.ReportMetric(float64(l.Microseconds())/1000, "ms-median/restore-local")
			b.ReportMetric(float64(l)/float64(d), "x-download")
		})
	}
}
