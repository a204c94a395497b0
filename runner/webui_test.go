package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/jobs"
)

// chromiumPath is Debian's chromium, which scripts/install-chromium.sh
// installs (make deps runs it).
const chromiumPath = "/usr/bin/chromium"

// webuiPage is what the page shows, read in the browser.
type webuiPage struct {
	Polls         int      `json:"polls"`
	Error         string   `json:"error"`
	State         string   `json:"state"`
	Nodes         []string `json:"nodes"`
	Backpressured []string `json:"backpressured"`
	Edges         int      `json:"edges"`
	RecordsIn     int64    `json:"recordsIn"`
	Bars          int      `json:"bars"`
	FailedBars    int      `json:"failedBars"`
	Completed     int64    `json:"completed"`
	Pending       string   `json:"pending"`
	Restarts      string   `json:"restarts"`
	LastFailure   string   `json:"lastFailure"`
	// Distributed mode.
	Mode            string `json:"mode"`
	Groups          int    `json:"groups"`
	GraphHidden     bool   `json:"graphHidden"`
	CheckpointsNote string `json:"checkpointsNote"`
}

// readPage reads the page's graph, checkpoint chart and cards.
const readPage = `(() => {
  const num = (s) => parseInt((s || '').replace(/[^0-9]/g, ''), 10) || 0;
  const text = (id) => document.getElementById(id).textContent;
  const nodes = [...document.querySelectorAll('#graph g.node')];
  return {
    polls: parseInt(document.body.dataset.polls, 10),
    error: document.body.dataset.error || '',
    state: text('job-state'),
    nodes: nodes.map((n) => n.dataset.uid),
    backpressured: nodes.filter((n) => n.dataset.activity === 'backpressured').map((n) => n.dataset.uid),
    edges: document.querySelectorAll('#graph path.edge').length,
    recordsIn: nodes.reduce((s, n) => s + num(n.querySelector('.records-in').textContent), 0),
    bars: document.querySelectorAll('#cp-chart rect.cp-bar').length,
    failedBars: document.querySelectorAll('#cp-chart rect.cp-bar.failed').length,
    completed: num(text('cp-completed')),
    pending: text('txn-pending'),
    restarts: text('restarts'),
    lastFailure: text('last-failure'),
    mode: text('job-mode'),
    groups: document.querySelectorAll('#groups tbody tr').length,
    graphHidden: !document.getElementById('graph-panel').checkVisibility(),
    checkpointsNote: document.getElementById('cp-empty').checkVisibility() ? text('cp-empty') : '',
  };
})()`

// webuiJob is the in-memory word count of memJob with a format stage
// after the count, as the processor's word count has, built to show what
// the page shows: checkpoint failures are tolerated (so a held sink makes
// failed checkpoints, not a failed attempt), an attempt that fails is
// restarted, the split operator fails its attempt once when failNow has a
// value, and format takes 3 ms a record while slow is set (its chain then
// backpressures split).
func webuiJob(m *memJob, failNow chan struct{}, slow *atomic.Bool) func(context.Context, *config.Config, jobs.Env) (*jobs.Built, error) {
	return func(_ context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error) {
		storage, err := dirstore.NewFileStorage(cfg.Checkpoint.Dir, cfg.Job.Name, dirstore.StorageOptions{Retained: cfg.Checkpoint.Retain})
		if err != nil {
			return nil, fmt.Errorf("checkpoint.dir: %w", err)
		}
		j := engine.NewJob(cfg.Job.Name, engine.Options{
			Checkpoint: engine.CheckpointOptions{Interval: cfg.Checkpoint.Interval, Timeout: cfg.Checkpoint.Timeout, TolerableFailures: 1000},
			Restart:    engine.FixedDelay(3, 100*time.Millisecond),
			Storage:    storage,
			Logger:     env.Logger,
		})
		m.graph(j, cfg.Job.Parallelism, func() error {
			select {
			case <-failNow:
				return errors.New("split: injected failure")
			default:
				return nil
			}
		}, func(wc wordCount) (wordCount, error) {
			if slow.Load() {
				time.Sleep(3 * time.Millisecond)
			}
			return wc, nil
		})
		return &jobs.Built{Job: j, Stats: func() jobs.Stats { return m.sink.stats(m.src) }}, nil
	}
}

