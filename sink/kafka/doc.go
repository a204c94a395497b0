// Package kafka is the Kafka sink of onceflow. With exactly-once delivery it
// writes inside Kafka transactions, flushes them at the barrier, commits
// them when the checkpoint completes and, after a crash, commits what the
// restored checkpoint holds and aborts what failed attempts left open.
package kafka
