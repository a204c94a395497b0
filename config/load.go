package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/optcheck"
	"github.com/onceflow/onceflow/internal/outage"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
)

// EnvPrefix starts every environment variable that sets a key: the key
// upper-cased with dots as underscores (checkpoint.interval is
// ONCEFLOW_CHECKPOINT_INTERVAL).
const EnvPrefix = "ONCEFLOW"

// envNotKeys are ONCEFLOW_ variables that are not configuration keys:
// the failpoints, and the knobs of the test kit, the local broker and the
// crash tests, which a developer's shell may export while running jobs.
var envNotKeys = []string{"ONCEFLOW_FAILPOINTS", "ONCEFLOW_CACHE_DIR", "ONCEFLOW_KAFKA_VERSION",
	"ONCEFLOW_KAFKA", "ONCEFLOW_CRASH_KILLS", "ONCEFLOW_BENCH_STATE_MB",
	// the S3 test kit's (internal/testkit/s3test)
	"ONCEFLOW_S3_ENDPOINT", "ONCEFLOW_S3_ACCESS_KEY_ID", "ONCEFLOW_S3_SECRET_ACCESS_KEY", "ONCEFLOW_S3_BUCKET", "ONCEFLOW_S3_REGION"}

// Default returns the configuration every key falls back to.
func Default() Config {
	return Config{
		Job:   Job{Type: "wordcount", Parallelism: 1, MaxParallelism: engine.DefaultMaxParallelism, OperatorChaining: true, Mode: "single"},
		Kafka: Kafka{Brokers: []string{"127.0.0.1:9092"}, OutageTolerance: outage.DefaultTolerance},
		Source: Source{Start: string(sourcekafka.StartEarliest), Isolation: "read_committed", DiscoveryInterval: sourcekafka.DefaultDiscoveryInterval,
			OnDecodeError: string(sourcekafka.DecodeFail), OnOffsetOutOfRange: string(sourcekafka.DefaultOnOffsetOutOfRange)},
		Sink: Sink{Delivery: string(sinkkafka.DeliveryExactlyOnce), TransactionTimeout: sinkkafka.DefaultTransactionTimeout},
		// checkpoint.timeout's default is the processor's own (a minute,
		// shorter than the library's engine.DefaultCheckpointTimeout, so
		// that a stuck checkpoint and an outage are noticed sooner).
		Checkpoint: Checkpoint{Interval: time.Second, Mode: "exactly_once", Timeout: time.Minute, MaxConcurrent: engine.DefaultMaxConcurrentCheckpoints,
			Retain: 3, RetainSavepoints: 10, OnCancel: "retain", Dir: "./data/checkpoints",
			S3: S3{Region: objstore.DefaultRegion}},
		State: State{Backend: "pebble", Dir: "./data/state", Incremental: true, LocalRecovery: true},
		Restart: Restart{Strategy: "exponential-delay", Attempts: 3, Delay: time.Second, MaxFailures: 3, Interval: time.Minute,
			InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2, ResetAfter: 10 * time.Minute, Jitter: 0.1},
		Aggregate: Aggregate{Function: "count"},
		Window: Window{Aggregate: "count", Kind: "tumbling", Time: WindowTime{Domain: "event", Format: "epoch_millis"},
			IdleTimeout: 30 * time.Second},
		Distributed: Distributed{SessionTimeout: membership.DefaultSessionTimeout, RebalanceTimeout: membership.DefaultRebalanceTimeout,
			RevokeTimeout: membership.DefaultRevokeTimeout},
		HTTP:    HTTP{Listen: "127.0.0.1:8081"},
		Log:     Log{Format: "text", Level: "info"},
		Process: Process{MemoryBudget: DefaultMemoryBudget},
	}
}

// Sources are where Load reads keys from, lowest precedence first.
type Sources struct {
	// File is a YAML file; empty for none.
	File string
	// Env is the environment (os.Environ() when nil).
	Env []string
	// Set holds key=value overrides from flags (highest precedence).
	Set []string
	// Defaults replace Default()'s value of the keys they name (a Go
	// job's runner makes job.type go and job.name the program's job name
	// its defaults); File, Env and Set still override them. An unknown
	// key is an error.
	Defaults map[string]any
}