// TestWebUIShowsTheRunningJob loads / in headless Chromium against an
// in-memory word count run by processor run, and checks what the page
// draws as the job goes through three phases:
//
//   - the sink held in its pre-commit: the graph of the job's five
//     operators, split (chained to the source) backpressured by the
//     count-format-sink chain, and failed checkpoints marked in the
//     history chart;
//   - the sink let go and one attempt failed: the restart count and the
//     last failure;
//   - running on: live numbers, the completed checkpoints and the
//     records in rising between two reads of the page.
//
// With ONCEFLOW_WEBUI_SCREENSHOT=<path of a .png> it then saves a
// screenshot of the page there (the README's).
func TestWebUIShowsTheRunningJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): install it with scripts/install-chromium.sh (make deps runs it)", chromiumPath, err)
	}
	m := newMemJob(1<<30, 2*time.Millisecond)
	m.sink.block = make(chan struct{})
	failNow := make(chan struct{}, 1)
	var slow atomic.Bool
	r := startRunDeps(t, func(d deps) deps { d.build = webuiJob(m, failNow, &slow); return d }, m, nil,
		"--config", jobConfig(t, t.TempDir(), ""),
		"--set", "checkpoint.interval=300ms", "--set", "checkpoint.timeout=600ms", "--set", "log.level=info")
	addr := r.addr()
	released := false
	release := func() {
		if !released {
			released = true
			close(m.sink.block)
		}
	}
	defer release()

	ctx := startBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/?refresh=250")); err != nil {
		t.Fatalf("loading http://%s/: %v", addr, err)
	}

	until := func(what string, ok func(webuiPage) bool) webuiPage {
		t.Helper()
		return untilPage(t, ctx, r, what, ok)
	}

	// Held sink: the graph, backpressure, failed checkpoints.
	wantNodes := []string{"count", "format", "sink", "source", "split"}
	held := until("graph of the five operators, backpressure upstream of the held sink and a failed checkpoint", func(p webuiPage) bool {
		return slices.Equal(slices.Sorted(slices.Values(p.Nodes)), wantNodes) && p.Edges == 4 &&
			slices.Contains(p.Backpressured, "split") && p.FailedBars >= 1
	})
	if held.Error != "" {
		t.Errorf("the page reported %q", held.Error)
	}
	// split runs chained to the source and sends to count on keyed
	// channels; count, format and the held sink are a chain that waits
	// in the sink, not on a channel.
	for _, uid := range []string{"count", "format", "sink"} {
		if slices.Contains(held.Backpressured, uid) {
			t.Errorf("%s shows as backpressured: its chain waits in the sink's pre-commit (%+v)", uid, held)
		}
	}

	// Let go, then one failed attempt: the restart and its cause.
	release()
	failNow <- struct{}{}
	until("restart with its failure", func(p webuiPage) bool {
		return p.Restarts == "1" && strings.Contains(p.LastFailure, "split: injected failure") && p.State == "RUNNING"
	})

	// Running on: live numbers.
	first := until("completed checkpoint after the restart", func(p webuiPage) bool { return p.Completed >= 1 && p.RecordsIn > 0 && p.Bars >= 2 })
	second := until("live numbers", func(p webuiPage) bool {
		return p.Polls > first.Polls && p.Completed > first.Completed && p.RecordsIn > first.RecordsIn
	})
	t.Logf("page: %d polls; records in %d -> %d; completed checkpoints %d -> %d; %d bars, %d failed; pending transactions %s",
		second.Polls, first.RecordsIn, second.RecordsIn, first.Completed, second.Completed, second.Bars, second.FailedBars, second.Pending)

	if path := os.Getenv("ONCEFLOW_WEBUI_SCREENSHOT"); path != "" {
		// For the picture: a fuller history, and a slow format stage
		// that backpressures split and the source.
		until("fuller checkpoint history", func(p webuiPage) bool { return p.Bars >= 20 })
		slow.Store(true)
		until("backpressure from the slow format stage", func(p webuiPage) bool { return slices.Contains(p.Backpressured, "split") && p.Bars >= 24 })
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of the page in %s", path)
	}
	if strings.Contains(r.stderr.String(), "http: request refused") {
		t.Errorf("the API guard refused a request of the page:\n%s", r.stderr.String())
	}
}

// startBrowser starts headless Chromium for the test, with a fresh
// profile and the flags of a closed network, and returns the context of
// its tab (at most 60 s of work); the browser stops at the test's end.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	// The profile directory: the browser's helper processes can still
	// write there for a moment after it stops, so it is removed with
	// retries rather than by t.TempDir's cleanup, which would fail.
	profile, err := os.MkdirTemp("", "onceflow-webui-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root, in a container
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// A closed network: nothing but the page's own origin.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1360, 1180),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	// The first Run starts the browser and must not carry a timeout (it
	// would end the browser's context with it): a browser that does not
	// answer within a minute is stopped by cancelling it instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(browserCtx, chromedp.Navigate("about:blank")) }()
	select {
	case err = <-started:
	case <-time.After(time.Minute):
		cancelBrowser()
		err = fmt.Errorf("no answer within a minute (%v)", <-started)
	}
	if err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(browserCtx, 60*time.Second)
	t.Cleanup(func() {
		cancel()
		cancelBrowser()
		cancelAlloc()
	})
	return ctx
}

// untilPage reads the page in ctx until ok says it shows what is wanted,
// for at most 15 s; the failure shows the page and r's log.
func untilPage(t *testing.T, ctx context.Context, r *testRun, what string, ok func(webuiPage) bool) webuiPage {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := chromedp.Run(ctx, chromedp.Evaluate[webuiPage](readPage))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page shows no %s within 15s: %+v\n%s", what, p, r.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWebUIShowsADistributedInstance: in job.mode distributed the page
// shows what that mode's API offers: the instance's partition groups,
// and no job graph; the checkpoint history says why it is absent.
func TestWebUIShowsADistributedInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing (%v): install it with scripts/install-chromium.sh (make deps runs it)", chromiumPath, err)
	}
	r := startDistributed(t, 4, nil, nil, "--set", "job.partition_groups=2")
	addr := r.addr()
	waitGroups(t, addr, 2)
	ctx := startBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/?refresh=250")); err != nil {
		t.Fatalf("loading http://%s/: %v", addr, err)
	}
	p := untilPage(t, ctx, r.testRun, "partition groups", func(p webuiPage) bool { return p.Polls >= 1 && p.Groups == 2 })
	if len(p.Nodes) != 0 || !p.GraphHidden || !strings.Contains(p.CheckpointsNote, "not available with job.mode distributed") {
		t.Errorf("distributed page: nodes %v, graph hidden %v, checkpoint note %q; want no graph and the API's refusal", p.Nodes, p.GraphHidden, p.CheckpointsNote)
	}
	if !strings.Contains(p.Mode, "distributed") || p.State != "running" {
		t.Errorf("distributed page: mode %q, state %q", p.Mode, p.State)
	}
}
