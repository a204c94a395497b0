package wordcount_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/testdriver"
)

// The Dataflow unit-tested in memory with package testdriver: lines in,
// a checkpoint, the counts the sink committed.
func ExampleDataflow() {
	d := testdriver.New(nil, wordcount.Dataflow, testdriver.Options{})
	defer d.Close()
	d.Pipe(&kgo.Record{Value: []byte("the cat")}, &kgo.Record{Value: []byte("the dog")})
	d.Checkpoint()
	for _, r := range d.Committed() {
		fmt.Printf("%s %s\n", r.Key, r.Value)
	}
	// Output:
	// the 1
	// cat 1
	// the 2
	// dog 1
}

// TestDataflowExactlyOnceAcrossCrashes crashes the job between steps, on
// three subtasks over six partitions, and checks that the committed
// counts are exactly those of the input.
func TestDataflowExactlyOnceAcrossCrashes(t *testing.T) {
	d := testdriver.New(t, wordcount.Dataflow, testdriver.Options{Parallelism: 3, Partitions: 6, Pebble: true})
	for i := range 60 {
		d.Pipe(&kgo.Record{Partition: int32(i % 6), Value: []byte(fmt.Sprintf("w%d w%d", i%7, i%4))})
		switch i {
		case 15, 40:
			d.Checkpoint()
		case 20, 21, 50:
			d.Crash()
		}
	}
	if err := d.CheckExactlyOnce(func(in []*kgo.Record) []*kgo.Record {
		n := map[string]int{}
		var out []*kgo.Record
		for _, r := range in {
			for _, w := range strings.Fields(string(r.Value)) {
				n[w]++
				out = append(out, &kgo.Record{Key: []byte(w), Value: []byte(strconv.Itoa(n[w]))})
			}
		}
		return out
	}); err != nil {
		t.Fatal(err)
	}
}
