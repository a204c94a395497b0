package jobs

// Dataflow builds the operators of a Go job on b: its program supplies
// it to package runner, which builds and runs it as processor run builds
// and runs the built-in jobs (job.type go). It may be called more than
// once in a process (once per restart of a build, once per partition
// group in job.mode distributed) and must build the same graph each time.
type Dataflow func(b *Builder) error

// Builder hands a Dataflow its job's connectors, configured from the
// job's configuration (source, sink, checkpoint, state), and cuts the job
// into stages in job.mode distributed.
type Builder struct{}
