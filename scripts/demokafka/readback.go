package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// readToEnd calls fn for every record of topic a read_committed consumer
// sees, from the start of each partition's log to its end offset as
// listed when the read begins, in offset order per partition. It refuses,
// naming the partition and both offsets, when an open transaction holds a
// partition's last stable offset below its end: a read_committed reader
// stops there, so the end is not readable yet. It reads the commit and
// abort markers as well (kgo.KeepControlRecords), to know it has reached
// an end that is a marker, but does not pass them to fn.
func readToEnd(ctx context.Context, seeds []string, topic string, fn func(*kgo.Record)) error {
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("listing the start offsets of %s: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("listing the end offsets of %s: %w", topic, err)
	}
	stables, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = stables.Error()
	}
	if err != nil {
		return fmt.Errorf("listing the last stable offsets of %s: %w", topic, err)
	}
	if len(ends[topic]) == 0 {
		return fmt.Errorf("topic %s has no partitions", topic)
	}
	assign := map[int32]kgo.Offset{}
	end := map[int32]int64{}
	for p, e := range ends[topic] {
		s, _ := starts.Lookup(topic, p)
		if l, _ := stables.Lookup(topic, p); l.Offset < e.Offset {
			return fmt.Errorf("partition %s/%d: an open transaction holds its last stable offset at %d, below its end %d",
				topic, p, l.Offset, e.Offset)
		}
		if s.Offset < e.Offset {
			assign[p] = kgo.NewOffset().At(s.Offset)
			end[p] = e.Offset
		}
	}
	if len(assign) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(end) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			var left []string
			for p, e := range end {
				left = append(left, fmt.Sprintf("%s/%d (end %d)", topic, p, e))
			}
			slices.Sort(left)
			return fmt.Errorf("reading %s to its end: %v not read to the end: %w", topic, left, ctx.Err())
		}
		if err := fs.Err(); err != nil {
			return fmt.Errorf("reading %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				fn(r)
			}
			if e, ok := end[r.Partition]; ok && r.Offset+1 >= e {
				delete(end, r.Partition)
			}
		})
	}
	return nil
}

// inputCount is the reference count, made directly from the input topic.
type inputCount struct {
	lines  int64
	words  int64
	counts map[string]int64
}

// add counts the words of one line, split at white space as the built-in
// word count splits them (strings.Fields: case kept, punctuation kept).
func (c *inputCount) add(line string) {
	if c.counts == nil {
		c.counts = map[string]int64{}
	}
	c.lines++
	for _, w := range strings.Fields(line) {
		c.counts[w]++
		c.words++
	}
}

// readInput counts the words of every line of the input topic.
func readInput(ctx context.Context, seeds []string, topic string) (inputCount, error) {
	var c inputCount
	err := readToEnd(ctx, seeds, topic, func(r *kgo.Record) { c.add(string(r.Value)) })
	return c, err
}

// readOutput returns every committed record of the output topic.
func readOutput(ctx context.Context, seeds []string, topic string) ([]outputRecord, error) {
	var recs []outputRecord
	err := readToEnd(ctx, seeds, topic, func(r *kgo.Record) {
		recs = append(recs, outputRecord{Partition: r.Partition, Offset: r.Offset, Word: string(r.Key), Value: string(r.Value)})
	})
	return recs, err
}
