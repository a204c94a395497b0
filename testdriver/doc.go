// Package testdriver runs a Go job's dataflow (a jobs.Dataflow) in
// memory, without Kafka, for unit tests that run on every save, as Kafka
// Streams' TopologyTestDriver does for a topology, and runs a Go job's
// program in the test's process against a real Kafka cluster the test
// suite started (StartKafka; see "On a real Kafka" below).
//
// The driver builds the Dataflow as package runner would, except that
// jobs.Source reads an in-memory input topic the test fills with Pipe,
// and jobs.Sink writes to an in-memory exactly-once sink: a transaction
// per sink subtask and checkpoint, prepared at the checkpoint's barrier
// and committed once the checkpoint completes. Committed returns what a
// read_committed consumer would see. The job runs on the engine with the
// memory state backend (or Pebble, Options.Pebble) and checkpoints in a
// temporary directory; checkpoints are taken only by the steps that say
// so: Checkpoint, CheckExactlyOnce and AdvanceProcessingTime.
//
// Crash simulates a crash between any two steps: the job is cancelled
// without a savepoint, its uncommitted output and in-flight records are
// lost, and the Dataflow is built again and restored from the latest
// completed checkpoint, its source re-reading every record piped after
// that checkpoint. A job that keeps everything it needs in keyed or
// operator state commits, across crashes, exactly the output it would
// have committed without them; CheckExactlyOnce compares what was
// committed with a reference computed from the input.
//
// A typical test:
//
//	d := testdriver.New(t, myjob.Dataflow, testdriver.Options{})
//	d.Pipe(&kgo.Record{Key: []byte("k"), Value: []byte("v")})
//	d.Checkpoint()
//	d.Pipe(&kgo.Record{Key: []byte("k"), Value: []byte("w")})
//	d.Crash()
//	if err := d.CheckExactlyOnce(reference); err != nil {
//		t.Fatal(err)
//	}
//
// Differences from a job on Kafka: a record the Dataflow's decode function
// refuses fails the job (no source.on_decode_error policy), jobs.KeyBy is
// always engine.KeyBy (job.mode single), and the engine's processing-time
// clock is the real one unless Options.ManualProcessingTime hands it to
// the test, which moves it with AdvanceProcessingTime.
//
// # On a real Kafka
//
// StartKafka runs the job's program in the test's process against a
// Kafka cluster the test suite started itself (a testcontainers Kafka
// module, a cluster in CI), by its bootstrap address: the same code path
// as the program's main (runner.Execute "run"), so the job gets its
// configuration, checkpoints and state under t.TempDir, the Kafka source
// and the two-phase-commit Kafka sink. The test produces input, waits for
// committed output as a read_committed consumer sees it, and stops the
// job with a savepoint:
//
//	kd := testdriver.StartKafka(t, runner.Job{Name: "wc", Dataflow: myjob.Dataflow},
//		testdriver.KafkaOptions{Bootstrap: bootstrap})
//	kd.Produce(&kgo.Record{Value: []byte("the cat")})
//	kd.WaitCommitted(2, time.Minute)
//	kd.Stop()
//	out := kd.Committed()
//
// Cancel ends the job without a savepoint (a crash) and Restart runs it
// again from its latest checkpoint. A cluster that does not answer fails
// StartKafka with a message naming the bootstrap address.
// examples/gowordcount's TestDataflowOnKafka is a whole test, and
// examples/testcontainers starts Kafka and the processor's Docker image
// with testcontainers-go (it skips, saying where it looked, where no
// Docker engine answers).
package testdriver
