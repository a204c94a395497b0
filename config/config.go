// Package config holds the configuration of a onceflow job and loads it the
// way operators expect: a YAML file, then environment variables prefixed
// ONCEFLOW_ (ONCEFLOW_KAFKA_BROKERS, ONCEFLOW_CHECKPOINT_INTERVAL, ...), then
// command-line flags, each overriding the one before, over documented
// defaults.
//
// Loading is strict: an unknown key, a value of the wrong type, a bad
// duration, an out-of-range number or a missing required key is an error
// that names the key, so that a typo never silently falls back to a
// default.
package config

import (
	"time"
)

// Config is a whole job configuration. Field tags give the key names.
type Config struct {
	Job        Job        `mapstructure:"job"`
	Kafka      Kafka      `mapstructure:"kafka"`
	Source     Source     `mapstructure:"source"`
	Sink       Sink       `mapstructure:"sink"`
	Checkpoint Checkpoint `mapstructure:"checkpoint"`
	State      State      `mapstructure:"state"`
	Restart    Restart    `mapstructure:"restart"`
	Aggregate  Aggregate  `mapstructure:"aggregate"`
	// Window configures the window job.
	Window Window `mapstructure:"window"`
	// Distributed tunes the group membership of job.mode distributed.
	Distributed Distributed `mapstructure:"distributed"`
	HTTP        HTTP        `mapstructure:"http"`
	Log         Log         `mapstructure:"log"`
	// Process tunes the processor's own process.
	Process Process `mapstructure:"process"`
}

// Process tunes the Go runtime of the process that runs the job.
type Process struct {
	// MemoryBudget is the heap the garbage collector lets the process
	// grow to before it runs (default 150MiB; bytes or a size with a
	// unit: 150MiB, 1GiB; k, m, g count 1024s). Go's own collector runs
	// each time the heap doubles its live part, which for a job with a
	// small live heap (a copy's is about 50 MB) is many times a second;
	// with a budget it runs as the heap nears the budget, and Go returns
	// memory above it to the system (the budget is Go's soft memory
	// limit, runtime/debug.SetMemoryLimit, with GOGC off). A job whose
	// live heap grows past half the budget (large keyed state in the
	// memory backend) is not starved: after each collection the limit
	// is raised to twice the live heap, which is where Go's default
	// would collect. RSS is about 35 MB above the heap (the binary, the
	// runtime). 0: Go's defaults; GOGC or GOMEMLIMIT in the environment
	// also leave the runtime to them. Below 64MiB it is refused. It
	// applies where the process is the job's own (runner.Main: the
	// processor, a Go job's main); a job run through runner.Execute or
	// testdriver leaves the runtime of its host process alone.
	MemoryBudget ByteSize `mapstructure:"memory_budget"`
}

// MinMemoryBudget is the least process.memory_budget: below it a job's
// buffers alone (fetches, the producers' buffered records) would keep the
// collector running.
const MinMemoryBudget = ByteSize(64 << 20)

// DefaultMemoryBudget is process.memory_budget's default.
const DefaultMemoryBudget = ByteSize(150 << 20)

// ByteSize is a number of bytes, written as a number or with a unit
// (docker/go-units' RAMInBytes: 170MiB, 170MB and 170m are all 170×2^20).
type ByteSize int64

// Job names the job and says what it computes.
type Job struct {
	// Name identifies the job: its checkpoint directory and metrics.
	Name string `mapstructure:"name"`
	// Type is a built-in job (copy, wordcount, aggregate or window) or go: the
	// dataflow a Go program built on package runner compiles in (its
	// default there; the processor binary refuses it).
	Type           string `mapstructure:"type"`
	Parallelism    int    `mapstructure:"parallelism"`
	MaxParallelism int    `mapstructure:"max_parallelism"`
	// OperatorChaining runs an operator fed by a forward edge on its
	// upstream's goroutine (Flink's operator chaining); false gives every
	// subtask its own goroutine.
	OperatorChaining bool `mapstructure:"operator_chaining"`
	// Mode is single (one process runs the whole job) or distributed
	// (processes of one job.name share its partition groups through
	// Kafka's group protocol; see docs/distributed.md).
	Mode string `mapstructure:"mode"`
	// PartitionGroups is G, the number of partition groups of a
	// distributed job: input partition p belongs to group p mod G. 0 takes
	// the input topic's partition count. Changing it changes which
	// checkpoints hold which partitions: a job keeps its G.
	PartitionGroups int `mapstructure:"partition_groups"`
}

