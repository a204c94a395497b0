// Package jobs holds onceflow's built-in jobs, which need no Go code from
// the user: copy (topic to topic, key, value and headers unchanged),
// wordcount (for every word occurrence, the word and its running count)
// and aggregate (count, sum, min or max of a JSON field grouped by another,
// the updated aggregate per input record). Build turns a configuration
// into a runnable engine.Job with the Kafka source and sink; see
// docs/kafka.md for how they take part in checkpoints.
package jobs
