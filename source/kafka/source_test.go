package kafka

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
)

// collectSink keeps every value its writers receive, in memory.
type collectSink[T any] struct {
	mu  sync.Mutex
	got []T
}

func (c *collectSink[T]) NewWriter(context.Context, engine.Scope, [][]byte) (engine.SinkWriter[T], error) {
	return collectWriter[T]{c}, nil
}

func (c *collectSink[T]) values() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

type collectWriter[T any] struct{ c *collectSink[T] }

func (w collectWriter[T]) Write(_ context.Context, v T) error {
	w.c.mu.Lock()
	w.c.got = append(w.c.got, v)
	w.c.mu.Unlock()
	return nil
}
func (collectWriter[T]) SnapshotState(context.Context, int64) ([][]byte, error) { return nil, nil }
func (collectWriter[T]) NotifyCheckpointComplete(context.Context, int64) error  { return nil }
func (collectWriter[T]) NotifyCheckpointAborted(context.Context, int64) error   { return nil }
func (collectWriter[T]) Close(context.Context) error                            { return nil }

// runUntil runs j until cond holds, then stops it with a savepoint and
// returns the savepoint's path.
func runUntil(t *testing.T, ctx context.Context, j *engine.Job, cond func() bool) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("the job ended early: %v", err)
		case <-deadline:
			t.Fatal("condition not reached within 20s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	path, err := j.StopWithSavepoint(ctx)
	if err != nil {
		t.Fatalf("stop with savepoint: %v", err)
	}
	if err := <-done; !errors.Is(err, engine.ErrStopped) {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	return path
}

func valueDecoder(r *kgo.Record) (string, error) { return string(r.Value), nil }

// Two subtasks read three partitions; the job stops with a savepoint, more
// records arrive, and a job restored from the savepoint reads exactly
// those. The offsets of completed checkpoints reach the consumer group,
// and the statistics count what was read.
func TestSourceInAJobResumesExactlyAtTheSavepoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fake(t, 3, "in")
	produce(t, ctx, client, "in", 30, 0)
	storage := dirstore.NewMemoryStorage("copy", dirstore.StorageOptions{Retained: 2})
	src, err := NewSource(SourceOptions[string]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Group: "g"},
		Decode: valueDecoder, LagInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := src.Stats(); st.ConsumerLag != -1 || st.RecordsRead != 0 {
		t.Fatalf("stats before any reader: %+v, want lag unknown and nothing read", st)
	}
	job := func(restoreFrom string) (*engine.Job, *collectSink[string]) {
		j := engine.NewJob("copy", engine.Options{Storage: storage, RestoreFrom: restoreFrom,
			Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond}})
		out := &collectSink[string]{}
		engine.SinkTo(engine.FromSource(j, "source", 2, src), "sink", 2, out)
		return j, out
	}

	j1, out1 := job("")
	var seen SourceStats
	caughtUp := false
	path := runUntil(t, ctx, j1, func() bool {
		if st := src.Stats(); st.ConsumerLag == 0 {
			seen, caughtUp = st, true
		}
		return len(out1.values()) == 30 && caughtUp
	})
	got := out1.values()
	slices.Sort(got)
	want := make([]string, 30)
	for i := range want {
		want[i] = "r" + pad(i)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("first run read %v", got)
	}
	if seen.RecordsRead != 30 {
		t.Fatalf("with the lag at 0 the source counted %d records read, want 30", seen.RecordsRead)
	}
	if st := src.Stats(); st.RecordsRead != 30 || st.ConsumerLag != -1 {
		t.Fatalf("stats after the stop: %+v, want 30 read (kept across readers) and the lag unknown", st)
	}
	adm := kadm.NewClient(plain(t, client))
	committed, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	committed.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum != 30 {
		t.Fatalf("the group's committed offsets sum to %d, want 30 (the savepoint's offsets)", sum)
	}

	produce(t, ctx, client, "in", 10, 30)
	j2, out2 := job(path)
	runUntil(t, ctx, j2, func() bool { return len(out2.values()) >= 10 })
	time.Sleep(100 * time.Millisecond) // a re-read would show up by now
	got = out2.values()
	slices.Sort(got)
	var wantNew []string
	for i := 30; i < 40; i++ {
		wantNew = append(wantNew, "r"+pad(i))
	}
	if !slices.Equal(got, wantNew) {
		t.Fatalf("the restored run read %v, want exactly %v", got, wantNew)
	}
	if st := src.Stats(); st.RecordsRead != 40 {
		t.Fatalf("after both runs the source counted %d records read, want 40", st.RecordsRead)
	}
}

