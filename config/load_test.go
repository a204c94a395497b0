package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const valid = `
job:        {name: wc-demo, type: wordcount, parallelism: 2}
kafka:      {brokers: ["127.0.0.1:9092"]}
source:     {topic: words, start: earliest}
sink:       {topic: counts, delivery: exactly_once, transactional_id_prefix: wc-demo}
checkpoint: {interval: 1s, mode: exactly_once, timeout: 60s, min_pause: 0s, max_concurrent: 1,
             tolerable_failures: 0, retain: 3, on_cancel: retain, dir: ./data/checkpoints}
state:      {backend: pebble, dir: ./data/state, incremental: true}
restart:    {strategy: fixed-delay, attempts: 5, delay: 2s}
http:       {listen: "127.0.0.1:8081"}
`

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileEnvAndFlagsOverrideInThatOrder(t *testing.T) {
	file := writeFile(t, valid)
	cfg, err := Load(Sources{File: file, Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Job.Parallelism != 2 || cfg.Checkpoint.Interval != time.Second || cfg.Restart.Attempts != 5 || cfg.Sink.Topic != "counts" {
		t.Fatalf("file values not loaded: %+v", cfg)
	}
	if cfg.Source.Group != "onceflow-wc-demo" || cfg.Sink.Slots != 5 {
		t.Fatalf("defaults not applied: group %q slots %d", cfg.Source.Group, cfg.Sink.Slots)
	}

	env := []string{"ONCEFLOW_CHECKPOINT_INTERVAL=250ms", "ONCEFLOW_KAFKA_BROKERS=a:1,b:2", "ONCEFLOW_JOB_PARALLELISM=3", "PATH=/bin"}
	cfg, err = Load(Sources{File: file, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Checkpoint.Interval != 250*time.Millisecond || cfg.Job.Parallelism != 3 || strings.Join(cfg.Kafka.Brokers, " ") != "a:1 b:2" {
		t.Fatalf("env did not override the file: interval %s parallelism %d brokers %v", cfg.Checkpoint.Interval, cfg.Job.Parallelism, cfg.Kafka.Brokers)
	}

	cfg, err = Load(Sources{File: file, Env: env, Set: []string{"checkpoint.interval=5s"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Checkpoint.Interval != 5*time.Second || cfg.Job.Parallelism != 3 {
		t.Fatalf("flag did not override env: %s", cfg.Checkpoint.Interval)
	}
}

func TestBadInputNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		set  []string
		want []string
	}{
		{name: "unknown key in file", file: strings.Replace(valid, "min_pause", "min_pasue", 1), want: []string{`"checkpoint.min_pasue"`, `did you mean "checkpoint.min_pause"`}},
		{name: "bad duration", file: strings.Replace(valid, "interval: 1s", "interval: 1x", 1), want: []string{"checkpoint.interval", "1x"}},
		{name: "bad duration from env", file: valid, env: []string{"ONCEFLOW_CHECKPOINT_TIMEOUT=soon"}, want: []string{"checkpoint.timeout"}},
		{name: "unknown env", file: valid, env: []string{"ONCEFLOW_CHECKPOINT_INTERVALL=1s"}, want: []string{"ONCEFLOW_CHECKPOINT_INTERVALL"}},
		{name: "unknown flag key", file: valid, set: []string{"sink.topics=x"}, want: []string{`"sink.topics"`}},
		{name: "out of range", file: strings.Replace(valid, "parallelism: 2", "parallelism: 0", 1), want: []string{"job.parallelism", "outside"}},
		{name: "missing topic", file: strings.Replace(valid, "topic: words, ", "", 1), want: []string{"source.topic: required"}},
		{name: "wrong type", file: strings.Replace(valid, "retain: 3", "retain: many", 1), want: []string{"checkpoint.retain"}},
		{name: "bad enum", file: strings.Replace(valid, "delivery: exactly_once", "delivery: twice", 1), want: []string{"sink.delivery", `"twice"`}},
		{name: "below minimum", file: valid, set: []string{"checkpoint.interval=1ms"}, want: []string{"checkpoint.interval", "minimum"}},
		{name: "too few slots", file: valid, set: []string{"checkpoint.max_concurrent=4", "sink.slots=13"}, want: []string{"sink.slots", "needs at least 14"}},
		{name: "bad broker", file: valid, env: []string{"ONCEFLOW_KAFKA_BROKERS=localhost"}, want: []string{"kafka.brokers", "host:port"}},
		{name: "token with a space", file: valid, env: []string{"ONCEFLOW_HTTP_TOKEN=two words"}, want: []string{"http.token", "printable ASCII"}},
		{name: "allowed host with a port", file: valid, set: []string{"http.allowed_hosts=processor:8081"}, want: []string{"http.allowed_hosts", `"processor:8081"`}},
		{name: "bad out-of-range policy", file: valid, set: []string{"source.on_offset_out_of_range=skip"},
			want: []string{"source.on_offset_out_of_range", `"skip"`, "fail, earliest, latest"}},
		{name: "a partition group's prefix", file: valid, set: []string{"sink.transactional_id_prefix=wc-pg12"},
			want: []string{"sink.transactional_id_prefix", `"wc-pg12"`, "partition group 12", `prefix "wc"`}},
		{name: "bad job mode", file: valid, set: []string{"job.mode=cluster"}, want: []string{"job.mode", `"cluster"`, "single, distributed"}},
		{name: "distributed on a local directory", file: valid, set: []string{"job.mode=distributed"}, want: []string{"checkpoint.dir", "job.mode distributed needs s3://"}},
		{name: "revoke past the rebalance", file: valid, set: []string{"job.mode=distributed", "checkpoint.dir=s3://bucket/p", "distributed.revoke_timeout=2m"},
			want: []string{"distributed.revoke_timeout", "below distributed.rebalance_timeout (1m0s)"}},
		{name: "negative partition groups", file: valid, set: []string{"job.partition_groups=-2"}, want: []string{"job.partition_groups", "-2"}},
		{name: "window without a key", file: valid, set: []string{"job.type=window", "window.size=10s"}, want: []string{"window.key: required"}},
		{name: "window kind", file: valid, set: []string{"job.type=window", "window.key=user", "window.kind=hopping"}, want: []string{"window.kind", `"hopping"`, "tumbling, sliding, session"}},
		{name: "window slide above size", file: valid, set: []string{"job.type=window", "window.key=u", "window.kind=sliding", "window.size=2s", "window.slide=5s"},
			want: []string{"window.slide", "above window.size 2s"}},
		{name: "session without a gap", file: valid, set: []string{"job.type=window", "window.key=u", "window.kind=session"}, want: []string{"window.gap", "positive"}},
		{name: "window sum without a field", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.aggregate=avg"}, want: []string{"window.field: required"}},
		{name: "negative lateness", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.allowed_lateness=-1s"}, want: []string{"window.allowed_lateness", "negative"}},
		{name: "late topic is the sink's", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.late_topic=counts"},
			want: []string{"window.late_topic", "is sink.topic"}},
		{name: "bad time format", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.time.format=unix"}, want: []string{"window.time.format", `"unix"`}},
		{name: "bad time domain", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.time.domain=ingestion"}, want: []string{"window.time.domain", `"ingestion"`, "event, processing"}},
		{name: "processing time with an event-time field", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.time.domain=processing", "window.time.field=ts"},
			want: []string{"window.time.field", `"ts"`, "arrival time"}},
		{name: "processing time with lateness", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.time.domain=processing", "window.allowed_lateness=1s"},
			want: []string{"window.allowed_lateness: 1s is set", "no record is late"}},
		{name: "processing time with a late topic", file: valid, set: []string{"job.type=window", "window.key=u", "window.size=1s", "window.time.domain=processing", "window.late_topic=late"},
			want: []string{"window.late_topic", `"late"`, "no record is late"}},
		{name: "negative savepoint bound", file: valid, env: []string{"ONCEFLOW_CHECKPOINT_RETAIN_SAVEPOINTS=-1"}, want: []string{"checkpoint.retain_savepoints", "-1"}},
		{name: "negative fetch bound", file: valid, set: []string{"source.fetch_max_bytes=-1"}, want: []string{"source.fetch_max_bytes", "-1", "negative"}},
		{name: "changelog limit below -1", file: valid, set: []string{"state.changelog_limit_bytes=-2"}, want: []string{"state.changelog_limit_bytes", "-2", "turns the changelog off"}},
		{name: "negative fetch pool", file: valid, set: []string{"source.fetch_pool_bytes=-1"}, want: []string{"source.fetch_pool_bytes", "-1", "negative"}},
		{name: "fetch bound beyond a request", file: valid, env: []string{"ONCEFLOW_SOURCE_FETCH_MAX_BYTES=4294967296"}, want: []string{"source.fetch_max_bytes", "4294967296", "above 2147483647"}},
		{name: "negative producer buffer", file: valid, set: []string{"sink.max_buffered_records=-10"}, want: []string{"sink.max_buffered_records", "-10", "negative"}},
		{name: "negative linger", file: valid, set: []string{"sink.linger=-5ms"}, want: []string{"sink.linger", "-5ms", "negative"}},
		{name: "memory budget not a size", file: valid, set: []string{"process.memory_budget=lots"}, want: []string{"process.memory_budget", `"lots"`, "170MiB"}},
		{name: "memory budget too small", file: valid, env: []string{"ONCEFLOW_PROCESS_MEMORY_BUDGET=10MiB"}, want: []string{"process.memory_budget", "10MiB is below 64MiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(Sources{File: writeFile(t, tc.file), Env: append([]string{}, tc.env...), Set: tc.set})
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Fatalf("error spans several lines: %q", err)
			}
		})
	}
}

// source.on_offset_out_of_range is fail unless set, and set like any key
// (the file, ONCEFLOW_SOURCE_ON_OFFSET_OUT_OF_RANGE, --set).
func TestOnOffsetOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		file string
		env  []string
		set  []string
		want string
	}{
		{file: valid, want: "fail"},
		{file: strings.Replace(valid, "start: earliest", "start: earliest, on_offset_out_of_range: latest", 1), want: "latest"},
		{file: valid, env: []string{"ONCEFLOW_SOURCE_ON_OFFSET_OUT_OF_RANGE=earliest"}, want: "earliest"},
		{file: valid, env: []string{"ONCEFLOW_SOURCE_ON_OFFSET_OUT_OF_RANGE=earliest"}, set: []string{"source.on_offset_out_of_range=fail"}, want: "fail"},
	} {
		cfg, err := Load(Sources{File: writeFile(t, tc.file), Env: append([]string{}, tc.env...), Set: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Source.OnOffsetOutOfRange; got != tc.want {
			t.Errorf("env %v set %v: source.on_offset_out_of_range = %q, want %q", tc.env, tc.set, got, tc.want)
		}
	}
}

func TestSlotsFollowMaxConcurrent(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want int
	}{
		{nil, 5},
		{[]string{"checkpoint.max_concurrent=4"}, 14},
		{[]string{"checkpoint.max_concurrent=2", "sink.slots=12"}, 12},
	} {
		cfg, err := Load(Sources{File: writeFile(t, valid), Set: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Sink.Slots != tc.want {
			t.Errorf("with %v sink.slots = %d, want %d", tc.set, cfg.Sink.Slots, tc.want)
		}
	}
}

func TestMissingFileIsNamed(t *testing.T) {
	_, err := Load(Sources{File: "/nonexistent/job.yaml", Env: []string{}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/job.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	cfg, err := Load(Sources{File: writeFile(t, valid), Env: []string{"ONCEFLOW_KAFKA_SASL_MECHANISM=plain",
		"ONCEFLOW_KAFKA_SASL_USERNAME=u", "ONCEFLOW_KAFKA_SASL_PASSWORD=hunter2"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Kafka.SASL.Password) != "hunter2" {
		t.Fatal("password not loaded")
	}
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg.Kafka)} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("password printed: %s", s)
		}
	}
}

// The HTTP token comes from the environment like every key, and never
// prints, not even in the error refusing it.
func TestHTTPTokenIsASecret(t *testing.T) {
	cfg, err := Load(Sources{File: writeFile(t, valid), Env: []string{"ONCEFLOW_HTTP_TOKEN=s3cr3t-t0ken",
		"ONCEFLOW_HTTP_ALLOWED_HOSTS=processor,onceflow.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.HTTP.Token) != "s3cr3t-t0ken" || strings.Join(cfg.HTTP.AllowedHosts, " ") != "processor onceflow.internal" {
		t.Fatalf("http keys not loaded: %q %v", cfg.HTTP.Token, cfg.HTTP.AllowedHosts)
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg, cfg.HTTP, cfg.HTTP); strings.Contains(s, "s3cr3t") {
		t.Fatalf("token printed: %s", s)
	}
	_, err = Load(Sources{File: writeFile(t, valid), Env: []string{"ONCEFLOW_HTTP_TOKEN=s3cr3t t0ken"}})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("refusal of a bad token: %v", err)
	}
}

// Every documented example in examples/ must load.
func TestExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, f := range files {
		if _, err := Load(Sources{File: f, Env: []string{}}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// kafka.outage_tolerance is checked against what the checkpoints allow:
// while the cluster is away every checkpoint times out, so an outage
// longer than (tolerable_failures + 1) × checkpoint.timeout cannot be
// waited out. An explicit value beyond that is refused with both keys
// and what to raise; the default shrinks to fit instead.
func TestOutageToleranceFitsTheFailedCheckpoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		env  []string
		want time.Duration // 0: refused
		msg  []string
	}{
		{name: "defaults", want: time.Minute},
		{name: "default shrinks to a short checkpoint timeout", set: []string{"checkpoint.timeout=10s"}, want: 10 * time.Second},
		{name: "default shrinks to the failures tolerated", set: []string{"checkpoint.timeout=10s", "checkpoint.tolerable_failures=2"}, want: 30 * time.Second},
		{name: "default kept when the checkpoints allow more", set: []string{"checkpoint.timeout=10s", "checkpoint.tolerable_failures=9"}, want: time.Minute},
		{name: "explicit within the budget", set: []string{"checkpoint.timeout=10s", "checkpoint.tolerable_failures=3", "kafka.outage_tolerance=40s"}, want: 40 * time.Second},
		{name: "explicit beyond the budget", set: []string{"checkpoint.timeout=10s", "kafka.outage_tolerance=25s"},
			msg: []string{"kafka.outage_tolerance: 25s is above (checkpoint.tolerable_failures 0 + 1) × checkpoint.timeout 10s = 10s",
				"raise checkpoint.tolerable_failures to 2 (or checkpoint.timeout to 25s), or lower kafka.outage_tolerance to 10s"}},
		{name: "explicit from the environment", env: []string{"ONCEFLOW_KAFKA_OUTAGE_TOLERANCE=2m"}, set: []string{"checkpoint.tolerable_failures=1", "checkpoint.timeout=45s"},
			msg: []string{"2m0s is above (checkpoint.tolerable_failures 1 + 1) × checkpoint.timeout 45s = 1m30s", "tolerable_failures to 2 (or checkpoint.timeout to 1m0s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(Sources{File: writeFile(t, valid), Env: append([]string{}, tc.env...), Set: tc.set})
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("loaded with kafka.outage_tolerance %s", cfg.Kafka.OutageTolerance)
				}
				for _, m := range tc.msg {
					if !strings.Contains(err.Error(), m) {
						t.Fatalf("error %q does not say %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Kafka.OutageTolerance != tc.want {
				t.Fatalf("kafka.outage_tolerance = %s, want %s", cfg.Kafka.OutageTolerance, tc.want)
			}
		})
	}
	// A file's value is explicit too.
	_, err := Load(Sources{File: writeFile(t, strings.Replace(valid, `kafka:      {brokers: ["127.0.0.1:9092"]}`,
		`kafka:      {brokers: ["127.0.0.1:9092"], outage_tolerance: 61s}`, 1)), Env: []string{}})
	if err == nil || !strings.Contains(err.Error(), "kafka.outage_tolerance: 1m1s is above") {
		t.Fatalf("a file's outage_tolerance beyond the budget: %v", err)
	}
	// The defaults lack only the required keys.
	d := Default()
	if err := d.Validate(); err == nil || strings.Contains(err.Error(), "outage_tolerance") {
		t.Fatalf("the defaults' outage tolerance is refused: %v", err)
	}
}

// checkpoint.retain_savepoints bounds the savepoints by default (10); 0
// keeps every one.
func TestRetainSavepoints(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want int
	}{{nil, 10}, {[]string{"ONCEFLOW_CHECKPOINT_RETAIN_SAVEPOINTS=0"}, 0}, {[]string{"ONCEFLOW_CHECKPOINT_RETAIN_SAVEPOINTS=2"}, 2}} {
		cfg, err := Load(Sources{File: writeFile(t, valid), Env: append([]string{}, tc.env...)})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Checkpoint.RetainSavepoints != tc.want {
			t.Errorf("with %v checkpoint.retain_savepoints = %d, want %d", tc.env, cfg.Checkpoint.RetainSavepoints, tc.want)
		}
	}
}

// The job configuration inside the Kubernetes example's ConfigMap loads
// too, as a distributed job with S3 checkpoints.
func TestKubernetesExampleJobLoads(t *testing.T) {
	files, _ := filepath.Glob("../examples/kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no Kubernetes example")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		found := false
		for {
			var doc struct {
				Kind string            `yaml:"kind"`
				Data map[string]string `yaml:"data"`
			}
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if doc.Kind != "ConfigMap" || doc.Data["job.yaml"] == "" {
				continue
			}
			found = true
			cfg, err := Load(Sources{File: writeFile(t, doc.Data["job.yaml"]), Env: []string{}})
			if err != nil {
				t.Fatalf("%s: job.yaml: %v", f, err)
			}
			if cfg.Job.Mode != "distributed" || !IsS3Dir(cfg.Checkpoint.Dir) {
				t.Fatalf("%s: job.yaml runs mode %s with checkpoint.dir %s; want a distributed job on S3", f, cfg.Job.Mode, cfg.Checkpoint.Dir)
			}
		}
		if !found {
			t.Fatalf("%s: no ConfigMap with a job.yaml", f)
		}
	}
}

// TestMemoryBoundsLoad: source.fetch_max_bytes and
// sink.max_buffered_records reach the configuration from a flag and from
// the environment; unset they stay 0, which the source and sink take as
// their defaults.
func TestMemoryBoundsLoad(t *testing.T) {
	cfg, err := Load(Sources{File: writeFile(t, valid)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.FetchMaxBytes != 0 || cfg.Sink.MaxBufferedRecords != 0 {
		t.Errorf("unset: source.fetch_max_bytes %d, sink.max_buffered_records %d, want 0 (the libraries' defaults)",
			cfg.Source.FetchMaxBytes, cfg.Sink.MaxBufferedRecords)
	}
	cfg, err = Load(Sources{File: writeFile(t, valid), Env: []string{"ONCEFLOW_SINK_MAX_BUFFERED_RECORDS=2500"},
		Set: []string{"source.fetch_max_bytes=4194304"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.FetchMaxBytes != 4<<20 || cfg.Sink.MaxBufferedRecords != 2500 {
		t.Errorf("set: source.fetch_max_bytes %d, sink.max_buffered_records %d, want 4194304 and 2500",
			cfg.Source.FetchMaxBytes, cfg.Sink.MaxBufferedRecords)
	}
}

// TestSinkCompressionLoad: sink.compression, sink.async_pre_commit,
// sink.async_commit and sink.linger reach the configuration from the
// environment, unset they stay empty, false and 0 (the sink's defaults:
// no compression, the flush at the barrier, no linger),
// and an unknown codec is refused naming the key.
func TestSinkCompressionLoad(t *testing.T) {
	cfg, err := Load(Sources{File: writeFile(t, valid)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sink.Compression != "" {
		t.Errorf("unset: sink.compression %q, want empty (the sink's default)", cfg.Sink.Compression)
	}
	if cfg.Sink.AsyncPreCommit {
		t.Error("unset: sink.async_pre_commit true, want false (the flush at the barrier keeps a partition's order)")
	}
	if cfg.Sink.Linger != 0 {
		t.Errorf("unset: sink.linger %s, want 0 (the sink's default)", cfg.Sink.Linger)
	}
	cfg, err = Load(Sources{File: writeFile(t, valid), Env: []string{"ONCEFLOW_SINK_COMPRESSION=lz4", "ONCEFLOW_SINK_ASYNC_PRE_COMMIT=true", "ONCEFLOW_SINK_ASYNC_COMMIT=true", "ONCEFLOW_SINK_LINGER=10ms"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sink.Compression != "lz4" || !cfg.Sink.AsyncPreCommit || !cfg.Sink.AsyncCommit || cfg.Sink.Linger != 10*time.Millisecond {
		t.Errorf("from the environment: sink.compression %q, sink.async_pre_commit %v, sink.async_commit %v, sink.linger %s; want lz4, true, true, 10ms",
			cfg.Sink.Compression, cfg.Sink.AsyncPreCommit, cfg.Sink.AsyncCommit, cfg.Sink.Linger)
	}
	_, err = Load(Sources{File: writeFile(t, valid), Set: []string{"sink.compression=brotli"}})
	if err == nil || !strings.Contains(err.Error(), "sink.compression") || !strings.Contains(err.Error(), "brotli") {
		t.Fatalf("sink.compression=brotli: %v, want a refusal naming the key and the value", err)
	}
}

// process.memory_budget takes bytes or a size with a unit, from the file,
// the environment or --set; unset it is the default, 0 turns it off.
func TestMemoryBudgetLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		set  []string
		want ByteSize
	}{
		{name: "unset", file: valid, want: DefaultMemoryBudget},
		{name: "off", file: valid + "process: {memory_budget: 0}\n", want: 0},
		{name: "file, with a unit", file: valid + "process: {memory_budget: 170MiB}\n", want: 170 << 20},
		{name: "file, in bytes", file: valid + "process: {memory_budget: 200000000}\n", want: 200000000},
		{name: "environment", file: valid, env: []string{"ONCEFLOW_PROCESS_MEMORY_BUDGET=1GiB"}, want: 1 << 30},
		{name: "flag, short unit", file: valid, set: []string{"process.memory_budget=512m"}, want: 512 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(Sources{File: writeFile(t, tc.file), Env: append([]string{}, tc.env...), Set: tc.set})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Process.MemoryBudget != tc.want {
				t.Fatalf("process.memory_budget %d, want %d", cfg.Process.MemoryBudget, tc.want)
			}
		})
	}
}
