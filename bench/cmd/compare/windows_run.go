package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// winSeen is what a read_committed reader of a windowed job's output has
// seen: the first visibility and count of every window (the flush key's
// excluded), duplicates, and results it could not read.
type winSeen struct {
	mu      sync.Mutex
	at      map[winKey]time.Time
	count   map[winKey]int64
	dups    int
	bad     int
	badText string
	firstAt time.Time
	// want, when set, is the number of windows of ref to wait for; done
	// is closed when every one of them has been seen.
	ref     map[winKey]int64
	matched int
	lastAt  time.Time
	done    chan struct{}
	// newestAt is when the newest new window appeared.
	newestAt time.Time
}

func newWinSeen(ref map[winKey]int64) *winSeen {
	return &winSeen{at: map[winKey]time.Time{}, count: map[winKey]int64{}, ref: ref, done: make(chan struct{})}
}

func (w *winSeen) add(rs []*kgo.Record, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rec := range rs {
		if string(rec.Key) == "-1" {
			continue
		}
		k, n, err := parseWinResult(rec.Value)
		if err != nil {
			w.bad++
			w.badText = err.Error()
			continue
		}
		if k.Key == "-1" {
			continue
		}
		if _, ok := w.at[k]; ok {
			w.dups++
			continue
		}
		if w.firstAt.IsZero() {
			w.firstAt = at
		}
		w.at[k], w.count[k] = at, n
		w.newestAt = at
		if w.ref != nil {
			if want, ok := w.ref[k]; ok && want == n {
				w.matched++
				if w.matched == len(w.ref) {
					w.lastAt = at
					close(w.done)
				}
			}
		}
	}
}

// check compares what was seen of the windows in ref with ref: missing
// windows, wrong counts, windows not in ref (only with extra), duplicates
// and unreadable results; "ok" when none.
func (w *winSeen) check(ref map[winKey]int64, extra bool) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	missing, wrong, unknown := 0, 0, 0
	for k, n := range ref {
		got, ok := w.count[k]
		switch {
		case !ok:
			missing++
		case got != n:
			wrong++
		}
	}
	if extra {
		for k := range w.count {
			if _, ok := ref[k]; !ok {
				unknown++
			}
		}
	}
	var p []string
	if missing > 0 {
		p = append(p, fmt.Sprintf("%d of %d windows missing", missing, len(ref)))
	}
	if wrong > 0 {
		p = append(p, fmt.Sprintf("%d windows with a wrong count", wrong))
	}
	if unknown > 0 {
		p = append(p, fmt.Sprintf("%d windows not in the reference", unknown))
	}
	if w.dups > 0 {
		p = append(p, fmt.Sprintf("%d duplicate results", w.dups))
	}
	if w.bad > 0 {
		p = append(p, fmt.Sprintf("%d unreadable results (%s)", w.bad, w.badText))
	}
	if len(p) == 0 {
		return "ok"
	}
	return strings.Join(p, "; ")
}

// winBacklog measures throughput: the whole seeded input waits when the
// contender starts; it ends when every reference window has appeared.
func winBacklog(ctx context.Context, k *kafka, o *options, w *winOptions, c *contender, q winQuery, in *winInput, id string, iv time.Duration, dir string, r *result) error {
	out := id + "-out"
	defer k.deletePrefix(id)
	settle()
	if err := k.createTopic(ctx, out, o.partitions); err != nil {
		return err
	}
	s := newSpec(c, spec{Brokers: k.brokers, Job: q.Name, In: in.Topic, Out: out, ID: id, Interval: iv, Dir: dir})
	seen := newWinSeen(in.ref)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reader, err := k.readOutput(rctx, out, seen.add)
	if err != nil {
		return err
	}
	defer reader.close()
	started := time.Now()
	p, err := startProc(o, c, s, "backlog")
	if err != nil {
		return err
	}
	defer p.stop(5 * time.Second)
	rss := sampleRSS(p.pids()...)
	defer rss.close()
	var prof *profiler
	if o.profile == c.name {
		prof = startProfile(p.pid(), dir)
		defer prof.stop()
	}
	timeout := time.After(o.runTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-seen.done:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return fmt.Errorf("output incomplete after %s: %s", o.runTimeout, seen.check(in.ref, false))
		case <-tick.C:
			if p.exited() {
				return p.failure()
			}
			// A contender whose output will never match the reference
			// (windows missing or miscounted) ends when its output has
			// been quiet for 5 s and two intervals after the flush could
			// have closed every window; the check says what is wrong.
			seen.mu.Lock()
			quiet := !seen.newestAt.IsZero() && time.Since(seen.newestAt) > 5*time.Second+2*iv
			if quiet {
				seen.lastAt = seen.newestAt
			}
			seen.mu.Unlock()
			if quiet {
				break wait
			}
		}
	}
	r.CPUS = cpuSeconds(p.pids())
	_, r.PeakRSSMB = rss.now()
	if prof != nil {
		name := fmt.Sprintf("profile-%s-%s-%dms.txt", c.name, q.Name, iv.Milliseconds())
		if err := prof.report(filepath.Join(o.resultsDir, name)); err != nil {
			logf("profile: %v", err)
		}
	}
	// Anything more that shows up now is a duplicate or a window not in
	// the reference.
	time.Sleep(time.Second + iv)
	p.stop(5 * time.Second)
	seen.mu.Lock()
	first, last := seen.firstAt, seen.lastAt
	seen.mu.Unlock()
	r.Records = in.Bids
	if span := last.Sub(first) + iv; span > 0 {
		r.Throughput = float64(in.Bids-in.FirstAt) / span.Seconds()
	}
	r.CPUPerM = r.CPUS / float64(in.Bids) * 1e6
	r.StartupS = first.Sub(started).Seconds()
	r.WallS = last.Sub(started).Seconds()
	if d, ok := reader.commitCadence(first, last); ok {
		r.CommitLoadMS = float64(d.Microseconds()) / 1000
	}
	r.Check = seen.check(in.ref, true)
	return nil
}

