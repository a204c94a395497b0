package kafka

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/outage"
)

// TimeoutBudget is what a pre-committed transaction may have to outlive
// before its commit. In the worst case the transaction begins right after
// a barrier and waits for the next (the interval); its checkpoint and the
// tolerable_failures after it time out, and only the last one the attempt
// allows completes, carrying the transaction ((tolerable_failures + 1) ×
// checkpoint timeout); the commit then waits out an outage of the cluster
// for the whole outage tolerance and fails the attempt; and the restart
// strategy waits its delay before the restore commits the transaction.
type TimeoutBudget struct {
	CheckpointInterval time.Duration
	CheckpointTimeout  time.Duration
	// TolerableFailures is checkpoint.tolerable_failures: that many
	// checkpoints may time out in a row before the attempt fails.
	TolerableFailures int
	RestartDelay      time.Duration
	// OutageTolerance is kafka.outage_tolerance: how long a commit may
	// wait for an unreachable cluster (zero: outage.DefaultTolerance, what
	// the sink waits when given no tracker).
	OutageTolerance time.Duration
}

// Need is the time a pre-committed transaction may have to wait for its
// commit: interval + (tolerable failures + 1) × checkpoint timeout +
// outage tolerance + restart delay.
func (b TimeoutBudget) Need() time.Duration {
	tol := b.OutageTolerance
	if tol <= 0 {
		tol = outage.DefaultTolerance
	}
	return b.CheckpointInterval + time.Duration(max(b.TolerableFailures, 0)+1)*b.CheckpointTimeout + tol + b.RestartDelay
}

// The transaction timeout must be comfortNum/comfortDen (5/4) of the
// budget. The budget already sums the worst case of every configured
// stage; what no key bounds is the restarted attempt's own start
// (restoring the state, connecting) and the commit's round trip, and the
// remaining fifth of the timeout is left for them. The ratio is the
// inverse of twophase's warning ratio (a pending transaction is logged at
// 80% of its timeout): a job that stays within its configured worst case
// never reaches the warning, so the warning means the job is slower than
// its configuration allows.
const comfortNum, comfortDen = 5, 4

// CheckTransactionTimeout refuses a transaction timeout that the broker
// would reject (above its transaction.max.timeout.ms) or that is not
// comfortably (5/4 times) above the time a pre-committed transaction may
// have to wait for its commit (TimeoutBudget). A transaction that outlives
// its timeout is aborted by the broker, and for a two-phase-commit sink
// that loses the records of a completed checkpoint. Reading the broker's
// limit rides out an outage for the budget's outage tolerance.
func CheckTransactionTimeout(ctx context.Context, cl *kgo.Client, timeout time.Duration, b TimeoutBudget) error {
	tr, err := outage.NewTracker(outage.Options{Tolerance: max(b.OutageTolerance, 0)})
	if err != nil {
		return err
	}
	var limit time.Duration
	err = tr.Do(ctx, "reading transaction.max.timeout.ms", func(ctx context.Context) error {
		var err error
		limit, err = BrokerMaxTransactionTimeout(ctx, cl)
		return err
	})
	if err != nil {
		return err
	}
	if timeout > limit {
		return fmt.Errorf("sink transaction timeout %s exceeds the broker's transaction.max.timeout.ms (%s): the broker would refuse every transaction; lower the timeout or raise the broker setting", timeout, limit)
	}
	need := b.Need()
	if want := need * comfortNum / comfortDen; timeout < want {
		tol := b.OutageTolerance
		if tol <= 0 {
			tol = outage.DefaultTolerance
		}
		return fmt.Errorf("sink transaction timeout %s is not comfortably above what a pre-committed transaction may wait for its commit: "+
			"checkpoint interval %s + (checkpoint tolerable_failures %d + 1) × checkpoint timeout %s + kafka.outage_tolerance %s + restart delay %s = %s "+
			"(want at least %s, a quarter more): a transaction could time out before its checkpoint commits it, losing its records",
			timeout, b.CheckpointInterval, b.TolerableFailures, b.CheckpointTimeout, tol, b.RestartDelay, need, want)
	}
	return nil
}