func pad(i int) string {
	s := strconv.Itoa(i)
	return strings.Repeat("0", 4-len(s)) + s
}

func plain(t *testing.T, client []kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// The decode-error policies inside a job: skip and dead_letter count and
// go on; fail ends the job at once (no restart) naming the record.
func TestSourceDecodePoliciesInAJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := fake(t, 1, "in", "dlq")
	produceValues(t, ctx, client, "in", "1", "two", "3", "four", "5")

	for _, policy := range []OnDecodeError{DecodeSkip, DecodeDeadLetter} {
		t.Run(string(policy), func(t *testing.T) {
			src, err := NewSource(SourceOptions[int]{Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}},
				Decode: atoiDecoder, OnDecodeError: policy, DeadLetterTopic: "dlq"})
			if err != nil {
				t.Fatal(err)
			}
			j := engine.NewJob("decode", engine.Options{Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond}})
			out := &collectSink[int]{}
			engine.SinkTo(engine.FromSource(j, "source", 1, src), "sink", 1, out)
			runUntil(t, ctx, j, func() bool { return len(out.values()) == 3 })
			if got := out.values(); !slices.Equal(got, []int{1, 3, 5}) {
				t.Fatalf("decoded %v, want [1 3 5]", got)
			}
			st := src.Stats()
			if st.RecordsRead != 5 {
				t.Fatalf("records read %d, want 5", st.RecordsRead)
			}
			if policy == DecodeSkip && (st.DecodeSkipped != 2 || st.DeadLettered != 0) {
				t.Fatalf("skip: stats %+v", st)
			}
			if policy == DecodeDeadLetter && (st.DeadLettered != 2 || st.DecodeSkipped != 0) {
				t.Fatalf("dead_letter: stats %+v", st)
			}
		})
	}

	t.Run("fail", func(t *testing.T) {
		src, err := NewSource(SourceOptions[int]{Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}}, Decode: atoiDecoder})
		if err != nil {
			t.Fatal(err)
		}
		j := engine.NewJob("decode", engine.Options{Restart: engine.FixedDelay(5, time.Millisecond),
			Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond}})
		engine.SinkTo(engine.FromSource(j, "source", 1, src), "sink", 1, &collectSink[int]{})
		err = j.Run(ctx)
		var de *DecodeError
		if !errors.As(err, &de) || !engine.IsNonRecoverable(err) || !strings.Contains(err.Error(), "in/0@1") {
			t.Fatalf("Run = %v, want a non-recoverable decode error naming in/0@1", err)
		}
		if n := j.Status().Restarts; n != 0 {
			t.Fatalf("the job restarted %d times on a decode error", n)
		}
	})
}

func TestNewSourceRefusesIncompleteOptions(t *testing.T) {
	r := ReaderOptions{Topics: []string{"in"}}
	for _, tc := range []struct {
		opts SourceOptions[string]
		want string
	}{
		{SourceOptions[string]{Reader: r}, "no decoder"},
		{SourceOptions[string]{Decode: valueDecoder}, "no topic"},
		{SourceOptions[string]{Reader: r, Decode: valueDecoder, OnDecodeError: "retry"}, "unknown on_decode_error"},
		{SourceOptions[string]{Reader: r, Decode: valueDecoder, OnDecodeError: DecodeDeadLetter}, "dead-letter topic"},
	} {
		if _, err := NewSource(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSource(%+v) = %v, want an error about %q", tc.opts, err, tc.want)
		}
	}
}

// The lag is unknown until every subtask's reader measured its own: one
// subtask that read its partitions to the end says nothing of the
// partitions of a subtask whose reader is not open yet (the job test
// above once saw lag 0 with 22 of 30 records read).
func TestLagIsUnknownWhileASubtaskIsMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 2, "in")
	src, err := NewSource(SourceOptions[string]{Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1},
		Decode: valueDecoder, LagInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Subtask 0 of 2, alone, on an empty topic: its lag is 0 at once.
	r, err := src.NewReader(ctx, engine.Scope{Job: "j", UID: "source", Subtask: 0, Parallelism: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sr := r.(*sourceReader[string])
	for sr.lag.Load() != 0 {
		select {
		case <-ctx.Done():
			t.Fatal("subtask 0 never measured its lag")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if st := src.Stats(); st.ConsumerLag != -1 {
		t.Fatalf("with subtask 1 not open the lag is %d, want -1 (unknown)", st.ConsumerLag)
	}
	r1, err := src.NewReader(ctx, engine.Scope{Job: "j", UID: "source", Subtask: 1, Parallelism: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	for src.Stats().ConsumerLag != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("with both subtasks open the lag is %d, want 0", src.Stats().ConsumerLag)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
