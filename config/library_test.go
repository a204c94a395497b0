package config

import (
	"strings"
	"testing"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/membership"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
)

// TestLibraryRefusalsNameTheKey: the checks config leaves to the library
// (engine, Kafka source and sink options) still name the key at fault,
// with the library's option and the bad value, one line each.
func TestLibraryRefusalsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want []string
	}{
		{[]string{"checkpoint.min_pause=-1s"}, []string{"config: checkpoint.min_pause: -1s is negative", "engine option Checkpoint.MinPause"}},
		{[]string{"checkpoint.tolerable_failures=-1"}, []string{"config: checkpoint.tolerable_failures: -1 is negative", "engine option Checkpoint.TolerableFailures"}},
		{[]string{"job.max_parallelism=40000", "job.parallelism=1"}, []string{"config: job.max_parallelism: 40000 is outside 1..32768", "engine option MaxParallelism"}},
		{[]string{"source.start=middle"}, []string{"config: source.start: \"middle\"", "kafka source option Reader.Start"}},
		{[]string{"source.start=timestamp"}, []string{"config: source.start_timestamp:", "kafka source option Reader.StartTime"}},
		{[]string{"source.on_decode_error=retry"}, []string{"config: source.on_decode_error: \"retry\"", "kafka source option OnDecodeError"}},
		{[]string{"source.on_decode_error=dead_letter"}, []string{"config: source.dead_letter_topic:", "kafka source option DeadLetterTopic"}},
		{[]string{"job.type=window", "window.key=u", "window.size=1s", "window.idle_timeout=-1s"}, []string{"config: window.idle_timeout: -1s is negative", "kafka source option IdleTimeout"}},
		{[]string{"sink.transaction_timeout=-1m"}, []string{"config: sink.transaction_timeout: -1m0s is negative", "kafka sink option TransactionTimeout"}},
		{[]string{"sink.delivery=twice"}, []string{"config: sink.delivery: \"twice\"", "kafka sink option Delivery"}},
	} {
		_, err := Load(Sources{File: writeFile(t, valid), Env: []string{}, Set: tc.set})
		if err == nil {
			t.Errorf("%v: loaded without error", tc.set)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not contain %q", tc.set, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans several lines: %q", tc.set, err)
		}
	}
}

// TestDefaultsAreTheLibrarys: config states no default the library
// already has; it refers to the library's.
func TestDefaultsAreTheLibrarys(t *testing.T) {
	d := Default()
	if d.Job.MaxParallelism != engine.DefaultMaxParallelism || d.Checkpoint.MaxConcurrent != engine.DefaultMaxConcurrentCheckpoints ||
		d.Sink.TransactionTimeout != sinkkafka.DefaultTransactionTimeout || d.Source.DiscoveryInterval != sourcekafka.DefaultDiscoveryInterval ||
		d.Source.OnOffsetOutOfRange != string(sourcekafka.DefaultOnOffsetOutOfRange) ||
		d.Distributed.SessionTimeout != membership.DefaultSessionTimeout || d.Distributed.RebalanceTimeout != membership.DefaultRebalanceTimeout ||
		d.Distributed.RevokeTimeout != membership.DefaultRevokeTimeout {
		t.Fatalf("Default() = %+v differs from the library's defaults", d)
	}
	cfg, err := Load(Sources{File: writeFile(t, valid), Env: []string{}, Set: []string{"checkpoint.max_concurrent=3"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := sinkkafka.MinSlots(3); cfg.Sink.Slots != want {
		t.Fatalf("sink.slots = %d with checkpoint.max_concurrent 3, want sinkkafka.MinSlots(3) = %d", cfg.Sink.Slots, want)
	}
}