// Load builds the configuration from defaults, File, Env and Set, decodes
// it strictly and validates it. Every error names the key (or file, or
// variable) at fault.
func Load(src Sources) (*Config, error) {
	keys := Keys()
	v := viper.New()
	defaults := map[string]any{}
	flatten("", reflect.ValueOf(Default()), defaults)
	for k, val := range src.Defaults {
		k = strings.ToLower(k)
		if _, ok := defaults[k]; !ok {
			return nil, fmt.Errorf("default for unknown key %q%s", k, suggest(k, keys))
		}
		defaults[k] = val
	}
	for k, val := range defaults {
		v.SetDefault(k, val)
	}

	// explicit are the keys the file, the environment or a flag set; a
	// derived default never overrides them.
	explicit := map[string]bool{}
	if src.File != "" {
		fv := viper.New()
		fv.SetConfigFile(src.File)
		fv.SetConfigType("yaml")
		if err := fv.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", src.File, err)
		}
		for _, k := range fv.AllKeys() {
			if !slices.Contains(keys, k) {
				return nil, fmt.Errorf("config file %s: unknown key %q%s", src.File, k, suggest(k, keys))
			}
			explicit[k] = true
		}
		if err := v.MergeConfigMap(fv.AllSettings()); err != nil {
			return nil, fmt.Errorf("config file %s: %w", src.File, err)
		}
	}

	env := src.Env
	if env == nil {
		env = os.Environ()
	}
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || slices.Contains(envNotKeys, name) {
			continue
		}
		key, ok := keyForEnv(name, keys)
		if !ok {
			return nil, fmt.Errorf("environment variable %s names no configuration key", name)
		}
		v.Set(key, val)
		explicit[key] = true
	}

	for _, kv := range src.Set {
		key, val, found := strings.Cut(kv, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if !found {
			return nil, fmt.Errorf("--set %q: want key=value", kv)
		}
		if !slices.Contains(keys, key) {
			return nil, fmt.Errorf("--set: unknown key %q%s", key, suggest(key, keys))
		}
		v.Set(key, val)
		explicit[key] = true
	}

	var cfg Config
	err := v.Unmarshal(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationHook,
		byteSizeHook,
		mapstructure.StringToSliceHookFunc(","),
		mapstructure.StringToTimeHookFunc(time.RFC3339),
	)), func(dc *mapstructure.DecoderConfig) { dc.ErrorUnused = true; dc.WeaklyTypedInput = true })
	if err != nil {
		return nil, decodeError(err)
	}
	cfg.fillDerived(explicit)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// byteSizeHook parses a ByteSize written with a unit, saying which value
// was wrong and what a right one looks like.
func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeOf(ByteSize(0)) {
		return data, nil
	}
	n, err := units.RAMInBytes(strings.TrimSpace(data.(string)))
	if err != nil {
		return nil, fmt.Errorf("%q is not a size in bytes (like 170MiB, 1GiB or 178257920)", data)
	}
	return ByteSize(n), nil
}

// durationHook parses durations like mapstructure's own hook, but says
// which value was wrong and what a right one looks like.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("invalid duration %q (write it like 500ms, 10s or 5m)", data)
	}
	return d, nil
}

// Keys lists every configuration key, dotted, in field order.
func Keys() []string {
	var out []string
	collect("", reflect.TypeOf(Config{}), &out)
	return out
}

func collect(prefix string, t reflect.Type, out *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + f.Tag.Get("mapstructure")
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			collect(name+".", f.Type, out)
			continue
		}
		*out = append(*out, name)
	}
}

func flatten(prefix string, v reflect.Value, out map[string]any) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + f.Tag.Get("mapstructure")
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
			flatten(name+".", fv, out)
			continue
		}
		switch x := fv.Interface().(type) {
		case Secret:
			out[name] = string(x)
		default:
			out[name] = x
		}
	}
}

