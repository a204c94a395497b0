// Package kafka is the Kafka source of onceflow: it reads partitions it is
// assigned directly (no group rebalancing inside a job) and keeps each
// partition's next offset as operator state in every checkpoint, so a
// restore resumes exactly where the checkpoint was taken.
package kafka
