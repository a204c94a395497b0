package dirstore

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// BenchmarkStorageCheckpoint measures what the file storage costs one
// checkpoint of a job with 2 keyed operators of parallelism 2: each
// subtask writes one private and one new shared file of 64 KiB (the
// upload), then the coordinator completes it (metadata, subsumption of
// the previous one). It reports the time of the whole checkpoint and of
// Complete alone.
//
//	go test -run '^$' -bench StorageCheckpoint -count 5 ./state
func BenchmarkStorageCheckpoint(b *testing.B) {
	st, err := NewFileStorage(b.TempDir(), "bench", StorageOptions{Retained: 1})
	must(b, err)
	body := strings.Repeat("x", 64<<10)
	ctx := context.Background()
	var complete time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := int64(i + 1)
		md := &checkpoint.Metadata{CheckpointID: id, Timestamp: time.Unix(id, 0)}
		for op := 0; op < 2; op++ {
			uid := fmt.Sprintf("op-%d", op)
			o := checkpoint.OperatorSnapshot{UID: uid, Parallelism: 2, MaxParallelism: maxParallelism}
			for sub := 0; sub < 2; sub++ {
				w, err := st.Writer(id, uid, sub)
				must(b, err)
				h := &checkpoint.Handle{Backend: "bench"}
				for _, shared := range []bool{false, true} {
					name := "private"
					if shared {
						name = fmt.Sprintf("%s-%d-%d.sst", uid, sub, id)
					}
					f, err := w.Create(name, shared)
					must(b, err)
					if _, err := io.WriteString(f, body); err != nil {
						b.Fatal(err)
					}
					ref, err := f.Close()
					must(b, err)
					h.Files = append(h.Files, ref)
				}
				o.Subtasks = append(o.Subtasks, checkpoint.SubtaskSnapshot{Subtask: sub, Keyed: h})
			}
			md.Operators = append(md.Operators, o)
		}
		t0 := time.Now()
		must(b, st.Complete(ctx, md))
		complete += time.Since(t0)
	}
	b.ReportMetric(float64(complete.Microseconds())/1000/float64(b.N), "ms-complete/ckpt")
}
