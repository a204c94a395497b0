package kafka

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/internal/outage/outagetest"
)

// The source rides out a cluster that is away (issue 14 §1): opening a
// reader, discovering partitions, fetching and committing to the group
// wait for it up to kafka.outage_tolerance, log it once, and never move a
// position while they wait.

// tracker returns a Tracker logging to a new logbuf.Buffer; clk nil means the
// real clock.
func tracker(t *testing.T, tolerance time.Duration, clk *outagetest.Clock) (*outage.Tracker, *logbuf.Buffer) {
	t.Helper()
	logs := &logbuf.Buffer{}
	o := outage.Options{Tolerance: tolerance, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if clk != nil {
		o.Now, o.After = clk.Now, clk.After
	}
	tr, err := outage.NewTracker(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr, logs
}

// closedPort returns a local address nothing listens on.
func closedPort(t *testing.T) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return addr, port
}

// A job attempt restarting while the broker is away (here: nothing
// listens on its port yet) waits for it instead of failing: OpenReader
// keeps trying, the tracker reports the outage, and once a broker listens
// there the reader opens and reads every record.
func TestOpenReaderWaitsForAClusterThatIsAway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, port := closedPort(t)
	tr, logs := tracker(t, 45*time.Second, nil)
	client := []kgo.Opt{kgo.SeedBrokers(addr)}
	type opened struct {
		r   *Reader
		err error
	}
	done := make(chan opened, 1)
	go func() {
		r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Outage: tr}, false, nil)
		done <- opened{r, err}
	}()
	// Wait until the reader has seen the cluster away.
	for !tr.Status().Down {
		select {
		case o := <-done:
			t.Fatalf("OpenReader returned while nothing listened at %s: %v", addr, o.err)
		case <-ctx.Done():
			t.Fatal("the tracker never saw the outage")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if st := tr.Status(); !strings.Contains(st.What, "listing topics") || !strings.Contains(st.LastError, "dial") {
		t.Fatalf("status during the outage: %+v", st)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produce(t, ctx, client, "in", 20, 0)
	var o opened
	select {
	case o = <-done:
	case <-ctx.Done():
		t.Fatal("OpenReader did not return once the broker listened")
	}
	if o.err != nil {
		t.Fatalf("OpenReader: %v", o.err)
	}
	defer o.r.Close()
	got := readN(t, ctx, o.r, 20)
	slices.Sort(got)
	if len(got) != 20 || got[0] != "r0000" || got[19] != "r0019" || slices.Compact(slices.Clone(got))[19] != "r0019" {
		t.Fatalf("after the outage read %v, want r0000..r0019 once each", got)
	}
	if st := tr.Status(); st.Down || st.Outages != 1 {
		t.Fatalf("status after the outage: %+v", st)
	}
	if n, m := logs.Count("does not answer"), logs.Count("answers again"); n != 1 || m != 1 {
		t.Fatalf("outage logged %d times at its start and %d at its end, want once each:\n%s", n, m, logs)
	}
}

// Past the tolerance, opening a reader fails with the outage error (the
// restart strategy decides what follows).
func TestOpenReaderGivesUpPastTheTolerance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr, _ := closedPort(t)
	clk := outagetest.NewClock()
	tr, _ := tracker(t, 5*time.Second, clk)
	start := clk.Now()
	_, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: []kgo.Opt{kgo.SeedBrokers(addr)}, Topics: []string{"in"}, Outage: tr}, false, nil)
	var oe *outage.Error
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "kafka source: listing topics [in]") || !strings.Contains(err.Error(), "kafka.outage_tolerance") {
		t.Fatalf("err = %v, want an outage error naming the listing and the key", err)
	}
	if waited := clk.Now().Sub(start); waited < 5*time.Second || waited > 7*time.Second {
		t.Fatalf("gave up after %s of the fake clock, want just past the 5s tolerance", waited)
	}
}

// A missing topic is not an outage: it fails at once, naming the topic.
func TestMissingTopicIsNotWaitedFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	tr, logs := tracker(t, time.Hour, nil)
	_, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"nope"}, Outage: tr}, false, nil)
	if err == nil || !strings.Contains(err.Error(), "topic nope") || tr.Status().Outages != 0 || logs.Count("does not answer") != 0 {
		t.Fatalf("err = %v, status %+v; want a failure naming topic nope and no outage", err, tr.Status())
	}
}

