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

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/outage"
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
		Job:   Job{Type: "wordcount", Parallelism: 1, MaxParallelism: 128, OperatorChaining: true, Mode: "single"},
		Kafka: Kafka{Brokers: []string{"127.0.0.1:9092"}, OutageTolerance: outage.DefaultTolerance},
		Source: Source{Start: "earliest", Isolation: "read_committed", DiscoveryInterval: 30 * time.Second, OnDecodeError: "fail",
			OnOffsetOutOfRange: string(sourcekafka.DefaultOnOffsetOutOfRange)},
		Sink: Sink{Delivery: "exactly_once", TransactionTimeout: 15 * time.Minute},
		Checkpoint: Checkpoint{Interval: time.Second, Mode: "exactly_once", Timeout: time.Minute, MaxConcurrent: 1,
			Retain: 3, RetainSavepoints: 10, OnCancel: "retain", Dir: "./data/checkpoints",
			S3: S3{Region: objstore.DefaultRegion}},
		State: State{Backend: "pebble", Dir: "./data/state", Incremental: true},
		Restart: Restart{Strategy: "exponential-delay", Attempts: 3, Delay: time.Second, MaxFailures: 3, Interval: time.Minute,
			InitialBackoff: time.Second, MaxBackoff: time.Minute, Multiplier: 2, ResetAfter: 10 * time.Minute, Jitter: 0.1},
		Aggregate: Aggregate{Function: "count"},
		Window: Window{Aggregate: "count", Kind: "tumbling", Time: WindowTime{Format: "epoch_millis"},
			IdleTimeout: 30 * time.Second},
		Distributed: Distributed{SessionTimeout: 10 * time.Second, RebalanceTimeout: time.Minute, RevokeTimeout: 30 * time.Second},
		HTTP:        HTTP{Listen: "127.0.0.1:8081"},
		Log:         Log{Format: "text", Level: "info"},
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
		c.Sink.Slots = MinSlots(c.Checkpoint.MaxConcurrent)
	}
}

// groupSuffix matches the end of the transactional id prefix of a
// distributed job's partition group, <prefix>-pg<g> (jobs.Group).
var groupSuffix = regexp.MustCompile(`-pg[0-9]+$`)

// MinSlots is how many transactional ids an exactly-once sink subtask
// needs with c = maxConcurrent checkpoints in flight: one for the open
// transaction, c pre-committed ones of checkpoints in flight, c of
// completed checkpoints whose commits run beside the writing, and c+1
// committed ones that the latest completed checkpoint may still refer to
// (an id is reused only once a checkpoint taken after its commit
// completed, because a restore commits what the checkpoint holds again).
// 5 with one checkpoint at a time.
func MinSlots(maxConcurrent int) int { return 3*max(maxConcurrent, 1) + 2 }

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

	required("job.name", c.Job.Name)
	if strings.ContainsAny(c.Job.Name, "/\\ ") {
		bad("job.name", "%q must not contain slashes or spaces (it names the checkpoint directory)", c.Job.Name)
	}
	oneOf("job.type", c.Job.Type, "copy", "wordcount", "aggregate", "window", "go")
	if c.Job.MaxParallelism < 1 || c.Job.MaxParallelism > 32768 {
		bad("job.max_parallelism", "%d is outside 1..32768", c.Job.MaxParallelism)
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
	oneOf("source.start", c.Source.Start, "earliest", "latest", "committed", "timestamp")
	if c.Source.Start == "timestamp" && c.Source.StartTimestamp.IsZero() {
		bad("source.start_timestamp", "required with source.start timestamp (RFC 3339)")
	}
	oneOf("source.isolation", c.Source.Isolation, "read_committed", "read_uncommitted")
	oneOf("source.on_decode_error", c.Source.OnDecodeError, "fail", "skip", "dead_letter")
	if c.Source.OnDecodeError == "dead_letter" && c.Source.DeadLetterTopic == "" {
		bad("source.dead_letter_topic", "required with source.on_decode_error dead_letter")
	}
	if _, err := sourcekafka.ParseOnOffsetOutOfRange(c.Source.OnOffsetOutOfRange); err != nil {
		bad("source.on_offset_out_of_range", "%v", err)
	}

	required("sink.topic", c.Sink.Topic)
	if c.Sink.Topic != "" && c.Sink.Topic == c.Source.Topic {
		bad("sink.topic", "%q is also the source topic", c.Sink.Topic)
	}
	oneOf("sink.delivery", c.Sink.Delivery, "none", "at_least_once", "exactly_once")
	if c.Sink.Delivery == "exactly_once" {
		required("sink.transactional_id_prefix", c.Sink.TransactionalIDPrefix)
		if m := groupSuffix.FindString(c.Sink.TransactionalIDPrefix); m != "" {
			bad("sink.transactional_id_prefix", "%q ends in %q, like the transactional ids of partition group %s of a distributed job with prefix %q: "+
				"the two jobs would fence each other; choose a prefix without it", c.Sink.TransactionalIDPrefix, m, m[3:], strings.TrimSuffix(c.Sink.TransactionalIDPrefix, m))
		}
		if need := MinSlots(c.Checkpoint.MaxConcurrent); c.Sink.Slots < need {
			bad("sink.slots", "%d; exactly_once with checkpoint.max_concurrent %d needs at least %d (leave it unset for that)",
				c.Sink.Slots, c.Checkpoint.MaxConcurrent, need)
		}
		if c.Sink.TransactionTimeout <= 0 {
			bad("sink.transaction_timeout", "must be positive")
		} else if c.Kafka.OutageTolerance >= c.Sink.TransactionTimeout {
			bad("kafka.outage_tolerance", "%s is not below sink.transaction_timeout %s: a pending transaction waiting out the outage would be aborted by the broker",
				c.Kafka.OutageTolerance, c.Sink.TransactionTimeout)
		}
	}

	if c.Checkpoint.Interval < 10*time.Millisecond {
		bad("checkpoint.interval", "%s is below the minimum of 10ms", c.Checkpoint.Interval)
	}
	oneOf("checkpoint.mode", c.Checkpoint.Mode, "exactly_once", "at_least_once")
	if c.Checkpoint.Timeout <= 0 {
		bad("checkpoint.timeout", "must be positive")
	}
	if c.Checkpoint.MinPause < 0 {
		bad("checkpoint.min_pause", "must not be negative")
	}
	if c.Checkpoint.MaxConcurrent < 1 {
		bad("checkpoint.max_concurrent", "%d; must be at least 1", c.Checkpoint.MaxConcurrent)
	}
	if c.Checkpoint.TolerableFailures < 0 {
		bad("checkpoint.tolerable_failures", "must not be negative")
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
	if c.Checkpoint.RetainSavepoints < 0 {
		bad("checkpoint.retain_savepoints", "%d; 0 keeps every savepoint, N > 0 the newest N", c.Checkpoint.RetainSavepoints)
	}
	oneOf("checkpoint.on_cancel", c.Checkpoint.OnCancel, "retain", "delete")
	required("checkpoint.dir", c.Checkpoint.Dir)
	c.validateS3(bad)

	oneOf("state.backend", c.State.Backend, "memory", "pebble")
	if c.State.Backend == "pebble" {
		required("state.dir", c.State.Dir)
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
		for _, d := range []struct {
			key string
			d   time.Duration
		}{{"window.max_out_of_orderness", w.MaxOutOfOrderness}, {"window.idle_timeout", w.IdleTimeout}, {"window.allowed_lateness", w.AllowedLateness}} {
			if d.d < 0 {
				bad(d.key, "%s is negative", d.d)
			}
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
	return errors.Join(errs...)
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
