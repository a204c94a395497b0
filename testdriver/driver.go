package testdriver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/manualclock"
	"github.com/onceflow/onceflow/internal/statebackend"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
)

// TB is the part of testing.TB the driver uses: *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Options configure a Driver. The zero value is a job named "test" with
// parallelism 1, one input partition, memory state and a 10 s bound on
// every step.
type Options struct {
	// Name is the job's name (job.name; default "test").
	Name string
	// Parallelism is job.parallelism, every operator's unless the
	// Dataflow chooses another (default 1).
	Parallelism int
	// Partitions is the number of partitions of the input topic (default
	// 1). Reader subtask i reads the partitions p with p mod Parallelism
	// = i, as the Kafka source spreads them.
	Partitions int
	// Topic and SinkTopic are source.topic and sink.topic, the topics the
	// piped and committed records name (defaults "input" and "output").
	Topic, SinkTopic string
	// Pebble keeps keyed state in Pebble under a temporary directory
	// instead of memory, as the processor does by default.
	Pebble bool
	// Config is the job's configuration as Builder.Config returns it
	// (default config.Default()); Name, Parallelism, Topic and SinkTopic,
	// when set, override its keys. The driver reads nothing else of it.
	Config *config.Config
	// StepTimeout bounds each step that waits for the job (Checkpoint,
	// AdvanceWatermark, Crash, Close; default 10 s). A step that runs out
	// fails the test, naming what it waited for.
	StepTimeout time.Duration
	// Logger receives the engine's logs (default: discarded).
	Logger *slog.Logger
	// ManualProcessingTime gives the job a processing-time clock that
	// moves only when the test calls AdvanceProcessingTime: the job's
	// processing-time timers (KeyedContext.RegisterProcessingTimeTimer)
	// fire then, and KeyedContext.CurrentProcessingTime reads it. Without
	// it the job's processing time is the real clock's and
	// AdvanceProcessingTime fails the test.
	ManualProcessingTime bool
	// ProcessingTimeStart is where the manual processing-time clock starts
	// (default: the real time when New is called, to the millisecond).
	// It keeps its time across Crash, as a restarted process's clock
	// would.
	ProcessingTimeStart time.Time
}

// Driver runs one Go job (a jobs.Dataflow) on the engine in memory,
// without Kafka: an in-memory input topic in place of jobs.Source, an
// in-memory two-phase-commit sink in place of jobs.Sink, checkpoints in a
// temporary directory (internal/checkpoint/dirstore). Periodic checkpoints are
// off: the test triggers them with Checkpoint.
//
// Every method must be called from the test's goroutine (the one that
// may call t.Fatalf). A step that fails, or a job that fails, fails the
// test through t.Fatalf naming the step and the job's error; with a nil
// t it panics with that message instead.
type Driver struct {
	t    TB
	df   jobs.Dataflow
	opts Options
	cfg  *config.Config
	dir  string
	rm   bool // dir is the driver's own (a nil t): Close removes it
	w    *world

	// clock is the processing time with Options.ManualProcessingTime,
	// else nil: it moves only in AdvanceProcessingTime, which fills the
	// channels of the timers it reaches before it returns, and the engine
	// fires a subtask's due timers before its next input.
	clock *manualclock.Clock

	job    *engine.Job
	cancel context.CancelFunc
	done   chan error
	closed bool
	failed bool // fatalf was called: Close reports nothing more
}