// Partition discovery that fails while the cluster is away does not fail
// the attempt: it is tried again every second until the cluster answers,
// and only once it has failed for the tolerance does the error end the
// attempt.
func TestDiscoveryRidesOutAnOutage(t *testing.T) {
	for _, recovers := range []bool{true, false} {
		t.Run(map[bool]string{true: "cluster answers again", false: "past the tolerance"}[recovers], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// kadm answers from cached metadata younger than MetadataMinAge.
			client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MetadataMinAge(10 * time.Millisecond)}
			clk := outagetest.NewClock()
			tr, logs := tracker(t, 10*time.Second, clk)
			r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: time.Minute,
				Now: clk.Now, Outage: tr}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			time.Sleep(50 * time.Millisecond) // let the cached metadata age past MetadataMinAge
			// The topic's leader is away for every metadata request.
			away := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: "in", Err: kerr.LeaderNotAvailable, Count: -1})
			next := func() error {
				t.Helper()
				pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_, _, err := r.Next(pctx)
				return err
			}
			clk.Advance(2 * time.Minute) // discovery is due
			first := clk.Now()
			if err := next(); err != nil {
				t.Fatalf("discovery failing while the cluster is away failed the attempt: %v", err)
			}
			if st := tr.Status(); !st.Down || !strings.Contains(st.What, "discovering partitions of [in]") || !strings.Contains(st.LastError, "LEADER_NOT_AVAILABLE") {
				t.Fatalf("status after the failed discovery: %+v", st)
			}
			// Tried again a second later, not a discovery interval later.
			clk.Advance(500 * time.Millisecond)
			if err := next(); err != nil || !r.lastDiscovery.Equal(first) {
				t.Fatalf("half a second later: err %v, last discovery %v (want none, still %v)", err, r.lastDiscovery, first)
			}
			clk.Advance(500 * time.Millisecond)
			if err := next(); err != nil || !r.lastDiscovery.Equal(clk.Now()) {
				t.Fatalf("a second later: err %v, last discovery %v (want a retry at %v)", err, r.lastDiscovery, clk.Now())
			}
			if recovers {
				away.Remove()
				time.Sleep(50 * time.Millisecond) // as above: no cached answer
				clk.Advance(time.Second)
				if err := next(); err != nil || !r.lastDiscovery.Equal(clk.Now()) {
					t.Fatalf("discovery after the outage: err %v, last at %v (want %v)", err, r.lastDiscovery, clk.Now())
				}
				// Back to the discovery interval.
				clk.Advance(30 * time.Second)
				last := r.lastDiscovery
				if err := next(); err != nil || !r.lastDiscovery.Equal(last) {
					t.Fatalf("30s after a good discovery: err %v, discovered again at %v", err, r.lastDiscovery)
				}
				// A discovery may be answered from the client's cached
				// metadata: the outage ends with the first record fetched.
				if st := tr.Status(); !st.Down {
					t.Fatalf("a discovery ended the outage: %+v", st)
				}
				produce(t, ctx, client, "in", 1, 0)
				if got := readN(t, ctx, r, 1); len(got) != 1 {
					t.Fatalf("read %v after the outage", got)
				}
				if st := tr.Status(); st.Down {
					t.Fatalf("still down after a record came: %+v", st)
				}
				if n, m := logs.Count("does not answer"), logs.Count("answers again"); n != 1 || m != 1 {
					t.Fatalf("outage logged %d times at its start and %d at its end, want once each:\n%s", n, m, logs)
				}
				return
			}
			clk.Advance(9 * time.Second) // 10s since the first failure
			err = next()
			var oe *outage.Error
			if !errors.As(err, &oe) || !strings.Contains(err.Error(), "discovering partitions of [in]") || !errors.Is(err, kerr.LeaderNotAvailable) {
				t.Fatalf("discovery failing for the whole tolerance: err %v, want the outage error", err)
			}
		})
	}
}

// fetchWith is a poll's result: one partition's error, or records.
func fetchWith(topic string, p int32, err error, offsets ...int64) kgo.Fetches {
	fp := kgo.FetchPartition{Partition: p, Err: err}
	for _, o := range offsets {
		fp.Records = append(fp.Records, &kgo.Record{Topic: topic, Partition: p, Offset: o})
	}
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{fp}}}}}
}