// keyForEnv maps ONCEFLOW_CHECKPOINT_MIN_PAUSE to checkpoint.min_pause.
func keyForEnv(name string, keys []string) (string, bool) {
	want := strings.TrimPrefix(name, EnvPrefix+"_")
	for _, k := range keys {
		if strings.ToUpper(strings.ReplaceAll(k, ".", "_")) == want {
			return k, true
		}
	}
	return "", false
}

// suggest names a known key close to a misspelt one.
func suggest(k string, keys []string) string {
	best, bestD := "", 3
	for _, c := range keys {
		if d := distance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// decodeError turns mapstructure's multi-line report into one line per
// key.
func decodeError(err error) error {
	var parts []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasPrefix(line, "decoding failed") || strings.HasSuffix(line, "error(s) decoding:") {
			continue
		}
		parts = append(parts, line)
	}
	if len(parts) == 0 {
		return fmt.Errorf("config: %w", err)
	}
	return fmt.Errorf("config: %s", strings.Join(parts, "; "))
}

// fillDerived sets defaults that depend on other keys; explicit holds the
// keys that were set, which keep their values.
func (c *Config) fillDerived(explicit map[string]bool) {
	// The default outage tolerance is no longer than the failed
	// checkpoints allow (see OutageBudget): with checkpoint.timeout 10s
	// and no tolerable failure it is 10s, not a minute that could never be
	// reached. A value set explicitly is kept, and Validate refuses it if
	// it is too long.
	if b := c.Checkpoint.OutageBudget(); !explicit["kafka.outage_tolerance"] && b > 0 {
		c.Kafka.OutageTolerance = min(c.Kafka.OutageTolerance, b)
	}
	if c.Source.Group == "" && c.Job.Name != "" {
		c.Source.Group = "onceflow-" + c.Job.Name
	}
	if c.Sink.TransactionalIDPrefix == "" && c.Job.Name != "" {
		c.Sink.TransactionalIDPrefix = c.Job.Name
	}
	if c.Sink.Slots == 0 {
		c.Sink.Slots = sinkkafka.MinSlots(c.Checkpoint.MaxConcurrent)
	}
}

// groupSuffix matches the end of the transactional id prefix of a
// distributed job's partition group, <prefix>-pg<g> (jobs.Group).
var groupSuffix = regexp.MustCompile(`-pg[0-9]+$`)

// MinSlots is sinkkafka.MinSlots: how many transactional ids an
// exactly-once sink subtask needs with maxConcurrent checkpoints in
// flight (the default of sink.slots).
func MinSlots(maxConcurrent int) int { return sinkkafka.MinSlots(maxConcurrent) }

// Validate checks every key's value; the error names each key at fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	oneOf := func(key, val string, allowed ...string) {
		if !slices.Contains(allowed, val) {
			bad(key, "%q is not one of %s", val, strings.Join(allowed, ", "))
		}
	}
	required := func(key, val string) {
		if strings.TrimSpace(val) == "" {
			bad(key, "required")
		}
	}

	if m := c.Process.MemoryBudget; m != 0 && m < MinMemoryBudget {
		bad("process.memory_budget", "%s is below %s: the collector would run all the time (0: Go's defaults)", units.BytesSize(float64(m)), units.BytesSize(float64(MinMemoryBudget)))
	}
	required("job.name", c.Job.Name)
	if strings.ContainsAny(c.Job.Name, "/\\ ") {
		bad("job.name", "%q must not contain slashes or spaces (it names the checkpoint directory)", c.Job.Name)
	}
	oneOf("job.type", c.Job.Type, "copy", "wordcount", "aggregate", "window", "go")
	// The library checks its own options (c.checkLibrary); config keeps
	// only what is stricter here: keys with a default of their own refuse
	// 0, which the library would read as its default.
	if c.Job.MaxParallelism == 0 {
		bad("job.max_parallelism", "0; must be at least 1")
	}
	if c.Job.Parallelism < 1 || c.Job.Parallelism > c.Job.MaxParallelism {
		bad("job.parallelism", "%d is outside 1..job.max_parallelism (%d)", c.Job.Parallelism, c.Job.MaxParallelism)
	}

	oneOf("job.mode", c.Job.Mode, "single", "distributed")
	if c.Job.PartitionGroups < 0 {
		bad("job.partition_groups", "%d is negative (0 takes the input topic's partition count)", c.Job.PartitionGroups)
	}
	if c.Job.Mode == "distributed" {
		if _, isS3, _ := ParseS3Dir(c.Checkpoint.Dir); !isS3 {
			bad("checkpoint.dir", "job.mode distributed needs s3://bucket/prefix: the instances must share the checkpoints, and %q is a local directory", c.Checkpoint.Dir)
		}
		d := c.Distributed
		if d.SessionTimeout < time.Second {
			bad("distributed.session_timeout", "%s is below 1s", d.SessionTimeout)
		}
		if d.RevokeTimeout <= 0 || d.RevokeTimeout >= d.RebalanceTimeout {
			bad("distributed.revoke_timeout", "%s must be positive and below distributed.rebalance_timeout (%s): past it the coordinator removes an instance still stopping its groups", d.RevokeTimeout, d.RebalanceTimeout)
		}
	}

	if len(c.Kafka.Brokers) == 0 {
		bad("kafka.brokers", "required")
	}
	for _, b := range c.Kafka.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad("kafka.brokers", "%q is not host:port", b)
		}
	}
	if c.Kafka.OutageTolerance <= 0 {
		bad("kafka.outage_tolerance", "must be positive")
	}
	oneOf("kafka.sasl.mechanism", c.Kafka.SASL.Mechanism, "", "plain", "scram-sha-256", "scram-sha-512")
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.Username == "" {
		bad("kafka.sasl.username", "required with kafka.sasl.mechanism %s", c.Kafka.SASL.Mechanism)
	}
	if (c.Kafka.TLS.CertFile == "") != (c.Kafka.TLS.KeyFile == "") {
		bad("kafka.tls.cert_file", "kafka.tls.cert_file and kafka.tls.key_file go together")
	}

	required("source.topic", c.Source.Topic)
	oneOf("source.isolation", c.Source.Isolation, "read_committed", "read_uncommitted")

	required("sink.topic", c.Sink.Topic)
	if c.Sink.Topic != "" && c.Sink.Topic == c.Source.Topic {
		bad("sink.topic", "%q is also the source topic", c.Sink.Topic)
	}
	if c.Sink.Delivery == "" {
		bad("sink.delivery", "required")
	}
	if c.Sink.Delivery == "exactly_once" {
		if m := groupSuffix.FindString(c.Sink.TransactionalIDPrefix); m != "" {
			bad("sink.transactional_id_prefix", "%q ends in %q, like the transactional ids of partition group %s of a distributed job with prefix %q: "+
				"the two jobs would fence each other; choose a prefix without it", c.Sink.TransactionalIDPrefix, m, m[3:], strings.TrimSuffix(c.Sink.TransactionalIDPrefix, m))
		}
		if c.Sink.TransactionTimeout == 0 {
			bad("sink.transaction_timeout", "must be positive")
		} else if c.Sink.TransactionTimeout > 0 && c.Kafka.OutageTolerance >= c.Sink.TransactionTimeout {
			bad("kafka.outage_tolerance", "%s is not below sink.transaction_timeout %s: a pending transaction waiting out the outage would be aborted by the broker",
				c.Kafka.OutageTolerance, c.Sink.TransactionTimeout)
		}
	}

	if c.Checkpoint.Interval >= 0 && c.Checkpoint.Interval < MinCheckpointInterval {
		bad("checkpoint.interval", "%s is below the minimum of %s", c.Checkpoint.Interval, MinCheckpointInterval)
	}
	oneOf("checkpoint.mode", c.Checkpoint.Mode, "exactly_once", "at_least_once")
	if c.Checkpoint.Timeout == 0 {
		bad("checkpoint.timeout", "must be positive")
	}
	if c.Checkpoint.MaxConcurrent == 0 {
		bad("checkpoint.max_concurrent", "0; must be at least 1")
	}
	if b := c.Checkpoint.OutageBudget(); b > 0 && c.Kafka.OutageTolerance > b {
		tol, to, n := c.Kafka.OutageTolerance, c.Checkpoint.Timeout, time.Duration(c.Checkpoint.TolerableFailures+1)
		failures := int((tol+to-1)/to) - 1 // the least tolerable_failures with (failures+1) × timeout ≥ tol
		timeout := ((tol+n-1)/n + time.Millisecond - 1).Truncate(time.Millisecond)
		bad("kafka.outage_tolerance", "%s is above (checkpoint.tolerable_failures %d + 1) × checkpoint.timeout %s = %s: "+
			"while the cluster is away every checkpoint times out, and the failed checkpoints would end the attempt after %s; "+
			"raise checkpoint.tolerable_failures to %d (or checkpoint.timeout to %s), or lower kafka.outage_tolerance to %s",
			tol, c.Checkpoint.TolerableFailures, to, b, b, failures, timeout, b)
	}
	if c.Checkpoint.Retain < 1 {
		bad("checkpoint.retain", "%d; at least 1 checkpoint must be kept", c.Checkpoint.Retain)
	}
	oneOf("checkpoint.on_cancel", c.Checkpoint.OnCancel, "retain", "delete")
	required("checkpoint.dir", c.Checkpoint.Dir)
	c.validateS3(bad)

	oneOf("state.backend", c.State.Backend, "memory", "pebble")
	if c.State.Backend == "pebble" {
		required("state.dir", c.State.Dir)
	}
	if c.State.ChangelogLimitBytes < -1 {
		bad("state.changelog_limit_bytes", "%d; 0 takes the default, -1 turns the changelog off, a positive value bounds it", c.State.ChangelogLimitBytes)
	}

	r := c.Restart
	oneOf("restart.strategy", r.Strategy, "fixed-delay", "failure-rate", "exponential-delay", "none")
	switch r.Strategy {
	case "fixed-delay":
		if r.Attempts < 0 {
			bad("restart.attempts", "must not be negative")
		}
		if r.Delay < 0 {
			bad("restart.delay", "must not be negative")
		}
	case "failure-rate":
		if r.MaxFailures < 1 {
			bad("restart.max_failures", "%d; must be at least 1", r.MaxFailures)
		}
		if r.Interval <= 0 {
			bad("restart.interval", "must be positive")
		}
	case "exponential-delay":
		if r.InitialBackoff <= 0 {
			bad("restart.initial_backoff", "must be positive")
		}
		if r.MaxBackoff < r.InitialBackoff {
			bad("restart.max_backoff", "%s is below restart.initial_backoff %s", r.MaxBackoff, r.InitialBackoff)
		}
		if r.Multiplier < 1 {
			bad("restart.multiplier", "%g; must be at least 1", r.Multiplier)
		}
		if r.Jitter < 0 || r.Jitter > 1 {
			bad("restart.jitter", "%g is outside 0..1", r.Jitter)
		}
	}

	if c.Job.Type == "window" {
		w := c.Window
		required("window.key", w.Key)
		oneOf("window.aggregate", w.Aggregate, "count", "sum", "min", "max", "avg")
		if w.Aggregate != "count" {
			required("window.field", w.Field)
		}
		oneOf("window.time.format", w.Time.Format, "epoch_millis", "rfc3339")
		oneOf("window.time.domain", w.Time.Domain, "event", "processing")
		if w.Time.Domain == "processing" {
			// A processing-time window holds the records that arrive
			// while it is open: no record is late, and none has an
			// event time to read.
			if w.Time.Field != "" {
				bad("window.time.field", "%q is set, but processing-time windows (window.time.domain processing) use each record's arrival time", w.Time.Field)
			}
			if w.AllowedLateness != 0 {
				bad("window.allowed_lateness", "%s is set, but no record is late in processing-time windows (window.time.domain processing)", w.AllowedLateness)
			}
			if w.LateTopic != "" {
				bad("window.late_topic", "%q is set, but no record is late in processing-time windows (window.time.domain processing)", w.LateTopic)
			}
		}
		oneOf("window.kind", w.Kind, "tumbling", "sliding", "session")
		positive := func(key string, d time.Duration) {
			if d < time.Millisecond || d%time.Millisecond != 0 {
				bad(key, "%s must be a positive whole number of milliseconds", d)
			}
		}
		switch w.Kind {
		case "tumbling":
			positive("window.size", w.Size)
		case "sliding":
			positive("window.size", w.Size)
			positive("window.slide", w.Slide)
			if w.Slide > w.Size {
				bad("window.slide", "%s is above window.size %s: records between windows would belong to none", w.Slide, w.Size)
			}
		case "session":
			positive("window.gap", w.Gap)
		}
		if w.AllowedLateness < 0 {
			bad("window.allowed_lateness", "%s is negative", w.AllowedLateness)
		}
		if w.LateTopic != "" && w.LateTopic == c.Sink.Topic {
			bad("window.late_topic", "%q is sink.topic: late records would mix with the results", w.LateTopic)
		}
	}
	if c.Job.Type == "aggregate" {
		required("aggregate.group_by", c.Aggregate.GroupBy)
		oneOf("aggregate.function", c.Aggregate.Function, "count", "sum", "min", "max")
		if c.Aggregate.Function != "count" {
			required("aggregate.field", c.Aggregate.Field)
		}
	}

	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			bad("http.listen", "%q is not host:port", c.HTTP.Listen)
		}
	}
	// The token goes in a header: printable ASCII without spaces. The
	// message never shows it.
	for _, r := range string(c.HTTP.Token) {
		if r <= ' ' || r > '~' {
			bad("http.token", "must be printable ASCII without spaces (it is sent as \"Authorization: Bearer <token>\")")
			break
		}
	}
	for _, h := range c.HTTP.AllowedHosts {
		if h != "*" && (h == "" || strings.ContainsAny(h, ":/[] ")) {
			bad("http.allowed_hosts", "%q is not a host name (no port, no scheme; \"*\" allows any)", h)
		}
	}
	oneOf("log.format", c.Log.Format, "text", "json")
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	c.checkLibrary(bad)
	return errors.Join(errs...)
}

