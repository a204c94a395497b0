package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/logbuf"
)

// A position the log no longer holds (issue 15 §2) is never followed
// silently: a checkpointed offset below the log start (retention or
// DeleteRecords removed unread records), one beyond the log end (the log
// was truncated below it), one of a topic that was deleted and recreated,
// and one that falls out of the log while the reader runs. Under
// OutOfRangeFail each is a non-recoverable error naming the partition,
// the offset and the log's range; under earliest and latest the reader
// jumps, logs the jump with what it skipped or reads again, and counts it.

// admin returns an admin client of the cluster client connects to.
func admin(t *testing.T, client []kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(client...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// deleteRecordsBefore deletes the records of in/0 below offset.
func deleteRecordsBefore(t *testing.T, ctx context.Context, adm *kadm.Client, offset int64) {
	t.Helper()
	offs := kadm.Offsets{}
	offs.AddOffset("in", 0, offset, -1)
	resp, err := adm.DeleteRecords(ctx, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("deleting the records of in/0 below %d: %v", offset, err)
	}
}

// recreate deletes topic "in" and creates it again with one partition.
func recreate(t *testing.T, ctx context.Context, adm *kadm.Client) {
	t.Helper()
	if resp, err := adm.DeleteTopics(ctx, "in"); err != nil || resp.Error() != nil {
		t.Fatalf("deleting topic in: %v %v", err, resp.Error())
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "in"); err != nil {
		t.Fatalf("creating topic in again: %v", err)
	}
}

// entry is a checkpoint entry of in/0 as checkpoints before topic ids
// stored it.
func entry(offset int64) []byte {
	return fmt.Appendf(nil, `{"topic":"in","partition":0,"offset":%d}`, offset)
}

// isNonRecoverable reports whether err carries the engine's
// NonRecoverable() bool convention.
func isNonRecoverable(err error) bool {
	for e := err; e != nil; {
		if nr, ok := e.(interface{ NonRecoverable() bool }); ok && nr.NonRecoverable() {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

// mustRefuse fails the test unless err is a non-recoverable error naming
// every one of want.
func mustRefuse(t *testing.T, what string, err error, read []string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, read %d records %v; want a non-recoverable error naming %v", what, len(read), read, want)
	}
	if !isNonRecoverable(err) {
		t.Fatalf("%s: error %q is not non-recoverable", what, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error %q does not name %q", what, err, w)
		}
	}
}

// openRestored opens the reader of a job restored from entries, reading
// "in" under policy, logging to a new buffer. A reader that opens is read
// until it has nothing more and returned with what it read.
func openRestored(t *testing.T, ctx context.Context, client []kgo.Opt, policy OnOffsetOutOfRange, entries ...[]byte) (*Reader, []string, *logbuf.Buffer, error) {
	t.Helper()
	logs := &logbuf.Buffer{}
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1,
		OnOutOfRange: policy, Logger: slog.New(slog.NewTextHandler(logs, nil))}, true, entries)
	if err != nil {
		return nil, nil, logs, err
	}
	t.Cleanup(r.Close)
	var read []string
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		rec, ok, err := r.Next(pctx)
		cancel()
		if err != nil {
			return r, read, logs, err
		}
		if !ok {
			return r, read, logs, nil
		}
		read = append(read, string(rec.Value))
	}
}

func names(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("r%04d", i))
	}
	return out
}

// The log holds [10, 20) after DeleteRecords; the checkpoint says 3.
// Before the fix the reader resumed at 10 without a word.
func TestRestoredOffsetBelowTheLogStartIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produce(t, ctx, client, "in", 20, 0)
	deleteRecordsBefore(t, ctx, admin(t, client), 10)
	_, read, _, err := openRestored(t, ctx, client, "", entry(3))
	mustRefuse(t, "restored at 3 with the log at [10, 20)", err, read, "in/0", "offset 3", "[10, 20)")
}

// The log holds [0, 20); the checkpoint says 50 (the log was truncated
// below it, or the cluster restored from a backup). Before the fix the
// reader read the partition again from 0 without a word.
func TestRestoredOffsetBeyondTheLogEndIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produce(t, ctx, client, "in", 20, 0)
	_, read, _, err := openRestored(t, ctx, client, "", entry(50))
	mustRefuse(t, "restored at 50 with the log at [0, 20)", err, read, "in/0", "offset 50", "[0, 20)")

	// The end itself is in range: nothing is read until more is written.
	_, read, _, err = openRestored(t, ctx, client, "", entry(20))
	if err != nil || len(read) != 0 {
		t.Fatalf("restored at the log end 20: read %v, err %v; want nothing and no error", read, err)
	}
}