// Fetch errors step by step on a fake clock: an error saying the cluster
// is away is counted, not returned, until the outage has lasted the
// tolerance; a poll with records ends the outage; the poll's own context
// errors are ignored; anything else fails at once naming the partition.
func TestFetchErrorsOfAnOutageAreCountedNotReturned(t *testing.T) {
	clk := outagetest.NewClock()
	tr, logs := tracker(t, 10*time.Second, clk)
	r := &Reader{tracker: tr}
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout")} // from a listing of the client's, injected into the poll
	for i := range 3 {
		if err := r.take(context.Background(), fetchWith("in", 0, timeout)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		clk.Advance(3 * time.Second)
	}
	if st := tr.Status(); !st.Down || st.What != "kafka source: fetching in/0" || st.For != 9*time.Second {
		t.Fatalf("status after 9s of fetch errors: %+v", st)
	}
	if err := r.take(context.Background(), fetchWith("in", 1, context.Canceled)); err != nil || len(r.buf) != 0 {
		t.Fatalf("the poll's own cancellation: %v, %d records", err, len(r.buf))
	}
	clk.Advance(time.Second)
	err := r.take(context.Background(), fetchWith("in", 0, timeout))
	var oe *outage.Error
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "kafka source: fetching in/0") || !strings.Contains(err.Error(), "kafka.outage_tolerance") {
		t.Fatalf("a fetch error 10s into the outage: %v, want the outage error", err)
	}

	// Records end the outage; the next one starts a new bound.
	if err := r.take(context.Background(), fetchWith("in", 0, nil, 7, 8)); err != nil || len(r.buf) != 2 {
		t.Fatalf("records: %v, %d buffered", err, len(r.buf))
	}
	if st := tr.Status(); st.Down || st.Outages != 1 {
		t.Fatalf("status after records: %+v", st)
	}
	if err := r.take(context.Background(), fetchWith("in", 0, timeout)); err != nil {
		t.Fatalf("a new outage failed at once: %v", err)
	}
	if n, m := logs.Count("does not answer"), logs.Count("answers again"); n != 2 || m != 1 {
		t.Fatalf("logged %d outage starts and %d ends, want 2 and 1:\n%s", n, m, logs)
	}

	// What no wait can fix fails at once, even in an outage.
	// (A position out of the log is not among them: see offsets_test.go.)
	for _, e := range []error{kerr.TopicAuthorizationFailed, errors.New("invalid record batch")} {
		err := r.take(context.Background(), fetchWith("in", 1, e))
		if !errors.Is(err, e) || !strings.Contains(err.Error(), "kafka source: fetching in/1") {
			t.Fatalf("take(%v) = %v, want it at once, naming in/1", e, err)
		}
	}
	if len(r.buf) != 2 {
		t.Fatalf("%d records buffered, want the 2 of the good poll", len(r.buf))
	}
}

// Group commits that fail (the cluster away, the coordinator loading, or
// a refusal) are warned about once, and once more when they work again,
// not at every checkpoint; they are no outage of the job's (nothing waits
// for them), so the tracker does not report one.
func TestGroupCommitFailuresAreLoggedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produce(t, ctx, client, "in", 3, 0)
	tr, logs := tracker(t, time.Minute, nil)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Group: "g", Outage: tr, DiscoveryInterval: -1,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkpoint := int64(0)
	complete := func() {
		t.Helper()
		checkpoint++
		if _, err := r.SnapshotState(checkpoint); err != nil {
			t.Fatal(err)
		}
		r.NotifyCheckpointComplete(ctx, checkpoint)
		r.committer.sync()
	}
	committed := func() int64 {
		t.Helper()
		offs, err := kadmClient(t, client).FetchOffsets(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		o, _ := offs.Lookup("in", 0)
		return o.At
	}
	const warned, again = `level=WARN msg="kafka source: committing`, "committing checkpointed offsets to the group works again"

	readN(t, ctx, r, 3)
	for _, e := range []*kerr.Error{kerr.RequestTimedOut, kerr.GroupAuthorizationFailed} {
		failing := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: "g", Err: e, Count: -1})
		for range 4 {
			complete()
		}
		failing.Remove()
		if w, a := logs.Count(warned), logs.Count(again); w != 1 || a != 0 {
			t.Fatalf("4 commits failing with %s: %d warnings and %d lines of recovery, want 1 and 0:\n%s", e, w, a, logs)
		}
		if st := tr.Status(); st.Down || st.Outages != 0 {
			t.Fatalf("failed commits reported as an outage: %+v", st)
		}
		complete()
		complete()
		if w, a := logs.Count(warned), logs.Count(again); w != 1 || a != 1 || committed() != 3 {
			t.Fatalf("2 good commits after %s: %d warnings, %d lines of recovery (want 1 and 1), committed %d (want 3):\n%s", e, w, a, committed(), logs)
		}
		logs.Reset()
	}
}

func kadmClient(t *testing.T, client []kgo.Opt) *kadm.Client { return kadm.NewClient(plain(t, client)) }

