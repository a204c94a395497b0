package main

import (
	"bytes"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// countLines is the reference count of lines, as readInput makes it.
func countLines(lines []string) inputCount {
	var in inputCount
	for _, l := range lines {
		in.add(l)
	}
	return in
}

// wordCount is what an exactly-once word count commits for lines: per
// word, its running count 1, 2, …, in a partition chosen by the word.
func wordCount(lines []string, partitions int32) []outputRecord {
	seen := map[string]int64{}
	next := make([]int64, partitions)
	var recs []outputRecord
	for _, l := range lines {
		for _, w := range strings.Fields(l) {
			seen[w]++
			h := fnv.New32a()
			h.Write([]byte(w))
			p := int32(h.Sum32() % uint32(partitions))
			recs = append(recs, outputRecord{Partition: p, Offset: next[p], Word: w, Value: strconv.FormatInt(seen[w], 10)})
			next[p] += 2 // a commit marker after every record: offsets need not be dense
		}
	}
	return recs
}

func sampleLines(n int) []string {
	sample := strings.Split(sampleText, "\n")
	lines := make([]string, n)
	for i := range lines {
		lines[i] = sample[i%len(sample)]
	}
	return lines
}

func report(t *testing.T, c comparison) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := c.report(&b, "words", "counts", 5)
	return b.String(), err
}

func TestCompareSaysExactOnEqualCounts(t *testing.T) {
	lines := sampleLines(100)
	in := countLines(lines)
	recs := wordCount(lines, 2)
	// Read back partition by partition, not in the order written.
	slices.SortStableFunc(recs, func(a, b outputRecord) int { return int(b.Partition - a.Partition) })
	c := compare(in, recs)
	if !c.Exact() {
		t.Fatalf("equal counts compared as differing: %+v", c.Differ)
	}
	if c.Records != in.words || in.lines != 100 || len(c.Words) != len(in.counts) {
		t.Fatalf("records %d, input words %d, lines %d, words %d (input %d)", c.Records, in.words, in.lines, len(c.Words), len(in.counts))
	}
	if c.Words[0].Word != "a" || c.Words[0].Input != c.Words[0].Output || c.Words[0].Input < c.Words[len(c.Words)-1].Input {
		t.Fatalf("words not the most frequent first: %+v", c.Words[:2])
	}
	out, err := report(t, c)
	if err != nil {
		t.Fatalf("report of equal counts failed: %v\n%s", err, out)
	}
	want := "demo: exact: " + strconv.Itoa(len(in.counts)) + " words, every count equals the input's\n"
	if !strings.Contains(out, want) || strings.Contains(out, "DIFFERS") || strings.Contains(out, "NOT exact") {
		t.Fatalf("report does not say %q:\n%s", want, out)
	}
	if !strings.Contains(out, "  a ") || !strings.Contains(out, "more words, each equal") {
		t.Fatalf("report does not show the top words side by side:\n%s", out)
	}
}