// earliest and latest jump, each jump logged with the partition, the
// checkpointed offset, the log's range, where it resumed and what it
// skipped or reads again.
func TestOutOfRangePoliciesJumpAndSaySo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  OnOffsetOutOfRange
		deleted int64 // records below this are deleted
		offset  int64 // the checkpointed offset
		want    []string
		logged  []string
	}{
		{"below the start, earliest", OutOfRangeEarliest, 10, 3, names(10, 20),
			[]string{"partition=in/0", "offset=3", "log_start=10", "log_end=20", "resumed_at=10", "skipped=[3,10)"}},
		{"below the start, latest", OutOfRangeLatest, 10, 3, nil,
			[]string{"offset=3", "resumed_at=20", "skipped=[3,20)"}},
		{"beyond the end, earliest", OutOfRangeEarliest, 0, 50, names(0, 20),
			[]string{"offset=50", "log_start=0", "log_end=20", "resumed_at=0", "read_again=[0,20)"}},
		{"beyond the end, latest", OutOfRangeLatest, 0, 50, nil,
			[]string{"offset=50", "resumed_at=20", "gone=[20,50)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fake(t, 1, "in")
			produce(t, ctx, client, "in", 20, 0)
			if tc.deleted > 0 {
				deleteRecordsBefore(t, ctx, admin(t, client), tc.deleted)
			}
			r, read, logs, err := openRestored(t, ctx, client, tc.policy, entry(tc.offset))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(read, tc.want) {
				t.Fatalf("read %v, want %v", read, tc.want)
			}
			for _, w := range tc.logged {
				if !strings.Contains(logs.String(), w) {
					t.Fatalf("the jump's log line lacks %q:\n%s", w, logs)
				}
			}
			if n := logs.Count("out of the log's range"); n != 1 {
				t.Fatalf("the jump was logged %d times, want once:\n%s", n, logs)
			}
			// Written after the jump: read once.
			produce(t, ctx, client, "in", 2, 20)
			if got := readN(t, ctx, r, 2); !slices.Equal(got, names(20, 22)) {
				t.Fatalf("after the jump read %v, want [r0020 r0021]", got)
			}
		})
	}
}

// A checkpoint taken of a topic that was then deleted and recreated with
// more records than the checkpointed offset: the offset is in range, but
// of another log. Before the fix the reader skipped the new topic's first
// five records without a word.
func TestRecreatedTopicIsNotReadAsTheOldOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produce(t, ctx, client, "in", 5, 0)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readN(t, ctx, r, 5); len(got) != 5 {
		t.Fatalf("read %v, want 5 records", got)
	}
	snap, err := r.SnapshotState(1)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	recreate(t, ctx, admin(t, client))
	produce(t, ctx, client, "in", 30, 100)

	_, read, _, err := openRestored(t, ctx, client, "", snap...)
	mustRefuse(t, "restored after the topic was recreated", err, read, "in/0", "offset 5", "recreated", "[0, 30)")

	r, read, logs, err := openRestored(t, ctx, client, OutOfRangeEarliest, snap...)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(read, names(100, 130)) {
		t.Fatalf("earliest after the recreation read %v, want every record of the new topic", read)
	}
	if !strings.Contains(logs.String(), "recreated") || !strings.Contains(logs.String(), "resumed_at=0") {
		t.Fatalf("the jump to the new topic's start is not logged:\n%s", logs)
	}

	// A snapshot taken after the jump is of the new topic: restored under
	// fail, it resumes where it says without a word, and reads what comes
	// next once.
	if snap, err = r.SnapshotState(2); err != nil {
		t.Fatal(err)
	}
	r.Close()
	produce(t, ctx, client, "in", 2, 130)
	_, read, logs, err = openRestored(t, ctx, client, "", snap...)
	if err != nil || !slices.Equal(read, names(130, 132)) || strings.Contains(logs.String(), "out of the log's range") {
		t.Fatalf("restored from the snapshot after the jump: read %v, err %v; want r0130 r0131 and no jump:\n%s", read, err, logs)
	}
}

