package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/examples/gowordcount/wordcount"
	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
	"github.com/onceflow/onceflow/runner"
	"github.com/onceflow/onceflow/testdriver"
)

// TestMain stops the Kafka cluster kafkatest started, if any.
func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// TestDataflowOnKafka runs the program in this process against a real
// Kafka cluster (here the test kit's; in a user's suite, the bootstrap
// address of the Kafka it started, a testcontainers Kafka module say),
// with package testdriver's StartKafka: the same run as the program's
// main, its checkpoints, its two-phase-commit sink. It cancels the job
// halfway (a crash: the checkpoint in flight is lost), runs it again,
// stops it with a savepoint, and checks that the committed counts are
// exactly once: for every word, the values 1 to its number of
// occurrences, each once.
func TestDataflowOnKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Kafka cluster (kafkatest.Bootstrap)")
	}
	bootstrap := strings.Join(kafkatest.Bootstrap(t), ",")
	kd := testdriver.StartKafka(t, runner.Job{Name: "gowordcount", Dataflow: wordcount.Dataflow}, testdriver.KafkaOptions{
		Bootstrap:  bootstrap,
		Partitions: 2,
		Set:        []string{"job.parallelism=2"},
	})
	occurrences := map[string]int{}
	produce := func(from, to int) {
		var rs []*kgo.Record
		for i := from; i < to; i++ {
			line := fmt.Sprintf("w%d w%d", i%7, i%3)
			for _, w := range strings.Fields(line) {
				occurrences[w]++
			}
			rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(line)})
		}
		kd.Produce(rs...)
	}
	produce(0, 50)
	kd.WaitCommitted(50, time.Minute)
	kd.Cancel() // a crash: what the checkpoint in flight holds is aborted
	produce(50, 100)
	kd.Restart() // from the latest completed checkpoint
	kd.WaitCommitted(200, time.Minute)
	if path := kd.Stop(); path == "" {
		t.Fatal("Stop returned no savepoint path")
	}
	if err := wordcount.CheckCounts(kd.Committed(), occurrences); err != nil {
		t.Fatal(err)
	}
}
