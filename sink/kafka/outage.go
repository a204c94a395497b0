package kafka

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/outage"
)

// Riding out an outage on the produce path.
//
// kgo retries produce requests by itself through a restarting broker, a
// leader change and retriable error codes; by default a record never times
// out. The sink's producers keep the unlimited retries, and a guard of the
// sink's own (deliveryGuard) fails their records once none was delivered
// for the outage tolerance (Kafka's delivery.timeout.ms): a record fails,
// and with it the transaction or the at_least_once barrier, only once the
// client made no progress that long. kgo fails such records only where
// failing them cannot break the producer's sequence numbers, and a record
// written in a request that never got an answer may wait longer; so the
// barrier's flush does not trust the guard alone. A flush that has not
// finished within probeEvery asks the cluster whether it answers
// (kgo.Client.Ping): an answer means the cluster is only slow and the
// flush goes on waiting; a failure is a failure of the ongoing outage
// (outage.Tracker.Failed), and once the outage lasted the tolerance the
// flush gives up with the tracker's *outage.Error, the records still
// buffered for the caller to abort.

// rideOutProduce are the producer options of every client of the sink,
// appended after the caller's so that they hold. A kgo.RecordDeliveryTimeout
// of the caller's stays: the sink sets none (see deliveryGuard).
func rideOutProduce() []kgo.Opt {
	return []kgo.Opt{kgo.RecordRetries(math.MaxInt)}
}

// probeEvery is how long a flush waits before asking the cluster whether
// it answers, and then between the questions: a quarter of the tolerance,
// between 50ms and 1s.
func probeEvery(tolerance time.Duration) time.Duration {
	return min(max(tolerance/4, 50*time.Millisecond), time.Second)
}

// flush waits until every record buffered in cl is acknowledged or has
// failed, riding out an outage for tr's tolerance (see above). It returns
// ctx's error when ctx ends first, and tr's *outage.Error when the cluster
// stayed away for the tolerance; what names the flush in both. A nil
// return says nothing about the records' results: the caller checks them,
// and reports a flush whose records all succeeded to tr (Succeeded).
func flush(ctx context.Context, cl *kgo.Client, tr *outage.Tracker, what string) error {
	every := probeEvery(tr.Tolerance())
	var failing time.Time // the first failed probe of this flush's current run
	for {
		fctx, cancel := context.WithTimeout(ctx, every)
		err := cl.Flush(fctx)
		cancel()
		if err == nil {
			return nil // nothing buffered; the caller checks the records' results
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		perr := cl.Ping(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case perr == nil:
			tr.Succeeded() // the cluster answers: only slow
			failing = time.Time{}
		case outage.Retriable(perr):
			if failing.IsZero() {
				failing = time.Now()
			}
			if oerr := tr.Failed(what, perr, failing); oerr != nil {
				return oerr
			}
		}
	}
}
