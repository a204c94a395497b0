// Command gowordcount is the built-in wordcount job written as a Go job on
// package runner: the same output (key the word, value its running count
// as a decimal), from a Dataflow of a dozen lines. It runs like the
// processor, with the same configuration keys, flags, HTTP API, metrics
// and exit codes, in job.mode single or distributed:
//
//	go run ./examples/gowordcount run --config examples/wordcount.yaml --set job.type=go
//
// In job.mode distributed, jobs.KeyBy cuts the job at the word: each
// partition group's lines go through the repartition topic
// <job.name>-count-repartition to the group that counts their words.
package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/runner"
	"github.com/onceflow/onceflow/state"
)

// Dataflow splits lines into words, counts every word in keyed state and
// writes each new count.
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

// counter keeps a word's count in keyed state "count".
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

func main() { runner.Main(runner.Job{Name: "gowordcount", Dataflow: Dataflow}) }
