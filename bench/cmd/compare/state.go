package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The large-state comparison (-state, make bench-state; issue 19 §4): the
// built-in word count over -state-keys distinct words of -state-word-bytes
// each, so that the keyed state is about 1 GB at 10M keys, end to end on
// the broker, onceflow (Pebble state, its defaults: incremental
// checkpoints with the changelog, local recovery) against Flink (RocksDB,
// incremental checkpoints, the mini cluster in one JVM). Every run of a
// contender, on topics of its own:
//
//  1. load: every key once, waiting in the input when the contender
//     starts (10 words a line); done when every word's count is visible
//     under read_committed. The local state's size on disk is read then
//     (onceflow's state.dir, Flink's RocksDB directory), after one more
//     checkpoint;
//  2. churn: for each -state-churn percentage p, right after a checkpoint
//     completes, the words of p% of the keys (every 100/p-th key, spread
//     over the key space) are produced at once; once all of their new
//     counts are visible, the checkpoints completed since are the ones
//     that carried them: their duration comes from the contender's API
//     (onceflow /api/v1/checkpoints, Flink /jobs/<id>/checkpoints), and
//     the bytes written are the files that appeared in the checkpoint
//     directory in between (the same measure for both; Flink's own
//     checkpointed_size is kept next to it). The checkpoint interval is
//     -state-interval, long enough that a churn burst fits one interval;
//  3. recovery: the contender is restarted with -state-recovery-interval
//     checkpoints, words L<n> are produced at -pace-rate, and it is
//     killed with SIGKILL and started again; recovery is the time from
//     the kill to the first committed output of a word produced after it,
//     as in the paced run of the main comparison (measure.go). The
//     restart's timeline (process started, API answering) is kept;
//  4. exactness: every word's final count and the number of output
//     records must match what was produced, across the two restarts.

// stateOptions are the -state settings beyond the shared options.
type stateOptions struct {
	on               bool
	keys             int
	wordBytes        int
	churnFlag        string
	bursts           int
	churn            []int
	interval         time.Duration
	recoveryInterval time.Duration
	contenders       string
	loadTimeout      time.Duration
}

func stateFlags() *stateOptions {
	s := &stateOptions{}
	flag.StringVar(&s.churnFlag, "state-churn", "1,10", "-state: churn phases, percent of the keys updated between two checkpoints (each must divide 100)")
	flag.BoolVar(&s.on, "state", false, "the large-state comparison instead (issue 19 §4): a word count over -state-keys distinct words, onceflow with Pebble against Flink with RocksDB incremental checkpoints; checkpoint cost by churn and recovery from SIGKILL; results to bench/results/state")
	flag.IntVar(&s.bursts, "state-bursts", 3, "-state: bursts of every churn percentage, each measured (the first after the load also pays for the load's compactions)")
	flag.IntVar(&s.keys, "state-keys", 0, "-state: distinct words (keys) loaded (default 10,000,000; 200,000 with -quick)")
	flag.IntVar(&s.wordBytes, "state-word-bytes", 80, "-state: bytes of every word (k, 9 digits of its index, then letters derived from it)")
	flag.DurationVar(&s.interval, "state-interval", 10*time.Second, "-state: the checkpoint interval of the load and churn phases")
	flag.DurationVar(&s.recoveryInterval, "state-recovery-interval", time.Second, "-state: the checkpoint interval of the recovery phase")
	flag.DurationVar(&s.loadTimeout, "state-load-timeout", 30*time.Minute, "-state: bound of the load phase")
	return s
}

// stateContenders are -state's contenders: the baseline first.
const stateContenders = "onceflow,flink"

// stateWordsPerLine is the number of words in a line of the load and churn
// input.
const stateWordsPerLine = 10

// stateWord returns the word of key i: 'k', the index in 9 digits, then
// letters from a generator seeded with i, n bytes in all (at least 10):
// letters, so that the state does not compress to nothing.
func stateWord(i, n int) string {
	b := make([]byte, 0, max(n, 10))
	b = append(b, 'k')
	b = append(b, fmt.Sprintf("%09d", i)...)
	x := uint64(i)*0x9E3779B97F4A7C15 + 1
	for len(b) < n {
		x ^= x >> 30
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 27
		x *= 0x94D049BB133111EB
		x ^= x >> 31
		for v := x; v > 0 && len(b) < n; v /= 26 {
			b = append(b, byte('a'+v%26))
		}
	}
	return string(b)
}