// A broker restart under a running reader and one that opens meanwhile:
// the broker's port refuses connections and its connections are cut for
// a while, as when its process dies. Next keeps answering (no record, no
// error) while the cluster is away, the reader that opens waits, and
// once the broker is back both read every record exactly once. The
// outage lasts 3s, long enough for the fetch backoff to reach its bound:
// the running reader must read again within that bound and a second of
// the broker's return (franz-go's default backoff, up to 5s, failed
// this).
func TestReadersRideOutABrokerRestart(t *testing.T) {
	const away, readAgain = 3 * time.Second, outage.ClientBackoffMax + time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sw := &outagetest.Switch{}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(sw.Listen), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produce(t, ctx, client, "in", 20, 0)
	tr, logs := tracker(t, 30*time.Second, nil)
	opts := ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: 100 * time.Millisecond, Outage: tr}
	r, err := OpenReader(ctx, 0, 1, opts, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readN(t, ctx, r, 20)

	sw.Down()
	down := time.Now()
	type opened struct {
		r   *Reader
		err error
	}
	late := make(chan opened, 1)
	go func() {
		r, err := OpenReader(ctx, 0, 1, opts, false, nil)
		late <- opened{r, err}
	}()
	polls := 0
	for !tr.Status().Down || time.Since(down) < away {
		pctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		rec, ok, err := r.Next(pctx)
		cancel()
		if err != nil || ok {
			t.Fatalf("Next with the broker away = %v, %v, %v; want no record and no error", rec, ok, err)
		}
		if ctx.Err() != nil {
			t.Fatal("the tracker never saw the broker away")
		}
		polls++
	}
	select {
	case o := <-late:
		t.Fatalf("a reader opened with the broker away: %v", o.err)
	default:
	}
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("broker away for %s, %d polls meanwhile", back.Sub(down).Round(time.Millisecond), polls)
	produce(t, ctx, client, "in", 20, 20)
	got = append(got, readPatiently(t, ctx, r, 20, int(readAgain/(100*time.Millisecond)))...)
	t.Logf("the running reader read again %s after the broker's return", time.Since(back).Round(time.Millisecond))
	var o opened
	select {
	case o = <-late:
	case <-ctx.Done():
		t.Fatal("the reader opened during the outage did not open after it")
	}
	if o.err != nil {
		t.Fatalf("the reader opened during the outage: %v", o.err)
	}
	defer o.r.Close()
	all := readN(t, ctx, o.r, 40)
	for name, vals := range map[string][]string{"running reader": got, "reader opened during the outage": all} {
		slices.Sort(vals)
		if len(vals) != 40 || len(slices.Compact(slices.Clone(vals))) != 40 || vals[0] != "r0000" || vals[39] != "r0039" {
			t.Fatalf("%s read %v, want r0000..r0039 once each", name, vals)
		}
	}
	if st := tr.Status(); st.Down || st.Outages != 1 {
		t.Fatalf("status after the restart: %+v\n%s", st, logs)
	}
	if n, m := logs.Count("does not answer"), logs.Count("answers again"); n != 1 || m != 1 {
		t.Fatalf("the restart logged %d outage starts and %d ends, want one each:\n%s", n, m, logs)
	}
}

// An idle reader (nothing to read, no discovery due) still notices a
// cluster that went away: kgo retries its fetch connections without
// surfacing their failures, so the reader probes the cluster when it has
// heard nothing for a second. The outage is reported while it lasts, ends
// when the broker is back, and past the tolerance Next fails.
func TestIdleReaderNoticesAnOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sw := &outagetest.Switch{}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(sw.Listen), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produce(t, ctx, client, "in", 5, 0)
	tr, logs := tracker(t, 4*time.Second, nil)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1, Outage: tr}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readN(t, ctx, r, 5)

	poll := func() error {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		rec, ok, err := r.Next(pctx)
		if ok {
			t.Fatalf("an idle reader returned %v", rec)
		}
		return err
	}
	sw.Down()
	down := time.Now()
	for !tr.Status().Down {
		if err := poll(); err != nil {
			t.Fatalf("Next while the broker is away, within the tolerance: %v", err)
		}
		if time.Since(down) > 3*time.Second {
			t.Fatalf("an idle reader did not notice the broker away for %s:\n%s", time.Since(down), logs)
		}
	}
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
	for tr.Status().Down {
		if err := poll(); err != nil {
			t.Fatalf("Next once the broker is back: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the outage did not end once the broker was back")
		}
	}

	sw.Down()
	var oe *outage.Error
	for {
		err := poll()
		if errors.As(err, &oe) {
			break
		}
		if err != nil || ctx.Err() != nil {
			t.Fatalf("past the tolerance Next = %v, want an *outage.Error", err)
		}
	}
	if !strings.Contains(oe.Error(), "kafka source") || !strings.Contains(oe.Error(), "kafka.outage_tolerance") {
		t.Fatalf("the outage error does not say what waited: %v", oe)
	}
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
}
