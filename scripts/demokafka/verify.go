package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// outputRecord is one committed record of the word count's output topic:
// the key is the word, the value its running count as a decimal string.
type outputRecord struct {
	Partition int32
	Offset    int64
	Word      string
	Value     string
}

// wordResult is one word's line of the comparison.
type wordResult struct {
	Word    string
	Input   int64 // occurrences in the input
	Output  int64 // the word's last committed count; 0 when it has none
	Records int64 // committed records of the word
	// Faults says what is wrong, one sentence each, and Short the same
	// in a word each; both are empty when the word's committed counts are
	// 1, 2, …, Input, each once, in order.
	Faults []string
	Short  []string
}

func (r *wordResult) fault(short, long string) {
	r.Faults = append(r.Faults, long)
	r.Short = append(r.Short, short)
}

// comparison is the output topic read back, word by word, against the
// reference count made from the input topic.
type comparison struct {
	InputLines, InputWords int64
	Records                int64
	// Words holds every word of the input or the output, the most
	// frequent in the input first, then by word.
	Words []wordResult
	// Differ holds the words with faults, in the order of Words.
	Differ []wordResult
}

// Exact reports whether every word's committed counts match the input.
func (c comparison) Exact() bool { return len(c.Differ) == 0 }

// compare checks the committed output against the reference count. A word
// is exact when its records, in offset order, count 1, 2, …, n with n its
// occurrences in the input: no count repeated (a record written twice,
// such as a replay after a crash committed again), none skipped (a record
// lost), the last equal to the input's. A word's records must all be in
// one partition, since the sink keys them by the word.
func compare(in inputCount, recs []outputRecord) comparison {
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b outputRecord) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	type track struct {
		last       int64
		records    int64
		partitions []int32
		repeats    int64
		firstRep   string
		gaps       int64
		firstGap   string
		bad        []string
	}
	seen := map[string]*track{}
	for _, r := range recs {
		t := seen[r.Word]
		if t == nil {
			t = &track{}
			seen[r.Word] = t
		}
		t.records++
		if !slices.Contains(t.partitions, r.Partition) {
			t.partitions = append(t.partitions, r.Partition)
		}
		v, err := strconv.ParseInt(r.Value, 10, 64)
		if err != nil {
			if len(t.bad) < 3 {
				t.bad = append(t.bad, fmt.Sprintf("value %q at partition %d offset %d is not a count", r.Value, r.Partition, r.Offset))
			}
			continue
		}
		switch {
		case v <= t.last:
			if t.repeats == 0 {
				t.firstRep = fmt.Sprintf("count %d came again after %d (partition %d offset %d)", v, t.last, r.Partition, r.Offset)
			}
			t.repeats++
		case v > t.last+1:
			if t.gaps == 0 {
				t.firstGap = fmt.Sprintf("counts %d to %d are missing (partition %d offset %d jumps to %d)", t.last+1, v-1, r.Partition, r.Offset, v)
			}
			t.gaps++
		}
		t.last = v
	}

	c := comparison{InputLines: in.lines, InputWords: in.words, Records: int64(len(recs))}
	words := map[string]bool{}
	for w := range in.counts {
		words[w] = true
	}
	for w := range seen {
		words[w] = true
	}
	for w := range words {
		r := wordResult{Word: w, Input: in.counts[w]}
		t := seen[w]
		if t == nil {
			r.fault("no count", "no committed count")
			c.Words = append(c.Words, r)
			continue
		}
		r.Output, r.Records = t.last, t.records
		if r.Input == 0 {
			r.fault("not in input", "not in the input")
		} else if r.Output != r.Input {
			r.fault("total differs", fmt.Sprintf("the last count is %d, the input has %d", r.Output, r.Input))
		}
		if t.repeats > 0 {
			r.fault("repeated", fmt.Sprintf("%d count(s) repeated, the first: %s", t.repeats, t.firstRep))
		}
		if t.gaps > 0 {
			r.fault("skipped", fmt.Sprintf("%d gap(s), the first: %s", t.gaps, t.firstGap))
		}
		for _, b := range t.bad {
			r.fault("not a count", b)
		}
		if len(t.partitions) > 1 {
			slices.Sort(t.partitions)
			r.fault("partitions", fmt.Sprintf("records in partitions %v", t.partitions))
		}
		c.Words = append(c.Words, r)
	}
	slices.SortFunc(c.Words, func(a, b wordResult) int {
		return cmp.Or(cmp.Compare(b.Input, a.Input), cmp.Compare(b.Output, a.Output), strings.Compare(a.Word, b.Word))
	})
	for _, r := range c.Words {
		if len(r.Faults) > 0 {
			c.Differ = append(c.Differ, r)
		}
	}
	return c
}

