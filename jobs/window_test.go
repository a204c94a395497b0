package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
)

// readTopic returns the read_committed records of topic, read to its end.
func readTopic(t *testing.T, ctx context.Context, client []kgo.Opt, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r); n++ })
		if n == 0 {
			return out
		}
	}
}

// The window job on kfake: tumbling 10 s sums per user over three of four
// partitions, slightly out of order within max_out_of_orderness, the
// fourth partition silent (idle_timeout leaves it out). Every window
// fires exactly once with the sum a direct computation gives, in the
// documented JSON, and a record later than every window goes to the late
// topic and is counted.
func TestWindowJobSumsPerUserAndWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t, kfake.SeedTopics(1, "late"))
	cfg := testConfig(t, t.TempDir(), "window", "window.key=user", "window.aggregate=sum", "window.field=amount",
		"window.time.field=ts", "window.size=10s", "window.max_out_of_orderness=2s", "window.idle_timeout=300ms",
		"window.late_topic=late")
	prod, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic("in"), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(p int32, user string, ts, amount int64) {
		t.Helper()
		v := fmt.Appendf(nil, `{"user":%q,"ts":%d,"amount":%d}`, user, ts, amount)
		if err := prod.ProduceSync(ctx, &kgo.Record{Partition: p, Key: []byte(user), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	type uw struct {
		user  string
		start int64
	}
	want := map[uw]int64{}
	for p := range int32(3) {
		for i := range 80 {
			// pairs swapped: 500 ms out of order, within the 2 s bound
			j := i ^ 1
			ts := int64(j) * 500
			user := fmt.Sprintf("u%d", (i+int(p))%3)
			amount := int64(i%7 + 1)
			produce(p, user, ts, amount)
			want[uw{user, ts - ts%10000}] += amount
		}
	}
	// Windows up to 30 s fire once the watermark passes them: the stream
	// reaches 40 s. The last ones wait for the flush below.
	b, err := Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Job.Run(ctx) }()
	waitResults := func(n int) []windowResult {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			var got []windowResult
			for _, r := range readCommitted(t, ctx, client) {
				var w windowResult
				if err := json.Unmarshal(r.Value, &w); err != nil || string(r.Key) != w.Key {
					t.Fatalf("result record %s=%s: %v", r.Key, r.Value, err)
				}
				got = append(got, w)
			}
			if len(got) >= n {
				return got
			}
			select {
			case err := <-done:
				t.Fatalf("the job ended: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d window results after a minute", len(got), n)
			}
		}
	}
	firstWindows := 0
	for k := range want {
		if k.start < 30000 {
			firstWindows++
		}
	}
	waitResults(firstWindows)
	// A record for [0 s, 10 s) now is late; then records far ahead on
	// every used partition flush the remaining windows.
	produce(0, "u1", 5000, 1000)
	for p := range int32(3) {
		produce(p, "flush", 1_000_000, 0)
	}
	got := waitResults(len(want))
	if _, err := b.Job.StopWithSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run: %v, want ErrStopped", err)
	}
	got = waitResults(len(want))
	var lines, wantLines []string
	for _, w := range got {
		if w.End-w.Start != 10000 {
			t.Fatalf("window [%d, %d) is not 10 s", w.Start, w.End)
		}
		lines = append(lines, fmt.Sprintf("%s@%d=%s", w.Key, w.Start, w.Value))
	}
	for k, v := range want {
		wantLines = append(wantLines, fmt.Sprintf("%s@%d=%d", k.user, k.start, v))
	}
	sort.Strings(lines)
	sort.Strings(wantLines)
	if !slices.Equal(lines, wantLines) {
		t.Fatalf("window sums (%d):\n%s\nwant (%d):\n%s", len(lines), strings.Join(lines, " "), len(wantLines), strings.Join(wantLines, " "))
	}
	late := readTopic(t, ctx, client, "late")
	if len(late) != 1 || !strings.Contains(string(late[0].Value), `"amount":1000`) {
		t.Fatalf("late topic holds %d records, want the one late record", len(late))
	}
	if st := b.Stats(); st.LateRecords != 1 {
		t.Fatalf("stats count %d late records, want 1", st.LateRecords)
	}
}

// The window job in processing time (window.time.domain processing) on
// kfake: every record carries the same event time, which would never move
// an event-time window's watermark past its end, yet each 200 ms window
// of the job's clock fires with the records that arrived while it was
// open. The counts add up to the input, each window once.
func TestWindowJobInProcessingTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := fakeCluster(t)
	cfg := testConfig(t, t.TempDir(), "window", "window.key=user", "window.time.domain=processing", "window.size=200ms")
	prod, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic("in"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	b, err := Build(ctx, cfg, Env{ClientOpts: client})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Job.Run(ctx) }()
	const n = 60
	for i := range n {
		v := fmt.Appendf(nil, `{"user":"u%d"}`, i%2)
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: v, Timestamp: time.UnixMilli(0)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			time.Sleep(300 * time.Millisecond) // the second half in later windows
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		total, seen := int64(0), map[string]bool{}
		for _, r := range readCommitted(t, ctx, client) {
			var w windowResult
			if err := json.Unmarshal(r.Value, &w); err != nil {
				t.Fatal(err)
			}
			if w.End-w.Start != 200 || w.Start%200 != 0 {
				t.Fatalf("window [%d, %d) is not an aligned 200 ms one", w.Start, w.End)
			}
			id := fmt.Sprintf("%s@%d", w.Key, w.Start)
			if seen[id] {
				t.Fatalf("window %s fired twice", id)
			}
			seen[id] = true
			c, err := w.Value.Int64()
			if err != nil {
				t.Fatal(err)
			}
			total += c
		}
		if total == n {
			if len(seen) < 4 {
				t.Fatalf("%d windows, want both users in at least two windows", len(seen))
			}
			break
		}
		if total > n || time.Now().After(deadline) {
			t.Fatalf("the windows count %d records, want %d", total, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := b.Job.StopWithSavepoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run: %v, want ErrStopped", err)
	}
}
