package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/state"
)

// The processor's tests run a real engine.Job over an in-memory source and
// sink instead of Kafka: lineSource stands for the input topic, txnSink
// for the transactional output topic.

// lineSource emits lines "w<i%5> w<i%3>" for i = 0..limit-1 on each
// subtask, one every gap, then waits (an idle topic). Its state is the
// subtask's next line.
type lineSource struct {
	limit int
	gap   time.Duration
	// fail, when set, makes every subtask fail after that many lines.
	fail int
	// pauseAt, when set, holds every subtask at that line until release
	// is closed (a test that stops the job midway stays midway however
	// slow the machine).
	pauseAt int
	release chan struct{}
	read    atomic.Int64
}

type linePos struct {
	Subtask int `json:"subtask"`
	Next    int `json:"next"`
}

func (s *lineSource) NewReader(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SourceReader[string], error) {
	r := &lineReader{s: s, sub: sc.Subtask}
	for _, raw := range restored {
		var p linePos
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("lineSource state: %w", err)
		}
		if p.Subtask == sc.Subtask {
			r.next = p.Next
		}
	}
	return r, nil
}

type lineReader struct {
	s    *lineSource
	sub  int
	next int
}

func (r *lineReader) Next(ctx context.Context) (string, bool, error) {
	if r.s.fail > 0 && r.next >= r.s.fail {
		return "", false, errors.New("lineSource: injected failure")
	}
	if r.next >= r.s.limit {
		<-ctx.Done()
		return "", false, nil
	}
	if r.s.pauseAt > 0 && r.next >= r.s.pauseAt {
		select {
		case <-r.s.release:
		case <-ctx.Done():
			return "", false, nil
		}
	}
	if r.s.gap > 0 {
		t := time.NewTimer(r.s.gap)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return "", false, nil
		case <-t.C:
		}
	}
	i := r.next
	r.next++
	r.s.read.Add(1)
	return fmt.Sprintf("w%d w%d", i%5, i%3), true, nil
}

func (r *lineReader) SnapshotState(int64) ([][]byte, error) {
	b, err := json.Marshal(linePos{Subtask: r.sub, Next: r.next})
	return [][]byte{b}, err
}

func (r *lineReader) NotifyCheckpointComplete(context.Context, int64) error { return nil }
func (r *lineReader) Close() error                                          { return nil }

// wordCount is one output record: a word and its running count.
type wordCount struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// txnSink buffers each subtask's records in an open transaction,
// pre-commits it at the barrier and commits it when the checkpoint
// completes (or when a restore hands it back). block, when set, holds
// every pre-commit until it is closed or the attempt ends.
type txnSink struct {
	block chan struct{}

	mu        sync.Mutex
	committed []wordCount
	done      map[string]bool
	pending   map[string]time.Time // pre-committed, not yet committed
	open      int                  // records written since the last barrier
}

type memTxn struct {
	Subtask    int         `json:"subtask"`
	Checkpoint int64       `json:"checkpoint"`
	Records    []wordCount `json:"records"`
}

func (t memTxn) key() string { return fmt.Sprintf("%d/%d", t.Subtask, t.Checkpoint) }

func (s *txnSink) NewWriter(_ context.Context, sc engine.Scope, restored [][]byte) (engine.SinkWriter[wordCount], error) {
	for _, raw := range restored {
		var t memTxn
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, fmt.Errorf("txnSink state: %w", err)
		}
		if t.Subtask == sc.Subtask {
			s.commit(t)
		}
	}
	return &txnWriter{s: s, sub: sc.Subtask}, nil
}

func (s *txnSink) commit(t memTxn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = map[string]bool{}
	}
	delete(s.pending, t.key())
	if s.done[t.key()] {
		return
	}
	s.done[t.key()] = true
	s.committed = append(s.committed, t.Records...)
}

// stats is what jobs.Stats would report for this sink and a source.
func (s *txnSink) stats(src *lineSource) jobs.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := jobs.Stats{PendingTransactions: len(s.pending), RecordsRead: src.read.Load(), ConsumerLag: -1}
	for _, at := range s.pending {
		st.OldestPending = max(st.OldestPending, time.Since(at))
	}
	return st
}

func (s *txnSink) output() (committed []wordCount, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wordCount(nil), s.committed...), s.open
}