// winPaced measures latency: bids at o.paceRate per second into a fresh
// topic, each stamped with the wall-clock time it is produced (less its
// delay).
func winPaced(ctx context.Context, k *kafka, o *options, w *winOptions, c *contender, q winQuery, id string, iv time.Duration, dir string, r *result) error {
	in, out := id+"-in", id+"-out"
	defer k.deletePrefix(id)
	settle()
	for _, t := range []string{in, out} {
		if err := k.createTopic(ctx, t, o.partitions); err != nil {
			return err
		}
	}
	s := newSpec(c, spec{Brokers: k.brokers, Job: q.Name, In: in, Out: out, ID: id, Interval: iv, Dir: dir})
	seen := newWinSeen(nil)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reader, err := k.readOutput(rctx, out, seen.add)
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

	// The pacer: every 10 ms, the bids due, stamped now - their delay.
	var (
		mu   sync.Mutex
		sent []timedBid
	)
	g := newNexmark(rand.Int63(), 0, float64(o.paceRate), w.delayFrac, w.boundMS)
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
				b := g.next()
				b.TS = time.Now().UnixMilli() - b.DelayMS
				key := q.keyOf(b)
				mu.Lock()
				sent = append(sent, timedBid{key, b.TS})
				mu.Unlock()
				prod.Produce(ctx, &kgo.Record{Key: []byte(key), Value: b.JSON(), Partition: partitionOf(key, o.partitions)}, nil)
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

	p, err := startProc(o, c, s, "paced")
	if err != nil {
		return err
	}
	defer func() { p.stop(5 * time.Second) }()
	// Warm-up: until the first result is visible, and a settling time.
	warmDeadline := time.Now().Add(3 * time.Minute)
	for {
		seen.mu.Lock()
		ok := !seen.firstAt.IsZero()
		seen.mu.Unlock()
		if ok {
			break
		}
		if p.exited() {
			return p.failure()
		}
		if time.Now().After(warmDeadline) || ctx.Err() != nil {
			return errors.New("no result within 3 minutes of the start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	bound := time.Duration(w.boundMS) * time.Millisecond
	time.Sleep(max(2*time.Second, 2*iv))
	measureStart := time.Now()
	time.Sleep(o.paceFor)
	measureEnd := time.Now()
	// Every bid with an event time up to measureEnd has been produced by
	// measureEnd + bound.
	time.Sleep(bound + 200*time.Millisecond)
	mu.Lock()
	ref := q.reference(sent)
	mu.Unlock()
	for wk := range ref {
		if ready := wk.End + w.boundMS; ready < measureStart.UnixMilli() || ready > measureEnd.UnixMilli() {
			delete(ref, wk)
		}
	}
	if len(ref) == 0 {
		return errors.New("no window closed within the measured phase")
	}
	deadline := time.Now().Add(30*time.Second + 2*iv)
	for {
		seen.mu.Lock()
		missing := 0
		for wk := range ref {
			if _, ok := seen.at[wk]; !ok {
				missing++
			}
		}
		seen.mu.Unlock()
		if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if p.exited() {
			return p.failure()
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPacing()

	var lat []float64
	var timeline strings.Builder
	timeline.WriteString("# key\tstart\tend\tlatency_ms\n")
	seen.mu.Lock()
	missing := 0
	for wk := range ref {
		at, ok := seen.at[wk]
		if !ok {
			missing++
			continue
		}
		l := float64(at.Sub(time.UnixMilli(wk.End+w.boundMS)).Microseconds()) / 1000
		lat = append(lat, l)
		fmt.Fprintf(&timeline, "%s\t%d\t%d\t%.1f\n", wk.Key, wk.Start, wk.End, l)
	}
	seen.mu.Unlock()
	if o.keepWorkDir {
		if err := os.WriteFile(filepath.Join(dir, "latency.tsv"), []byte(timeline.String()), 0o644); err != nil {
			logf("writing the latency timeline: %v", err)
		}
	}
	slices.Sort(lat)
	r.LatencyN, r.LatencyMissing = len(lat), missing
	if len(lat) > 0 {
		r.P50MS, r.P99MS, r.MaxMS = quantile(lat, 0.5), quantile(lat, 0.99), lat[len(lat)-1]
	}
	if d, ok := reader.commitCadence(measureStart, measureEnd); ok {
		r.CommitPacedMS = float64(d.Microseconds()) / 1000
	}
	if chk := seen.check(ref, false); chk != "ok" {
		if r.Check == "ok" || r.Check == "" {
			r.Check = "paced: " + chk
		} else {
			r.Check += "; paced: " + chk
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d windows of the measured phase never became visible", missing, len(ref))
	}
	return nil
}
