package kafka

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/onceflow/onceflow/internal/outage"
)

// closeCommitTimeout bounds the last group commit at Reader.Close: a
// stopping job commits the offsets of its last completed checkpoint for
// start=committed and lag monitoring, but does not wait out an outage for
// them.
const closeCommitTimeout = 5 * time.Second

// groupCommitter commits the offsets of completed checkpoints to the
// consumer group on a goroutine of its own, so that the subtask never
// waits for the round trip: the commit is for lag monitoring and
// start=committed only, the checkpoint holds the truth. Offers coalesce:
// while one commit is on the wire, the next offer replaces any older one
// not sent yet, so a slow coordinator costs commits, never memory or the
// record path's time, and the group's offsets only move forward (offers
// come in checkpoint order, and one commit is sent at a time).
//
// A failed commit is logged once, with a line when commits work again,
// not at every checkpoint: an outage fails them all, and a coordinator
// away while the partitions' leaders answer can fail them for long. Such
// failures are not outages of the job (nothing waits for the commit), so
// the tracker hears of the successes only.
//
// The goroutine is started by newGroupCommitter and stopped by close,
// which first sends what is still to be sent, bounded by
// closeCommitTimeout.
type groupCommitter struct {
	commit  func(ctx context.Context, offsets kadm.Offsets) error
	group   string
	logger  *slog.Logger
	tracker *outage.Tracker

	mu   sync.Mutex
	next *offer // the latest offer not sent yet; nil when none
	// stopping is set by close: the goroutine sends next, if any, and
	// returns.
	stopping bool
	// offers counts the offers made, sent the offers sent or replaced
	// by a later one that was sent; settled signals sent moving.
	offers, sent int64
	settled      *sync.Cond
	wake         chan struct{} // capacity 1: an offer or close happened
	ctx          context.Context
	cancel       context.CancelFunc
	done         chan struct{}

	// failing is set once a commit failed (goroutine only).
	failing bool
}

// offer is one checkpoint's offsets, to be committed.
type offer struct {
	checkpoint int64
	offsets    kadm.Offsets
}

// newGroupCommitter starts a committer that sends offers through commit.
func newGroupCommitter(commit func(context.Context, kadm.Offsets) error, group string, logger *slog.Logger, tracker *outage.Tracker) *groupCommitter {
	ctx, cancel := context.WithCancel(context.Background())
	c := &groupCommitter{commit: commit, group: group, logger: logger, tracker: tracker,
		wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	c.settled = sync.NewCond(&c.mu)
	go c.run() // owned by c: close stops it and waits
	return c
}

// offer hands the offsets of completed checkpoint id to the goroutine,
// replacing an earlier offer not sent yet; it never blocks. Offers after
// close are dropped.
func (c *groupCommitter) offer(id int64, offs kadm.Offsets) {
	c.mu.Lock()
	if !c.stopping {
		c.next = &offer{checkpoint: id, offsets: offs}
		c.offers++
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close sends the offer not sent yet, if any, waiting at most
// closeCommitTimeout for it (and for a commit on the wire), then stops
// the goroutine. While the tracker reports the cluster away it does not
// wait: a job failing in an outage restarts without that delay. Safe to
// call more than once.
func (c *groupCommitter) close() {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	if c.tracker.Status().Down {
		c.cancel()
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	t := time.AfterFunc(closeCommitTimeout, c.cancel)
	<-c.done
	t.Stop()
	c.cancel()
}

// sync waits until every offer made before the call was sent (or
// replaced by a later one that was sent), successfully or not, or until
// the goroutine stopped. For tests.
func (c *groupCommitter) sync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for want := c.offers; c.sent < want; {
		select {
		case <-c.done:
			return
		default:
		}
		c.settled.Wait()
	}
}

// run sends offers one at a time until close.
func (c *groupCommitter) run() {
	defer close(c.done)
	for {
		<-c.wake
		c.mu.Lock()
		o, stopping, upTo := c.next, c.stopping, c.offers
		c.next = nil
		c.mu.Unlock()
		if o != nil {
			c.send(o)
		}
		c.mu.Lock()
		c.sent = upTo
		c.settled.Broadcast()
		c.mu.Unlock()
		if stopping { // offers stop with stopping: o was the last
			return
		}
	}
}

// send commits one offer and logs the outcome as the type's comment says.
func (c *groupCommitter) send(o *offer) {
	err := c.commit(c.ctx, o.offsets)
	const msg = "kafka source: committing checkpointed offsets to the group failed (lag monitoring only)"
	switch {
	case err == nil:
		if c.failing {
			c.failing = false
			c.logger.Info("kafka source: committing checkpointed offsets to the group works again", "group", c.group, "checkpoint", o.checkpoint)
		}
		c.tracker.Succeeded()
	case c.failing || c.ctx.Err() != nil:
		c.logger.Debug(msg, "group", c.group, "checkpoint", o.checkpoint, "err", err)
	default:
		c.failing = true
		c.logger.Warn(msg+"; not logged again until a commit succeeds",
			"group", c.group, "checkpoint", o.checkpoint, "err", err)
	}
}