// MinCheckpointInterval is the least checkpoint.interval the processor
// takes (the library, engine.CheckpointOptions.Interval, takes any).
const MinCheckpointInterval = 10 * time.Millisecond

// checkLibrary maps the keys to the options of the engine, the Kafka
// source and the Kafka sink and has the library validate them
// (engine.Options.Validate, sourcekafka.SourceOptions.Validate,
// sinkkafka.SinkOptions.Validate): each refusal is reported under its key,
// with the library's option name and message. The mapping here is the
// same as the job builder's (package jobs).
func (c *Config) checkLibrary(bad func(key, format string, args ...any)) {
	report := func(err error, keys map[string]string) {
		for _, e := range optcheck.Errors(err) {
			key, ok := keys[e.Option]
			if !ok {
				key = "(" + e.Component + " option " + e.Option + ")"
			}
			bad(key, "%s %s (%s option %s)", e.Value, e.Reason, e.Component, e.Option)
		}
	}
	ck := c.Checkpoint
	report(engine.Options{
		MaxParallelism: c.Job.MaxParallelism,
		Checkpoint: engine.CheckpointOptions{Interval: ck.Interval, Timeout: ck.Timeout, MinPause: ck.MinPause,
			MaxConcurrent: ck.MaxConcurrent, TolerableFailures: ck.TolerableFailures, RetainSavepoints: ck.RetainSavepoints},
	}.Validate(), map[string]string{
		"MaxParallelism": "job.max_parallelism", "Checkpoint.Interval": "checkpoint.interval", "Checkpoint.Timeout": "checkpoint.timeout",
		"Checkpoint.MinPause": "checkpoint.min_pause", "Checkpoint.MaxConcurrent": "checkpoint.max_concurrent",
		"Checkpoint.TolerableFailures": "checkpoint.tolerable_failures", "Checkpoint.RetainSavepoints": "checkpoint.retain_savepoints",
	})
	src := sourcekafka.SourceOptions[*kgo.Record]{
		Reader: sourcekafka.ReaderOptions{Topics: []string{c.Source.Topic}, Start: sourcekafka.StartPosition(c.Source.Start),
			StartTime: c.Source.StartTimestamp, Group: c.Source.Group, OnOutOfRange: sourcekafka.OnOffsetOutOfRange(c.Source.OnOffsetOutOfRange),
			DiscoveryInterval: c.Source.DiscoveryInterval, FetchMaxBytes: c.Source.FetchMaxBytes, PoolBytes: c.Source.FetchPoolBytes},
		Decode:          func(r *kgo.Record) (*kgo.Record, error) { return r, nil },
		OnDecodeError:   sourcekafka.OnDecodeError(c.Source.OnDecodeError),
		DeadLetterTopic: c.Source.DeadLetterTopic,
	}
	if c.Job.Type == "window" {
		src.MaxOutOfOrderness, src.IdleTimeout = c.Window.MaxOutOfOrderness, c.Window.IdleTimeout
	}
	report(src.Validate(), map[string]string{
		"Reader.Start": "source.start", "Reader.StartTime": "source.start_timestamp", "Reader.Group": "source.group",
		"Reader.OnOutOfRange": "source.on_offset_out_of_range", "OnDecodeError": "source.on_decode_error",
		"DeadLetterTopic": "source.dead_letter_topic", "MaxOutOfOrderness": "window.max_out_of_orderness",
		"IdleTimeout": "window.idle_timeout", "Reader.Topics": "source.topic", "Reader.FetchMaxBytes": "source.fetch_max_bytes", "Reader.PoolBytes": "source.fetch_pool_bytes",
	})
	if c.Sink.Delivery == "" {
		return // refused above; the library would take its default
	}
	report(sinkkafka.SinkOptions{
		Topic: c.Sink.Topic, Delivery: sinkkafka.Delivery(c.Sink.Delivery), TransactionalIDPrefix: c.Sink.TransactionalIDPrefix,
		Slots: c.Sink.Slots, MaxConcurrentCheckpoints: max(ck.MaxConcurrent, 0), TransactionTimeout: c.Sink.TransactionTimeout,
		MaxBufferedRecords: c.Sink.MaxBufferedRecords, Compression: c.Sink.Compression, Linger: c.Sink.Linger,
	}.Validate(), map[string]string{
		"Delivery": "sink.delivery", "TransactionalIDPrefix": "sink.transactional_id_prefix", "Slots": "sink.slots",
		"TransactionTimeout": "sink.transaction_timeout", "MaxConcurrentCheckpoints": "checkpoint.max_concurrent",
		"MaxBufferedRecords": "sink.max_buffered_records", "Compression": "sink.compression", "Linger": "sink.linger",
	})
}

// OutageBudget is how long checkpoints may keep failing before the job
// attempt fails: while the Kafka cluster is away a sink's flush at the
// barrier waits, so every checkpoint expires after Timeout, and after
// TolerableFailures + 1 of them in a row the attempt fails. A
// kafka.outage_tolerance longer than this could never be waited out.
// Zero when Timeout is not positive.
func (c Checkpoint) OutageBudget() time.Duration {
	if c.Timeout <= 0 || c.TolerableFailures < 0 {
		return 0
	}
	return time.Duration(c.TolerableFailures+1) * c.Timeout
}

// MaxRestartDelay is the longest pause the restart strategy may take
// before a restart, for the transaction-timeout budget.
func (r Restart) MaxRestartDelay() time.Duration {
	switch r.Strategy {
	case "fixed-delay", "failure-rate":
		return r.Delay
	case "exponential-delay":
		return time.Duration(float64(r.MaxBackoff) * (1 + r.Jitter))
	}
	return 0
}