// report prints the top words side by side (input count, committed count)
// and every word that differs, then the verdict. It returns an error when
// the counts are not exact, so the demo fails.
func (c comparison) report(out io.Writer, input, output string, top int) error {
	fmt.Fprintf(out, "demo: the final counts, read back from topic %s under read_committed, next to a count made directly\n", output)
	fmt.Fprintf(out, "demo: from the %s lines in topic %s:\n", grouped(c.InputLines), input)
	rows := c.Words[:min(top, len(c.Words))]
	var extra []wordResult // the words beyond the top that differ
	for _, r := range c.Words[len(rows):] {
		if len(r.Faults) > 0 {
			extra = append(extra, r)
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  WORD\tFROM %s\tREAD BACK\t\n", strings.ToUpper(input))
	row := func(r wordResult) {
		mark := "="
		if len(r.Faults) > 0 {
			mark = "DIFFERS: " + strings.Join(slices.Compact(slices.Clone(r.Short)), ", ")
		}
		fmt.Fprintf(w, "  %s\t%d\t%d\t%s\n", r.Word, r.Input, r.Output, mark)
	}
	for _, r := range rows {
		row(r)
	}
	if len(extra) > 0 {
		fmt.Fprintln(w, "  …\t\t\t")
	}
	for _, r := range extra[:min(len(extra), 20)] {
		row(r)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if hidden := len(c.Words) - len(rows) - min(len(extra), 20); hidden > 0 {
		fmt.Fprintf(out, "  (%d more words, each equal)\n", hidden)
	}
	if c.Exact() {
		fmt.Fprintf(out, "demo: exact: %d words, every count equals the input's\n", len(c.Words))
		fmt.Fprintf(out, "demo: (%s committed counts for %s words of input: each word's counts went 1, 2, 3, … up to its total, none repeated, none skipped)\n",
			grouped(c.Records), grouped(c.InputWords))
		return nil
	}
	fmt.Fprintf(out, "demo: NOT exact: %d of %d words differ from the input's count (%s committed counts for %s words of input):\n",
		len(c.Differ), len(c.Words), grouped(c.Records), grouped(c.InputWords))
	for i, r := range c.Differ {
		if i == 20 {
			fmt.Fprintf(out, "  … and %d more\n", len(c.Differ)-i)
			break
		}
		fmt.Fprintf(out, "  %s: %d in %s, %d in %s: %s\n", r.Word, r.Output, output, r.Input, input, strings.Join(r.Faults, "; "))
	}
	return fmt.Errorf("the counts in %s are not exact: %d of %d words differ from the count of %s", output, len(c.Differ), len(c.Words), input)
}

// verify reads the input and the output topic to their ends, compares
// them and prints the report; it fails when the counts differ.
func verify(ctx context.Context, seeds []string, input, output string, top int, out io.Writer) error {
	in, err := readInput(ctx, seeds, input)
	if err != nil {
		return err
	}
	recs, err := readOutput(ctx, seeds, output)
	if err != nil {
		return err
	}
	return compare(in, recs).report(out, input, output, top)
}
