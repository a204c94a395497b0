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
	r.committer.sync()
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

// With PurgeInterval, a completed checkpoint deletes the records below its
// offsets, at most once per interval on the reader's clock; without it,
// nothing is deleted.
func TestReaderPurgesWhatACheckpointConsumed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := fake(t, 1, "rep")
	produce(t, ctx, client, "rep", 10, 0)
	now := time.Unix(1000, 0)
	open := func(purge time.Duration) *Reader {
		r, err := OpenReader(ctx, 0, 1, ReaderOptions{ClientOpts: client, Topics: []string{"rep"}, Start: StartEarliest,
			PurgeInterval: purge, Now: func() time.Time { return now }}, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return r
	}
	logStart := func(r *Reader) int64 {
		t.Helper()
		o, err := kadm.NewClient(r.cl).ListStartOffsets(ctx, "rep")
		if err != nil {
			t.Fatal(err)
		}
		l, _ := o.Lookup("rep", 0)
		return l.Offset
	}
	checkpointAfter := func(r *Reader, n int, id int64) {
		t.Helper()
		readN(t, ctx, r, n)
		if _, err := r.SnapshotState(id); err != nil {
			t.Fatal(err)
		}
		r.NotifyCheckpointComplete(ctx, id)
	}

	keep := open(0)
	checkpointAfter(keep, 3, 1)
	if got := logStart(keep); got != 0 {
		t.Fatalf("without PurgeInterval the log starts at %d after a checkpoint, want 0", got)
	}
	keep.Close()

	r := open(time.Minute)
	// A checkpoint before anything was read deletes nothing and does not
	// use the interval up.
	checkpointAfter(r, 0, 1)
	checkpointAfter(r, 4, 2)
	if got := logStart(r); got != 4 {
		t.Fatalf("after checkpoint 2 at offset 4 the log starts at %d, want 4", got)
	}
	now = now.Add(30 * time.Second)
	checkpointAfter(r, 2, 3)
	if got := logStart(r); got != 4 {
		t.Fatalf("30s later (interval 1m) the log starts at %d, want still 4", got)
	}
	now = now.Add(31 * time.Second)
	checkpointAfter(r, 1, 4)
	if got := logStart(r); got != 7 {
		t.Fatalf("after the interval the log starts at %d, want 7 (checkpoint 4's offset)", got)
	}
}
