package integration

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/broker"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// Issue 15 §2 on the built processor: a checkpointed position that the
// input's log no longer holds is never followed silently. Under the
// default source.on_offset_out_of_range (fail) the run refuses in one line
// naming the topic, the partition, the checkpointed offset and the log's
// range, and writes nothing; under earliest it jumps, logs the jump with
// what it skipped, and the output is exactly the input that still exists.

// endOffsets lists the end offset of every partition of topic.
func endOffsets(t *testing.T, seeds []string, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := kadm.NewClient(kafkatest.Client(t, seeds)).ListEndOffsets(ctx, topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		t.Fatalf("listing the end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// topicID returns the id of topic as Kafka prints it (kafka-topics.sh
// --describe: URL-safe base64 without padding).
func topicID(t *testing.T, seeds []string, topic string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts, err := kadm.NewClient(kafkatest.Client(t, seeds)).ListTopics(ctx, topic)
	if err == nil {
		err = ts.Error()
	}
	if err != nil {
		t.Fatalf("listing topic %s: %v", topic, err)
	}
	id := ts[topic].ID
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// refusedAtRestore runs the processor with args and waits for it to exit
// by itself, which a refusal at the restore does within seconds. A run
// that commits output instead fails the test at once, naming how much it
// wrote (a silent restore); so does one still running after a minute. It
// returns the child and the line the processor printed as its error.
func (j *procJob) refusedAtRestore(what string, args ...string) (*child, string) {
	j.t.Helper()
	before := len(j.output())
	c := j.run(nil, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(ctx, 250*time.Millisecond, func() bool {
		if n := len(j.output()); n > before {
			c.kill()
			j.t.Fatalf("%s: the processor restored without a word and wrote %d records:\n%s", what, n-before, c.tail())
		}
		return c.exited()
	})
	if !c.exited() {
		c.kill()
		j.t.Fatalf("%s: the processor neither refused nor wrote anything within a minute:\n%s", what, c.tail())
	}
	if c.exitCode() == 0 {
		j.t.Fatalf("%s: the processor exited with 0:\n%s", what, c.tail())
	}
	if n := len(j.output()); n != before {
		j.t.Fatalf("%s: the refused run wrote %d records", what, n-before)
	}
	var line string
	for _, l := range strings.Split(c.output.String(), "\n") {
		if strings.HasPrefix(l, "processor: ") {
			line = l
		}
	}
	if line == "" {
		j.t.Fatalf("%s: the processor printed no error line:\n%s", what, c.tail())
	}
	return c, line
}

// jumps returns the lines of c's log in which the source jumped a
// position of topic out of its log.
func jumps(c *child, topic string) []string {
	var out []string
	for _, l := range strings.Split(c.output.String(), "\n") {
		if strings.Contains(l, "jumping as source.on_offset_out_of_range says") && strings.Contains(l, "partition="+topic+"/") {
			out = append(out, l)
		}
	}
	return out
}

// anyHasAll reports whether one of lines contains every one of words.
func anyHasAll(lines []string, words ...string) bool {
	for _, l := range lines {
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}

// atoi64 parses what a test's regexp matched as a number.
func atoi64(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// (a) The job read everything and stopped with a savepoint; more input
// came, and half of what each partition got since was deleted
// (DeleteRecords) before the job read it. A plain run refuses, naming the
// partition, the savepoint's offset and the log's range. A run with
// source.on_offset_out_of_range=earliest skips the deleted records, says
// so for each partition, and the output is exactly the input that still
// exists. The processor before the fix resumed at the log start without a
// word.
func TestRecordsDeletedPastTheCheckpointAreNeverSkippedSilently(t *testing.T) {
	began := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "oor-deleted", jobSpec{seed: 23})
	j.feed.produce(t, 200)
	c := j.run(nil)
	j.waitOutput(c, "the first run", 200, time.Minute)
	c.stop(time.Minute)
	atStop := endOffsets(t, seeds, j.in)

	j.feed.produce(t, 200)
	now := endOffsets(t, seeds, j.in)
	del := map[int32]int64{}
	offs := kadm.Offsets{}
	for p, end := range now {
		if n := end - atStop[p]; n >= 2 {
			del[p] = atStop[p] + n/2
			offs.AddOffset(j.in, p, del[p], -1)
		}
	}
	if len(del) != len(now) {
		t.Fatalf("some partition got fewer than 2 records after the stop: at the stop %v, now %v", atStop, now)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := kadm.NewClient(kafkatest.Client(t, seeds)).DeleteRecords(ctx, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("deleting records past the savepoint: %v", err)
	}
	var remaining []*kgo.Record
	for _, r := range j.feed.sent {
		if d, ok := del[r.Partition]; !ok || r.Offset < atStop[r.Partition] || r.Offset >= d {
			remaining = append(remaining, r)
		}
	}

	_, line := j.refusedAtRestore("a plain run after the deletion")
	m := regexp.MustCompile(regexp.QuoteMeta(j.in) + `/(\d+): the checkpointed offset (\d+) is out of the log's range \[(\d+), (\d+)\): records \[(\d+), (\d+)\) were deleted before they were read`).FindStringSubmatch(line)
	if m == nil || !strings.Contains(line, "source.on_offset_out_of_range is fail") {
		t.Fatalf("the refusal does not name the topic, partition, checkpointed offset, the log's range and the policy: %s", line)
	}
	p := int32(atoi64(t, m[1]))
	if got, want := fmt.Sprint(m[2:]), fmt.Sprint([]int64{atStop[p], del[p], now[p], atStop[p], del[p]}); got != want {
		t.Fatalf("the refusal names offset, range and deleted records %v for %s/%d, want %v: %s", got, j.in, p, want, line)
	}
	t.Logf("refused with: %s", line)

	c = j.run(nil, "--set", "source.on_offset_out_of_range=earliest")
	j.waitOutput(c, "the run with earliest", len(remaining), time.Minute)
	c.stop(time.Minute)
	if d := checkCopy(remaining, j.output()); d != "" {
		t.Fatalf("with earliest the output is not exactly the input that still exists: %s", d)
	}
	logged := jumps(c, j.in)
	if len(logged) != len(del) {
		t.Fatalf("%d jumps logged, want one per partition (%d):\n%s", len(logged), len(del), strings.Join(logged, "\n"))
	}
	for p, d := range del {
		want := []string{fmt.Sprintf("partition=%s/%d ", j.in, p), fmt.Sprintf("offset=%d ", atStop[p]), fmt.Sprintf("skipped=[%d,%d)", atStop[p], d)}
		if !anyHasAll(logged, want...) {
			t.Fatalf("no jump of %s/%d logged with %v:\n%s", j.in, p, want, strings.Join(logged, "\n"))
		}
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("%d records fed, %d deleted unread, the rest written once; %s in all",
		len(j.feed.sent), len(j.feed.sent)-len(remaining), time.Since(began).Round(time.Second))
}

// recreateTopic deletes topic and creates it again with as many
// partitions, waiting until each has a leader.
func recreateTopic(t *testing.T, seeds []string, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	if resp, err := adm.DeleteTopics(ctx, topic); err != nil || resp.Error() != nil {
		t.Fatalf("deleting topic %s: %v %v", topic, err, resp.Error())
	}
	// The deletion completes in the background: until it has, the name is
	// taken.
	var err error
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		var resp kadm.CreateTopicResponse
		if resp, err = adm.CreateTopic(ctx, partitions, -1, nil, topic); err == nil {
			err = resp.Err
		}
		return !errors.Is(err, kerr.TopicAlreadyExists)
	}) || err != nil {
		t.Fatalf("creating topic %s again: %v", topic, err)
	}
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		md, err := adm.Metadata(ctx, topic)
		if err != nil || md.Topics[topic].Err != nil || len(md.Topics[topic].Partitions) != int(partitions) {
			return false
		}
		for _, p := range md.Topics[topic].Partitions {
			if p.Leader < 0 || p.Err != nil {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the partitions of the recreated topic %s have no leaders after a minute", topic)
	}
}

// (b) The job stopped with a savepoint; its input topic was deleted and
// created again, and got new records, more than the savepoint's offsets.
// A plain run refuses, naming the topic and both ids. A run with earliest
// reads every record of the new topic once; the savepoint it stops with
// holds the new topic's id, so that a plain run after it resumes without
// a word. The processor before the fix skipped the new topic's first
// records (as many as the old one had been read to) without a word.
func TestRecreatedInputTopicIsNeverReadAsTheOldOne(t *testing.T) {
	began := time.Now()
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "oor-recreated", jobSpec{seed: 29})
	j.feed.produce(t, 100)
	c := j.run(nil)
	j.waitOutput(c, "the first run", 100, time.Minute)
	c.stop(time.Minute)

	oldID := topicID(t, seeds, j.in)
	recreateTopic(t, seeds, j.in, 4)
	newID := topicID(t, seeds, j.in)
	if newID == oldID {
		t.Fatalf("the recreated topic kept its id %s", oldID)
	}
	// The feeder's client knows the old topic's id, and would refuse to
	// write to the new one.
	j.feed.cl = kafkatest.Client(t, seeds, kgo.RequiredAcks(kgo.AllISRAcks()))
	j.feed.produce(t, 200)

	_, line := j.refusedAtRestore("a plain run after the recreation")
	want := fmt.Sprintf("topic %s was deleted and recreated (id %s, was %s)", j.in, newID, oldID)
	if !strings.Contains(line, want) || !regexp.MustCompile(`the checkpointed offset \d+ belongs to the old topic; the new one holds \[0, \d+\)`).MatchString(line) {
		t.Fatalf("the refusal does not say %q with the checkpointed offset and the new topic's range: %s", want, line)
	}
	t.Logf("refused with: %s", line)

	c = j.run(nil, "--set", "source.on_offset_out_of_range=earliest")
	j.waitOutput(c, "the run with earliest", 300, time.Minute)
	c.stop(time.Minute)
	if d := checkCopy(j.feed.sent, j.output()); d != "" {
		t.Fatalf("with earliest the output is not every record of both topics once: %s", d)
	}
	logged := jumps(c, j.in)
	if len(logged) != 4 || !anyHasAll(logged, `why="topic recreated"`, "old_topic_id="+oldID, "new_topic_id="+newID, "resumed_at=0") {
		t.Fatalf("%d jumps logged, want 4 (one per partition) to the new topic's start, with both ids:\n%s", len(logged), strings.Join(logged, "\n"))
	}

	// The savepoint after the jump is of the new topic.
	j.feed.produce(t, 50)
	c = j.run(nil)
	j.waitOutput(c, "a plain run after the jump", 350, time.Minute)
	c.stop(time.Minute)
	if l := jumps(c, j.in); len(l) > 0 || strings.Contains(c.output.String(), "was deleted and recreated") {
		t.Fatalf("the plain run after the jump did not resume quietly from its savepoint:\n%s", c.tail())
	}
	if d := checkCopy(j.feed.sent, j.output()); d != "" {
		t.Fatalf("after the plain run the output is not exact: %s", d)
	}
	kafkatest.OpenTransactionsHoldNothing(t, seeds, j.out)
	t.Logf("old id %s, new id %s; %d records, each written once; %s in all", oldID, newID, len(j.feed.sent), time.Since(began).Round(time.Second))
}

// copyPartitionLogs copies the record logs (*.log), the topic id file and
// the leader epoch checkpoint of every partition directory of topic under
// the broker's data directory data to backup. The broker may run: nothing
// writes to the topic meanwhile, and what it wrote is in the files (Kafka
// writes through the page cache). Indexes and producer snapshots are left
// out; the broker rebuilds them from the logs.
func copyPartitionLogs(t *testing.T, data, topic, backup string) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(data, topic+"-*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no partition directory of %s under %s: %v", topic, data, err)
	}
	for _, dir := range dirs {
		to := filepath.Join(backup, filepath.Base(dir))
		if err := os.MkdirAll(to, 0o755); err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if n := e.Name(); strings.HasSuffix(n, ".log") || n == "partition.metadata" || n == "leader-epoch-checkpoint" {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(to, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// (c) A checkpoint beyond the log end: the broker is restored from a
// backup of the input's partitions taken before the job read the last
// records and stopped with a savepoint. The logs end where they ended at
// the backup, below the savepoint's offsets, with the same topic id (a
// cluster restored from a backup, or a disk lost and copied back; an
// unclean leader election truncates a log the same way), so neither the
// log start nor the id gives it away. A plain run refuses: the leader
// epoch stored with each offset ends, in the restored log, at the backup's
// end. The processor before the fix read the partitions again from their
// start without a word.
func TestCheckpointBeyondTheLogEndIsRefused(t *testing.T) {
	began := time.Now()
	dir := t.TempDir()
	cluster := privateCluster(t, broker.Options{Dir: dir})
	seeds := cluster.Addrs()
	data := filepath.Join(dir, "node-1", "data")
	j := newProcJob(t, seeds, "oor-truncated", jobSpec{seed: 31})
	j.feed.produce(t, 100)
	atBackup := endOffsets(t, seeds, j.in)
	backup := t.TempDir()
	copyPartitionLogs(t, data, j.in, backup)

	j.feed.produce(t, 100)
	c := j.run(nil)
	j.waitOutput(c, "the run", 200, time.Minute)
	c.stop(time.Minute)
	atStop := endOffsets(t, seeds, j.in)

	// Restore the input's partitions from the backup.
	if err := cluster.Terminate(0, 0); err != nil {
		t.Fatal(err)
	}
	parts, _ := os.ReadDir(backup)
	for _, p := range parts {
		if err := os.RemoveAll(filepath.Join(data, p.Name())); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(filepath.Join(data, p.Name()), os.DirFS(filepath.Join(backup, p.Name()))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	var now map[int32]int64
	if !eventually(ctx, 200*time.Millisecond, func() bool {
		now = endOffsets(t, seeds, j.in)
		return fmt.Sprint(now) == fmt.Sprint(atBackup)
	}) {
		t.Fatalf("after the restore the logs end at %v, want the backup's %v", now, atBackup)
	}

	_, line := j.refusedAtRestore("a plain run after the restore from the backup")
	m := regexp.MustCompile(regexp.QuoteMeta(j.in) + `/(\d+): the checkpointed offset (\d+) is past where the log diverged from what was read \(offset (\d+); the log's range is now \[(\d+), (\d+)\)\)`).FindStringSubmatch(line)
	if m == nil || !strings.Contains(line, "source.on_offset_out_of_range is fail") {
		t.Fatalf("the refusal does not name the topic, partition, checkpointed offset, where the log diverged, its range and the policy: %s", line)
	}
	p := int32(atoi64(t, m[1]))
	if got, want := fmt.Sprint(m[2:]), fmt.Sprint([]int64{atStop[p], atBackup[p], 0, atBackup[p]}); got != want {
		t.Fatalf("the refusal names offset, divergence and range %v for %s/%d, want %v: %s", got, j.in, p, want, line)
	}
	t.Logf("refused with: %s", line)
	t.Logf("logs at %v after the restore, savepoint at %v; %s in all", atBackup, atStop, time.Since(began).Round(time.Second))
}
