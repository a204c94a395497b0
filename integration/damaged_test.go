package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/state"
)

// completeCheckpoints returns the checkpoint and savepoint directories of
// jobDir that have a _metadata, by id.
func completeCheckpoints(t *testing.T, jobDir string) map[int64]string {
	t.Helper()
	entries, err := os.ReadDir(jobDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for _, e := range entries {
		name := e.Name()
		var id int64
		switch {
		case strings.HasPrefix(name, "chk-"):
			id, err = strconv.ParseInt(strings.TrimPrefix(name, "chk-"), 10, 64)
		case strings.HasPrefix(name, "savepoint-"):
			id, err = strconv.ParseInt(strings.TrimPrefix(name, "savepoint-"), 10, 64)
		default:
			continue
		}
		if err != nil || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(jobDir, name, "_metadata")); err == nil {
			out[id] = filepath.Join(jobDir, name)
		}
	}
	return out
}

// newestComplete returns the complete checkpoint with the highest id.
func newestComplete(t *testing.T, jobDir string) (int64, string) {
	t.Helper()
	best, path := int64(-1), ""
	for id, p := range completeCheckpoints(t, jobDir) {
		if id > best {
			best, path = id, p
		}
	}
	if path == "" {
		t.Fatalf("no complete checkpoint in %s", jobDir)
	}
	return best, path
}

// killAfterCheckpoints runs the processor until n checkpoints completed
// while input arrives, then kills it with SIGKILL.
func killAfterCheckpoints(t *testing.T, f *feeder, cfg, jobDir string, n int, produce func()) {
	t.Helper()
	c := startChild(t, nil, "run", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !eventually(ctx, 50*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("the processor exited with %v:\n%s", c.err, c.tail())
		}
		produce()
		return len(completeCheckpoints(t, jobDir)) >= n
	}) {
		t.Fatalf("fewer than %d checkpoints after 2 minutes:\n%s", n, c.tail())
	}
	produce()
	c.kill()
}

// refusal runs the processor on a job whose newest checkpoint is damaged
// and returns the one line of its refusal, which must name the damaged
// checkpoint and say --from the newest intact one; it returns that path.
// A processor that restores the checkpoint before instead (it fell back
// silently) fails the test at once.
func refusal(t *testing.T, cfg, damaged string) (line, intact string) {
	t.Helper()
	c := startChild(t, nil, "run", "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eventually(ctx, 50*time.Millisecond, func() bool {
		if out := c.output.String(); strings.Contains(out, "msg=restoring") {
			c.kill()
			t.Fatalf("the processor restored another checkpoint instead of refusing: the damaged newest one %s was skipped:\n%s", damaged, c.tail())
		}
		return c.exited()
	})
	if !c.exited() {
		c.kill()
		t.Fatalf("the processor did not exit within a minute on a damaged newest checkpoint %s:\n%s", damaged, c.tail())
	}
	if c.err == nil {
		t.Fatalf("the processor exited 0 on a damaged newest checkpoint %s:\n%s", damaged, c.tail())
	}
	for _, l := range strings.Split(c.output.String(), "\n") {
		if strings.Contains(l, damaged) && strings.Contains(l, "--from ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no line names the damaged checkpoint %s and says --from:\n%s", damaged, c.tail())
	}
	intact = strings.Fields(line[strings.Index(line, "--from ")+len("--from "):])[0]
	if intact == damaged {
		t.Fatalf("the refusal suggests --from the damaged checkpoint itself: %s", line)
	}
	if !strings.Contains(line, "duplicate") {
		t.Errorf("the refusal does not warn that the replay can duplicate output: %s", line)
	}
	return line, intact
}

// resumeFrom runs the processor with --from path until complete says the
// output is, then stops it with SIGTERM.
func resumeFrom(t *testing.T, seeds []string, cfg, out, path string, complete func([]*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	c := startChild(t, nil, "run", "--config", cfg, "--from", path)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			t.Fatalf("run --from %s exited with %v:\n%s", path, c.err, c.tail())
		}
		got = kafkatest.ReadCommitted(t, seeds, out)
		return complete(got) && strings.Contains(c.output.String(), "http listening")
	}) {
		t.Fatalf("run --from %s: output incomplete after 3 minutes (%d records):\n%s", path, len(got), c.tail())
	}
	c.stop(time.Minute)
	kafkatest.OpenTransactionsHoldNothing(t, seeds, out)
	return kafkatest.ReadCommitted(t, seeds, out)
}

// replayDuplicates checks an output against its input after a replay from
// an older checkpoint: every input item comes once or twice, and the items
// that come twice are, in each input partition, one run of consecutive
// records (those between the older checkpoint's position and what the
// damaged one had committed). items returns the items a record yields.
func replayDuplicates(in []*kgo.Record, got map[string]int, items func(*kgo.Record) []string) (dups int, problem string) {
	return replayDuplicatesByLane(in, got, items, func(string) int { return 0 })
}

