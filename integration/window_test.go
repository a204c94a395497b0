package integration

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// windowKind is one kind of window of the window job in the crash test:
// 1 s windows (tumbling, or sliding by 500 ms) or sessions with a 1 s gap,
// summing n per user with event time from ts, no lateness. A partition no
// user hashes to goes idle after 1 s (without idleness it would hold
// every window back until flushWindows, and the failpoints after a
// pre-commit would never be reached). Partitions carry their records in
// timestamp order (the kind's line), so nothing is late.
type windowKind struct {
	name string
	// spec is the window section's kind and sizes.
	spec string
	// line is the i-th input record.
	line func(rng *rand.Rand, i int) *kgo.Record
	// windows returns the windows each of a user's event times (in
	// order) is in, as start and end pairs per time.
	windows func(ts []int64) [][][2]int64
}

// section is the kind's window section of the job's configuration.
func (k *windowKind) section() string {
	return `window: {key: user, aggregate: sum, field: n, time: {field: ts, format: epoch_millis}, ` + k.spec + `,
  max_out_of_orderness: 100ms, idle_timeout: 1s, allowed_lateness: 0s}
`
}

// windowUsers spread the window job's input over the partitions.
const windowUsers = 13

// windowEvent is the i-th input of the window job at event time ts: user
// u<i mod 13>, n from 1 to 7, keyed by the user.
func windowEvent(i int, ts int64) *kgo.Record {
	user := "u" + strconv.Itoa(i%windowUsers)
	return &kgo.Record{Key: []byte(user), Value: fmt.Appendf(nil, `{"user":%q,"n":%d,"ts":%d}`, user, i%7+1, ts)}
}

var (
	// tumblingWindows: event time i×10 ms, 1 s windows.
	tumblingWindows = &windowKind{name: "window", spec: "kind: tumbling, size: 1s",
		line: func(_ *rand.Rand, i int) *kgo.Record { return windowEvent(i, int64(i)*10) },
		windows: func(ts []int64) [][][2]int64 {
			out := make([][][2]int64, len(ts))
			for i, t := range ts {
				out[i] = [][2]int64{{t - t%1000, t - t%1000 + 1000}}
			}
			return out
		}}
	// slidingWindows: event time i×10 ms, 1 s windows every 500 ms, so
	// that a record is in two windows, one of them open across more
	// checkpoints.
	slidingWindows = &windowKind{name: "window-sliding", spec: "kind: sliding, size: 1s, slide: 500ms",
		line: tumblingWindows.line,
		windows: func(ts []int64) [][][2]int64 {
			out := make([][][2]int64, len(ts))
			for i, t := range ts {
				last := t - t%500
				out[i] = [][2]int64{{last - 500, last + 500}, {last, last + 1000}}
			}
			return out
		}}
	// sessionWindows: event time i×10 ms plus 2 s after every 300
	// records, sessions with a 1 s gap: a user's records, 130 ms apart,
	// make one session per 300 records, which merges as they come.
	sessionWindows = &windowKind{name: "window-session", spec: "kind: session, gap: 1s",
		line: func(_ *rand.Rand, i int) *kgo.Record { return windowEvent(i, int64(i)*10+int64(i/300)*2000) },
		windows: func(ts []int64) [][][2]int64 {
			out := make([][][2]int64, len(ts))
			for i := 0; i < len(ts); {
				j := i + 1
				for j < len(ts) && ts[j]-ts[j-1] <= 1000 {
					j++
				}
				for k := i; k < j; k++ {
					out[k] = [][2]int64{{ts[i], ts[j-1] + 1000}}
				}
				i = j
			}
			return out
		}}
)

// windowResult is a result record's value.
type windowResult struct {
	Key   string      `json:"key"`
	Start int64       `json:"start"`
	End   int64       `json:"end"`
	Value json.Number `json:"value"`
}

// reference is the sum per user and window of the input, computed
// directly: "user@start-end" -> sum.
func (k *windowKind) reference(in []*kgo.Record) map[string]string {
	type event struct{ ts, n int64 }
	byUser := map[string][]event{}
	for _, r := range in {
		var e struct {
			User string `json:"user"`
			N    int64  `json:"n"`
			TS   int64  `json:"ts"`
		}
		if err := json.Unmarshal(r.Value, &e); err != nil {
			panic(fmt.Sprintf("window input %q: %v", r.Value, err))
		}
		byUser[e.User] = append(byUser[e.User], event{e.TS, e.N})
	}
	sums := map[string]int64{}
	for user, evs := range byUser {
		slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.ts, b.ts) })
		ts := make([]int64, len(evs))
		for i, e := range evs {
			ts[i] = e.ts
		}
		for i, ws := range k.windows(ts) {
			for _, w := range ws {
				sums[fmt.Sprintf("%s@%d-%d", user, w[0], w[1])] += evs[i].n
			}
		}
	}
	out := map[string]string{}
	for key, v := range sums {
		out[key] = strconv.FormatInt(v, 10)
	}
	return out
}