// New builds df with the driver's in-memory connectors and starts it.
// With a non-nil t the driver's directories are t.TempDir's and
// t.Cleanup closes the driver; with a nil t (an Example) they are under
// os.MkdirTemp, failures panic, and the caller must call Close. A
// Dataflow that does not build (an error of its own, or a broken rule of
// jobs.Dataflow) fails at once.
func New(t TB, df jobs.Dataflow, opts Options) *Driver {
	if t != nil {
		t.Helper()
	}
	if opts.Name == "" {
		opts.Name = "test"
	}
	opts.Parallelism = max(opts.Parallelism, 1)
	opts.Partitions = max(opts.Partitions, 1)
	opts.Topic = cmp.Or(opts.Topic, "input")
	opts.SinkTopic = cmp.Or(opts.SinkTopic, "output")
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var cfg config.Config
	if opts.Config != nil {
		cfg = *opts.Config
	} else {
		cfg = config.Default()
	}
	cfg.Job.Type, cfg.Job.Name, cfg.Job.Parallelism = "go", opts.Name, opts.Parallelism
	cfg.Source.Topic, cfg.Sink.Topic = opts.Topic, opts.SinkTopic
	d := &Driver{t: t, df: df, opts: opts, cfg: &cfg, w: newWorld(opts.Topic, opts.SinkTopic, opts.Partitions)}
	if opts.ManualProcessingTime {
		start := opts.ProcessingTimeStart
		if start.IsZero() {
			start = time.Now().Truncate(time.Millisecond)
		}
		d.clock = manualclock.New(start)
	}
	if t != nil {
		d.dir = t.TempDir()
		t.Cleanup(d.Close)
	} else {
		dir, err := os.MkdirTemp("", "testdriver-")
		if err != nil {
			d.fatalf("New: %v", err)
		}
		d.dir, d.rm = dir, true
	}
	if err := d.start(); err != nil {
		d.fatalf("New: %v", err)
	}
	return d
}

func (d *Driver) fatalf(format string, args ...any) {
	msg := fmt.Sprintf("testdriver: job %s: "+format, append([]any{d.opts.Name}, args...)...)
	d.failed = true
	if d.t == nil {
		panic(msg)
	}
	d.t.Helper()
	d.t.Fatalf("%s", msg)
}

// start builds the next engine job (generation w.gen+1) and runs it: it
// restores the latest completed checkpoint in the driver's storage, if
// any.
func (d *Driver) start() error {
	d.w.mu.Lock()
	d.w.gen++
	gen := d.w.gen
	d.w.resetPositions()
	d.w.mu.Unlock()
	storage, err := dirstore.NewFileStorage(filepath.Join(d.dir, "checkpoints"), d.opts.Name, dirstore.StorageOptions{})
	if err != nil {
		return err
	}
	var backend state.KeyedBackendFactory = statebackend.NewMemoryFactory()
	if d.opts.Pebble {
		backend = statebackend.NewPebbleFactory(statebackend.PebbleOptions{Dir: filepath.Join(d.dir, "state", "job-"+strconv.Itoa(gen))})
	}
	opts := engine.Options{
		Checkpoint:        engine.CheckpointOptions{RetainSavepoints: 2},
		Restart:           engine.NoRestart(),
		Storage:           storage,
		Backend:           backend,
		MaxParallelism:    d.cfg.Job.MaxParallelism,
		WatermarkInterval: 2 * time.Millisecond,
		Logger:            d.opts.Logger,
	}
	if d.clock != nil {
		d.clock.Forget() // the previous job's wake-ups, if any
		opts.ProcessingClock = d.clock
	}
	j := engine.NewJob(d.opts.Name, opts)
	if err := jobs.BuildWithConnectors(context.Background(), j, d.cfg, connectors{d.w}, d.df); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.job, d.cancel, d.done = j, cancel, make(chan error, 1)
	go func() { d.done <- j.Run(ctx) }()
	return nil
}

// connectors hand jobs.BuildWithConnectors the world's source and sink.
type connectors struct{ w *world }

func (c connectors) Source(string) engine.Source[*kgo.Record] { return source(c) }
func (c connectors) Sink(string) engine.Sink[*kgo.Record]     { return sink(c) }

// Pipe appends records to the input topic, each to its Partition (which
// must be below Options.Partitions), at the partition's next offset, with
// its Key, Value, Headers and Timestamp (a zero Timestamp reaches the job
// as engine.NoTimestamp). The records are copied; the job reads them
// asynchronously, in the order they were piped within a source subtask.
// Pipe does not wait for them: Checkpoint, AdvanceWatermark and Crash do.
func (d *Driver) Pipe(records ...*kgo.Record) {
	d.helper()
	d.live("Pipe")
	for _, r := range records {
		if r == nil {
			d.fatalf("Pipe: a nil record")
		}
		if r.Partition < 0 || int(r.Partition) >= d.opts.Partitions {
			d.fatalf("Pipe: record %q=%q: partition %d of topic %s, which has %d (Options.Partitions)", r.Key, r.Value, r.Partition, d.opts.Topic, d.opts.Partitions)
		}
		d.w.append(copyRecord(r))
	}
}

