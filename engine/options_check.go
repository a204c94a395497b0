package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/onceflow/onceflow/internal/optcheck"
	"github.com/onceflow/onceflow/state"
)

// The defaults NewJob gives options left zero, and the bound of
// MaxParallelism. Every other package (config among them) refers to these
// instead of repeating them.
const (
	// DefaultMaxParallelism is the number of key groups of a job whose
	// Options.MaxParallelism is 0.
	DefaultMaxParallelism = state.DefaultMaxParallelism
	// UpperBoundMaxParallelism is the most key groups a job may have
	// (Flink's bound too: key groups are numbered in 15 bits).
	UpperBoundMaxParallelism = 1 << 15
	// DefaultChannelCapacity bounds the channels between subtasks when
	// Options.ChannelCapacity is 0.
	DefaultChannelCapacity = 256
	// DefaultCheckpointTimeout aborts a checkpoint when
	// CheckpointOptions.Timeout is 0.
	DefaultCheckpointTimeout = 10 * time.Minute
	// DefaultMaxConcurrentCheckpoints is CheckpointOptions.MaxConcurrent
	// when 0.
	DefaultMaxConcurrentCheckpoints = 1
)

// Validate reports every option of o that NewJob cannot run with, each
// naming the option (as "Checkpoint.<field>") and its value; nil when all
// are acceptable. Zero always means the default.
func (o CheckpointOptions) Validate() error {
	return optcheck.Check("engine", o.rules()...)
}

func (o CheckpointOptions) rules() []optcheck.Rule {
	return []optcheck.Rule{
		{Option: "Checkpoint.Interval", Value: o.Interval, Bad: optcheck.NotNegative(o.Interval, "0 disables periodic checkpoints")},
		{Option: "Checkpoint.Mode", Value: int(o.Mode), Bad: optcheck.If(o.Mode != ExactlyOnce && o.Mode != AtLeastOnce, "is neither ExactlyOnce nor AtLeastOnce")},
		{Option: "Checkpoint.Timeout", Value: o.Timeout, Bad: optcheck.NotNegative(o.Timeout, fmt.Sprintf("0 takes the default %s", DefaultCheckpointTimeout))},
		{Option: "Checkpoint.MinPause", Value: o.MinPause, Bad: optcheck.NotNegative(o.MinPause, "")},
		{Option: "Checkpoint.MaxConcurrent", Value: o.MaxConcurrent, Bad: optcheck.NotNegative(o.MaxConcurrent, fmt.Sprintf("0 takes the default %d", DefaultMaxConcurrentCheckpoints))},
		{Option: "Checkpoint.TolerableFailures", Value: o.TolerableFailures, Bad: optcheck.NotNegative(o.TolerableFailures, "")},
		{Option: "Checkpoint.RetainSavepoints", Value: o.RetainSavepoints, Bad: optcheck.NotNegative(o.RetainSavepoints, "0 keeps every savepoint")},
	}
}

// Validate reports every option of o that NewJob cannot run with, each
// naming the option and its value (errors.Join of *optcheck.Error); nil
// when all are acceptable. Zero always means the default. NewJob runs it,
// and Run returns what it found before running anything. The storage's
// job name is checked by NewJob, which knows the job's.
func (o Options) Validate() error {
	rules := append(o.Checkpoint.rules(),
		optcheck.Rule{Option: "MaxParallelism", Value: o.MaxParallelism,
			Bad: optcheck.If(o.MaxParallelism != 0 && (o.MaxParallelism < 1 || o.MaxParallelism > UpperBoundMaxParallelism),
				fmt.Sprintf("is outside 1..%d (0 takes the default %d)", UpperBoundMaxParallelism, DefaultMaxParallelism))},
		optcheck.Rule{Option: "ChannelCapacity", Value: o.ChannelCapacity, Bad: optcheck.NotNegative(o.ChannelCapacity, fmt.Sprintf("0 takes the default %d", DefaultChannelCapacity))},
		optcheck.Rule{Option: "WatermarkInterval", Value: o.WatermarkInterval, Bad: optcheck.NotNegative(o.WatermarkInterval, fmt.Sprintf("0 takes the default %s", DefaultWatermarkInterval))},
	)
	return optcheck.Check("engine", rules...)
}

// validate is Validate plus the storage's job name, which must be job's:
// a storage opened for another job would restore that job's state into
// this one, and complete this job's checkpoints among the other's.
func (o Options) validate(job string) error {
	err := o.Validate()
	if o.Storage == nil || o.Storage.Job() == job {
		return err
	}
	return errors.Join(err, optcheck.Check("engine", optcheck.Rule{Option: "Storage", Value: o.Storage.Job(),
		Bad: fmt.Sprintf("is the job the checkpoint storage was opened for, and this job is %q: open the storage with the job's name", job)}))
}
