package testdriver_test

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/testdriver"
)

// show is records as key=value, space-separated.
func show(rs []*kgo.Record) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%s=%s", r.Key, r.Value)
	}
	return strings.Join(out, " ")
}

func line(s string) *kgo.Record { return &kgo.Record{Value: []byte(s)} }

// Pipe lines in, checkpoint, and read what the sink committed: only
// output of checkpointed input is visible, as to a read_committed
// consumer. A crash loses what was not checkpointed, and the restored job
// reads it again: the counts go on exactly once.
func Example() {
	d := testdriver.New(nil, wordcount.Dataflow, testdriver.Options{})
	defer d.Close()

	d.Pipe(line("to be or"), line("not to be"))
	d.Checkpoint()
	fmt.Println(show(d.Committed()))

	d.Pipe(line("be quick"))
	fmt.Println("before the checkpoint:", len(d.Committed()), "committed")
	d.Crash()
	d.Checkpoint()
	fmt.Println(show(d.Committed()[6:]))
	// Output:
	// to=1 be=1 or=1 not=1 to=2 be=2
	// before the checkpoint: 6 committed
	// be=3 quick=1
}

// A job that keeps what it needs outside keyed state (here a count in a
// Go map) is right until it crashes: the restored job starts the map
// over while the committed counts go on. CheckExactlyOnce compares the
// committed output with a reference computed from the input, and finds
// it.
func ExampleDriver_CheckExactlyOnce() {
	reference := func(in []*kgo.Record) []*kgo.Record {
		n := map[string]int{}
		var out []*kgo.Record
		for _, r := range in {
			for _, w := range strings.Fields(string(r.Value)) {
				n[w]++
				out = append(out, &kgo.Record{Key: []byte(w), Value: []byte(strconv.Itoa(n[w]))})
			}
		}
		return out
	}
	for _, job := range []struct {
		name string
		df   jobs.Dataflow
	}{
		{"keyed state", wordcount.Dataflow},
		{"Go map", counting(func() engine.KeyedProcessFunction[string, string, *kgo.Record] { return &mapCounter{} })},
	} {
		d := testdriver.New(nil, job.df, testdriver.Options{})
		d.Pipe(line("a b a"))
		d.Checkpoint()
		d.Pipe(line("a b"))
		d.Crash()
		d.Pipe(line("b"))
		if err := d.CheckExactlyOnce(reference); err != nil {
			fmt.Printf("%s: %v\n", job.name, err)
		} else {
			fmt.Printf("%s: exactly once\n", job.name)
		}
		d.Close()
	}
	// Output:
	// keyed state: exactly once
	// Go map: testdriver: job test is not exactly-once: 6 committed records, 6 expected; missing [output "a"="3" (×1), output "b"="3" (×1)]; extra [output "a"="1" (×1), output "b"="1" (×1)]
}