func (d *Driver) helper() {
	if d.t != nil {
		d.t.Helper()
	}
}

func (d *Driver) live(step string) {
	if d.closed {
		d.fatalf("%s after Close", step)
	}
}

// wait blocks until cond (called with w.mu held) is true, the job ends
// (a failure: the job's error) or the step's time runs out.
func (d *Driver) wait(ctx context.Context, what string, cond func() bool) error {
	for {
		d.w.mu.Lock()
		ok, wake := cond(), d.w.wake
		d.w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-wake:
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("the job ended while waiting for %s: %w", what, err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: no progress in %s (Options.StepTimeout)", what, d.opts.StepTimeout)
		}
	}
}

// Checkpoint waits until the job has read every record piped so far,
// takes a checkpoint (a savepoint, whose barrier follows those records)
// and waits until every sink committed it (the driver's and any sink of
// the user's own, told of the completion): afterwards Committed holds the
// output of every record piped before the call. A job that fails, or a
// checkpoint that fails or does not complete within Options.StepTimeout,
// fails the test.
func (d *Driver) Checkpoint() {
	d.helper()
	d.live("Checkpoint")
	if err := d.checkpoint(); err != nil {
		d.fatalf("Checkpoint: %v", err)
	}
}

func (d *Driver) checkpoint() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.StepTimeout)
	defer cancel()
	if err := d.wait(ctx, "the source to read every piped record", d.w.consumedLocked); err != nil {
		return err
	}
	// The savepoint runs on its own goroutine so that a job failing
	// meanwhile is reported as the job's failure.
	type result struct {
		path string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		p, err := d.job.TriggerSavepoint(ctx)
		res <- result{p, err}
	}()
	var r result
	select {
	case r = <-res:
	case err := <-d.done:
		d.done <- err
		return fmt.Errorf("the job ended during the checkpoint: %w", err)
	}
	if r.err != nil {
		// A savepoint fails when its attempt ends: report why it ended.
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("the job ended during the checkpoint: %w", err)
		case <-time.After(time.Second):
			return r.err
		}
	}
	id, err := checkpointID(r.path)
	if err != nil {
		return err
	}
	// Every sink commits on the notification of the checkpoint's
	// completion, which reaches the subtasks after TriggerSavepoint
	// returned: a sink of the user's own (a twophase.Writer of theirs)
	// has committed once every subtask was notified.
	return d.waitStatus(ctx, fmt.Sprintf("every sink to commit checkpoint %d", id), func(st engine.Status) bool { return st.LastNotified >= id })
}

// waitStatus polls the job's Status until cond is true, the job ends (a
// failure: the job's error) or the step's time runs out.
func (d *Driver) waitStatus(ctx context.Context, what string, cond func(engine.Status) bool) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond(d.job.Status()) {
		select {
		case <-tick.C:
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("the job ended while waiting for %s: %w", what, err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: no progress in %s (Options.StepTimeout)", what, d.opts.StepTimeout)
		}
	}
	return nil
}

// checkpointID is the id of the savepoint at path (<dir>/savepoint-<id>).
func checkpointID(path string) (int64, error) {
	base := filepath.Base(path)
	_, idText, ok := strings.Cut(base, "-")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("the savepoint's path %s has no checkpoint id", path)
	}
	return id, nil
}

