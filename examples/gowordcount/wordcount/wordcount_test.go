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

// CheckCounts passes the counts 1..n of every word, in any order, and
// names each word whose counts repeat or miss one, and each word never
// produced.
func TestCheckCounts(t *testing.T) {
	rec := func(w, n string) *kgo.Record { return &kgo.Record{Key: []byte(w), Value: []byte(n)} }
	if err := wordcount.CheckCounts([]*kgo.Record{rec("b", "1"), rec("a", "2"), rec("a", "1")}, map[string]int{"a": 2, "b": 1}); err != nil {
		t.Fatalf("exactly-once counts refused: %v", err)
	}
	err := wordcount.CheckCounts([]*kgo.Record{rec("a", "1"), rec("a", "1"), rec("c", "1")}, map[string]int{"a": 2, "b": 1})
	for _, want := range []string{"word a: committed counts [1 1], want 1..2", "word b: committed counts [], want 1..1", "word c: committed counts [1] for a word never produced"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("CheckCounts: %v; want it to say %q", err, want)
		}
	}
}
