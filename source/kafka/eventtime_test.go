package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/outage/outagetest"
	"github.com/onceflow/onceflow/state"
)

// stamped is a record produced to partition P with event time TS.
type stamped struct {
	P   int32 `json:"p"`
	TS  int64 `json:"ts"`
	Seq int   `json:"seq"`
}

// produceStamped writes each record to its partition with its TS as the
// Kafka timestamp (CreateTime), its JSON as the value.
func produceStamped(t *testing.T, ctx context.Context, client []kgo.Opt, topic string, recs ...stamped) {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(client), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range recs {
		b, _ := json.Marshal(r)
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: r.P, Timestamp: time.UnixMilli(r.TS), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func stampedDecoder(r *kgo.Record) (stamped, error) {
	var s stamped
	err := json.Unmarshal(r.Value, &s)
	return s, err
}

// run produces n records to partition p, timestamps from `from` by step,
// every third one moved back by back (out of order).
func run(p int32, n int, from, step, back int64, seq *int) []stamped {
	out := make([]stamped, n)
	for i := range out {
		ts := from + int64(i)*step
		if i%3 == 2 {
			ts -= back
		}
		*seq++
		out[i] = stamped{P: p, TS: ts, Seq: *seq}
	}
	return out
}

// highest is the highest timestamp of partition p's records.
func highest(p int32, recs ...[]stamped) int64 {
	h := engine.NoTimestamp
	for _, rs := range recs {
		for _, r := range rs {
			if r.P == p {
				h = max(h, r.TS)
			}
		}
	}
	return h
}

// tsProbe records, for each record, the timestamp it came with and the
// operator's watermark then.
type tsProbe struct {
	mu   sync.Mutex
	seen []tsSeen
}

type tsSeen struct {
	v      stamped
	ts, wm int64
}

func (p *tsProbe) newFn() engine.KeyedProcessFunction[string, stamped, stamped] { return tsProbeFn{p} }

func (p *tsProbe) all() []tsSeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

type tsProbeFn struct{ p *tsProbe }

func (tsProbeFn) Open(*engine.KeyedContext) error { return nil }
func (f tsProbeFn) Process(ctx *engine.KeyedContext, _ string, v stamped, out func(stamped)) error {
	f.p.mu.Lock()
	f.p.seen = append(f.p.seen, tsSeen{v: v, ts: ctx.Timestamp(), wm: ctx.CurrentWatermark()})
	f.p.mu.Unlock()
	out(v)
	return nil
}

// eventJob is source (parallelism p) → key by partition → tsProbe (2) →
// collecting sink, with watermarks asked for every millisecond.
func eventJob(src *Source[stamped], p int) (*engine.Job, *tsProbe) {
	j := engine.NewJob("events", engine.Options{WatermarkInterval: time.Millisecond,
		Checkpoint: engine.CheckpointOptions{Interval: 20 * time.Millisecond}})
	probe := &tsProbe{}
	keyed := engine.KeyBy(engine.FromSource(j, "source", p, src), func(s stamped) string { return strconv.Itoa(int(s.P)) }, state.StringCodec{})
	engine.SinkTo(engine.Process(keyed, "probe", 2, probe.newFn), "sink", 2, &collectSink[stamped]{})
	return j, probe
}

// startJob runs j until the test ends; done receives Run's result.
func startJob(t *testing.T, j *engine.Job) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return done
}

// waitFor polls cond until it holds, failing after 20s with what(),
// or when the job ends.
func waitFor(t *testing.T, done <-chan error, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("the job ended early: %v", err)
		case <-deadline:
			t.Fatalf("not reached within 20s: %s", what())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// waitWatermark waits until operators source and probe have watermark w
// (not idle).
func waitWatermark(t *testing.T, j *engine.Job, done <-chan error, w int64) {
	t.Helper()
	at := func() bool {
		n := 0
		for _, o := range j.Status().Operators {
			if (o.UID == "source" || o.UID == "probe") && o.Watermark == w && !o.WatermarkIdle {
				n++
			}
		}
		return n == 2
	}
	waitFor(t, done, func() string { return fmt.Sprintf("watermark %d; status %+v", w, j.Status().Operators) }, at)
}

// Four partitions read by two subtasks (two partitions each), out of order
// within the bound. The watermark is the lowest partition's highest
// timestamp minus the bound minus 1 ms; once partition 3 has produced
// nothing for the idle timeout (on the reader's injected clock) it is left
// out and the watermark follows the other three; when it produces again it
// counts again, without moving the watermark back. Every record comes
// with its Kafka timestamp.
func TestSourceWatermarksPerPartitionWithAnIdlePartition(t *testing.T) {
	const bound = 250
	client := fake(t, 4, "in")
	clk := outagetest.NewClock()
	src, err := NewSource(SourceOptions[stamped]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1, Now: clk.Now},
		Decode: stampedDecoder, MaxOutOfOrderness: bound * time.Millisecond, IdleTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seq := 0
	var all []stamped
	send := func(recs ...stamped) {
		produceStamped(t, ctx, client, "in", recs...)
		all = append(all, recs...)
	}
	const base = 1_700_000_000_000
	var phase1 []stamped
	for p := range int32(3) {
		phase1 = append(phase1, run(p, 12, base+int64(p)*10, 100, 200, &seq)...)
	}
	phase1 = append(phase1, run(3, 3, base, 100, 0, &seq)...) // partition 3 stops early
	send(phase1...)

	j, probe := eventJob(src, 2)
	done := startJob(t, j)
	read := func(n int) {
		t.Helper()
		waitFor(t, done, func() string { return fmt.Sprintf("%d records at the probe, want %d", len(probe.all()), n) },
			func() bool { return len(probe.all()) == n })
	}
	read(len(all))
	w1 := highest(3, all) - bound - 1
	waitWatermark(t, j, done, w1)

	// 3s on: partitions 0-2 produce, 3 stays silent.
	clk.Advance(3 * time.Second)
	var phase2 []stamped
	for p := range int32(3) {
		phase2 = append(phase2, run(p, 6, base+2000+int64(p)*10, 100, 150, &seq)...)
	}
	send(phase2...)
	read(len(all))
	// 6s on: partition 3 has been silent for the idle timeout, the others
	// for 3s only.
	clk.Advance(3 * time.Second)
	w2 := min(highest(0, all), highest(1, all), highest(2, all)) - bound - 1
	waitWatermark(t, j, done, w2)

	// Partition 3 produces again, its watermark 1s above the current one;
	// then the others move 5s ahead: partition 3 holds the watermark.
	send(stamped{P: 3, TS: w2 + 1000 + bound + 1, Seq: 1000})
	read(len(all))
	waitWatermark(t, j, done, w2)
	var phase3 []stamped
	for p := range int32(3) {
		phase3 = append(phase3, run(p, 3, w2+5000+bound+1, 10, 0, &seq)...)
	}
	send(phase3...)
	read(len(all))
	waitWatermark(t, j, done, w2+1000)

	for _, s := range probe.all() {
		if s.ts != s.v.TS {
			t.Fatalf("record %+v came with timestamp %d, not its Kafka timestamp", s.v, s.ts)
		}
	}
}

// A subtask that owns no partition (five subtasks, four partitions) is
// idle from the start: the watermark is the lowest partition's, and no
// partition is silent for long.
func TestSourceSubtaskWithoutPartitionsIsIdle(t *testing.T) {
	const bound = 100
	client := fake(t, 4, "in")
	src, err := NewSource(SourceOptions[stamped]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1, Now: outagetest.NewClock().Now},
		Decode: stampedDecoder, MaxOutOfOrderness: bound * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seq := 0
	var recs []stamped
	for p := range int32(4) {
		recs = append(recs, run(p, 5, 50_000+int64(p)*1000, 100, 50, &seq)...)
	}
	produceStamped(t, ctx, client, "in", recs...)
	j, probe := eventJob(src, 5)
	done := startJob(t, j)
	waitFor(t, done, func() string { return fmt.Sprintf("%d records", len(probe.all())) },
		func() bool { return len(probe.all()) == len(recs) })
	waitWatermark(t, j, done, highest(0, recs)-bound-1)
}

// SourceOptions.Timestamp takes the event time from the value instead of
// the Kafka timestamp; a record whose timestamp it refuses is handled as
// one that cannot be decoded (skipped here, and counted).
func TestSourceTimestampFromTheValue(t *testing.T) {
	client := fake(t, 1, "in")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The Kafka timestamps are far from the values' TS.
	recs := []stamped{{TS: 1000, Seq: 1}, {TS: -1, Seq: 2}, {TS: 3000, Seq: 3}, {TS: 2500, Seq: 4}}
	cl := plain(t, append(slices.Clone(client), kgo.DefaultProduceTopic("in")))
	for i, r := range recs {
		b, _ := json.Marshal(r)
		if err := cl.ProduceSync(ctx, &kgo.Record{Timestamp: time.UnixMilli(int64(900_000 + i)), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	src, err := NewSource(SourceOptions[stamped]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1},
		Decode: stampedDecoder, OnDecodeError: DecodeSkip,
		Timestamp: func(_ *kgo.Record, v stamped) (time.Time, error) {
			if v.TS < 0 {
				return time.Time{}, errors.New("negative ts")
			}
			return time.UnixMilli(v.TS), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	j, probe := eventJob(src, 1)
	done := startJob(t, j)
	waitFor(t, done, func() string { return fmt.Sprintf("%d records", len(probe.all())) },
		func() bool { return len(probe.all()) == 3 })
	waitWatermark(t, j, done, 2999)
	for _, s := range probe.all() {
		if s.ts != s.v.TS {
			t.Fatalf("record %+v came with timestamp %d, want the value's", s.v, s.ts)
		}
	}
	if st := src.Stats(); st.DecodeSkipped != 1 {
		t.Fatalf("%d records skipped, want the one whose timestamp was refused", st.DecodeSkipped)
	}
}

func TestNewSourceRefusesNegativeEventTimeOptions(t *testing.T) {
	r := ReaderOptions{Topics: []string{"in"}}
	for _, tc := range []struct {
		opts SourceOptions[string]
		want string
	}{
		{SourceOptions[string]{Reader: r, Decode: valueDecoder, MaxOutOfOrderness: -time.Second}, "option MaxOutOfOrderness: -1s is negative"},
		{SourceOptions[string]{Reader: r, Decode: valueDecoder, IdleTimeout: -time.Second}, "option IdleTimeout: -1s is negative"},
	} {
		if _, err := NewSource(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSource = %v, want an error saying %q", err, tc.want)
		}
	}
}