// AdvanceWatermark makes the source report watermark ts (ms since the
// Unix epoch) once it has read every record piped before the call, and
// waits until every operator's watermark reached ts, so that the
// event-time timers and windows due by ts have fired. The watermark
// promises that no record piped later has a timestamp <= ts: such a
// record is late for the job. A watermark below an earlier one changes
// nothing. It does not checkpoint: what the timers emitted is committed
// by the next Checkpoint. The watermark survives a Crash (the restored
// source reports it again once it has re-read the records before it).
func (d *Driver) AdvanceWatermark(ts int64) {
	d.helper()
	d.live("AdvanceWatermark")
	d.w.mu.Lock()
	lens := make([]int64, len(d.w.parts))
	for p, recs := range d.w.parts {
		lens[p] = int64(len(recs))
	}
	d.w.advances = append(d.w.advances, advance{ts: ts, lens: lens})
	d.w.changedLocked()
	d.w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.StepTimeout)
	defer cancel()
	behind := ""
	err := d.waitStatus(ctx, "every operator's watermark", func(st engine.Status) bool {
		behind = ""
		for _, op := range st.Operators {
			if op.Watermark < ts {
				behind = op.UID
				break
			}
		}
		return len(st.Operators) > 0 && behind == ""
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		d.fatalf("AdvanceWatermark(%d): operator %q did not reach it within %s (Options.StepTimeout)", ts, behind, d.opts.StepTimeout)
	default:
		d.fatalf("AdvanceWatermark(%d): %v", ts, err)
	}
}

// AdvanceProcessingTime moves the job's processing-time clock on by dur
// (Options.ManualProcessingTime) and returns once every processing-time
// timer it moved past has fired (a timer at t fires once the clock reads
// t+1 ms or later, as in Flink) and what those timers emitted is
// committed.
// To keep the order of records and timers deterministic it takes a
// checkpoint before moving the clock (as Checkpoint does: every record
// piped so far is processed and its output committed first) and another
// after the timers fired. A timer whose time the clock passed fires once,
// with its own time as ts; a timer registered later for a time already
// passed fires at once. The clock keeps its time across Crash: timers
// restored from the checkpoint that the clock has passed fire when the
// job starts again. A driver without Options.ManualProcessingTime, a
// negative dur, or a checkpoint that fails fails the test.
func (d *Driver) AdvanceProcessingTime(dur time.Duration) {
	d.helper()
	d.live("AdvanceProcessingTime")
	if d.clock == nil {
		d.fatalf("AdvanceProcessingTime(%s): the driver's processing time is the real clock's; set Options.ManualProcessingTime to move it", dur)
	}
	if dur < 0 {
		d.fatalf("AdvanceProcessingTime(%s): processing time does not go back", dur)
	}
	if err := d.checkpoint(); err != nil {
		d.fatalf("AdvanceProcessingTime(%s): the checkpoint before moving the clock: %v", dur, err)
	}
	d.clock.Advance(dur)
	if err := d.checkpoint(); err != nil {
		d.fatalf("AdvanceProcessingTime(%s): the checkpoint after the timers fired: %v", dur, err)
	}
}

// ProcessingTime is the job's processing time: the manual clock's with
// Options.ManualProcessingTime, else the real one.
func (d *Driver) ProcessingTime() time.Time {
	if d.clock == nil {
		return time.Now()
	}
	return d.clock.Now()
}

// Committed returns what the sink committed so far, in commit order: the
// records a read_committed consumer of the output topics would see. Each
// is a copy, with Topic set (the record's own, else Options.SinkTopic)
// and Offset its position in the list. Output of records after the last
// Checkpoint is not there yet.
func (d *Driver) Committed() []*kgo.Record {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	out := make([]*kgo.Record, len(d.w.committed))
	for i, r := range d.w.committed {
		out[i] = copyRecord(r)
	}
	return out
}

// Input returns copies of every record piped so far, in the order they
// were piped, with Topic and Offset set.
func (d *Driver) Input() []*kgo.Record {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	type entry struct {
		seq int64
		r   *kgo.Record
	}
	var all []entry
	for p, recs := range d.w.parts {
		for i, r := range recs {
			all = append(all, entry{d.w.seqs[p][i], copyRecord(r)})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]*kgo.Record, len(all))
	for i, e := range all {
		out[i] = e.r
	}
	return out
}