type txnWriter struct {
	s       *txnSink
	sub     int
	cur     []wordCount
	pending []memTxn
}

func (w *txnWriter) Write(_ context.Context, v wordCount) error {
	w.cur = append(w.cur, v)
	w.s.mu.Lock()
	w.s.open++
	w.s.mu.Unlock()
	return nil
}

func (w *txnWriter) SnapshotState(ctx context.Context, id int64) ([][]byte, error) {
	if w.s.block != nil {
		select {
		case <-w.s.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	t := memTxn{Subtask: w.sub, Checkpoint: id, Records: w.cur}
	w.cur = nil
	w.pending = append(w.pending, t)
	w.s.mu.Lock()
	if w.s.pending == nil {
		w.s.pending = map[string]time.Time{}
	}
	w.s.pending[t.key()] = time.Now()
	w.s.open -= len(t.Records)
	w.s.mu.Unlock()
	out := make([][]byte, 0, len(w.pending))
	for _, p := range w.pending {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (w *txnWriter) NotifyCheckpointComplete(_ context.Context, id int64) error {
	kept := w.pending[:0]
	for _, t := range w.pending {
		if t.Checkpoint <= id {
			w.s.commit(t)
		} else {
			kept = append(kept, t)
		}
	}
	w.pending = kept
	return nil
}

func (w *txnWriter) NotifyCheckpointAborted(context.Context, int64) error { return nil }

func (w *txnWriter) Close(context.Context) error {
	// An attempt's open records are lost with it, as an aborted Kafka
	// transaction's would be.
	w.s.mu.Lock()
	w.s.open -= len(w.cur)
	w.s.mu.Unlock()
	return nil
}

// memJob is a word count over lineSource and txnSink, built the way
// jobs.Build builds the real ones: from the configuration.
type memJob struct {
	src  *lineSource
	sink *txnSink
}

func (m *memJob) build(_ context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error) {
	storage, err := dirstore.NewFileStorage(cfg.Checkpoint.Dir, cfg.Job.Name, dirstore.StorageOptions{Retained: cfg.Checkpoint.Retain})
	if err != nil {
		return nil, fmt.Errorf("checkpoint.dir: %w", err)
	}
	if env.Fresh {
		if err := storage.DiscardAll(); err != nil {
			return nil, err
		}
	}
	restart := engine.NoRestart()
	j := engine.NewJob(cfg.Job.Name, engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: cfg.Checkpoint.Interval, Timeout: cfg.Checkpoint.Timeout,
			MaxConcurrent: cfg.Checkpoint.MaxConcurrent, DeleteOnCancel: cfg.Checkpoint.OnCancel == "delete",
			RetainSavepoints: cfg.Checkpoint.RetainSavepoints},
		Restart:               restart,
		Storage:               storage,
		MaxParallelism:        cfg.Job.MaxParallelism,
		RestoreFrom:           env.RestoreFrom,
		AllowNonRestoredState: env.AllowNonRestoredState,
		Logger:                env.Logger,
	})
	m.graph(j, cfg.Job.Parallelism, nil, nil)
	return &jobs.Built{Job: j, Stats: func() jobs.Stats { return m.sink.stats(m.src) }}, nil
}

// graph adds the word count to j, every operator with parallelism p:
// m's source, split, the count by word, a map named format when format
// is not nil, and m's sink. split calls check first, when not nil, for
// every line: an error it returns fails the attempt.
func (m *memJob) graph(j *engine.Job, p int, check func() error, format func(wordCount) (wordCount, error)) {
	lines := engine.FromSource(j, "source", p, engine.Source[string](m.src))
	words := engine.FlatMap(lines, "split", func(line string, out func(wordCount)) error {
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		for _, w := range strings.Fields(line) {
			out(wordCount{Word: w, Count: 1})
		}
		return nil
	})
	keyed := engine.KeyBy(words, func(w wordCount) string { return w.Word }, state.StringCodec{})
	counts := engine.Reduce(keyed, "count", p, state.JSONCodec[wordCount]{}, func(acc, v wordCount) (wordCount, error) {
		return wordCount{Word: v.Word, Count: acc.Count + v.Count}, nil
	})
	if format != nil {
		counts = engine.Map(counts, "format", format)
	}
	engine.SinkTo(counts, "sink", p, engine.Sink[wordCount](m.sink))
}
