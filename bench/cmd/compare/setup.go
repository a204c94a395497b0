package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/internal/testkit/broker"
)

// setup is what every mode of the harness prepares before its first run:
// the results and work folders, a context that SIGINT and SIGTERM cancel,
// every contender built (a build failure is that contender's result, not
// the harness's), and the cluster with a client on it. close undoes it, in
// reverse.
type setup struct {
	ctx     context.Context
	started time.Time
	built   map[string]error
	k       *kafka
	undo    []func()
}

// setUp prepares a run of mode (for the log) with results in results
// (relative to the repository unless -out gave a path), a work folder
// named after work, and a broker with props unless KAFKA_BOOTSTRAP names
// a cluster. On error it has undone what it did.
func setUp(o *options, mode, results, work string, props []string) (s *setup, err error) {
	s = &setup{built: map[string]error{}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if o.resultsDir == "" {
		o.resultsDir = results
	}
	if !filepath.IsAbs(o.resultsDir) {
		o.resultsDir = filepath.Join(o.repoDir, o.resultsDir)
	}
	if o.cacheDir == "" {
		if o.cacheDir, err = broker.CacheDir(); err != nil {
			return nil, err
		}
	}
	if o.workDir == "" {
		if o.workDir, err = os.MkdirTemp("", work); err != nil {
			return nil, err
		}
		if !o.keepWorkDir {
			dir := o.workDir
			s.undo = append(s.undo, func() { os.RemoveAll(dir) })
		}
	}
	o.loadBefore = loadAvg()
	logf("%s: load average before the run: %s (other work on the machine skews every figure)", mode, o.loadBefore)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	s.ctx, s.started = ctx, time.Now()
	s.undo = append(s.undo, stop)
	logf("work dir %s, results to %s", o.workDir, o.resultsDir)
	for _, name := range o.contenders {
		t := time.Now()
		s.built[name] = findContender(name).build(ctx, o)
		if s.built[name] != nil {
			logf("%s: build failed: %v", name, s.built[name])
		} else {
			logf("%s: ready (%s)", name, time.Since(t).Round(time.Millisecond))
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if env := os.Getenv("KAFKA_BOOTSTRAP"); env != "" {
		o.brokers = strings.Split(env, ",")
		logf("using the cluster at %s", env)
	} else {
		c, err := broker.Start(ctx, broker.Options{Logf: logf, ServerJVM: broker.ProductionJVM, Props: props})
		if err != nil {
			return nil, err
		}
		s.undo = append(s.undo, func() {
			if err := c.Stop(); err != nil {
				logf("stopping the broker: %v", err)
			}
		})
		o.brokers = c.Addrs()
	}
	if s.k, err = newKafka(o.brokers); err != nil {
		return nil, err
	}
	s.undo = append(s.undo, s.k.close)
	return s, nil
}

func (s *setup) close() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
	s.undo = nil
}
