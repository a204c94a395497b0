// Package engine runs onceflow dataflows: a typed graph of sources,
// operators and sinks, executed as one goroutine per subtask connected by
// bounded channels, with checkpoints by asynchronous barrier snapshotting,
// a checkpoint coordinator, and restart strategies that restore every
// operator from the latest completed checkpoint after a failure.
package engine
