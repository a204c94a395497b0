package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafka is the harness's own admin and producer access to the cluster.
type kafka struct {
	brokers []string
	cl      *kgo.Client
	adm     *kadm.Client
}

func newKafka(brokers []string) (*kafka, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	return &kafka{brokers: brokers, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (k *kafka) close() { k.cl.Close() }

// createTopic creates a topic with the broker's default configuration
// but for the topic configs given as key, value pairs.
func (k *kafka) createTopic(ctx context.Context, name string, partitions int32, config ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var configs map[string]*string
	for i := 0; i+1 < len(config); i += 2 {
		if configs == nil {
			configs = map[string]*string{}
		}
		configs[config[i]] = &config[i+1]
	}
	resp, err := k.adm.CreateTopic(ctx, partitions, -1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("creating topic %s: %w", name, err)
	}
	for {
		md, err := k.adm.Metadata(ctx, name)
		if err == nil {
			td := md.Topics[name]
			ready := td.Err == nil && len(td.Partitions) == int(partitions)
			for _, p := range td.Partitions {
				ready = ready && p.Leader >= 0 && p.Err == nil
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leader for every partition", name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// deletePrefix deletes every topic whose name starts with prefix (the
// run's own topics and the internal topics Kafka Streams made for it).
func (k *kafka) deletePrefix(prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tds, err := k.adm.ListTopics(ctx)
	if err != nil {
		logf("listing topics: %v", err)
		return
	}
	var names []string
	for _, n := range tds.Names() {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	if _, err := k.adm.DeleteTopics(ctx, names...); err != nil {
		logf("deleting topics %v: %v", names, err)
	}
}

// input is a seeded input topic.
type input struct {
	Workload string `json:"workload"`
	Topic    string `json:"topic"`
	Records  int    `json:"records"`
	// Expected is the number of output records (words for the word count).
	Expected int   `json:"expected_output"`
	Bytes    int64 `json:"bytes"`
	// counts are the final count of every word (word count only).
	counts map[string]int64
}

// word returns the i-th word of the vocabulary: lower-case letters, 4 to
// 8 of them.
func word(i int) string {
	b := []byte{}
	n := i
	for {
		b = append(b, byte('a'+n%26))
		n /= 26
		if n == 0 {
			break
		}
	}
	for len(b) < 4+i%5 {
		b = append(b, byte('a'+(i*7+len(b))%26))
	}
	return string(b)
}

func (k *kafka) seed(ctx context.Context, o *options, workload, topic string) (*input, error) {
	if err := k.createTopic(ctx, topic, o.partitions); err != nil {
		return nil, err
	}
	in := &input{Workload: workload, Topic: topic}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var failed atomic.Pointer[error]
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
		}
	}
	rng := rand.New(rand.NewSource(1))
	switch workload {
	case "copy":
		// Values are random letters, so that compression gains little
		// and every contender moves the same bytes.
		pool := make([]byte, 1<<16)
		for i := range pool {
			pool[i] = byte('a' + rng.Intn(26))
		}
		for i := range o.copyRecords {
			off := rng.Intn(len(pool) - o.valueBytes)
			r := &kgo.Record{Key: []byte(fmt.Sprintf("%010d", i)), Value: pool[off : off+o.valueBytes],
				Partition: int32(i) % o.partitions}
			in.Bytes += int64(len(r.Key) + len(r.Value))
			cl.Produce(ctx, r, promise)
		}
		in.Records, in.Expected = o.copyRecords, o.copyRecords
	case "wordcount":
		z := rand.NewZipf(rng, 1.1, 1, uint64(o.vocabulary-1))
		words := make([]string, o.vocabulary)
		for i := range words {
			words[i] = word(i)
		}
		in.counts = map[string]int64{}
		for i := range o.wcLines {
			var line []byte
			for j := range o.wordsPerLine {
				w := words[z.Uint64()]
				in.counts[w]++
				if j > 0 {
					line = append(line, ' ')
				}
				line = append(line, w...)
			}
			in.Bytes += int64(len(line))
			cl.Produce(ctx, &kgo.Record{Value: line, Partition: int32(i) % o.partitions}, promise)
		}
		in.Records, in.Expected = o.wcLines, o.wcLines*o.wordsPerLine
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	if e := failed.Load(); e != nil {
		return nil, *e
	}
	return in, nil
}

// observation is what the output reader sees in one poll.
type outputReader struct {
	cl *kgo.Client

	mu      sync.Mutex
	markers map[int32][]time.Time // commit markers per partition (broker time)
}

// readOutput starts a read_committed reader of topic that calls onRecords
// with every poll's data records and the time the poll returned. It keeps
// the commit markers for the commit cadence. Stop it with close.
func (k *kafka) readOutput(ctx context.Context, topic string, onRecords func([]*kgo.Record, time.Time)) (*outputReader, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.KeepControlRecords(), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return nil, err
	}
	r := &outputReader{cl: cl, markers: map[int32][]time.Time{}}
	go func() {
		var data []*kgo.Record
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			at := time.Now()
			data = data[:0]
			fs.EachRecord(func(rec *kgo.Record) {
				if rec.Attrs.IsControl() {
					// Control key: version int16, type int16 (0 abort, 1 commit).
					if len(rec.Key) >= 4 && binary.BigEndian.Uint16(rec.Key[2:4]) == 1 {
						r.mu.Lock()
						r.markers[rec.Partition] = append(r.markers[rec.Partition], rec.Timestamp)
						r.mu.Unlock()
					}
					return
				}
				data = append(data, rec)
			})
			if len(data) > 0 {
				onRecords(data, at)
			}
		}
	}()
	return r, nil
}

func (r *outputReader) close() { r.cl.Close() }

// markerTimeline lists the commit markers seen so far, per partition, in
// milliseconds (broker time) since from.
func (r *outputReader) markerTimeline(from time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("# partition\tmarker_ms\n")
	parts := slices.Sorted(maps.Keys(r.markers))
	for _, p := range parts {
		for _, t := range r.markers[p] {
			fmt.Fprintf(&b, "%d\t%d\n", p, t.Sub(from).Milliseconds())
		}
	}
	return b.String()
}

// commitCadence is the median time between commits that became visible on
// an output partition between from and to. Markers of one checkpoint
// written by several producers within 30 ms count as one commit.
func (r *outputReader) commitCadence(from, to time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var deltas []time.Duration
	for _, ts := range r.markers {
		ts = slices.Clone(ts)
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		var last time.Time
		for _, t := range ts {
			if t.Before(from) || t.After(to) {
				continue
			}
			if !last.IsZero() {
				if d := t.Sub(last); d < 30*time.Millisecond {
					continue
				} else {
					deltas = append(deltas, d)
				}
			}
			last = t
		}
	}
	if len(deltas) == 0 {
		return 0, false
	}
	slices.Sort(deltas)
	return deltas[len(deltas)/2], true
}

// rssSampler follows the resident memory of a contender's processes in
// /proc. With several processes (the instances of a distributed job) the
// figures are per process, the largest of them, and peakSum is the sum of
// their peaks.
type rssSampler struct {
	pids []int
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	current map[int]float64 // MiB
	peak    map[int]float64 // MiB, VmHWM
}

func sampleRSS(pids ...int) *rssSampler {
	s := &rssSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{}),
		current: map[int]float64{}, peak: map[int]float64{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			s.read()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) read() {
	for _, pid := range s.pids {
		s.readPID(pid)
	}
}

func (s *rssSampler) readPID(pid int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, field := range []string{"VmRSS:", "VmHWM:"} {
			if !strings.HasPrefix(line, field) {
				continue
			}
			fs := strings.Fields(line)
			if len(fs) < 2 {
				continue
			}
			kb, err := strconv.ParseFloat(fs[1], 64)
			if err != nil {
				continue
			}
			s.mu.Lock()
			if field == "VmRSS:" {
				s.current[pid] = kb / 1024
			} else if kb/1024 > s.peak[pid] {
				s.peak[pid] = kb / 1024
			}
			s.mu.Unlock()
		}
	}
}

// now reads again and returns the largest current RSS and the largest
// peak of one process.
func (s *rssSampler) now() (current, peak float64) {
	s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.current {
		current = max(current, v)
	}
	for _, v := range s.peak {
		peak = max(peak, v)
	}
	return current, peak
}

// peakSum is the sum of the processes' peaks.
func (s *rssSampler) peakSum() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := 0.0
	for _, v := range s.peak {
		sum += v
	}
	return sum
}

func (s *rssSampler) close() {
	close(s.stop)
	<-s.done
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ), from
// getconf; 100, Linux's value on every common architecture, if that fails.
var clockTicks = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
})