// What a crash can do to output that is not exactly-once, and what the
// comparison must say about it.
func TestCompareReportsDifferencesAndFails(t *testing.T) {
	lines := sampleLines(40)
	in := countLines(lines)
	exact := wordCount(lines, 2)
	find := func(recs []outputRecord, word, value string) int {
		i := slices.IndexFunc(recs, func(r outputRecord) bool { return r.Word == word && r.Value == value })
		if i < 0 {
			t.Fatalf("no record %s=%s", word, value)
		}
		return i
	}
	at := func(recs []outputRecord, i int) outputRecord { return recs[i] }
	cases := []struct {
		name  string
		recs  func() []outputRecord
		word  string
		short string // the table's mark
		long  string // in the list under the verdict
	}{{
		name: "a replay committed again: counts repeated, the total right",
		recs: func() []outputRecord {
			recs := slices.Clone(exact)
			i := find(recs, "word", "3")
			dup := at(recs, i)
			dup.Offset++ // right after the original
			return slices.Insert(recs, i+1, dup)
		},
		word: "word", short: "DIFFERS: repeated", long: "1 count(s) repeated, the first: count 3 came again after 3",
	}, {
		name: "records lost: counts skipped",
		recs: func() []outputRecord {
			recs := slices.Clone(exact)
			i := find(recs, "checkpoint", "2")
			return slices.Delete(recs, i, i+1)
		},
		word: "checkpoint", short: "DIFFERS: skipped", long: "counts 2 to 2 are missing",
	}, {
		name: "the last records lost: the total short",
		recs: func() []outputRecord {
			recs := slices.Clone(exact)
			i := find(recs, "crash", "5")
			return slices.Delete(recs, i, i+1)
		},
		word: "crash", short: "DIFFERS: total differs", long: "the last count is 4, the input has 5",
	}, {
		name: "a word never counted",
		recs: func() []outputRecord {
			return slices.DeleteFunc(slices.Clone(exact), func(r outputRecord) bool { return r.Word == "kafka" })
		},
		word: "kafka", short: "DIFFERS: no count", long: "no committed count",
	}, {
		name: "a word not in the input",
		recs: func() []outputRecord {
			return append(slices.Clone(exact), outputRecord{Partition: 0, Offset: 1 << 20, Word: "ghost", Value: "1"})
		},
		word: "ghost", short: "DIFFERS: not in input", long: "not in the input",
	}, {
		name: "a value that is not a count",
		recs: func() []outputRecord {
			recs := slices.Clone(exact)
			recs[find(recs, "barrier", "1")].Value = "one"
			return recs
		},
		word: "barrier", short: "DIFFERS: skipped, not a count", long: `value "one" at partition`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := compare(in, tc.recs())
			if c.Exact() {
				t.Fatal("compared as exact")
			}
			if len(c.Differ) != 1 || c.Differ[0].Word != tc.word {
				t.Fatalf("differing words %+v, want only %s", c.Differ, tc.word)
			}
			out, err := report(t, c)
			if err == nil {
				t.Fatalf("report did not fail:\n%s", out)
			}
			if !strings.Contains(err.Error(), "not exact: 1 of ") {
				t.Fatalf("error %q does not say the counts are not exact", err)
			}
			for _, want := range []string{
				"demo: NOT exact: 1 of ",
				tc.short,
				"  " + tc.word + ": ",
				tc.long,
			} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "demo: exact:") {
				t.Errorf("report says exact:\n%s", out)
			}
		})
	}
}

// A word's counts split over two partitions are out of order for a
// keyed sink: reported, even when each count appears once.
func TestCompareReportsAWordInTwoPartitions(t *testing.T) {
	in := countLines([]string{"x x"})
	c := compare(in, []outputRecord{{Partition: 0, Offset: 0, Word: "x", Value: "1"}, {Partition: 1, Offset: 0, Word: "x", Value: "2"}})
	if c.Exact() || !slices.Contains(c.Differ[0].Faults, "records in partitions [0 1]") {
		t.Fatalf("split word not reported: %+v", c.Differ)
	}
}

func TestOfPrefix(t *testing.T) {
	for id, want := range map[string]bool{
		"wc-demo-0-1":     true,
		"wc-demo-12-300":  true,
		"wc-demo-0":       false,
		"wc-demo-x-1":     false,
		"wc-demo2-0-1":    false,
		"other-0-1":       false,
		"wc-demo-0-1-2":   false,
		"wc-demo--1-1":    false,
		"wc-demo-0-1 ":    false,
		"wc-demo-0-1\x00": false,
	} {
		if got := ofPrefix("wc-demo", id); got != want {
			t.Errorf("ofPrefix(wc-demo, %q) = %v, want %v", id, got, want)
		}
	}
}

// A transaction left open by the killed run has ended once its id is not
// open under the same producer id and epoch: the restart's fence bumps the
// epoch, and the restarted run may already have a new one open on the id.
func TestStillOpenComparesProducerAndEpoch(t *testing.T) {
	left := []openTxn{{ID: "p-0-0", ProducerID: 7, Epoch: 3}, {ID: "p-1-0", ProducerID: 8, Epoch: 1}, {ID: "p-1-1", ProducerID: 9, Epoch: 1}}
	now := []openTxn{
		{ID: "p-0-0", ProducerID: 7, Epoch: 4}, // fenced, reused
		{ID: "p-1-0", ProducerID: 8, Epoch: 1}, // still the killed run's
	}
	if got := stillOpen(left, now); !slices.Equal(got, []string{"p-1-0"}) {
		t.Fatalf("stillOpen = %v, want [p-1-0]", got)
	}
	for _, s := range []string{"Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"} {
		if !isOpen(s) {
			t.Errorf("%s not open", s)
		}
	}
	for _, s := range []string{"Empty", "CompleteCommit", "CompleteAbort", "Dead"} {
		if isOpen(s) {
			t.Errorf("%s open", s)
		}
	}
}

func TestGrouped(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1 000", 40000: "40 000", 1234567: "1 234 567", -40000: "-40 000"} {
		if got := grouped(n); got != want {
			t.Errorf("grouped(%d) = %q, want %q", n, got, want)
		}
	}
}