// stateKeyIndex is the key index of a word of stateWord, or -1.
func stateKeyIndex(w []byte) int {
	if len(w) < 10 || w[0] != 'k' {
		return -1
	}
	n, err := strconv.Atoi(string(w[1:10]))
	if err != nil {
		return -1
	}
	return n
}

// churnKeys reports whether key i is updated in churn phase j of
// percentage p: every (100/p)-th key, from an offset of the phase's own,
// so that the phases touch different keys when they can.
func churnKeys(p, j int) func(i int) bool {
	stride := 100 / p
	off := (j * 3) % stride
	return func(i int) bool { return i%stride == off }
}

func runState(o *options, so *stateOptions, set map[string]bool) error {
	if !set["contenders"] {
		o.contenders = splitList(stateContenders)
	}
	for _, c := range o.contenders {
		if stateCommand(c) == nil {
			return fmt.Errorf("-contenders: %q has no large-state job (onceflow, flink)", c)
		}
	}
	for _, s := range splitList(so.churnFlag) {
		p, err := strconv.Atoi(s)
		if err != nil || p <= 0 || p > 100 || 100%p != 0 {
			return fmt.Errorf("-state-churn: %q is not a percentage that divides 100", s)
		}
		so.churn = append(so.churn, p)
	}
	if so.keys == 0 {
		so.keys = pick(o.quick, 200_000, 10_000_000)
	}
	if so.bursts < 1 {
		return fmt.Errorf("-state-bursts: %d is below 1", so.bursts)
	}
	if so.wordBytes < 10 {
		return fmt.Errorf("-state-word-bytes: %d is below 10", so.wordBytes)
	}
	if !set["runs"] {
		o.runs = 3
	}
	if !set["pace-rate"] {
		o.paceRate = 1000
	}
	resultsDir := filepath.Join("bench", "results", "state")
	if o.quick {
		resultsDir = filepath.Join(resultsDir, "quick")
	}
	su, err := setUp(o, "state", resultsDir, "onceflow-bench-state-", benchBrokerProps)
	if err != nil {
		return err
	}
	defer su.close()
	ctx, started, built, k := su.ctx, su.started, su.built, su.k
	runID := fmt.Sprintf("s%d", time.Now().Unix()%1_000_000)

	var runs []*stateResult
	seq := 0
	for run := 1; run <= o.runs; run++ {
		shift := (run - 1) % len(o.contenders)
		order := append(slices.Clone(o.contenders[shift:]), o.contenders[:shift]...)
		for _, name := range order {
			if ctx.Err() != nil {
				break
			}
			seq++
			r := &stateResult{Contender: name, Run: run, Keys: so.keys, RecoveryS: -1}
			runs = append(runs, r)
			if err := built[name]; err != nil {
				r.Err = "build: " + firstLine(err.Error())
				continue
			}
			c := *findContender(name)
			c.command, c.scrape, c.instances = stateCommand(name), nil, 0
			id := fmt.Sprintf("%s-%d-%s", runID, seq, name)
			logf("=== %s state run%s", name, runName(run, o.runs))
			t := time.Now()
			if err := stateRun(ctx, k, o, so, &c, id, filepath.Join(o.workDir, id), r); err != nil {
				r.Err = firstLine(err.Error())
				logf("%s: %v", id, err)
			}
			logf("%s%s: %s (%s)", name, runName(run, o.runs), r.summary(), time.Since(t).Round(time.Second))
			if !o.keepWorkDir {
				_ = os.RemoveAll(filepath.Join(o.workDir, id))
			}
		}
	}
	o.loadAfter = loadAvg()
	interrupted := ctx.Err()
	rep := &stateReport{
		Started: started, Took: time.Since(started), Quick: o.quick, Brokers: strings.Join(o.brokers, ","),
		Machine: machine(), Keys: so.keys, WordBytes: so.wordBytes, Churn: so.churn, Bursts: so.bursts,
		IntervalMS: so.interval.Milliseconds(), RecoveryIntervalMS: so.recoveryInterval.Milliseconds(),
		PaceRate: o.paceRate, Parallelism: o.parallelism, RunsN: o.runs, Contenders: o.contenders,
		Results: stateMedians(runs, o.contenders), Runs: runs, LoadBefore: o.loadBefore, LoadAfter: o.loadAfter,
	}
	if err := rep.write(o.resultsDir); err != nil {
		return err
	}
	logf("done in %s: %s", time.Since(started).Round(time.Second), filepath.Join(o.resultsDir, "results.md"))
	return interrupted
}

