package testdriver_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

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
		testdriver.StartKafka(tb, runner.Job{Name: "wc", Dataflow: wordCount}, testdriver.KafkaOptions{
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
