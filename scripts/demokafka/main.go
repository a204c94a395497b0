// Command demokafka is the Kafka side of make demo (scripts/demo.sh): it
// creates the topics, feeds text into the input topic while the word count
// runs (and while it is killed), reads the counts back under
// read_committed, computes the reference count directly from the input
// topic, compares the two, and checks which of the job's transactions are
// open. It needs no Kafka command-line tools. Every command prints what it
// found in plain words and exits 1 when it cannot say, or when what it
// found is not what exactly-once promises.
//
//	demokafka create -brokers B -partitions 2 TOPIC...
//	demokafka feed -brokers B -topic T -lines N -over D [-hold FILE]   (paced; prints a summary at the end)
//	demokafka first -brokers B -topic OUT -input IN -lines N -http ADDR
//	demokafka left-open -brokers B -prefix P -save FILE
//	demokafka closed -brokers B -from FILE
//	demokafka caught-up -brokers B -input IN -topic OUT
//	demokafka verify -brokers B -input IN -topic OUT [-top 12]
//	demokafka none-open -brokers B -prefix P -topic OUT
//	demokafka checkpoints -http ADDR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demokafka create|feed|first|left-open|closed|caught-up|verify|none-open|checkpoints [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
	topic := fs.String("topic", "", "the topic written (feed) or the output topic read (first, caught-up, verify, none-open)")
	input := fs.String("input", "", "the input topic the reference count is made from")
	partitions := fs.Int("partitions", 2, "create: partitions of the topics")
	lines := fs.Int("lines", 40000, "feed: lines to write; first: lines the feeder writes in all")
	over := fs.Duration("over", 5*time.Second, "feed: spread the lines over this long")
	hold := fs.String("hold", "", "feed: write the last quarter of the lines only once this file exists")
	prefix := fs.String("prefix", "", "the job's sink.transactional_id_prefix")
	save := fs.String("save", "", "left-open: save the open transactions to this file")
	from := fs.String("from", "", "closed: the file left-open saved")
	top := fs.Int("top", 12, "verify: words shown side by side")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	addr := fs.String("http", "127.0.0.1:8081", "the processor's HTTP address")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	seeds := strings.Split(*brokers, ",")
	out := os.Stdout

	var err error
	switch os.Args[1] {
	case "create":
		err = create(ctx, seeds, int32(*partitions), fs.Args())
	case "feed":
		err = feed(ctx, seeds, *topic, *lines, *over, *hold, out)
	case "first":
		err = first(ctx, seeds, *topic, *input, *lines, *addr, out)
	case "left-open":
		err = leftOpen(ctx, seeds, *prefix, *save, out)
	case "closed":
		err = closed(ctx, seeds, *from, out)
	case "caught-up":
		err = caughtUp(ctx, seeds, *input, *topic, out)
	case "verify":
		err = verify(ctx, seeds, *input, *topic, *top, out)
	case "none-open":
		err = noneOpen(ctx, seeds, *prefix, *topic, out)
	case "checkpoints":
		err = checkpoints(ctx, *addr, out)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demokafka:", err)
		os.Exit(1)
	}
}

