// Command demokafka is the Kafka side of make demo (scripts/demo.sh):
// create the topics, feed text into the input topic, read the word
// counts back under read_committed, and print the job's checkpoint
// history from its HTTP API. It needs no Kafka command-line tools.
//
//	demokafka create -brokers B -partitions 2 TOPIC...
//	demokafka produce -brokers B -topic T < text        (one record per line)
//	demokafka counts -brokers B -topic T -want N         (waits for N records)
//	demokafka checkpoints -http ADDR
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demokafka create|produce|counts|checkpoints [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
	topic := fs.String("topic", "", "topic")
	partitions := fs.Int("partitions", 2, "partitions of created topics")
	want := fs.Int("want", 0, "counts: wait until the topic holds this many committed records")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	addr := fs.String("http", "127.0.0.1:8081", "checkpoints: the processor's HTTP address")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	seeds := strings.Split(*brokers, ",")

	var err error
	switch os.Args[1] {
	case "create":
		err = create(ctx, seeds, int32(*partitions), fs.Args())
	case "produce":
		err = produce(ctx, seeds, *topic)
	case "counts":
		err = counts(ctx, seeds, *topic, *want)
	case "checkpoints":
		err = checkpoints(ctx, *addr)
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

func produce(ctx context.Context, seeds []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	var recs []*kgo.Record
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			recs = append(recs, kgo.StringRecord(line))
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("producing to %s: %w", topic, err)
	}
	fmt.Printf("demo: %d lines into topic %s\n", len(recs), topic)
	return nil
}

// counts reads the topic under read_committed until it holds want
// records, then prints every word's final count, the most frequent first.
func counts(ctx context.Context, seeds []string, topic string, want int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	final := map[string]int64{}
	n := 0
	for n < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d committed records in %s: %w", n, want, topic, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			c, err := strconv.ParseInt(string(r.Value), 10, 64)
			if err == nil && c > final[string(r.Key)] {
				final[string(r.Key)] = c
			}
		})
	}
	words := make([]string, 0, len(final))
	for w := range final {
		words = append(words, w)
	}
	sort.Slice(words, func(i, j int) bool {
		if final[words[i]] != final[words[j]] {
			return final[words[i]] > final[words[j]]
		}
		return words[i] < words[j]
	})
	fmt.Printf("demo: %d committed records in %s (read_committed), %d distinct words; the most frequent:\n", n, topic, len(words))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  WORD\tCOUNT")
	for _, word := range words[:min(len(words), 12)] {
		fmt.Fprintf(w, "  %s\t%d\n", word, final[word])
	}
	return w.Flush()
}

// checkpointsBody is the part of GET /api/v1/checkpoints printed here.
type checkpointsBody struct {
	Counts struct {
		Completed  int64 `json:"completed"`
		Failed     int64 `json:"failed"`
		InProgress int64 `json:"in_progress"`
	} `json:"counts"`
	History []struct {
		ID          int64     `json:"id"`
		Savepoint   bool      `json:"savepoint"`
		Status      string    `json:"status"`
		TriggerTime time.Time `json:"trigger_time"`
		DurationMS  int64     `json:"duration_ms"`
		StateSize   int64     `json:"state_size"`
		AlignmentMS int64     `json:"alignment_ms"`
	} `json:"history"`
}

func checkpoints(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/checkpoints", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/v1/checkpoints: %s", resp.Status)
	}
	var cb checkpointsBody
	if err := json.NewDecoder(resp.Body).Decode(&cb); err != nil {
		return err
	}
	fmt.Printf("demo: checkpoints completed %d, failed %d, in progress %d; the latest (GET /api/v1/checkpoints):\n",
		cb.Counts.Completed, cb.Counts.Failed, cb.Counts.InProgress)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  ID\tKIND\tSTATUS\tTRIGGERED\tDURATION\tSTATE SIZE\tALIGNMENT")
	for _, c := range cb.History[:min(len(cb.History), 8)] {
		kind := "checkpoint"
		if c.Savepoint {
			kind = "savepoint"
		}
		fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%dms\t%d B\t%dms\n", c.ID, kind, c.Status, c.TriggerTime.Format("15:04:05.000"), c.DurationMS, c.StateSize, c.AlignmentMS)
	}
	return w.Flush()
}