// A snapshot of a job restored from an old checkpoint (no topic id)
// stores the topic's id from then on.
func TestOldCheckpointWithoutTopicIDRestores(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produce(t, ctx, client, "in", 10, 0)
	r, read, _, err := openRestored(t, ctx, client, "", entry(4))
	if err != nil || !slices.Equal(read, names(4, 10)) {
		t.Fatalf("restored at 4: read %v, err %v; want r0004..r0009", read, err)
	}
	snap, err := r.SnapshotState(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap) != 1 || !strings.Contains(string(snap[0]), `"topic_id"`) || !strings.Contains(string(snap[0]), `"offset":10`) {
		t.Fatalf("snapshot %q; want the offset 10 with the topic's id", snap)
	}
}

// holdFetches makes the broker answer every fetch of in/0 with a
// retriable error (the client retries without a word) until the returned
// function is called: the reader's position stays where it is while the
// test changes the log under it.
func holdFetches(c *kfake.Cluster) func() {
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: "in", Partitions: []int32{0},
		Err: kerr.NotLeaderForPartition, Count: -1})
	return func() { h.Remove() }
}

// The reader has read [0, 10); before it fetches again, ten records are
// written and those below 15 deleted. Before the fix the client resumed
// at 15 without a word (its default for a fetch below the log start).
func TestRecordsDeletedUnderTheRunningReaderAreNotSkippedSilently(t *testing.T) {
	for _, policy := range []OnOffsetOutOfRange{OutOfRangeFail, OutOfRangeEarliest} {
		t.Run(string(policy), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
			produce(t, ctx, client, "in", 10, 0)
			logs := &logbuf.Buffer{}
			r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1,
				OnOutOfRange: policy, Logger: slog.New(slog.NewTextHandler(logs, nil))}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := readN(t, ctx, r, 10); len(got) != 10 {
				t.Fatalf("read %v, want 10 records", got)
			}
			release := holdFetches(c)
			produce(t, ctx, client, "in", 10, 10)
			deleteRecordsBefore(t, ctx, admin(t, client), 15)
			release()

			var read []string
			var rerr error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && rerr == nil && len(read) < 5; {
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				rec, ok, err := r.Next(pctx)
				cancel()
				if ok {
					read = append(read, string(rec.Value))
				}
				rerr = err
			}
			if policy == OutOfRangeFail {
				mustRefuse(t, "records deleted under the reader", rerr, read, "in/0", "offset 10", "[15, 20)")
				return
			}
			if rerr != nil || !slices.Equal(read, names(15, 20)) {
				t.Fatalf("earliest: read %v, err %v; want r0015..r0019", read, rerr)
			}
			if l := logs.String(); !strings.Contains(l, "out of the log's range") || !strings.Contains(l, "skipped=[10,15)") {
				t.Fatalf("the jump is not logged with what it skipped:\n%s", l)
			}
			if n := r.OffsetResets(); n != 1 {
				t.Fatalf("OffsetResets = %d, want 1", n)
			}
		})
	}
}

