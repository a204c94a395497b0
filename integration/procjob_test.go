package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/testkit/kafkatest"
)

// jobSpec is what the tests of the built processor vary in a job. The
// rest is the same for all: exactly_once with a 2m transaction timeout,
// checkpoints with a 30s timeout of which 3 are retained, no restart
// strategy (a failure ends the process, which the test sees), an HTTP
// listener on a free port.
type jobSpec struct {
	// typ is copy (default), wordcount or window.
	typ string
	// window is the window job's kind (default tumblingWindows).
	window *windowKind
	// partitions of the input and output topics (default 4).
	partitions int32
	// pebble keeps keyed state in Pebble under the job's directory
	// (default memory); full makes its checkpoints full, not
	// incremental, so that each has files of its own.
	pebble, full bool
	// interval between checkpoints (default 100ms).
	interval time.Duration
	// seed makes the feeder's input reproducible.
	seed uint64
}

// procJob is one job of the built processor on a test cluster: its
// topics, its configuration file, its checkpoint directory and the
// feeder of its input.
type procJob struct {
	t      *testing.T
	seeds  []string
	name   string
	in     string
	out    string
	dir    string
	cfg    string
	jobDir string // <checkpoint dir>/<job name>
	feed   *feeder
}

// newProcJob creates the job's topics on seeds and writes its
// configuration; prefix starts its name (and transactional id prefix).
func newProcJob(t *testing.T, seeds []string, prefix string, s jobSpec) *procJob {
	t.Helper()
	if s.typ == "" {
		s.typ = "copy"
	}
	if s.partitions == 0 {
		s.partitions = 4
	}
	if s.interval == 0 {
		s.interval = 100 * time.Millisecond
	}
	j := &procJob{t: t, seeds: seeds, dir: t.TempDir(),
		name: fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e6),
		in:   kafkatest.Topic(t, seeds, s.partitions), out: kafkatest.Topic(t, seeds, s.partitions)}
	extra := ""
	if s.typ == "window" && s.window == nil {
		s.window = tumblingWindows
	}
	if s.window != nil {
		extra = s.window.section()
	}
	stateLine := "{backend: memory}"
	if s.pebble {
		stateLine = fmt.Sprintf("{backend: pebble, dir: %s/state, incremental: %t}", j.dir, !s.full)
	}
	j.cfg = writeConfig(t, j.dir, fmt.Sprintf(`
job: {name: %s, type: %s, parallelism: 2}
kafka: {brokers: [%q]}
source: {topic: %s, start: earliest}
sink: {topic: %s, delivery: exactly_once, transactional_id_prefix: %s, transaction_timeout: 2m}
checkpoint: {interval: %s, timeout: 30s, retain: 3, dir: %s/checkpoints}
state: %s
restart: {strategy: none}
http: {listen: "127.0.0.1:0"}
%s`, j.name, s.typ, seeds[0], j.in, j.out, j.name, s.interval, j.dir, stateLine, extra))
	j.jobDir = filepath.Join(j.dir, "checkpoints", j.name)
	j.feed = &feeder{cl: kafkatest.Client(t, seeds, kgo.RequiredAcks(kgo.AllISRAcks())), topic: j.in,
		rng: rand.New(rand.NewPCG(s.seed, uint64(len(prefix))))}
	if s.window != nil {
		j.feed.line = s.window.line
	}
	return j
}

// run starts `processor run --config <the job's>` with more args; env
// entries are added to the environment.
func (j *procJob) run(env []string, args ...string) *child {
	j.t.Helper()
	return startChild(j.t, env, append([]string{"run", "--config", j.cfg}, args...)...)
}

// output reads the output topic under read_committed.
func (j *procJob) output() []*kgo.Record { return kafkatest.ReadCommitted(j.t, j.seeds, j.out) }

// flowUntil feeds `each` more input records (none for 0) every tick
// while c runs, until at least n output records are committed and c's
// HTTP API listens (so that a signal finds it running). It fails the
// test, naming what, if c exits or two minutes pass.
func (j *procJob) flowUntil(c *child, what string, n, each int) {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !eventually(ctx, 100*time.Millisecond, func() bool {
		if c.exited() {
			j.t.Fatalf("%s: the processor exited with %v:\n%s", what, c.err, c.tail())
		}
		if each > 0 {
			j.feed.produce(j.t, each)
		}
		return len(j.output()) >= n && strings.Contains(c.output.String(), "http listening")
	}) {
		j.t.Fatalf("%s: fewer than %d output records after 2 minutes:\n%s", what, n, c.tail())
	}
}

// waitOutput polls until at least n output records are committed and
// returns them; it fails the test, naming what, if c exits or d passes.
func (j *procJob) waitOutput(c *child, what string, n int, d time.Duration) []*kgo.Record {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got []*kgo.Record
	if !eventually(ctx, 500*time.Millisecond, func() bool {
		if c.exited() {
			j.t.Fatalf("%s: the processor exited with %v:\n%s", what, c.err, c.tail())
		}
		got = j.output()
		return len(got) >= n && strings.Contains(c.output.String(), "http listening")
	}) {
		j.t.Fatalf("%s: output incomplete after %s: %d of %d records:\n%s", what, d, len(got), n, c.tail())
	}
	return got
}