// Kafka is how to reach the cluster.
type Kafka struct {
	Brokers []string `mapstructure:"brokers"`
	// OutageTolerance is how long the job waits for an unreachable or
	// restarting cluster (a broker restart, a leader moving, a coordinator
	// loading) before the call that waits fails the job attempt and the
	// restart strategy decides. Checkpoints may fail meanwhile; they count
	// against checkpoint.tolerable_failures, so it may not exceed
	// Checkpoint.OutageBudget. Unset, it is outage.DefaultTolerance or
	// that budget, whichever is shorter.
	OutageTolerance time.Duration `mapstructure:"outage_tolerance"`
	TLS             TLS           `mapstructure:"tls"`
	SASL            SASL          `mapstructure:"sasl"`
}

// TLS settings; files are PEM.
type TLS struct {
	Enabled            bool   `mapstructure:"enabled"`
	CAFile             string `mapstructure:"ca_file"`
	CertFile           string `mapstructure:"cert_file"`
	KeyFile            string `mapstructure:"key_file"`
	ServerName         string `mapstructure:"server_name"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// SASL settings. The password is never logged.
type SASL struct {
	// Mechanism: "" (none), plain, scram-sha-256 or scram-sha-512.
	Mechanism string `mapstructure:"mechanism"`
	Username  string `mapstructure:"username"`
	Password  Secret `mapstructure:"password"`
}

// Secret is a string that prints as "***".
type Secret string

// String returns "***" whatever the secret, so that printing a
// configuration with %s or %v never shows it.
func (Secret) String() string { return "***" }

// GoString returns "***" whatever the secret, so that printing a
// configuration with %#v never shows it.
func (Secret) GoString() string { return "***" }

// Source is the input topic.
type Source struct {
	Topic string `mapstructure:"topic"`
	// Start: earliest, latest, committed or timestamp (for a job without
	// a checkpoint).
	Start          string    `mapstructure:"start"`
	StartTimestamp time.Time `mapstructure:"start_timestamp"`
	// Group is the consumer group for start=committed and for lag
	// monitoring; default onceflow-<job name>.
	Group string `mapstructure:"group"`
	// Isolation: read_committed or read_uncommitted.
	Isolation         string        `mapstructure:"isolation"`
	DiscoveryInterval time.Duration `mapstructure:"discovery_interval"`
	// OnDecodeError: fail, skip or dead_letter.
	OnDecodeError   string `mapstructure:"on_decode_error"`
	DeadLetterTopic string `mapstructure:"dead_letter_topic"`
	// OnOffsetOutOfRange: fail, earliest or latest. What the source does
	// with a checkpointed or running position its partition's log no
	// longer holds (records deleted by retention or DeleteRecords before
	// they were read, a log truncated below it, a topic deleted and
	// recreated): fail stops the job for good, naming the topic,
	// partition, offset and the log's range; earliest resumes at the log
	// start (what was read before is read again: duplicates), latest at
	// its end (what the log holds is skipped: loss); both log each jump
	// with the offsets it skipped or reads again, and count it in
	// onceflow_source_offset_resets_total.
	OnOffsetOutOfRange string `mapstructure:"on_offset_out_of_range"`
	// FetchMaxBytes bounds one fetch response of a subtask's client, over
	// all its partitions, in bytes (0 or unset:
	// sourcekafka.DefaultFetchMaxBytes, 1.5 MiB; negative is refused). It
	// bounds the memory of the read: about three fetches are held at a
	// time, each decompressed and as records; larger fetches cost fewer
	// round trips.
	FetchMaxBytes int `mapstructure:"fetch_max_bytes"`
	// FetchPoolBytes, when positive, has the copy and word-count jobs
	// fetch into memory they reuse, up to this many bytes per subtask
	// (sourcekafka.ReaderOptions.PoolBytes): a fetched batch goes back to
	// the pool once every record of it was written (copy) or decoded
	// (word count), instead of being left to the garbage collector. It
	// trades memory for CPU: the peak RSS grows by up to about twice the
	// pool. 0 (the default) pools nothing; other job types never pool;
	// negative is refused.
	FetchPoolBytes int `mapstructure:"fetch_pool_bytes"`
}

// Sink is the output topic.
type Sink struct {
	Topic string `mapstructure:"topic"`
	// Delivery: none, at_least_once or exactly_once.
	Delivery              string        `mapstructure:"delivery"`
	TransactionalIDPrefix string        `mapstructure:"transactional_id_prefix"`
	TransactionTimeout    time.Duration `mapstructure:"transaction_timeout"`
	// Slots is the number of transactional ids per subtask (0 or unset:
	// sinkkafka.MinSlots of checkpoint.max_concurrent; less is refused).
	Slots int `mapstructure:"slots"`
	// MaxBufferedRecords is how many records a subtask's producer holds
	// unacknowledged before the subtask waits (0 or unset:
	// sinkkafka.DefaultMaxBufferedRecords, 25,000; negative is refused). A
	// copied record keeps its fetched batch in memory while it waits.
	MaxBufferedRecords int `mapstructure:"max_buffered_records"`
	// Compression is the codec of produced batches: none, gzip, snappy,
	// lz4 or zstd (empty or unset: sinkkafka.DefaultCompression, none,
	// as Kafka's own producer).
	Compression string `mapstructure:"compression"`
	// Linger is how long a partition's batch of the producers waits for
	// more records before it is sent while the producer has room (0 or
	// unset: sinkkafka.DefaultLinger, none, as Kafka's producer before
	// 4.0; franz-go's default is 10ms; negative is refused).
	Linger time.Duration `mapstructure:"linger"`
	// AsyncPreCommit flushes a checkpoint's transaction beside the next
	// one instead of at the barrier, the next one's records waiting in
	// memory until the flush ended (default false;
	// sinkkafka.SinkOptions.AsyncPreCommit).
	AsyncPreCommit bool `mapstructure:"async_pre_commit"`
	// AsyncCommit commits a completed checkpoint's transactions on a
	// goroutine of each subtask's own while it writes on
	// (sinkkafka.SinkOptions.AsyncCommit; default false).
	AsyncCommit bool `mapstructure:"async_commit"`
}

// Checkpoint options, with Flink's meanings.
type Checkpoint struct {
	Interval          time.Duration `mapstructure:"interval"`
	Mode              string        `mapstructure:"mode"` // exactly_once | at_least_once
	Timeout           time.Duration `mapstructure:"timeout"`
	MinPause          time.Duration `mapstructure:"min_pause"`
	MaxConcurrent     int           `mapstructure:"max_concurrent"`
	TolerableFailures int           `mapstructure:"tolerable_failures"`
	// Retain is how many completed checkpoints are kept.
	Retain int `mapstructure:"retain"`
	// RetainSavepoints is how many savepoints are kept in the job's
	// checkpoint storage (its directory, or its S3 prefix): once a
	// savepoint completed, the oldest beyond this many are removed, never
	// the job's newest restore point (see checkpoint.SavepointPruner). 0
	// keeps every one, as Flink does.
	//
	// Default 10, not Flink's "forever": a Flink savepoint goes to a
	// directory its user chose, a onceflow savepoint into the job's own
	// checkpoint directory, and anyone allowed to POST /api/v1/savepoint
	// can take one, so without a bound the disk fills. Ten full copies of
	// the state are enough to roll back across several deployments; a
	// savepoint to keep for good is copied out of the directory (it is
	// self-contained: --from restores the copy).
	RetainSavepoints int `mapstructure:"retain_savepoints"`
	// OnCancel: retain or delete.
	OnCancel string `mapstructure:"on_cancel"`
	// Dir is where the job's checkpoints live: a local directory (the
	// job's are under <dir>/<job.name>), or s3://<bucket>/<prefix> for an
	// S3-compatible object store (under <prefix>/<job.name>/ in the
	// bucket; see S3 and ParseS3Dir).
	Dir string `mapstructure:"dir"`
	// S3 reaches the object store of an s3:// Dir; setting any of it with
	// a directory Dir is refused.
	S3 S3 `mapstructure:"s3"`
}

// S3 configures the S3-compatible object store of an s3:// checkpoint
// directory. Credentials are AccessKeyID and SecretAccessKey (both or
// neither; ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID and
// ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY in the environment) or, when
// both are unset, the AWS SDK's default chain: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, AWS_PROFILE's shared
// configuration, web identity, the instance or task role. The secret is
// never logged.
type S3 struct {
	// Endpoint is the service's base URL (http:// or https://); empty
	// means AWS S3 in Region.
	Endpoint string `mapstructure:"endpoint"`
	// Region signs the requests.
	Region string `mapstructure:"region"`
	// PathStyle addresses objects as <endpoint>/<bucket>/<key>, which
	// most S3-compatible servers (MinIO, versitygw, Ceph) need.
	PathStyle bool `mapstructure:"path_style"`
	// CAFile is a PEM file of authorities trusted for an https endpoint,
	// besides the system's.
	CAFile string `mapstructure:"ca_file"`
	// InsecureSkipVerify accepts any certificate (testing only).
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
	AccessKeyID        string `mapstructure:"access_key_id"`
	SecretAccessKey    Secret `mapstructure:"secret_access_key"`
}

// State selects the keyed state backend.
type State struct {
	Backend     string `mapstructure:"backend"` // memory | pebble
	Dir         string `mapstructure:"dir"`
	Incremental bool   `mapstructure:"incremental"`
	// LocalRecovery keeps the local files of the latest incremental Pebble
	// checkpoint (hard links) so that a restart on this machine restores
	// from them instead of downloading the checkpoint (default true).
	LocalRecovery bool `mapstructure:"local_recovery"`
	// ChangelogLimitBytes bounds the changelog of incremental Pebble
	// checkpoints: the bytes of writes a restore may replay on top of the
	// last materialized Pebble checkpoint. Past half of it a new
	// materialization is uploaded beside the checkpoints; a checkpoint
	// that would pass it materializes itself (stores the database's
	// changed files) instead of appending. 0 takes the backend's default
	// (64 MiB); -1 turns the changelog off, so that every checkpoint
	// materializes.
	ChangelogLimitBytes int64 `mapstructure:"changelog_limit_bytes"`
}

// Restart is the restart strategy and its parameters; which apply depends
// on Strategy.
type Restart struct {
	// Strategy: fixed-delay, failure-rate, exponential-delay or none.
	Strategy string `mapstructure:"strategy"`
	// fixed-delay
	Attempts int           `mapstructure:"attempts"`
	Delay    time.Duration `mapstructure:"delay"`
	// failure-rate (Delay too)
	MaxFailures int           `mapstructure:"max_failures"`
	Interval    time.Duration `mapstructure:"interval"`
	// exponential-delay
	InitialBackoff time.Duration `mapstructure:"initial_backoff"`
	MaxBackoff     time.Duration `mapstructure:"max_backoff"`
	Multiplier     float64       `mapstructure:"multiplier"`
	ResetAfter     time.Duration `mapstructure:"reset_after"`
	Jitter         float64       `mapstructure:"jitter"`
}

// Aggregate configures the aggregate job: Function of the JSON field Field,
// grouped by the JSON field GroupBy.
type Aggregate struct {
	GroupBy  string `mapstructure:"group_by"`
	Field    string `mapstructure:"field"`
	Function string `mapstructure:"function"` // count | sum | min | max
}

// Window configures the window job: Aggregate of the JSON field Field
// per key (the JSON field Key) and per window of Kind, in event time or
// processing time (Time.Domain).
type Window struct {
	Key       string `mapstructure:"key"`
	Aggregate string `mapstructure:"aggregate"` // count | sum | min | max | avg
	Field     string `mapstructure:"field"`
	// Time says where a record's event time comes from: a JSON field in
	// Format (epoch_millis or rfc3339), or the Kafka record's timestamp
	// when Field is empty.
	Time WindowTime `mapstructure:"time"`
	// Kind is tumbling (Size), sliding (Size every Slide) or session (Gap).
	Kind  string        `mapstructure:"kind"`
	Size  time.Duration `mapstructure:"size"`
	Slide time.Duration `mapstructure:"slide"`
	Gap   time.Duration `mapstructure:"gap"`
	// MaxOutOfOrderness is how far behind the newest timestamp of a
	// partition a record may be without being late: a partition's
	// watermark is its newest timestamp minus this, minus 1ms.
	MaxOutOfOrderness time.Duration `mapstructure:"max_out_of_orderness"`
	// IdleTimeout leaves a partition that produced nothing for this long,
	// and was read to the end of its log, out of the watermark until it
	// produces again (0: never), so that an idle partition does not hold
	// every window back; one with records not fetched yet is behind, not
	// idle.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// AllowedLateness keeps a window's state this long past its end: a
	// late record within it updates the window and emits its result
	// again.
	AllowedLateness time.Duration `mapstructure:"allowed_lateness"`
	// LateTopic receives, in the job's transactions, the records later
	// than AllowedLateness ("" : they are counted and logged, not written).
	LateTopic string `mapstructure:"late_topic"`
}

// WindowTime is the clock a window job's windows follow and, in event
// time, where a record takes its event time from.
type WindowTime struct {
	// Domain is event (the default: windows follow the records' event
	// time and the watermark) or processing (windows follow the job's
	// clock: a record is in the windows of its arrival, and a window fires
	// when the clock reaches its end; results then depend on when records
	// arrive, so a replay after a crash may group them differently, each
	// result still written once).
	Domain string `mapstructure:"domain"`
	Field  string `mapstructure:"field"`
	Format string `mapstructure:"format"` // epoch_millis | rfc3339
}

// HTTP is the listener for health, metrics and the job API.
type HTTP struct {
	Listen string `mapstructure:"listen"`
	// Token, when set, is the bearer token every POST of the job API
	// (savepoint, stop, cancel) must carry ("Authorization: Bearer
	// <token>"); the reads need none. Never logged.
	Token Secret `mapstructure:"token"`
	// AllowedHosts are host names, besides loopback names, IP addresses
	// and the listen address's host, that requests may name in their Host
	// header (a DNS rebinding page names its own); "*" allows any.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
}

// Log configures log/slog output.
type Log struct {
	Format string `mapstructure:"format"` // text | json
	Level  string `mapstructure:"level"`  // debug | info | warn | error
}

// Distributed tunes how the instances of a distributed job share its
// partition groups (internal/membership).
type Distributed struct {
	// SessionTimeout: how long Kafka's group coordinator waits for a
	// silent instance (crashed, paused, cut off) before it hands that
	// instance's groups to the others.
	SessionTimeout time.Duration `mapstructure:"session_timeout"`
	// RebalanceTimeout: how long a rebalance waits for every instance to
	// rejoin; one still stopping its groups past it is removed.
	RebalanceTimeout time.Duration `mapstructure:"rebalance_timeout"`
	// RevokeTimeout bounds the final checkpoint of a group that moves
	// away; past it the group is cancelled instead. Below
	// RebalanceTimeout.
	RevokeTimeout time.Duration `mapstructure:"revoke_timeout"`
}
