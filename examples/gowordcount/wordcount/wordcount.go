// Package wordcount is examples/gowordcount's job: the processor's
// built-in word count written as a Go job (a jobs.Dataflow), with the
// same output, key the word and value its running count as a decimal.
// The program (package main next to it) runs it with runner.Main; tests
// and other examples import it to run the same job with package
// testdriver, in memory or on a Kafka cluster.
package wordcount

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
)

// Dataflow splits lines into words, counts every word in keyed state and
// writes each new count. jobs.KeyBy keys the stream by word: in job.mode
// distributed it cuts the job there, each partition group's words going
// through the repartition topic <job.name>-count-repartition to the group
// that counts them.
func Dataflow(b *jobs.Builder) error {
	lines := jobs.Source(b, "source", func(r *kgo.Record) (string, error) { return string(r.Value), nil })
	words := engine.FlatMap(lines, "split", func(line string, out func(string)) error {
		for _, w := range strings.Fields(line) {
			out(w)
		}
		return nil
	})
	byWord := jobs.KeyBy(b, words, "count", func(w string) string { return w }, state.StringCodec{}, state.StringCodec{})
	counts := engine.Process(byWord, "count", b.Parallelism(), func() engine.KeyedProcessFunction[string, string, *kgo.Record] {
		return &counter{}
	})
	jobs.Sink(b, counts, "sink")
	return nil
}

// counter keeps a word's count in keyed state "count": checkpointed, and
// restored after a crash.
type counter struct{ count *state.ValueState[int64] }

// Open creates the keyed state.
func (c *counter) Open(ctx *engine.KeyedContext) error {
	var err error
	c.count, err = state.NewValueState(ctx.Backend(), "count", state.Int64Codec{})
	return err
}

// Process counts one occurrence of word and emits its new count.
func (c *counter) Process(_ *engine.KeyedContext, word, _ string, out func(*kgo.Record)) error {
	n, _, err := c.count.Value()
	if err != nil {
		return fmt.Errorf("reading the count of %q: %w", word, err)
	}
	n++
	if err := c.count.Update(n); err != nil {
		return fmt.Errorf("updating the count of %q: %w", word, err)
	}
	out(&kgo.Record{Key: []byte(word), Value: strconv.AppendInt(nil, n, 10)})
	return nil
}

// CheckCounts says whether committed (the sink's committed records, in
// any order) is exactly once the output of input in which every word of
// occurrences occurs as often as it says: for each word the counts 1 to
// its occurrences, each once, and no other word. It returns nil if so,
// else an error naming every word whose counts are not, with the counts
// committed (errors.Join, one error a word).
func CheckCounts(committed []*kgo.Record, occurrences map[string]int) error {
	got := map[string][]int{}
	var errs []error
	for _, r := range committed {
		n, err := strconv.Atoi(string(r.Value))
		if err != nil {
			errs = append(errs, fmt.Errorf("committed record %s=%q: not a count", r.Key, r.Value))
			continue
		}
		got[string(r.Key)] = append(got[string(r.Key)], n)
	}
	for _, w := range slices.Sorted(maps.Keys(occurrences)) {
		counts, n := got[w], occurrences[w]
		slices.Sort(counts)
		want := make([]int, n)
		for i := range want {
			want[i] = i + 1
		}
		if !slices.Equal(counts, want) {
			errs = append(errs, fmt.Errorf("word %s: committed counts %v, want 1..%d each once", w, counts, n))
		}
	}
	for _, w := range slices.Sorted(maps.Keys(got)) {
		if _, ok := occurrences[w]; !ok {
			errs = append(errs, fmt.Errorf("word %s: committed counts %v for a word never produced", w, got[w]))
		}
	}
	return errors.Join(errs...)
}