func create(ctx context.Context, seeds []string, partitions int32, topics []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("creating topics %v: %w", topics, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", r.Topic, r.Err)
		}
	}
	// Wait until every partition has a leader.
	for {
		md, err := adm.Metadata(ctx, topics...)
		if err == nil {
			ready := true
			for _, t := range topics {
				td := md.Topics[t]
				ready = ready && td.Err == nil && len(td.Partitions) == int(partitions)
				for _, p := range td.Partitions {
					ready = ready && p.Leader >= 0
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %v have no leaders: %w", topics, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sampleText is the demo's input, fed line by line over and over.
const sampleText = `a stream of lines flows in from the words topic
every line is split into words and every word is counted
the count of a word is state kept per key and checkpointed
a checkpoint is a barrier that flows with the records
the sink writes counts inside a kafka transaction
the transaction commits when the checkpoint completes
so every word is counted exactly once even after a crash
stop the job with a savepoint and nothing is left open`

// feed writes n lines of sampleText into topic, evenly spread over the
// given duration (in steps of 50 ms), and prints how many lines and words
// it wrote. With hold set, it writes the last quarter of the lines only
// once that file exists: the demo creates it when the restarted processor
// is up, so that lines still arrive after the restart on a machine too
// busy to kill and restart within the duration. The producer is
// idempotent: a retried batch is written once. It fails on the first
// record the broker refuses, naming the topic.
func feed(ctx context.Context, seeds []string, topic string, n int, over time.Duration, hold string, out io.Writer) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	sample := strings.Split(sampleText, "\n")
	errc := make(chan error, 1)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			select {
			case errc <- err:
			default:
			}
		}
	}
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	sent, words := 0, 0
	for sent < n {
		due := n
		if over > 0 {
			due = min(n, int(float64(n)*float64(time.Since(start))/float64(over))+1)
		}
		if hold != "" && due > n*3/4 {
			if _, err := os.Stat(hold); err != nil {
				due = n * 3 / 4
			} else {
				hold = ""
			}
		}
		for ; sent < due; sent++ {
			line := sample[sent%len(sample)]
			words += len(strings.Fields(line))
			cl.Produce(ctx, kgo.StringRecord(line), done)
		}
		if sent == n {
			break
		}
		select {
		case err := <-errc:
			return fmt.Errorf("producing to %s: %w", topic, err)
		case <-ctx.Done():
			return fmt.Errorf("feeding %s: %d of %d lines written: %w", topic, sent, n, ctx.Err())
		case <-tick.C:
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("producing to %s: %w", topic, err)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("producing to %s: %w", topic, err)
	default:
	}
	fmt.Fprintf(out, "demo: the feeder has written all %s lines (%s words) into topic %s, over %.1fs.\n",
		grouped(int64(n)), grouped(int64(words)), topic, time.Since(start).Seconds())
	return nil
}

// first waits until the output topic holds a committed record, then says
// how far the job and the feeder are: the job's last completed checkpoint
// and lines read (from its HTTP API) and the lines still to come into the
// input topic.
func first(ctx context.Context, seeds []string, topic, input string, lines int, addr string, out io.Writer) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("no committed record in %s: %w", topic, ctx.Err())
		}
		if fs.NumRecords() > 0 {
			break
		}
	}
	st, err := jobStatus(ctx, addr)
	if err != nil {
		return err
	}
	end, err := kadm.NewClient(cl).ListEndOffsets(ctx, input)
	if err != nil {
		return fmt.Errorf("listing the end offsets of %s: %w", input, err)
	}
	var written int64
	end.Each(func(o kadm.ListedOffset) { written += o.Offset })
	fmt.Fprintf(out, "demo: the first counts are committed (the job's last completed checkpoint: %d); the job has read %s lines,\n",
		st.LastCheckpoint, grouped(st.Source.RecordsRead))
	fmt.Fprintf(out, "demo: and the feeder has written %s of its %s lines: %s are still to come.\n",
		grouped(written), grouped(int64(lines)), grouped(max(0, int64(lines)-written)))
	return nil
}

// caughtUp waits until the output topic holds as many committed records as
// the input topic has words: the job has counted every word once (or has
// counted some twice: verify tells which).
func caughtUp(ctx context.Context, seeds []string, input, topic string, out io.Writer) error {
	in, err := readInput(ctx, seeds, input)
	if err != nil {
		return err
	}
	want := in.words
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	var n int64
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("only %d committed records in %s for the %d words of %s: %w", n, topic, want, input, ctx.Err())
		}
		n += int64(fs.NumRecords())
	}
	fmt.Fprintf(out, "demo: the job has caught up: %s committed counts in topic %s, for the %s words in topic %s.\n",
		grouped(n), topic, grouped(want), input)
	return nil
}

// grouped writes n with a space between groups of three digits.
func grouped(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
