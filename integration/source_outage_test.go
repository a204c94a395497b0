package integration

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
)

// The Kafka source rides out its broker's death on the real broker (issue
// 14 §1): the single node of the local cluster is SIGKILLed under a
// reader that keeps polling as a source subtask does between barriers,
// and a second reader is opened meanwhile, as a restarted job attempt
// would. While the broker is away neither fails (the tolerance is the
// default minute); once it is back, the first reader resumes where it
// was and the second opens, and both read every record exactly once. The
// outage is logged once at its start and once at its end.
func TestSourceRidesOutABrokerKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := kafkatest.Local(t, kafkatest.Kind{})
	seeds := c.Addrs()
	topic := kafkatest.Topic(t, seeds, 3)
	produceN := func(from, n int) {
		t.Helper()
		cl := kafkatest.Client(t, seeds, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
		var recs []*kgo.Record
		for i := from; i < from+n; i++ {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%17), Value: fmt.Appendf(nil, "v%04d", i)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("producing records %d..%d: %v", from, from+n-1, err)
		}
	}
	logs := &logbuf.Buffer{}
	tr, err := outage.NewTracker(outage.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	opts := sourcekafka.ReaderOptions{ClientOpts: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Topics: []string{topic},
		DiscoveryInterval: time.Second, Outage: tr, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	// poll is one Next between two barriers; it fails the test on an
	// error.
	poll := func(r *sourcekafka.Reader, what string) (string, bool) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		rec, ok, err := r.Next(pctx)
		if err != nil {
			t.Fatalf("%s: Next: %v\n%s", what, err, logs)
		}
		if !ok {
			return "", false
		}
		return string(rec.Value), true
	}
	readAll := func(r *sourcekafka.Reader, what string, have []string, want int) []string {
		t.Helper()
		for len(have) < want {
			if v, ok := poll(r, what); ok {
				have = append(have, v)
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: read %d records, want %d", what, len(have), want)
			}
		}
		return have
	}

	produceN(0, 300)
	r, err := sourcekafka.OpenReader(ctx, 0, 1, opts, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readAll(r, "before the kill", nil, 300)

	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	down := true
	t.Cleanup(func() {
		if down { // the cluster is shared by the package's tests
			if err := c.Restart(context.Background(), 0); err != nil {
				t.Errorf("restarting the killed broker: %v", err)
			}
		}
	})
	type opened struct {
		r   *sourcekafka.Reader
		err error
		at  time.Time
	}
	late := make(chan opened, 1)
	go func() {
		r, err := sourcekafka.OpenReader(ctx, 0, 1, opts, false, nil)
		late <- opened{r, err, time.Now()}
	}()
	polls := 0
	for time.Since(killed) < 5*time.Second || !tr.Status().Down {
		if v, ok := poll(r, "with the broker dead"); ok {
			t.Fatalf("read %s with the broker dead", v)
		}
		polls++
		if ctx.Err() != nil {
			t.Fatalf("the source never reported the broker away: %+v", tr.Status())
		}
	}
	select {
	case o := <-late:
		t.Fatalf("a reader opened with the broker dead: %v", o.err)
	default:
	}
	st := tr.Status()
	t.Logf("broker dead for %s: %d polls, no error; the source waits since %s (%s), last error: %s",
		time.Since(killed).Round(time.Millisecond), polls, st.Since.Format("15:04:05.000"), st.What, st.LastError)

	if err := c.Restart(ctx, 0); err != nil {
		t.Fatalf("restarting the broker: %v", err)
	}
	down = false
	back := time.Now()
	// The running reader resumes at once, before any new record comes.
	for tr.Status().Down {
		if v, ok := poll(r, "after the restart"); ok {
			t.Fatalf("read %s again after the restart", v)
		}
		if ctx.Err() != nil {
			t.Fatal("the source did not see the broker back")
		}
	}
	produceN(300, 300)
	n := len(got)
	got = readAll(r, "after the restart", got, n+1)
	firstAfter := time.Since(back)
	got = readAll(r, "after the restart", got, 600)
	var o opened
	select {
	case o = <-late:
	case <-ctx.Done():
		t.Fatal("the reader opened during the outage did not open after it")
	}
	if o.err != nil {
		t.Fatalf("the reader opened during the outage: %v\n%s", o.err, logs)
	}
	defer o.r.Close()
	all := readAll(o.r, "the reader opened during the outage", nil, 600)
	for name, vals := range map[string][]string{"the running reader": got, "the reader opened during the outage": all} {
		slices.Sort(vals)
		if len(vals) != 600 || len(slices.Compact(slices.Clone(vals))) != 600 || vals[0] != "v0000" || vals[599] != "v0599" {
			t.Fatalf("%s read %d records (%v ... %v), want v0000..v0599 once each", name, len(vals), vals[:min(3, len(vals))], vals[max(0, len(vals)-3):])
		}
	}
	if n, m := strings.Count(logs.String(), "does not answer"), strings.Count(logs.String(), "answers again"); n != 1 || m != 1 {
		t.Fatalf("the outage was logged %d times at its start and %d at its end, want once each:\n%s", n, m, logs)
	}
	t.Logf("outage: broker killed, restarted and answering after %s; the reader that opened during the outage opened %s after that; "+
		"the running reader read its first new record %s after the restart",
		back.Sub(killed).Round(time.Millisecond), o.at.Sub(back).Round(time.Millisecond), firstAfter.Round(time.Millisecond))
}
