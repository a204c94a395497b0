package kafkatest

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// underReplicated names exactly the partitions a restarted node has not
// rejoined yet, those without a leader, and topics that failed to load.
func TestUnderReplicated(t *testing.T) {
	p := func(topic string, n, leader int32, replicas, isr []int32) kadm.PartitionDetail {
		return kadm.PartitionDetail{Topic: topic, Partition: n, Leader: leader, Replicas: replicas, ISR: isr}
	}
	md := kadm.Metadata{Topics: kadm.TopicDetails{
		"whole": {Topic: "whole", Partitions: kadm.PartitionDetails{
			0: p("whole", 0, 1, []int32{1, 2, 3}, []int32{3, 1, 2}),
			1: p("whole", 1, 2, []int32{2, 3, 1}, []int32{2, 3, 1}),
		}},
		"short": {Topic: "short", Partitions: kadm.PartitionDetails{
			0: p("short", 0, 1, []int32{1, 2, 3}, []int32{1, 2, 3}),
			1: p("short", 1, 2, []int32{2, 3, 1}, []int32{2, 1}),
			2: p("short", 2, -1, []int32{3}, []int32{3}),
		}},
		"broken": {Topic: "broken", Err: kerr.LeaderNotAvailable},
	}}
	got := underReplicated(md)
	want := []string{
		"broken (LEADER_NOT_AVAILABLE: There is no leader for this topic-partition as we are in the middle of a leadership election.)",
		"short/1 (leader 2, replicas [2 3 1], ISR [2 1])",
		"short/2 (leader -1, replicas [3], ISR [3])",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("underReplicated =\n%q\nwant\n%q", got, want)
	}
	if got := underReplicated(kadm.Metadata{Topics: kadm.TopicDetails{"whole": md.Topics["whole"]}}); len(got) != 0 {
		t.Fatalf("a whole cluster: %q", got)
	}
}
