package kafka

import "github.com/twmb/franz-go/pkg/kgo"

// InputPartitioner places a record in the output partition of its own
// Partition field (the partition it was read from, for a copy) modulo the
// output's partition count, as MirrorMaker places records. Each output
// partition then holds its input partitions' records in their order, so a
// key stays in one partition and in order however the input was
// partitioned (by a custom partitioner too), and a subtask writes only to
// the partitions of the input partitions it owns: fewer, larger batches
// than hashing every key over every partition. It is consistent: a
// record waits for its partition rather than going to another.
func InputPartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int { return int(r.Partition) % n }
	})
}
