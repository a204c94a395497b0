package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/onceflow/onceflow/engine"
)

// errAlreadyStopping answers a second stop request while one runs.
var errAlreadyStopping = errors.New("the job is already stopping")

// control is the one place that stops a running job, whoever asks: a
// signal, the HTTP API, or a failed stop that has to cancel. It lives as
// long as one run of the job.
type control struct {
	job *engine.Job
	// cancelJob cancels the context the job runs under, with a cause.
	cancelJob context.CancelCauseFunc
	// ended is cancelled once Job.Run returned: waits on the job end then.
	ended       context.Context
	stopTimeout time.Duration
	log         *slog.Logger

	mu       sync.Mutex
	stopping bool
	path     string // the savepoint of the successful stop
}

// stopWithSavepoint stops the job with a savepoint within the stop
// timeout and returns the savepoint's path. Only one stop runs at a time;
// a failed stop leaves the job running (the engine resumes its sources).
func (c *control) stopWithSavepoint(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return "", errAlreadyStopping
	}
	c.stopping = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, c.stopTimeout)
	defer cancel()
	defer context.AfterFunc(c.ended, cancel)()
	start := time.Now()
	c.log.Info("stopping the job with a savepoint", "timeout", c.stopTimeout)
	path, err := c.job.StopWithSavepoint(ctx)
	if err != nil && c.ended.Err() != nil && c.job.Status().State == engine.JobStopped {
		// The job stopped with the savepoint as the wait for the answer
		// ended with it.
		path, err = c.lastSavepoint(), nil
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stopping = false
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no savepoint within %s: %w", c.stopTimeout, err)
		}
		return "", fmt.Errorf("stop with a savepoint: %w", err)
	}
	c.path = path
	c.log.Info("savepoint complete and committed", "path", path, "took", time.Since(start).Round(time.Millisecond))
	return path, nil
}

// savepoint takes a savepoint of the running job within the stop timeout.
func (c *control) savepoint(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.stopTimeout)
	defer cancel()
	defer context.AfterFunc(c.ended, cancel)()
	path, err := c.job.TriggerSavepoint(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no savepoint within %s: %w", c.stopTimeout, err)
		}
		return "", fmt.Errorf("savepoint: %w", err)
	}
	c.log.Info("savepoint complete", "path", path)
	return path, nil
}

// cancel ends the job at once, without a savepoint (nothing to do once
// it ended).
func (c *control) cancel(cause error) {
	if c.ended.Err() != nil {
		return
	}
	c.log.Warn("cancelling the job", "cause", cause)
	c.cancelJob(cause)
}

// stoppedPath is the savepoint the job stopped with: the one a stop
// returned, else (the stop's caller gave up waiting just before the job
// stopped) the newest completed savepoint of the history.
func (c *control) stoppedPath() string {
	c.mu.Lock()
	p := c.path
	c.mu.Unlock()
	if p != "" {
		return p
	}
	return c.lastSavepoint()
}

// lastSavepoint is the newest completed savepoint of the history.
func (c *control) lastSavepoint() string {
	hist := c.job.Status().Checkpoints
	for i := len(hist) - 1; i >= 0; i-- {
		if cs := hist[i]; cs.Savepoint && cs.Status == engine.CheckpointCompleted {
			return cs.Path
		}
	}
	return ""
}
