package kafka

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// A Reader of partition group 1 of 4 over 8 partitions reads partitions 1
// and 5 only, dealt over both subtasks; a partition added later joins the
// group it belongs to; the checkpointed offsets go to CommitOffsets.
func TestReaderOfOnePartitionGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 8, "in")
	var committed []kadm.Offsets
	opts := ReaderOptions{ClientOpts: client, Topics: []string{"in"}, Start: StartEarliest,
		PartitionGroup: PartitionGroup{Index: 1, Count: 4}, DiscoveryInterval: time.Millisecond,
		CommitOffsets: func(_ context.Context, o kadm.Offsets) error { committed = append(committed, o); return nil }}
	owned := map[int]map[Partition]int64{}
	var readers []*Reader
	for sub := range 2 {
		r, err := OpenReader(ctx, sub, 2, opts, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		readers = append(readers, r)
		owned[sub] = maps.Clone(r.next)
	}
	var union []Partition
	for sub, ps := range owned {
		if len(ps) != 1 {
			t.Fatalf("subtask %d reads %v; want one partition each", sub, ps)
		}
		union = append(union, slices.Collect(maps.Keys(ps))...)
	}
	slices.SortFunc(union, comparePartitions)
	if !slices.Equal(union, []Partition{{"in", 1}, {"in", 5}}) {
		t.Fatalf("group 1 of 4 reads %v, want partitions 1 and 5", union)
	}

	adm := kadm.NewClient(readers[0].cl)
	if _, err := adm.CreatePartitions(ctx, 4, "in"); err != nil {
		t.Fatal(err)
	}
	// Partitions 8..11 exist now; 9 belongs to group 1.
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range readers {
			if err := r.discover(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var all []Partition
		for _, r := range readers {
			all = append(all, slices.Collect(maps.Keys(r.next))...)
		}
		slices.SortFunc(all, comparePartitions)
		if slices.Equal(all, []Partition{{"in", 1}, {"in", 5}, {"in", 9}}) {
			break
		}
		if len(all) > 3 || time.Now().After(deadline) {
			t.Fatalf("after adding partitions 8..11 group 1 reads %v, want 1, 5, 9", all)
		}
		time.Sleep(10 * time.Millisecond)
	}

	produce(t, ctx, client, "in", 40, 0)
	r := readers[0]
	readN(t, ctx, r, 1)
	if _, err := r.SnapshotState(1); err != nil {
		t.Fatal(err)
	}
	r.NotifyCheckpointComplete(ctx, 1)
	if len(committed) != 1 {
		t.Fatalf("CommitOffsets called %d times, want 1", len(committed))
	}
	committed[0].Each(func(o kadm.Offset) {
		if !opts.PartitionGroup.Contains(o.Partition) {
			t.Fatalf("committed the offset of partition %d, outside group 1 of 4", o.Partition)
		}
	})
}

func TestPartitionGroupValidation(t *testing.T) {
	for _, g := range []PartitionGroup{{Index: 4, Count: 4}, {Index: -1, Count: 2}, {Count: -1}} {
		if _, err := OpenReader(context.Background(), 0, 1, ReaderOptions{Topics: []string{"t"}, PartitionGroup: g}, false, nil); err == nil {
			t.Fatalf("OpenReader accepted partition group %+v", g)
		}
	}
}