// Crash simulates the process dying: it waits until the job has read
// every record piped so far (so they are in flight, or processed and not
// yet committed), cancels the job without a savepoint and waits for it to
// end, then builds the Dataflow again (as a restarted process does) and
// starts it from the latest completed checkpoint, or from the start when
// there is none. The new job's sink commits the transactions that
// checkpoint holds and aborts every other transaction the crashed job
// left, so their output is never committed; its source reads again from
// the checkpoint's offsets, so every record piped after the checkpoint is
// delivered again, as Kafka would. Keyed state, timers and operator state
// are the checkpoint's; anything a Dataflow keeps outside them (a Go map,
// a package variable) is not restored, which is the bug a test that
// crashes finds. Crash fails the test when the job had already failed or
// the new one does not build.
func (d *Driver) Crash() {
	d.helper()
	d.live("Crash")
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.StepTimeout)
	defer cancel()
	if err := d.wait(ctx, "the source to read every piped record", d.w.consumedLocked); err != nil {
		d.fatalf("Crash: %v", err)
	}
	if err := d.stop(ctx); err != nil {
		d.fatalf("Crash: %v", err)
	}
	if err := d.start(); err != nil {
		d.fatalf("Crash: restarting: %v", err)
	}
}

// stop cancels the running job, if any, and waits for Run to return; an
// error other than the cancellation is the job's failure.
func (d *Driver) stop(ctx context.Context) error {
	if d.cancel == nil {
		return nil // none runs: a start failed
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("the job had failed: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the job did not end within %s of its cancellation (Options.StepTimeout)", d.opts.StepTimeout)
	}
}

// Close cancels the job, without a checkpoint, and waits for it to end;
// with a nil t it also removes the driver's directories. It fails the
// test when the job had failed. A second Close does nothing; New's
// t.Cleanup calls it.
func (d *Driver) Close() {
	d.helper()
	if d.closed {
		return
	}
	d.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.StepTimeout)
	defer cancel()
	err := d.stop(ctx)
	if d.rm {
		if rmErr := os.RemoveAll(d.dir); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	if err != nil && !d.failed {
		d.fatalf("Close: %v", err)
	}
}

// CheckExactlyOnce takes a checkpoint (as Checkpoint does) and compares
// what the sink committed with reference(Input()), the output the job
// should have committed for the records piped so far, exactly once. The
// comparison is of multisets of (topic, key, value): the order across
// keys and subtasks is free. It returns nil when they match, else an
// error listing up to 10 records missing and 10 extra (written twice, or
// wrong). A nil topic in a reference record means Options.SinkTopic.
func (d *Driver) CheckExactlyOnce(reference func(in []*kgo.Record) []*kgo.Record) error {
	d.helper()
	d.live("CheckExactlyOnce")
	if err := d.checkpoint(); err != nil {
		d.fatalf("CheckExactlyOnce: %v", err)
	}
	want := reference(d.Input())
	got := d.Committed()
	count := map[string]int{}
	show := map[string]string{}
	for _, r := range want {
		c := copyRecord(r)
		c.Topic = cmp.Or(c.Topic, d.opts.SinkTopic)
		k := recordKey(c)
		count[k]++
		show[k] = describe(c)
	}
	for _, r := range got {
		k := recordKey(r)
		count[k]--
		show[k] = describe(r)
	}
	var missing, extra []string
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch n := count[k]; {
		case n > 0:
			missing = append(missing, fmt.Sprintf("%s (×%d)", show[k], n))
		case n < 0:
			extra = append(extra, fmt.Sprintf("%s (×%d)", show[k], -n))
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	return fmt.Errorf("testdriver: job %s is not exactly-once: %d committed records, %d expected; missing %s; extra %s",
		d.opts.Name, len(got), len(want), list(missing), list(extra))
}

func recordKey(r *kgo.Record) string {
	var b bytes.Buffer
	for _, part := range [][]byte{[]byte(r.Topic), r.Key, r.Value} {
		b.WriteString(strconv.Itoa(len(part)))
		b.WriteByte(':')
		b.Write(part)
	}
	return b.String()
}

func list(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	if len(xs) > 10 {
		return "[" + strings.Join(xs[:10], ", ") + fmt.Sprintf(", … %d more]", len(xs)-10)
	}
	return "[" + strings.Join(xs, ", ") + "]"
}
