package testdriver

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A fetch that returns records just as the poll's context ends (a
// WaitCommitted slice of 250 ms running out while the fetch came back)
// keeps its records: the consumer's position is past them, so a poll that
// dropped them would never see them again. CI failed TestDataflowOnKafka
// so once, with 100 of 200 committed records after a restart.
func TestPollKeepsRecordsFetchedAsItsContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	k := &KafkaDriver{pos: map[int32]int64{}}
	k.fetch = func(context.Context) kgo.Fetches {
		cancel() // the slice ends while the fetch returns
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "out", Partitions: []kgo.FetchPartition{{
			Partition: 0,
			Records: []*kgo.Record{
				{Topic: "out", Partition: 0, Offset: 7, Value: []byte("a")},
				{Topic: "out", Partition: 0, Offset: 8, Value: []byte("b")},
			},
		}}}}}}
	}
	if _, err := k.poll(ctx, func() bool { return len(k.committed) >= 2 }); err != nil {
		t.Fatal(err)
	}
	if len(k.committed) != 2 || k.pos[0] != 9 {
		t.Fatalf("after a fetch that came back as the context ended: %d records kept, next offset %d; want 2 and 9", len(k.committed), k.pos[0])
	}
}
