package testdriver_test

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/runner"
	"github.com/onceflow/onceflow/testdriver"
)

// fatalTB is a testdriver.TB whose Fatalf records the message and ends
// the step by a panic that catch recovers.
type fatalTB struct {
	*testing.T
	msg string
}

type fatalled struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalled{})
}

// catch runs step and returns what it failed the test with ("" if
// nothing).
func (f *fatalTB) catch(step func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatalled); !ok {
				panic(r)
			}
			msg = f.msg
		}
	}()
	step()
	return ""
}

// A bootstrap address where no Kafka answers fails StartKafka with a
// message naming the address, within KafkaOptions.ConnectTimeout.
func TestStartKafkaNamesTheAddressWhereNoKafkaAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	tb := &fatalTB{T: t}
	start := time.Now()
	msg := tb.catch(func() {
		testdriver.StartKafka(tb, runner.Job{Name: "wc", Dataflow: wordcount.Dataflow}, testdriver.KafkaOptions{
			Bootstrap: addr, ConnectTimeout: time.Second})
	})
	want := "no Kafka answers at " + addr + " (KafkaOptions.Bootstrap)"
	if !strings.Contains(msg, want) {
		t.Fatalf("StartKafka failed with %q, want it to say %q", msg, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("StartKafka took %s to give up, with ConnectTimeout 1s", d)
	}
}

// A job that ends while it starts (here: a configuration its program
// refuses) fails StartKafka with its exit code and the end of its log,
// which names the key.
func TestStartKafkaReportsAJobThatEndsWhileStarting(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	tb := &fatalTB{T: t}
	msg := tb.catch(func() {
		testdriver.StartKafka(tb, runner.Job{Name: "wc", Dataflow: wordcount.Dataflow}, testdriver.KafkaOptions{
			Bootstrap: cluster.ListenAddrs()[0], Set: []string{"checkpoint.interval=soon"}})
	})
	for _, want := range []string{"the job ended while starting (exit 2)", "checkpoint.interval"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("StartKafka failed with %q, want it to say %q", msg, want)
		}
	}
}

// AdvanceProcessingTime on a driver whose processing time is the real
// clock's fails the test, saying which option hands the clock over.
func TestAdvanceProcessingTimeNeedsTheManualClock(t *testing.T) {
	tb := &fatalTB{T: t}
	d := testdriver.New(tb, wordcount.Dataflow, testdriver.Options{})
	msg := tb.catch(func() { d.AdvanceProcessingTime(time.Second) })
	if want := "set Options.ManualProcessingTime"; !strings.Contains(msg, want) {
		t.Fatalf("AdvanceProcessingTime failed with %q, want it to say %q", msg, want)
	}
}

// The driver's steps on franz-go's in-memory fake cluster (kfake) standing
// in for the suite's Kafka: produce, wait for the committed counts,
// cancel without a savepoint (a crash), produce more, restart, stop with
// a savepoint; the committed counts are exactly once.
// examples/gowordcount's TestDataflowOnKafka does the same on a real
// broker.
func TestKafkaDriverOnAFakeCluster(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	kd := testdriver.StartKafka(t, runner.Job{Name: "wc", Dataflow: wordcount.Dataflow}, testdriver.KafkaOptions{
		Bootstrap: cluster.ListenAddrs()[0], Partitions: 2, Set: []string{"job.parallelism=2"}})
	var in []*kgo.Record
	produce := func(lines ...string) {
		for _, l := range lines {
			r := &kgo.Record{Key: []byte(l), Value: []byte(l)}
			in = append(in, r)
			kd.Produce(r)
		}
	}
	produce("a b", "a c", "b b")
	kd.WaitCommitted(6, time.Minute)
	kd.Cancel()
	produce("c a", "d")
	kd.Restart()
	kd.WaitCommitted(9, time.Minute)
	if path := kd.Stop(); !strings.Contains(path, "savepoint-") {
		t.Fatalf("Stop returned %q, want a savepoint's path", path)
	}
	got := map[string][]string{}
	for _, r := range kd.Committed() {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	for _, w := range []string{"a", "b", "c", "d"} {
		slices.Sort(got[w])
	}
	want := map[string][]string{"a": {"1", "2", "3"}, "b": {"1", "2", "3"}, "c": {"1", "2"}, "d": {"1"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("committed counts %v, want %v (each once)", got, want)
	}
}