// The Source sums the jumps of its readers, and keeps them once a reader
// is closed (the counter of the offset resets metric never goes down).
func TestSourceCountsOffsetResets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "in")
	produce(t, ctx, client, "in", 20, 0)
	deleteRecordsBefore(t, ctx, admin(t, client), 10)
	src, err := NewSource(SourceOptions[string]{
		Reader: ReaderOptions{ClientOpts: client, Topics: []string{"in"}, OnOutOfRange: OutOfRangeLatest, Logger: slog.New(slog.DiscardHandler)},
		Decode: func(r *kgo.Record) (string, error) { return string(r.Value), nil }, LagInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for attempt := int64(1); attempt <= 2; attempt++ {
		r, err := src.NewReader(ctx, engine.Scope{Job: "j", UID: "source", Subtask: 0, Parallelism: 1, Restored: true}, [][]byte{entry(3)})
		if err != nil {
			t.Fatal(err)
		}
		if n := src.Stats().OffsetResets; n != attempt {
			t.Fatalf("attempt %d: OffsetResets = %d while the reader is open, want %d", attempt, n, attempt)
		}
		r.Close()
		if n := src.Stats().OffsetResets; n != attempt {
			t.Fatalf("attempt %d: OffsetResets = %d after the reader closed, want %d", attempt, n, attempt)
		}
	}
}

// A topic deleted and recreated while the reader reads it: the client
// fails its fetches with UNKNOWN_TOPIC_ID and never reads the new topic;
// the reader finds the new id and fails: under fail for good, naming the
// partition and both ids; otherwise so that the restart applies the
// policy to the checkpoint (TestRecreatedTopicIsNotReadAsTheOldOne).
// Before the fix the fetch errors counted as an outage of the cluster
// until the tolerance ran out.
func TestTopicRecreatedUnderTheRunningReaderIsNamed(t *testing.T) {
	for _, policy := range []OnOffsetOutOfRange{OutOfRangeFail, OutOfRangeEarliest} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel() // the client reports UNKNOWN_TOPIC_ID after about 12s of retries
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := append(fake(t, 1, "in"), kgo.MetadataMinAge(10*time.Millisecond), kgo.MetadataMaxAge(100*time.Millisecond))
			produce(t, ctx, client, "in", 5, 0)
			tr, _ := tracker(t, time.Minute, nil)
			r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1,
				OnOutOfRange: policy, Outage: tr, Logger: slog.New(slog.DiscardHandler)}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := readN(t, ctx, r, 5); len(got) != 5 {
				t.Fatalf("read %v, want 5 records", got)
			}
			recreate(t, ctx, admin(t, client))
			produce(t, ctx, client, "in", 10, 100)
			var read []string
			var rerr error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && rerr == nil; {
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				rec, ok, err := r.Next(pctx)
				cancel()
				if ok {
					read = append(read, string(rec.Value))
				}
				rerr = err
			}
			if policy == OutOfRangeFail {
				mustRefuse(t, "topic recreated under the reader", rerr, read, "in/0", "recreated", "offset 5")
			} else if rerr == nil || isNonRecoverable(rerr) || !strings.Contains(rerr.Error(), "recreated") || len(read) != 0 {
				t.Fatalf("earliest: read %v, err %v; want a recoverable error saying the topic was recreated", read, rerr)
			}
			if st := tr.Status(); st.Down {
				t.Fatalf("the recreation counts as an outage of the cluster: %+v", st)
			}
		})
	}
}

// epochCluster is a kfake cluster of two brokers whose topic "in" (one
// partition) got records [0, before) under leader epoch 0 and then, its
// leader moved (epoch 1), records [before, before+after).
func epochCluster(t *testing.T, ctx context.Context, before, after int) []kgo.Opt {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produce(t, ctx, client, "in", before, 0)
	moveLeader(t, c)
	produce(t, ctx, client, "in", after, before)
	return client
}

// moveLeader moves the leadership of in/0 to the other broker, which
// starts a new leader epoch.
func moveLeader(t *testing.T, c *kfake.Cluster) {
	t.Helper()
	if err := c.MoveTopicPartition("in", 0, 1-c.LeaderFor("in", 0)); err != nil {
		t.Fatal(err)
	}
}

// epochEntry is a checkpoint entry of in/0 with the leader epoch of the
// last record read.
func epochEntry(offset int64, epoch int32) []byte {
	return fmt.Appendf(nil, `{"topic":"in","partition":0,"offset":%d,"leader_epoch":%d}`, offset, epoch)
}