// BrokerMaxTransactionTimeout reads transaction.max.timeout.ms from a
// broker of the cluster, once (CheckTransactionTimeout rides out an
// outage around it).
func BrokerMaxTransactionTimeout(ctx context.Context, cl *kgo.Client) (time.Duration, error) {
	adm := kadm.NewClient(cl)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return 0, fmt.Errorf("listing brokers to read transaction.max.timeout.ms: %w", err)
	}
	if len(brokers) == 0 {
		return 0, fmt.Errorf("reading transaction.max.timeout.ms: the cluster lists no broker")
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, brokers[0].NodeID)
	if err != nil {
		return 0, fmt.Errorf("describing broker %d's config: %w", brokers[0].NodeID, err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return 0, fmt.Errorf("describing broker %d's config: %w", brokers[0].NodeID, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "transaction.max.timeout.ms" {
				continue
			}
			ms, err := strconv.ParseInt(c.MaybeValue(), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("broker %d reports transaction.max.timeout.ms %q: %w", brokers[0].NodeID, c.MaybeValue(), err)
			}
			return time.Duration(ms) * time.Millisecond, nil
		}
	}
	return 0, fmt.Errorf("broker %d does not report transaction.max.timeout.ms", brokers[0].NodeID)
}

// OpenTransaction is a transaction of a job's prefix that has not ended.
type OpenTransaction struct {
	TransactionalID string
	State           string
	ProducerID      int64
	ProducerEpoch   int16
	Started         time.Time
	Timeout         time.Duration
	Partitions      []string
}

// ListOpenTransactions returns the transactions whose id starts with
// prefix- and which are not complete (Ongoing, PrepareCommit, PrepareAbort).
// An open transaction holds the last stable offset of its partitions: every
// read_committed reader stalls behind it. It rides out an outage of the
// cluster until ctx ends or for outage.DefaultTolerance, logging its start
// and end once.
func ListOpenTransactions(ctx context.Context, cl *kgo.Client, prefix string) ([]OpenTransaction, error) {
	tr, err := outage.NewTracker(outage.Options{})
	if err != nil {
		return nil, err
	}
	return listOpenTransactions(ctx, cl, tr, prefix)
}

func listOpenTransactions(ctx context.Context, cl *kgo.Client, tr *outage.Tracker, prefix string) ([]OpenTransaction, error) {
	adm := kadm.NewClient(cl)
	var listed kadm.ListedTransactions
	err := tr.Do(ctx, "listing transactions", func(ctx context.Context) error {
		var err error
		listed, err = adm.ListTransactions(ctx, nil, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing transactions: %w", err)
	}
	var ids []string
	for id := range listed {
		if _, _, ok := parseTransactionalID(prefix, id); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	var described kadm.DescribedTransactions
	err = tr.Do(ctx, "describing transactions", func(ctx context.Context) error {
		var err error
		described, err = adm.DescribeTransactions(ctx, ids...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("describing transactions of prefix %s: %w", prefix, err)
	}
	var out []OpenTransaction
	for _, id := range ids {
		d, ok := described[id]
		if !ok {
			continue
		}
		if d.Err != nil {
			return nil, fmt.Errorf("describing transaction %s: %w", id, d.Err)
		}
		switch d.State {
		case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
		default:
			continue
		}
		ot := OpenTransaction{TransactionalID: id, State: d.State, ProducerID: d.ProducerID, ProducerEpoch: d.ProducerEpoch,
			Timeout: time.Duration(d.TimeoutMillis) * time.Millisecond}
		if d.StartTimestamp > 0 {
			ot.Started = time.UnixMilli(d.StartTimestamp)
		}
		for topic, ps := range d.Topics {
			for p := range ps {
				ot.Partitions = append(ot.Partitions, fmt.Sprintf("%s/%d", topic, p))
			}
		}
		slices.Sort(ot.Partitions)
		out = append(out, ot)
	}
	return out, nil
}

// AbortOpenTransactions fences every open transaction of prefix, which
// makes the coordinator abort it, and returns the ids it fenced. Run it only
// while the job is stopped: a pre-committed transaction that a completed
// checkpoint holds is data the job has not yet made visible, and aborting
// it loses those records. Like ListOpenTransactions it rides out an outage
// of the cluster.
func AbortOpenTransactions(ctx context.Context, cl *kgo.Client, prefix string, timeout time.Duration) ([]string, error) {
	tr, err := outage.NewTracker(outage.Options{})
	if err != nil {
		return nil, err
	}
	open, err := listOpenTransactions(ctx, cl, tr, prefix)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, ot := range open {
		if err := fence(ctx, cl, tr, ot.TransactionalID, timeout); err != nil {
			return done, err
		}
		done = append(done, ot.TransactionalID)
	}
	return done, nil
}