// check: every window of the input fired exactly once, with its sum, in
// the documented JSON, keyed by the user.
func (k *windowKind) check(in, out []*kgo.Record) string {
	want := map[string]int{}
	for key, v := range k.reference(in) {
		want[key+"="+v] = 1
	}
	got := map[string]int{}
	for _, r := range out {
		var w windowResult
		if err := json.Unmarshal(r.Value, &w); err != nil || w.Key != string(r.Key) {
			return fmt.Sprintf("output %s/%d@%d: %s=%s is not a window result of its key (%v)", r.Topic, r.Partition, r.Offset, r.Key, r.Value, err)
		}
		got[fmt.Sprintf("%s@%d-%d=%s", w.Key, w.Start, w.End, w.Value)]++
	}
	return diff(got, want)
}

// flushWindows writes a record an hour of event time ahead to every
// partition of topic, so that every partition's watermark passes the last
// windows of the input; its own window never fires.
func flushWindows(t *testing.T, seeds []string, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	d, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d[topic].Partitions.Numbers() {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte("flush"), Value: []byte(`{"user":"flush","n":0,"ts":3600000000}`)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("flushing partition %d: %v", p, err)
		}
	}
}

// The window job (the built processor) on the real broker: input over 4
// partitions, out of order within max_out_of_orderness, one partition
// silent (idle_timeout leaves it out of the watermark). The windowed
// counts and sums equal a reference computed here, each window once, and
// a record later than the allowed lateness arrives in the late topic.
func TestWindowJobOnTheBroker(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for _, aggregate := range []string{"count", "sum"} {
		t.Run(aggregate, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			in := kafkatest.Topic(t, seeds, 4)
			produce := func(p int32, user string, ts, amount int64) {
				t.Helper()
				v := fmt.Appendf(nil, `{"user":%q,"ts":%d,"amount":%d}`, user, ts, amount)
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: in, Partition: p, Key: []byte(user), Value: v}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			want := map[string]int64{}
			for p := range int32(3) { // partition 3 stays silent
				for i := range 60 {
					ts := int64(i^1) * 250 // pairs swapped: 250 ms out of order
					user := fmt.Sprintf("u%d", (i+int(p))%4)
					amount := int64(i%9 + 1)
					produce(p, user, ts, amount)
					if aggregate == "count" {
						amount = 1
					}
					want[fmt.Sprintf("%s@%d", user, ts-ts%5000)] += amount
				}
			}
			out, late := kafkatest.Topic(t, seeds, 2), kafkatest.Topic(t, seeds, 1)
			dir := t.TempDir()
			name := fmt.Sprintf("window-%s-%d", aggregate, time.Now().UnixNano()%1e6)
			cfg := writeConfig(t, dir, fmt.Sprintf(`
job: {name: %s, type: window, parallelism: 2}
kafka: {brokers: [%q]}
source: {topic: %s, start: earliest}
sink: {topic: %s, delivery: exactly_once, transactional_id_prefix: %s, transaction_timeout: 2m}
checkpoint: {interval: 100ms, timeout: 30s, dir: %s/checkpoints}
state: {backend: pebble, dir: %s/state}
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
window: {key: user, aggregate: %s, field: amount, time: {field: ts}, kind: tumbling, size: 5s,
  max_out_of_orderness: 1s, idle_timeout: 500ms, allowed_lateness: 0s, late_topic: %s}
`, name, seeds[0], in, out, name, dir, dir, aggregate, late))
			proc := startChild(t, nil, "run", "--config", cfg)
			stopped := false
			results := func(n int) map[string]int64 {
				t.Helper()
				var got map[string]int64
				if !eventually(ctx, 200*time.Millisecond, func() bool {
					if !stopped && proc.exited() {
						t.Fatalf("the processor exited with %v:\n%s", proc.err, proc.tail())
					}
					got = map[string]int64{}
					for _, r := range kafkatest.ReadCommitted(t, seeds, out) {
						var w windowResult
						if err := json.Unmarshal(r.Value, &w); err != nil || w.End-w.Start != 5000 || w.Key != string(r.Key) {
							t.Fatalf("result %s=%s is not a 5 s window of its key: %v", r.Key, r.Value, err)
						}
						k := fmt.Sprintf("%s@%d", w.Key, w.Start)
						if _, dup := got[k]; dup {
							t.Fatalf("window %s fired twice", k)
						}
						v, err := w.Value.Int64()
						if err != nil {
							t.Fatalf("result %s: value %s is not an integer: %v", k, w.Value, err)
						}
						got[k] = v
					}
					return len(got) >= n
				}) {
					t.Fatalf("%d of %d window results:\n%s", len(got), n, proc.tail())
				}
				return got
			}
			// The stream reaches 15 s: the windows up to 10 s fire without
			// partition 3, left out as idle.
			early := 0
			for k := range want {
				var start int64
				fmt.Sscanf(k[len("uX@"):], "%d", &start)
				if start < 10000 {
					early++
				}
			}
			results(early)
			produce(0, "u1", 1000, 100) // [0 s, 5 s) fired and purged: late
			for p := range int32(3) {
				produce(p, "flush", 3_600_000_000, 1)
			}
			got := results(len(want))
			proc.stop(time.Minute)
			stopped = true
			got = results(len(want))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("window %ss:\n%v\nwant:\n%v", aggregate, got, want)
			}
			lateRecs := kafkatest.ReadCommitted(t, seeds, late)
			if len(lateRecs) != 1 || string(lateRecs[0].Key) != "u1" {
				t.Fatalf("late topic holds %d records, want the one late record of u1", len(lateRecs))
			}
			kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
			t.Logf("%d windows exact, 1 late record in %s", len(got), late)
		})
	}
}