// replayDuplicatesByLane is replayDuplicates for output written by
// several sink subtasks: lane names the sink subtask that writes an item.
// The newest checkpoint's transactions are committed one per sink
// subtask, so a kill between those commits leaves some subtasks' share of
// it committed and others' not: the items that come twice then form one
// run of consecutive records in each input partition and lane, not in the
// partition as a whole.
func replayDuplicatesByLane(in []*kgo.Record, got map[string]int, items func(*kgo.Record) []string, lane func(item string) int) (dups int, problem string) {
	byPart := map[int32][]*kgo.Record{}
	for _, r := range in {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p, rs := range byPart {
		state := map[int]int{} // per lane: 0 before the duplicated run, 1 in it, 2 after it
		for _, r := range rs {
			n := map[int]int{}
			for _, it := range items(r) {
				c := got[it]
				if c < 1 || c > 2 {
					return dups, fmt.Sprintf("input partition %d offset %d: item %q appears %d times, want once, or twice if replayed", p, r.Offset, it, c)
				}
				n[lane(it)] = max(n[lane(it)], c)
			}
			twice := false
			for l, c := range n {
				switch {
				case c == 2 && state[l] == 0:
					state[l] = 1
				case c == 1 && state[l] == 1:
					state[l] = 2
				case c == 2 && state[l] == 2:
					return dups, fmt.Sprintf("input partition %d offset %d: a duplicate after the replayed run of records ended (sink subtask %d)", p, r.Offset, l)
				}
				twice = twice || c == 2
			}
			if twice {
				dups++
			}
		}
	}
	return dups, ""
}

// §3a on the real broker and the built binary: a copy job with an
// exactly_once sink is killed with SIGKILL after a few checkpoints and one
// bit of its newest checkpoint's _metadata is flipped. The next `processor
// run` refuses to start, exits non-zero and says in one line which
// checkpoint is damaged and to resume --from the older one, warning of
// duplicates; that `run --from` works, and its output is the input with
// at most the replayed records twice. (Before, the run restored the
// checkpoint before the damaged one on its own and replayed.)
func TestDamagedCheckpointMetadataRefusesToStart(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "damaged", jobSpec{seed: 7})
	f, cfg, out, jobDir := j.feed, j.cfg, j.out, j.jobDir
	f.produce(t, 300)
	killAfterCheckpoints(t, f, cfg, jobDir, 4, func() { f.produce(t, 20) })

	id, damaged := newestComplete(t, jobDir)
	meta := filepath.Join(damaged, "_metadata")
	raw, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x10
	if err := os.WriteFile(meta, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	line, intact := refusal(t, cfg, damaged)
	t.Logf("checkpoint %d damaged; refused with: %s", id, line)

	seqCounts := func(got []*kgo.Record) map[string]int {
		counts := map[string]int{}
		for _, r := range got {
			counts[string(r.Headers[0].Value)]++
		}
		return counts
	}
	got := resumeFrom(t, seeds, cfg, out, intact, func(got []*kgo.Record) bool { return len(seqCounts(got)) >= len(f.sent) })
	counts := seqCounts(got)
	dups, problem := replayDuplicates(f.sent, counts, func(r *kgo.Record) []string { return []string{string(r.Headers[0].Value)} })
	if problem != "" {
		t.Fatalf("after --from %s: %s", intact, problem)
	}
	t.Logf("%d input records; after --from %s, %d output records, %d replayed twice", len(f.sent), filepath.Base(intact), len(got), dups)
}

// §3a with a state file missing: a word count with Pebble state (not
// incremental, so that each checkpoint has its own files) is killed after
// a few checkpoints and one stored state file of its newest checkpoint is
// removed. The next run refuses as above; --from the older checkpoint
// works.
func TestDamagedCheckpointStateFileRefusesToStart(t *testing.T) {
	seeds := kafkatest.Bootstrap(t)
	j := newProcJob(t, seeds, "damaged-wc", jobSpec{typ: "wordcount", pebble: true, full: true, interval: 200 * time.Millisecond, seed: 9})
	f, cfg, in, out, jobDir := j.feed, j.cfg, j.in, j.out, j.jobDir
	// Many distinct words: the keyed state outgrows what is kept inline
	// in the metadata, so the checkpoints store state files.
	uniqueLines := func(n int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		batch := make([]*kgo.Record, 0, n)
		for range n {
			i := len(f.sent) + len(batch)
			batch = append(batch, &kgo.Record{Topic: in, Key: []byte("k" + strconv.Itoa(i%97)),
				Value:   []byte(fmt.Sprintf("w%da w%db w%dc kafka", i, i, i)),
				Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}})
		}
		if err := f.cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			t.Fatalf("producing input: %v", err)
		}
		f.sent = append(f.sent, batch...)
	}
	uniqueLines(3000)
	killAfterCheckpoints(t, f, cfg, jobDir, 4, func() { uniqueLines(20) })

	id, damaged := newestComplete(t, jobDir)
	var files []string
	if err := filepath.WalkDir(damaged, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "_") {
			files = append(files, p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("checkpoint %s stores no state file outside its metadata: the test needs one to remove", damaged)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	line, intact := refusal(t, cfg, damaged)
	t.Logf("checkpoint %d lost %s; refused with: %s", id, strings.TrimPrefix(files[0], damaged+"/"), line)

	pairCounts := func(got []*kgo.Record) map[string]int {
		counts := map[string]int{}
		for _, r := range got {
			counts[string(r.Key)+"="+string(r.Value)]++
		}
		return counts
	}
	// Complete once the last count of the shared word and every line's
	// own words are out.
	got := resumeFrom(t, seeds, cfg, out, intact, func(got []*kgo.Record) bool {
		c := pairCounts(got)
		return c["kafka="+strconv.Itoa(len(f.sent))] > 0 && len(c) >= 4*len(f.sent)
	})
	counts := pairCounts(got)
	// Each line's own words occur once in the input: (word, 1) belongs to
	// that line, once or, replayed, twice. The shared word is counted on:
	// every count up to its number of lines, once or twice.
	// The count, format and sink of subtask i are chained: a word's
	// output is written by the sink subtask owning its key group.
	sinkOf := func(item string) int {
		word, _, _ := strings.Cut(item, "=")
		return state.SubtaskForKeyGroup(state.KeyGroupOf([]byte(word), state.DefaultMaxParallelism), 2, state.DefaultMaxParallelism)
	}
	dups, problem := replayDuplicatesByLane(f.sent, counts, func(r *kgo.Record) []string {
		var out []string
		for _, w := range strings.Fields(string(r.Value)) {
			if w != "kafka" {
				out = append(out, w+"=1")
			}
		}
		return out
	}, sinkOf)
	for n := 1; n <= len(f.sent) && problem == ""; n++ {
		if c := counts["kafka="+strconv.Itoa(n)]; c < 1 || c > 2 {
			problem = fmt.Sprintf("(kafka, %d) appears %d times, want once or twice", n, c)
		}
	}
	if problem != "" {
		t.Fatalf("after --from %s: %s", intact, problem)
	}
	t.Logf("%d input lines; after --from %s, %d output records, %d lines replayed twice", len(f.sent), filepath.Base(intact), len(got), dups)
}

// The replay check per sink subtask. The newest checkpoint covered
// offsets 2..5 and only lane a's transaction of it was committed before
// the kill: line 3, whose only item is in lane b, comes once inside the
// replayed run. That is no duplicate after the run (the whole-partition
// check took it for one); a lane whose run really resumes after a gap
// still is reported.
func TestReplayDuplicatesByLane(t *testing.T) {
	var in []*kgo.Record
	for i := range 8 {
		v := fmt.Sprintf("a%d b%d", i, i)
		if i == 3 {
			v = "b3"
		}
		in = append(in, &kgo.Record{Partition: 0, Offset: int64(i), Value: []byte(v)})
	}
	items := func(r *kgo.Record) []string { return strings.Fields(string(r.Value)) }
	lane := func(it string) int { return int(it[0] - 'a') }
	counts := func(twiceA ...int) map[string]int {
		got := map[string]int{}
		for _, r := range in {
			for _, it := range items(r) {
				got[it] = 1
			}
		}
		for _, i := range twiceA {
			got[fmt.Sprintf("a%d", i)] = 2
		}
		return got
	}
	partial := counts(2, 4, 5)
	if _, p := replayDuplicates(in, partial, items); !strings.Contains(p, "offset 4: a duplicate after the replayed run") {
		t.Fatalf("whole-partition check of a partly committed checkpoint: %q, want the (false) duplicate at offset 4", p)
	}
	if dups, p := replayDuplicatesByLane(in, partial, items, lane); p != "" || dups != 3 {
		t.Fatalf("per-lane check of a partly committed checkpoint: %d lines twice, %q; want 3 and no problem", dups, p)
	}
	if _, p := replayDuplicatesByLane(in, counts(2, 5), items, lane); !strings.Contains(p, "offset 5: a duplicate after the replayed run of records ended (sink subtask 0)") {
		t.Fatalf("lane a twice at 2 and 5, once at 4: %q, want a duplicate after the run at offset 5", p)
	}
}