// cpuSeconds is the user plus system CPU time the processes have used so
// far (utime + stime of /proc/<pid>/stat); a process that is gone counts
// 0.
func cpuSeconds(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces: count from its ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		u, err1 := strconv.ParseFloat(f[11], 64)
		st, err2 := strconv.ParseFloat(f[12], 64)
		if err1 == nil && err2 == nil {
			total += (u + st) / clockTicks()
		}
	}
	return total
}

// cpuSample is the CPU seconds of a contender's processes (cpu) and of
// the broker and S3 server (infra) at a time.
type cpuSample struct {
	at         time.Time
	cpu, infra float64
}

// firstWritten is when the contender first wrote a record to any of its
// topics (those named prefix-…: the output, a repartition topic): the
// earliest producer timestamp of the first record of each of their
// partitions, read uncommitted, so records of transactions not yet
// committed (or aborted) count. Timestamps outside [from, to] (a contender
// that copies the input's timestamps) are refused.
func (k *kafka) firstWritten(ctx context.Context, prefix string, from, to time.Time) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tds, err := k.adm.ListTopics(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("first write: listing topics: %w", err)
	}
	var names []string
	for _, n := range tds.Names() {
		if strings.HasPrefix(n, prefix+"-") {
			names = append(names, n)
		}
	}
	starts, err := k.adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return time.Time{}, fmt.Errorf("first write: start offsets of %v: %w", names, err)
	}
	ends, err := k.adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return time.Time{}, fmt.Errorf("first write: end offsets of %v: %w", names, err)
	}
	want := map[string]map[int32]kgo.Offset{}
	n := 0
	starts.Each(func(o kadm.ListedOffset) {
		if e, ok := ends.Lookup(o.Topic, o.Partition); o.Err == nil && ok && e.Err == nil && e.Offset > o.Offset {
			if want[o.Topic] == nil {
				want[o.Topic] = map[int32]kgo.Offset{}
			}
			want[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
			n++
		}
	})
	if n == 0 {
		return time.Time{}, fmt.Errorf("first write: no records in %v", names)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.ConsumePartitions(want),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return time.Time{}, err
	}
	defer cl.Close()
	seen := map[string]bool{}
	var first time.Time
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("first write: the first record of %d of %d partitions of %v not read within 30 s", n-len(seen), n, names)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			key := fmt.Sprintf("%s/%d", rec.Topic, rec.Partition)
			if seen[key] {
				return
			}
			seen[key] = true
			if first.IsZero() || rec.Timestamp.Before(first) {
				first = rec.Timestamp
			}
		})
	}
	// Producer timestamps have millisecond precision.
	if first.Before(from.Add(-time.Millisecond)) || first.After(to) {
		return time.Time{}, fmt.Errorf("first write: the earliest record of %v is stamped %s, outside the run (%s to %s): the contender does not stamp its records when it writes them",
			names, first.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	return first, nil
}

// infraProcs are the harness's children that serve every contender (the
// local broker's JVM, the S3 server), found by their parent process id
// before any contender starts, with their command names.
func infraProcs() (pids []int, names []string) {
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		lp, rp := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(string(b[rp+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == self {
			pids, names = append(pids, pid), append(names, string(b[lp+1:rp]))
		}
	}
	return pids, names
}

// backlogRun: the whole seeded input is waiting when the contender starts.
func backlogRun(ctx context.Context, k *kafka, o *options, c *contender, in *input, id string, iv time.Duration, dir string, r *result) error {
	out := id + "-out"
	defer k.deletePrefix(id)
	settle()
	// The copy's output is stamped by the broker as it appends
	// (LogAppendTime): contenders keep the input's timestamps on a copy
	// (Kafka Streams, Flink, onceflow) or stamp the time of writing
	// (franz-go's producers), and either way the earliest record of the
	// output tells when the contender first wrote.
	var config []string
	if in.Workload == "copy" {
		config = []string{"message.timestamp.type", "LogAppendTime"}
	}
	if err := k.createTopic(ctx, out, o.partitions, config...); err != nil {
		return err
	}
	s := newSpec(c, spec{Brokers: k.brokers, Job: in.Workload, In: in.Topic, Out: out, ID: id, Interval: iv, Dir: dir, S3: o.s3})

	var (
		mu         sync.Mutex
		count      int
		firstAt    time.Time
		lastAt     time.Time
		maxCount   = map[string]int64{}
		badValues  int
		complete   = make(chan struct{})
		closedOnce sync.Once
		// With -keep, a copy's output per 100 ms: records appended
		// (LogAppendTime) and records that became visible, by Unix
		// time / 100 ms.
		written, visible = map[int64]int{}, map[int64]int{}
	)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reader, err := k.readOutput(rctx, out, func(rs []*kgo.Record, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if firstAt.IsZero() {
			firstAt = at
		}
		count += len(rs)
		if o.keepWorkDir && in.Workload == "copy" {
			for _, rec := range rs {
				written[rec.Timestamp.UnixMilli()/100]++
			}
			visible[at.UnixMilli()/100] += len(rs)
		}
		if in.Workload == "wordcount" {
			for _, rec := range rs {
				n, err := strconv.ParseInt(string(rec.Value), 10, 64)
				if err != nil {
					badValues++
					continue
				}
				if n > maxCount[string(rec.Key)] {
					maxCount[string(rec.Key)] = n
				}
			}
		}
		if count >= in.Expected && lastAt.IsZero() {
			lastAt = at
			closedOnce.Do(func() { close(complete) })
		}
	})
	if err != nil {
		return err
	}
	defer reader.close()

	// The processes' and the broker's and S3 server's CPU seconds, every
	// tick of the wait below.
	samples := []cpuSample{{at: time.Now(), infra: cpuSeconds(o.infraPIDs)}}
	started := time.Now()
	p, err := startProc(o, c, s, "backlog")
	if err != nil {
		return err
	}
	defer p.stop(30 * time.Second)
	rss := sampleRSS(p.pids()...)
	defer rss.close()
	var prof *profiler
	if o.profile == c.name {
		prof = startProfile(p.pid(), dir)
		defer prof.stop()
	}

	halfRSS := 0.0
	timeout := time.After(o.runTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-complete:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			mu.Lock()
			n := count
			mu.Unlock()
			return fmt.Errorf("output incomplete after %s: %d of %d records visible", o.runTimeout, n, in.Expected)
		case <-tick.C:
			if p.exited() {
				return p.failure()
			}
			samples = append(samples, cpuSample{at: time.Now(), cpu: cpuSeconds(p.pids()), infra: cpuSeconds(o.infraPIDs)})
			mu.Lock()
			n := count
			mu.Unlock()
			if halfRSS == 0 && n >= in.Expected/2 {
				halfRSS, _ = rss.now()
			}
		}
	}
	end := cpuSample{cpu: cpuSeconds(p.pids()), infra: cpuSeconds(o.infraPIDs), at: time.Now()}
	endRSS, peak := rss.now()
	r.PeakRSSSumMB = rss.peakSum()
	if prof != nil {
		name := fmt.Sprintf("profile-%s-%s-%dms.txt", c.name, in.Workload, iv.Milliseconds())
		if err := prof.report(filepath.Join(o.resultsDir, name)); err != nil {
			logf("profile: %v", err)
		}
	}
	if halfRSS == 0 {
		halfRSS = endRSS // the second half came within one sample
	}
	// Anything more that shows up now is a duplicate.
	time.Sleep(time.Second + iv)
	if c.scrape != nil {
		if m, err := c.scrape(s); err == nil {
			r.CheckpointBacklog = m
		}
	}
	if c.distributed {
		if g, err := distScrape(s); err == nil {
			r.Groups, r.Revocations = g.assignment, g.revocations
		} else {
			logf("%s: reading the instances' groups: %v", id, err)
		}
	}
	p.stop(30 * time.Second)

	// Throughput counts from the contender's first write to any of its
	// topics (read uncommitted) when its records carry the time they were
	// written, instead of from the first visible output less one commit
	// gap. The gap undercounts whenever an output partition carries the
	// markers of several producers at staggered times: franz-txn's two
	// members committing 1 s transactions 60 ms apart showed a 60 ms gap,
	// so the ~1 s of work in its first transactions was counted as free
	// and it came out at 1.52M records/s against 1.10M at 100 ms (issue
	// 19). The same holds for a distributed word count, whose first output
	// comes after two commits. Contenders that copy the input's
	// timestamps (Kafka Streams, Flink) keep the gap.
	var firstWrite time.Time
	{
		mu.Lock()
		to := lastAt
		mu.Unlock()
		var err error
		if firstWrite, err = k.firstWritten(ctx, id, started, to); err != nil {
			logf("%s: %v; throughput counts from the first visible output less one commit gap", id, err)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	r.Records = in.Expected
	if d, ok := reader.commitCadence(firstAt, lastAt); ok {
		r.CommitLoadMS = float64(d.Microseconds()) / 1000
	}
	// The first visible batch holds about one commit gap of work (the
	// first transaction): count the whole output over the time from the
	// first visible poll to the last, plus that gap. For the limit, which
	// does not commit, the gap is zero and the first batch small.
	gap := r.CommitLoadMS / 1000
	if gap == 0 && iv > 0 {
		gap = iv.Seconds()
	}
	from := firstAt.Add(-time.Duration(gap * float64(time.Second)))
	if !firstWrite.IsZero() {
		from = firstWrite
		r.FirstWriteS = firstWrite.Sub(started).Seconds()
	}
	if span := lastAt.Sub(from).Seconds(); span > 0 {
		r.Throughput = float64(in.Expected) / span
	}
	// CPU: the whole run's, per million output records; until the start
	// of the span (start-up); and per second of the span (cores busy),
	// from the last sample at or before its start.
	r.Instances = c.count()
	r.CPUS = end.cpu
	r.CPUPerM = end.cpu / float64(in.Expected) * 1e6
	at := samples[0]
	for _, x := range samples {
		if x.at.After(from) {
			break
		}
		at = x
	}
	r.CPUStartS = at.cpu
	if span := end.at.Sub(at.at).Seconds(); span >= 0.5 {
		r.Cores = (end.cpu - at.cpu) / span
		r.InfraCores = (end.infra - at.infra) / span
	}
	r.StartupS = firstAt.Sub(started).Seconds()
	r.WallS = lastAt.Sub(started).Seconds()
	r.PeakRSSMB, r.HalfRSSMB, r.EndRSSMB = peak, halfRSS, endRSS
	if len(written) > 0 {
		writeBacklogTimeline(filepath.Join(dir, "backlog-timeline.tsv"), from, written, visible, reader.markerTimeline(from))
	}
	var problems []string
	if count != in.Expected {
		problems = append(problems, fmt.Sprintf("%d records, %d expected", count, in.Expected))
	}
	if in.Workload == "wordcount" {
		wrong := 0
		for w, n := range in.counts {
			if maxCount[w] != n {
				wrong++
			}
		}
		if len(maxCount) != len(in.counts) || wrong > 0 || badValues > 0 {
			problems = append(problems, fmt.Sprintf("%d of %d words with a wrong final count, %d extra words, %d bad values",
				wrong, len(in.counts), max(0, len(maxCount)-len(in.counts)), badValues))
		}
	}
	r.Check = "ok"
	if len(problems) > 0 {
		r.Check = strings.Join(problems, "; ")
	}
	return nil
}

// writeBacklogTimeline writes, per 100 ms from from, how many output
// records were appended and how many became visible, then the commit
// markers: where a contender's writing stalls and when its commits land.
func writeBacklogTimeline(path string, from time.Time, written, visible map[int64]int, markers string) {
	var b strings.Builder
	b.WriteString("# ms_since_first_write\twritten\tvisible\n")
	keys := slices.Sorted(maps.Keys(written))
	for k := range visible {
		if _, ok := written[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%d\t%d\t%d\n", k*100-from.UnixMilli(), written[k], visible[k])
	}
	b.WriteString(markers)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		logf("writing the backlog timeline: %v", err)
	}
}

// pacedRun: records at a fixed rate into fresh topics; latency, then
// recovery from SIGKILL.
// settle writes the dirty pages of earlier runs (gigabytes after a
// backlog) to disk and lets the machine rest a moment, so that their
// writeback does not stall the broker in the middle of the next
// measurement: without it the limit itself showed 100-650 ms p99 latencies
// in paced runs that followed a backlog.
func settle() {
	start := time.Now()
	syscall.Sync()
	if d := time.Since(start); d > time.Second {
		logf("settle: writing back dirty pages took %s", d.Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second)
}

func pacedRun(ctx context.Context, k *kafka, o *options, c *contender, workload, id string, iv time.Duration, dir string, r *result) error {
	in, out := id+"-in", id+"-out"
	defer k.deletePrefix(id)
	settle()
	for _, t := range []string{in, out} {
		if err := k.createTopic(ctx, t, o.partitions); err != nil {
			return err
		}
	}
	s := newSpec(c, spec{Brokers: k.brokers, Job: workload, In: in, Out: out, ID: id, Interval: iv, Dir: dir, S3: o.s3})

	// Every paced record carries its sequence number: the value of a copy
	// record, the (only) word of a word-count line and so the output key.
	var (
		mu          sync.Mutex
		sent        []time.Time
		seen        []time.Time
		written     []time.Time        // the output record's timestamp (producer time, unless the contender copies the input's)
		outPart     []int32            // the output record's partition
		warmSeen    = map[int32]bool{} // input partitions whose warm-up marker came out
		after       time.Time          // recovery: the first record sent after this...
		afterSeq    = -1               // ...has this sequence number
		recovered   time.Time
		recoveredCh = make(chan struct{})
	)
	tag := func(rec *kgo.Record) []byte {
		if workload == "wordcount" {
			return rec.Key
		}
		return rec.Value
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reader, err := k.readOutput(rctx, out, func(rs []*kgo.Record, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		for _, rec := range rs {
			t := tag(rec)
			switch {
			case bytes.HasPrefix(t, []byte("W")):
				if n, err := strconv.Atoi(string(t[1:])); err == nil {
					warmSeen[int32(n)%o.partitions] = true
				}
			case bytes.HasPrefix(t, []byte("L")):
				n, err := strconv.Atoi(string(t[1:]))
				if err != nil || n >= len(seen) {
					continue
				}
				if seen[n].IsZero() {
					seen[n], written[n], outPart[n] = at, rec.Timestamp, rec.Partition
				}
				if afterSeq >= 0 && n >= afterSeq && recovered.IsZero() {
					recovered = at
					close(recoveredCh)
				}
			}
		}
	})
	if err != nil {
		return err
	}
	defer reader.close()

	prod, err := kgo.NewClient(kgo.SeedBrokers(k.brokers...), kgo.DefaultProduceTopic(in),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer prod.Close()
	send := func(value string, partition int32) {
		prod.Produce(ctx, &kgo.Record{Value: []byte(value), Partition: partition}, nil)
	}

	p, err := startProc(o, c, s, "paced")
	if err != nil {
		return err
	}
	defer func() { p.stop(30 * time.Second) }()
	rss := sampleRSS(p.pids()...)

	// Warm up: a marker every 250 ms, to the input partitions in turn,
	// until one from every partition has come out (JVM start, group join,
	// every task's first checkpoint), and then for settleFor more. Right
	// after the first output, transactional contenders sometimes stalled
	// for 600-700 ms: the timeline shows the records written within a few
	// milliseconds and later transactions' markers on time, but one early
	// transaction's marker on one output partition late, which holds that
	// partition's last stable offset (onceflow, in some runs after other
	// contenders had run, never in isolation; franz-txn stalls at its
	// start too). That is start-up, not the steady state the latency
	// figures describe.
	settleFor := max(2*time.Second, 2*iv)
	warmDeadline := time.Now().Add(3 * time.Minute)
	var warmAt time.Time
	for n := 0; ; n++ {
		mu.Lock()
		ok := len(warmSeen) == int(o.partitions)
		mu.Unlock()
		if ok && warmAt.IsZero() {
			warmAt = time.Now()
		}
		if ok && time.Since(warmAt) >= settleFor {
			break
		}
		if p.exited() {
			rss.close()
			return p.failure()
		}
		if time.Now().After(warmDeadline) || ctx.Err() != nil {
			rss.close()
			return errors.New("no output within 3 minutes of the start")
		}
		send(fmt.Sprintf("W%d", n), int32(n)%o.partitions)
		time.Sleep(250 * time.Millisecond)
	}

	// pace sends records at o.paceRate until stop is closed.
	pace := func(stop <-chan struct{}) {
		const step = 10 * time.Millisecond
		perStep := max(1, o.paceRate*int(step)/int(time.Second))
		t := time.NewTicker(step)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for range perStep {
				mu.Lock()
				n := len(sent)
				sent = append(sent, time.Now())
				seen = append(seen, time.Time{})
				written = append(written, time.Time{})
				outPart = append(outPart, -1)
				mu.Unlock()
				send(fmt.Sprintf("L%d", n), int32(n)%o.partitions)
			}
		}
	}
	phaseStart := time.Now()
	stop1 := make(chan struct{})
	go func() { time.Sleep(o.paceFor); close(stop1) }()
	pace(stop1)
	mu.Lock()
	phaseN := len(sent)
	mu.Unlock()
	// Wait for every paced record, bounded.
	deadline := time.Now().Add(30*time.Second + 2*iv)
	for {
		mu.Lock()
		missing := 0
		for _, t := range seen[:phaseN] {
			if t.IsZero() {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	phaseEnd := time.Now()
	_, r.PacedPeakRSSMB = rss.now()
	rss.close()
	if c.scrape != nil {
		if m, err := c.scrape(s); err == nil {
			r.CheckpointPaced = m
		}
	}

	mu.Lock()
	var lat []float64
	var timeline strings.Builder // with -keep: when each record was sent, and its latency
	timeline.WriteString("# record\tsent_ms\tlatency_ms\twritten_after_ms\tout_partition\n")
	missing := 0
	for i := range phaseN {
		if seen[i].IsZero() {
			missing++
			continue
		}
		l := float64(seen[i].Sub(sent[i]).Microseconds()) / 1000
		lat = append(lat, l)
		fmt.Fprintf(&timeline, "%d\t%d\t%.1f\t%d\t%d\n", i, sent[i].Sub(phaseStart).Milliseconds(), l, written[i].Sub(sent[i]).Milliseconds(), outPart[i])
	}
	mu.Unlock()
	if o.keepWorkDir {
		if err := os.WriteFile(filepath.Join(dir, "latency.tsv"), []byte(timeline.String()), 0o644); err != nil {
			logf("writing the latency timeline: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "markers.tsv"), []byte(reader.markerTimeline(phaseStart)), 0o644); err != nil {
			logf("writing the commit markers: %v", err)
		}
	}
	slices.Sort(lat)
	r.LatencyN, r.LatencyMissing = len(lat), missing
	if len(lat) > 0 {
		r.P50MS, r.P99MS, r.MaxMS = quantile(lat, 0.5), quantile(lat, 0.99), lat[len(lat)-1]
	}
	if d, ok := reader.commitCadence(phaseStart, phaseEnd); ok {
		r.CommitPacedMS = float64(d.Microseconds()) / 1000
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d paced records never became visible", missing, phaseN)
	}

	if !o.recovery || !c.restartable {
		return nil
	}
	stop2 := make(chan struct{})
	paced := make(chan struct{})
	go func() { pace(stop2); close(paced) }()
	defer func() { close(stop2); <-paced }()
	time.Sleep(2*time.Second + iv)
	mu.Lock()
	after, afterSeq = time.Now(), len(sent)
	killedAt := after
	mu.Unlock()
	p.kill()
	p2, err := startProc(o, c, s, "restarted")
	if err != nil {
		return err
	}
	p = p2 // stopped by the deferred stop
	select {
	case <-recoveredCh:
		mu.Lock()
		r.RecoveryS = recovered.Sub(killedAt).Seconds()
		mu.Unlock()
	case <-time.After(3 * time.Minute):
		return errors.New("no output of new input within 3 minutes of the restart")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func quantile(sorted []float64, q float64) float64 {
	// Nearest rank.
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func httpClient() *http.Client { return &http.Client{Timeout: 5 * time.Second} }

// profiler is perf recording one process's on-CPU stacks.
type profiler struct {
	cmd  *exec.Cmd
	data string
	done chan struct{}
}

func startProfile(pid int, dir string) *profiler {
	data := filepath.Join(dir, "perf.data")
	cmd := exec.Command("perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", data)
	if err := cmd.Start(); err != nil {
		logf("profile: perf record: %v (install linux-perf)", err)
		return nil
	}
	p := &profiler{cmd: cmd, data: data, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

func (p *profiler) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// report stops the recording and writes the hottest functions (self
// time, then with callees) to path.
func (p *profiler) report(path string) error {
	if p == nil {
		return errors.New("perf did not start")
	}
	p.stop()
	var b bytes.Buffer
	for _, args := range [][]string{
		{"report", "-i", p.data, "--stdio", "--no-children", "--sort", "symbol", "-g", "none", "--percent-limit", "0.7"},
		{"report", "-i", p.data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "4"},
	} {
		out, err := exec.Command("perf", args...).Output()
		if err != nil {
			return fmt.Errorf("perf %s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(&b, "$ perf %s\n", strings.Join(args, " "))
		for _, line := range strings.Split(string(out), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				b.WriteString(strings.TrimRight(line, " -") + "\n")
			}
		}
		b.WriteString("\n")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
