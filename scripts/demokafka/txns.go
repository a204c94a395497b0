package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// openTxn is a transaction of the job's prefix that has not ended.
type openTxn struct {
	ID         string   `json:"id"`
	State      string   `json:"state"`
	ProducerID int64    `json:"producer_id"`
	Epoch      int16    `json:"epoch"`
	Partitions []string `json:"partitions"`
}

// isOpen reports whether a transaction in this coordinator state has not
// ended: it holds the last stable offset of its partitions, and
// read_committed readers stop there.
func isOpen(state string) bool {
	switch state {
	case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
		return true
	}
	return false
}

// ofPrefix reports whether id is a transactional id the Kafka sink makes
// from prefix: prefix-<subtask>-<n>.
func ofPrefix(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok {
		return false
	}
	sub, n, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(sub, 10, 31)
	_, err2 := strconv.ParseUint(n, 10, 31)
	return err1 == nil && err2 == nil
}

// listOpen lists the cluster's transactions (ListTransactions) and
// describes those of prefix (DescribeTransactions), returning the open
// ones by id.
func listOpen(ctx context.Context, adm *kadm.Client, prefix string) ([]openTxn, error) {
	listed, err := adm.ListTransactions(ctx, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("listing transactions: %w", err)
	}
	var ids []string
	for id := range listed {
		if ofPrefix(prefix, id) {
			ids = append(ids, id)
		}
	}
	return describeOpen(ctx, adm, ids)
}

// describeOpen describes the transactions of ids and returns the open
// ones, sorted by id.
func describeOpen(ctx context.Context, adm *kadm.Client, ids []string) ([]openTxn, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	described, err := adm.DescribeTransactions(ctx, ids...)
	if err != nil {
		return nil, fmt.Errorf("describing transactions %v: %w", ids, err)
	}
	var open []openTxn
	for _, d := range described {
		if d.Err != nil {
			return nil, fmt.Errorf("describing transaction %s: %w", d.TxnID, d.Err)
		}
		if !isOpen(d.State) {
			continue
		}
		t := openTxn{ID: d.TxnID, State: d.State, ProducerID: d.ProducerID, Epoch: d.ProducerEpoch}
		for topic, ps := range d.Topics {
			for p := range ps {
				t.Partitions = append(t.Partitions, fmt.Sprintf("%s/%d", topic, p))
			}
		}
		slices.Sort(t.Partitions)
		open = append(open, t)
	}
	slices.SortFunc(open, func(a, b openTxn) int { return strings.Compare(a.ID, b.ID) })
	return open, nil
}

func admin(seeds []string) (*kgo.Client, *kadm.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return nil, nil, err
	}
	return cl, kadm.NewClient(cl), nil
}

func printOpen(out io.Writer, open []openTxn) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  TRANSACTIONAL ID\tSTATE\tPRODUCER\tEPOCH\tPARTITIONS")
	for _, t := range open {
		fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%s\n", t.ID, t.State, t.ProducerID, t.Epoch, strings.Join(t.Partitions, " "))
	}
	return w.Flush()
}

// leftOpen prints the open transactions of prefix, right after the kill,
// and saves them to file for closed.
func leftOpen(ctx context.Context, seeds []string, prefix, file string, out io.Writer) error {
	if prefix == "" {
		return fmt.Errorf("-prefix is required")
	}
	cl, adm, err := admin(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	open, err := listOpen(ctx, adm, prefix)
	if err != nil {
		return err
	}
	if file != "" {
		b, err := json.Marshal(open)
		if err != nil {
			return err
		}
		if err := os.WriteFile(file, b, 0o644); err != nil {
			return err
		}
	}
	if len(open) == 0 {
		fmt.Fprintf(out, "demo: the killed run left no transaction of prefix %s open.\n", prefix)
		return nil
	}
	fmt.Fprintf(out, "demo: the killed run left %s open, holding what it wrote since its last commit; read_committed readers stop at them:\n", plural(len(open), "transaction"))
	return printOpen(out, open)
}

// closed waits until none of the transactions left-open saved in file is
// still open under the same producer id and epoch: the restarted job has
// committed or aborted every one (a fence bumps the epoch, which aborts).
func closed(ctx context.Context, seeds []string, file string, out io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var left []openTxn
	if err := json.Unmarshal(b, &left); err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	if len(left) == 0 {
		return nil
	}
	cl, adm, err := admin(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	ids := make([]string, len(left))
	for i, t := range left {
		ids[i] = t.ID
	}
	start := time.Now()
	for {
		open, err := describeOpen(ctx, adm, ids)
		if err != nil {
			return err
		}
		still := stillOpen(left, open)
		if len(still) == 0 {
			verb := "have"
			if len(left) == 1 {
				verb = "has"
			}
			fmt.Fprintf(out, "demo: the %s the killed run left open %s ended (seen %.1fs after the restart was up).\n",
				plural(len(left), "transaction"), verb, time.Since(start).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the transactions the killed run left open are still open: %v: %w", still, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stillOpen returns the ids of left whose transaction is open now under
// the same producer id and epoch.
func stillOpen(left, now []openTxn) []string {
	var ids []string
	for _, l := range left {
		if slices.ContainsFunc(now, func(n openTxn) bool {
			return n.ID == l.ID && n.ProducerID == l.ProducerID && n.Epoch == l.Epoch
		}) {
			ids = append(ids, l.ID)
		}
	}
	return ids
}

// noneOpen checks that no transaction of prefix is open and that every
// partition of topic has its last stable offset at its end (the markers of
// the last transactions are written after EndTxn answers, so it waits for
// them up to 10 seconds). It fails, naming what is open, otherwise.
func noneOpen(ctx context.Context, seeds []string, prefix, topic string, out io.Writer) error {
	if prefix == "" || topic == "" {
		return fmt.Errorf("-prefix and -topic are required")
	}
	cl, adm, err := admin(seeds)
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, err := listOpen(ctx, adm, prefix)
		if err != nil {
			return err
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
		var held, at []string
		var parts []kadm.ListedOffset
		ends.Each(func(o kadm.ListedOffset) { parts = append(parts, o) })
		slices.SortFunc(parts, func(a, b kadm.ListedOffset) int { return int(a.Partition - b.Partition) })
		for _, e := range parts {
			l, _ := stables.Lookup(topic, e.Partition)
			if l.Offset != e.Offset {
				held = append(held, fmt.Sprintf("%s/%d (last stable offset %d, end %d)", topic, e.Partition, l.Offset, e.Offset))
			}
			at = append(at, fmt.Sprintf("%s/%d at %s", topic, e.Partition, grouped(e.Offset)))
		}
		if len(open) == 0 && len(held) == 0 {
			fmt.Fprintf(out, "demo: no transaction is left open: none of prefix %s is Ongoing or Prepare* (ListTransactions, DescribeTransactions),\n", prefix)
			fmt.Fprintf(out, "demo: and every partition of %s has its last stable offset at its end (%s).\n", topic, strings.Join(at, ", "))
			return nil
		}
		if time.Now().After(deadline) {
			if len(open) > 0 {
				fmt.Fprintf(out, "demo: %d transactions of prefix %s are still open:\n", len(open), prefix)
				if err := printOpen(out, open); err != nil {
					return err
				}
			}
			return fmt.Errorf("transactions are left open: %d of prefix %s; partitions held: %v", len(open), prefix, held)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// plural writes n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