// The checkpoint read in/0 up to offset 15 under leader epoch 0; the log
// as it is now has epoch 0 end at 10 and holds [0, 30): it was truncated
// to 10 (an unclean leader election, a cluster restored from a backup)
// and grew past 15 again, so that the offset is in range but the records
// [10, 15) read are gone and others took their offsets. The checkpointed
// epoch finds it. Without it the reader would resume at 15 and skip the
// new records [10, 15) without a word.
func TestTruncationBelowTheCheckpointIsFoundByItsLeaderEpoch(t *testing.T) {
	for _, tc := range []struct {
		policy OnOffsetOutOfRange
		want   []string
		logged []string
	}{
		{OutOfRangeFail, nil, nil},
		{OutOfRangeEarliest, names(0, 30), []string{"offset=15", "log_start=0", "log_end=30", "resumed_at=0", "gone=[10,15)", "read_again=[0,10)"}},
		{OutOfRangeLatest, nil, []string{"offset=15", "resumed_at=30", "gone=[10,15)", "skipped=[10,30)"}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := epochCluster(t, ctx, 10, 20)
			_, read, logs, err := openRestored(t, ctx, client, tc.policy, epochEntry(15, 0))
			if tc.policy == OutOfRangeFail {
				mustRefuse(t, "restored at 15 of epoch 0, which ends at 10", err, read, "in/0", "checkpointed offset 15", "diverged", "offset 10", "[0, 30)", "[10, 15)")
				return
			}
			if err != nil || !slices.Equal(read, tc.want) {
				t.Fatalf("read %v, err %v; want %v", read, err, tc.want)
			}
			for _, w := range tc.logged {
				if !strings.Contains(logs.String(), w) {
					t.Fatalf("the jump's log line lacks %q:\n%s", w, logs)
				}
			}
		})
	}
}

// A checkpointed leader epoch that merely ended (the leader moved, no
// record lost) resumes exactly where the checkpoint says, and the next
// snapshot carries the epoch of the records read since.
func TestCheckpointedLeaderEpochAfterALeaderMoveResumesExactly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	produce(t, ctx, client, "in", 10, 0)
	r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readN(t, ctx, r, 10); len(got) != 10 {
		t.Fatalf("read %v, want 10 records", got)
	}
	snap, err := r.SnapshotState(1)
	r.Close()
	if err != nil || len(snap) != 1 || !strings.Contains(string(snap[0]), `"leader_epoch":0`) {
		t.Fatalf("snapshot %q, %v; want offset 10 with leader epoch 0", snap, err)
	}
	moveLeader(t, c)
	produce(t, ctx, client, "in", 10, 10)
	r, read, _, err := openRestored(t, ctx, client, "", snap...)
	if err != nil || !slices.Equal(read, names(10, 20)) {
		t.Fatalf("restored after the leader moved: read %v, err %v; want r0010..r0019", read, err)
	}
	if snap, err = r.SnapshotState(2); err != nil || !strings.Contains(string(snap[0]), `"offset":20`) || !strings.Contains(string(snap[0]), `"leader_epoch":1`) {
		t.Fatalf("snapshot after the restore %q, %v; want offset 20 with leader epoch 1", snap, err)
	}
}

// The client found, through leader epochs, that in/0's log diverged at 10
// after the reader had read up to 15 (an unclean leader election while it
// read): the records [10, 15) it read are gone. Under fail the read fails
// for good naming both offsets; under earliest the reader reads the log
// again from its start, saying what it reads again and what is gone.
// Before the fix the data loss failed the attempt, and the restart resumed
// from the checkpoint without a word.
func TestDataLossWhileReadingIsNamed(t *testing.T) {
	for _, policy := range []OnOffsetOutOfRange{OutOfRangeFail, OutOfRangeEarliest} {
		t.Run(string(policy), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := fake(t, 1, "in")
			produce(t, ctx, client, "in", 30, 0)
			logs := &logbuf.Buffer{}
			r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"in"}, DiscoveryInterval: -1,
				OnOutOfRange: policy, Logger: slog.New(slog.NewTextHandler(logs, nil))}, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := readN(t, ctx, r, 15); len(got) != 15 {
				t.Fatalf("read %v, want 15 records", got)
			}
			r.buf = nil // what the client fetched beyond 15 is not read
			err = r.take(ctx, fetchWith("in", 0, &kgo.ErrDataLoss{Topic: "in", Partition: 0, ConsumedTo: 15, ResetTo: 10}))
			if policy == OutOfRangeFail {
				mustRefuse(t, "a data loss while reading", err, nil, "in/0", "offset 15 (the next to read)", "diverged", "[10, 15)")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{"offset=15", "resumed_at=0", "gone=[10,15)", "read_again=[0,10)", "while_reading=true"} {
				if !strings.Contains(logs.String(), w) {
					t.Fatalf("the jump's log line lacks %q:\n%s", w, logs)
				}
			}
			if got := readN(t, ctx, r, 30); !slices.Equal(got, names(0, 30)) {
				t.Fatalf("after the jump read %v, want the log from its start", got)
			}
		})
	}
}