// stateCommand returns the command of a contender's large-state job: the
// word count of the main comparison, onceflow with Pebble state (its
// defaults: incremental, changelog, local recovery), Flink with RocksDB
// and incremental checkpoints and its REST API on the spec's port.
func stateCommand(name string) func(o *options, s spec) (*exec.Cmd, error) {
	switch name {
	case "onceflow":
		return func(o *options, s spec) (*exec.Cmd, error) { return onceflowProcess(o, s, false, false) }
	case "flink":
		return func(o *options, s spec) (*exec.Cmd, error) {
			cmd, err := flinkCmd(o, s)
			if err == nil {
				cmd.Args = append(cmd.Args, "rocksdb", strconv.Itoa(s.HTTPPort))
			}
			return cmd, err
		}
	}
	return nil
}

// stateCk is one completed checkpoint as the contender's API reports it.
type stateCk struct {
	ID         int64
	DurationMS float64
	// StateSize is the whole state the checkpoint refers to; Checkpointed
	// the bytes it wrote itself (Flink's checkpointed_size; -1 when the
	// API does not say).
	StateSize, Checkpointed int64
}

// stateCheckpoints reads the completed checkpoints of the contender's job,
// oldest first.
func stateCheckpoints(name string, port int) ([]stateCk, error) {
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string, v any) error {
		resp, err := httpClient().Get(base + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	}
	var out []stateCk
	switch name {
	case "onceflow":
		var body struct {
			History []struct {
				ID         int64   `json:"id"`
				Savepoint  bool    `json:"savepoint"`
				Status     string  `json:"status"`
				DurationMS float64 `json:"duration_ms"`
				StateSize  int64   `json:"state_size"`
			} `json:"history"`
		}
		if err := get("/api/v1/checkpoints", &body); err != nil {
			return nil, err
		}
		for _, c := range body.History {
			if c.Status == "COMPLETED" && !c.Savepoint {
				out = append(out, stateCk{ID: c.ID, DurationMS: c.DurationMS, StateSize: c.StateSize, Checkpointed: -1})
			}
		}
	case "flink":
		var jobs struct {
			Jobs []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"jobs"`
		}
		if err := get("/jobs", &jobs); err != nil {
			return nil, err
		}
		id := ""
		for _, j := range jobs.Jobs {
			if j.Status == "RUNNING" {
				id = j.ID
			}
		}
		if id == "" {
			return nil, errors.New("no running Flink job")
		}
		var body struct {
			History []struct {
				ID           int64   `json:"id"`
				Status       string  `json:"status"`
				Savepoint    bool    `json:"is_savepoint"`
				DurationMS   float64 `json:"end_to_end_duration"`
				StateSize    int64   `json:"state_size"`
				Checkpointed int64   `json:"checkpointed_size"`
			} `json:"history"`
		}
		if err := get("/jobs/"+id+"/checkpoints", &body); err != nil {
			return nil, err
		}
		for _, c := range body.History {
			if c.Status == "COMPLETED" && !c.Savepoint {
				out = append(out, stateCk{ID: c.ID, DurationMS: c.DurationMS, StateSize: c.StateSize, Checkpointed: c.Checkpointed})
			}
		}
	default:
		return nil, fmt.Errorf("no checkpoint API for %s", name)
	}
	slices.SortFunc(out, func(a, b stateCk) int { return int(a.ID - b.ID) })
	return out, nil
}

// dirFiles lists the regular files under root with their sizes (none when
// root does not exist yet).
func dirFiles(root string) map[string]int64 {
	files := map[string]int64{}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed while walking
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				files[path] = info.Size()
			}
		}
		return nil
	})
	return files
}

// bytesAdded is the size of the files in after that are not in before, or
// whose size changed: what was written in between, files being written
// once.
func bytesAdded(before, after map[string]int64) int64 {
	var n int64
	for p, size := range after {
		if old, ok := before[p]; !ok || old != size {
			n += size
		}
	}
	return n
}

// dirBytes is the size of the regular files under root, a file with
// several links (onceflow's local recovery links its SSTs) counted once.
func dirBytes(root string) int64 {
	var n int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		n += info.Size()
		return nil
	})
	return n
}

// stateTally follows the output: the largest count seen of every key, the
// L<n> words seen, the records.
type stateTally struct {
	mu       sync.Mutex
	records  int
	counts   []uint8 // per key index, the largest count seen (saturating)
	bad      int     // records that are neither a key word with a count nor an L word
	seenL    map[int]time.Time
	wantL    int // the first L word produced after the kill, -1 before
	recovery chan struct{}
	recAt    time.Time
}

func (t *stateTally) add(rs []*kgo.Record, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.records += len(rs)
	for _, rec := range rs {
		if len(rec.Key) > 1 && rec.Key[0] == 'L' {
			n, err := strconv.Atoi(string(rec.Key[1:]))
			if err != nil {
				t.bad++
				continue
			}
			if _, ok := t.seenL[n]; !ok {
				t.seenL[n] = at
			}
			if t.wantL >= 0 && n >= t.wantL && t.recAt.IsZero() {
				t.recAt = at
				close(t.recovery)
			}
			continue
		}
		i := stateKeyIndex(rec.Key)
		v, err := strconv.Atoi(string(rec.Value))
		if i < 0 || i >= len(t.counts) || err != nil || v <= 0 {
			t.bad++
			continue
		}
		if v > 255 {
			v = 255
		}
		t.counts[i] = max(t.counts[i], uint8(v))
	}
}

func (t *stateTally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.records
}

// waitRecords waits until at least n output records are visible.
func (t *stateTally) waitRecords(ctx context.Context, p *proc, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := t.total()
		if got >= n {
			return nil
		}
		if p != nil && p.exited() {
			return p.failure()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d output records visible after %s", got, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// produceKeys writes the words of the keys for which pick is true (every
// key when pick is nil), stateWordsPerLine a line, and returns the number
// of words.
func produceKeys(ctx context.Context, k *kafka, o *options, so *stateOptions, topic string, pick func(int) bool) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(50_000), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var mu sync.Mutex
	var failed error
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			failed = errors.Join(failed, err)
			mu.Unlock()
		}
	}
	words, lines := 0, 0
	line := make([]byte, 0, stateWordsPerLine*(so.wordBytes+1))
	flush := func() {
		if len(line) == 0 {
			return
		}
		cl.Produce(ctx, &kgo.Record{Value: slices.Clone(line), Partition: int32(lines) % o.partitions}, promise)
		lines++
		line = line[:0]
	}
	inLine := 0
	for i := range so.keys {
		if pick != nil && !pick(i) {
			continue
		}
		if inLine > 0 {
			line = append(line, ' ')
		}
		line = append(line, stateWord(i, so.wordBytes)...)
		words++
		if inLine++; inLine == stateWordsPerLine {
			flush()
			inLine = 0
		}
	}
	flush()
	if err := cl.Flush(ctx); err != nil {
		return 0, err
	}
	return words, failed
}

// waitCheckpointAfter waits until the contender reports a completed
// checkpoint with an id above after, and returns the newest.
func waitCheckpointAfter(ctx context.Context, name string, port int, p *proc, after int64, timeout time.Duration) (stateCk, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		cks, err := stateCheckpoints(name, port)
		if err == nil && len(cks) > 0 && cks[len(cks)-1].ID > after {
			return cks[len(cks)-1], nil
		}
		if err != nil {
			lastErr = err
		}
		if p.exited() {
			return stateCk{}, p.failure()
		}
		if time.Now().After(deadline) {
			return stateCk{}, fmt.Errorf("no checkpoint after %d within %s (last API error: %v)", after, timeout, lastErr)
		}
		select {
		case <-ctx.Done():
			return stateCk{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stateRun makes one run of one contender: load, churn phases, recovery,
// exactness.
func stateRun(ctx context.Context, k *kafka, o *options, so *stateOptions, c *contender, id, dir string, r *stateResult) error {
	in, out := id+"-in", id+"-out"
	defer k.deletePrefix(id)
	settle()
	for _, t := range []string{in, out} {
		if err := k.createTopic(ctx, t, o.partitions); err != nil {
			return err
		}
	}
	s := newSpec(c, spec{Brokers: k.brokers, Job: "wordcount", In: in, Out: out, ID: id, Interval: so.interval, Dir: dir})
	ckDir := filepath.Join(dir, "checkpoints")
	stateDir := filepath.Join(dir, "state")
	if c.name == "flink" {
		stateDir = filepath.Join(dir, "rocksdb")
	}
	expected := make([]uint8, so.keys)
	tally := &stateTally{counts: make([]uint8, so.keys), seenL: map[int]time.Time{}, wantL: -1, recovery: make(chan struct{})}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reader, err := k.readOutput(rctx, out, tally.add)
	if err != nil {
		return err
	}
	defer reader.close()

	// 1. Load.
	t0 := time.Now()
	words, err := produceKeys(ctx, k, o, so, in, nil)
	if err != nil {
		return fmt.Errorf("producing the load: %w", err)
	}
	for i := range expected {
		expected[i] = 1
	}
	logf("%s: %d words produced in %s", id, words, time.Since(t0).Round(time.Millisecond))
	produced := words
	started := time.Now()
	p, err := startProc(o, c, s, "load")
	if err != nil {
		return err
	}
	defer func() { p.stop(30 * time.Second) }()
	if err := tally.waitRecords(ctx, p, produced, so.loadTimeout); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	r.LoadS = time.Since(started).Seconds()
	r.LoadRate = float64(words) / r.LoadS
	logf("%s: load visible after %.1f s (%.0f words/s)", id, r.LoadS, r.LoadRate)
	last, err := waitCheckpointAfter(ctx, c.name, s.HTTPPort, p, 0, 2*so.interval+time.Minute)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	// One more checkpoint, so that the state on disk is settled.
	if last, err = waitCheckpointAfter(ctx, c.name, s.HTTPPort, p, last.ID, 2*so.interval+time.Minute); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	r.StateDiskMB = float64(dirBytes(stateDir)) / 1e6
	r.CheckpointDirMB = float64(dirBytes(ckDir)) / 1e6
	r.StateSizeMB = float64(last.StateSize) / 1e6
	logf("%s: state on disk %.0f MB, checkpoint directory %.0f MB, checkpoint %d refers to %.0f MB", id, r.StateDiskMB, r.CheckpointDirMB, last.ID, r.StateSizeMB)

	// 2. Churn: so.bursts bursts of every percentage.
	phase := 0
	for _, pct := range so.churn {
		for burst := 1; burst <= so.bursts; burst++ {
			phase++
			// Start right after a checkpoint completes, so that the burst
			// meets the start of an interval.
			ck, err := waitCheckpointAfter(ctx, c.name, s.HTTPPort, p, last.ID, 2*so.interval+time.Minute)
			if err != nil {
				return fmt.Errorf("churn %d%%: %w", pct, err)
			}
			before := dirFiles(ckDir)
			pick := churnKeys(pct, phase)
			n, err := produceKeys(ctx, k, o, so, in, pick)
			if err != nil {
				return fmt.Errorf("churn %d%%: producing: %w", pct, err)
			}
			for i := range expected {
				if pick(i) {
					expected[i]++
				}
			}
			produced += n
			if err := tally.waitRecords(ctx, p, produced, 10*time.Minute); err != nil {
				return fmt.Errorf("churn %d%%: %w", pct, err)
			}
			after := dirFiles(ckDir)
			// The output is visible once the checkpoint that carried it has
			// completed, but an API may show it a moment later (Flink's
			// statistics are cached): wait for it, and read again after a
			// pause in case a second one carried the end of the burst.
			if _, err := waitCheckpointAfter(ctx, c.name, s.HTTPPort, p, ck.ID, 30*time.Second); err != nil {
				return fmt.Errorf("churn %d%%: visible, but: %w", pct, err)
			}
			time.Sleep(500 * time.Millisecond)
			cks, err := stateCheckpoints(c.name, s.HTTPPort)
			if err != nil {
				return fmt.Errorf("churn %d%%: %w", pct, err)
			}
			ph := statePhase{ChurnPct: pct, Burst: burst, Keys: n, BytesWritten: bytesAdded(before, after)}
			for _, x := range cks {
				if x.ID <= ck.ID {
					continue
				}
				ph.Checkpoints++
				ph.MaxMS = max(ph.MaxMS, x.DurationMS)
				ph.SumMS += x.DurationMS
				ph.StateSizeMB = float64(x.StateSize) / 1e6
				if x.Checkpointed >= 0 {
					ph.APIBytes += x.Checkpointed
				} else {
					ph.APIBytes = -1
				}
				last = x
			}
			if ph.Checkpoints == 0 {
				return fmt.Errorf("churn %d%%: visible, but no checkpoint after %d in the API", pct, ck.ID)
			}
			r.Phases = append(r.Phases, ph)
			logf("%s: churn %d%% burst %d (%d keys): %d checkpoint(s), longest %.0f ms, %.1f MB written", id, pct, burst, n, ph.Checkpoints, ph.MaxMS, float64(ph.BytesWritten)/1e6)
		}
	}

	// 3. Recovery, at the recovery interval: restart with it, pace L
	// words, kill, restart, first output of a word produced after the
	// kill.
	p.kill()
	s.Interval = so.recoveryInterval
	s = newSpec(c, s)
	if p, err = startProc(o, c, s, "paced"); err != nil {
		return err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(in),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer prod.Close()
	var sentMu sync.Mutex
	sentL := 0
	stopPace := make(chan struct{})
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		const step = 10 * time.Millisecond
		perStep := max(1, o.paceRate*int(step)/int(time.Second))
		t := time.NewTicker(step)
		defer t.Stop()
		for {
			select {
			case <-stopPace:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for range perStep {
				sentMu.Lock()
				n := sentL
				sentL++
				sentMu.Unlock()
				prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("L%d", n)), Partition: int32(n) % o.partitions}, nil)
			}
		}
	}()
	stopped := false
	stopPacing := func() {
		if !stopped {
			stopped = true
			close(stopPace)
			<-paced
		}
	}
	defer stopPacing()
	// Warm: the restarted job is through its restore and commits L words;
	// then a few intervals more.
	warmStart := time.Now()
	for {
		tally.mu.Lock()
		nL := len(tally.seenL)
		tally.mu.Unlock()
		if nL > 0 {
			break
		}
		if p.exited() {
			return fmt.Errorf("recovery: restart at %s: %w", so.recoveryInterval, p.failure())
		}
		if time.Since(warmStart) > 5*time.Minute {
			return errors.New("recovery: no L word visible within 5 minutes of the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.RestartS = time.Since(warmStart).Seconds()
	time.Sleep(3*time.Second + 2*so.recoveryInterval)
	sentMu.Lock()
	tally.mu.Lock()
	tally.wantL = sentL
	tally.mu.Unlock()
	killedAt := time.Now()
	sentMu.Unlock()
	p.kill()
	s = newSpec(c, s)
	if p, err = startProc(o, c, s, "restarted"); err != nil {
		return err
	}
	spawned := time.Since(killedAt)
	apiUp := time.Duration(-1)
	timeout := time.After(5 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
wait:
	for {
		select {
		case <-tally.recovery:
			break wait
		case <-timeout:
			tick.Stop()
			return errors.New("recovery: no output of a word produced after the kill within 5 minutes")
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-tick.C:
			if apiUp < 0 {
				if _, err := stateCheckpoints(c.name, s.HTTPPort); err == nil {
					apiUp = time.Since(killedAt)
				}
			}
			if p.exited() {
				tick.Stop()
				return fmt.Errorf("recovery: %w", p.failure())
			}
		}
	}
	tick.Stop()
	tally.mu.Lock()
	r.RecoveryS = tally.recAt.Sub(killedAt).Seconds()
	tally.mu.Unlock()
	r.SpawnMS = float64(spawned.Microseconds()) / 1000
	if apiUp >= 0 {
		r.APIUpS = apiUp.Seconds()
	}
	logf("%s: recovery %.2f s (process started %.0f ms, API up %.2f s after the kill)", id, r.RecoveryS, r.SpawnMS, r.APIUpS)

	// 4. Exactness.
	time.Sleep(2 * so.recoveryInterval)
	stopPacing()
	sentMu.Lock()
	nL := sentL
	sentMu.Unlock()
	if err := tally.waitRecords(ctx, p, produced+nL, 2*time.Minute); err != nil {
		r.Check = err.Error()
		return nil
	}
	time.Sleep(time.Second + so.recoveryInterval) // anything more is a duplicate
	tally.mu.Lock()
	defer tally.mu.Unlock()
	var problems []string
	if tally.records != produced+nL {
		problems = append(problems, fmt.Sprintf("%d output records, %d expected", tally.records, produced+nL))
	}
	wrong := 0
	for i, want := range expected {
		if tally.counts[i] != want {
			wrong++
		}
	}
	if wrong > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d keys with a wrong final count", wrong, len(expected)))
	}
	if len(tally.seenL) != nL {
		problems = append(problems, fmt.Sprintf("%d of %d L words seen", len(tally.seenL), nL))
	}
	if tally.bad > 0 {
		problems = append(problems, fmt.Sprintf("%d records of no word produced", tally.bad))
	}
	r.Check = "ok"
	if len(problems) > 0 {
		r.Check = strings.Join(problems, "; ")
	}
	return nil
}
