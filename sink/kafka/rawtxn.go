package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/twophase"
)

// Txn identifies a pre-committed Kafka transaction well enough to commit it
// from any client: EndTxn carries exactly these values on the wire.
type Txn struct {
	TransactionalID string `json:"transactional_id"`
	ProducerID      int64  `json:"producer_id"`
	ProducerEpoch   int16  `json:"producer_epoch"`
	// TransactionVersion is the cluster's finalized transaction.version when
	// the transaction ran: 2 (KIP-890, Kafka 4 default) bumps the epoch on
	// every EndTxn; below 2 the epoch stays the same across the transactions
	// of one producer session. The transaction is committed with an EndTxn
	// of its own version, whatever the cluster runs by then (v5 and above
	// for 2, v4 and below otherwise): a job may resume on a cluster whose
	// transaction version was upgraded while it was stopped.
	TransactionVersion int16 `json:"transaction_version"`
}

// String names the transactional id, producer id, epoch and transaction
// version, as logs and errors show the transaction.
func (t Txn) String() string {
	return fmt.Sprintf("%s(producer %d, epoch %d, tv%d)", t.TransactionalID, t.ProducerID, t.ProducerEpoch, t.TransactionVersion)
}

// lostTxnError reports the errors that say a transaction can never be
// committed with the producer id and epoch at hand. outage.Retriable is
// false for every one of them: they are never retried.
func lostTxnError(err error) bool {
	return errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.ProducerFenced) ||
		errors.Is(err, kerr.InvalidTxnState) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) ||
		errors.Is(err, kerr.TransactionalIDNotFound)
}

// concurrentWait bounds how long one request is repeated on
// CONCURRENT_TRANSACTIONS (the coordinator still writes the markers of the
// id's previous transaction, usually for milliseconds) before the error is
// handed to the outage tracker, which then counts a coordinator that stays
// busy as a cluster in trouble.
const concurrentWait = 5 * time.Second

// endTxn sends a raw EndTxn for txn through cl, which may be any client of
// the cluster (it needs no transactional id of its own; the request is
// routed to the transaction coordinator of txn's id). Repeating a commit
// that already succeeded succeeds again.
//
// It rides out an unreachable cluster, a moving or loading coordinator and
// CONCURRENT_TRANSACTIONS through tr, for tr's tolerance (then an
// *outage.Error), or until ctx ends. A commit the broker refuses for the
// producer id or epoch (fenced, invalid epoch, unknown id, invalid state)
// is never retried: it is returned at once, wrapping
// twophase.ErrTransactionLost.
//
// The EndTxn version is cl's choice: the caller passes a client capped at
// v4 for a transaction begun under transaction.version 0 or 1
// (Transactor.endTxnClient).
func endTxn(ctx context.Context, cl *kgo.Client, tr *outage.Tracker, txn Txn, commit bool) error {
	what := "abort"
	if commit {
		what = "commit"
	}
	return tr.Do(ctx, fmt.Sprintf("EndTxn %s of %s", what, txn), func(ctx context.Context) error {
		return endTxnOnce(ctx, cl, txn, commit, what)
	})
}

// endTxnOnce sends EndTxn, repeating it on CONCURRENT_TRANSACTIONS for up
// to concurrentWait.
func endTxnOnce(ctx context.Context, cl *kgo.Client, txn Txn, commit bool, what string) error {
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID = txn.TransactionalID
	req.ProducerID = txn.ProducerID
	req.ProducerEpoch = txn.ProducerEpoch
	req.Commit = commit
	err := repeatWhileConcurrent(ctx, func() error {
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case lostTxnError(err):
		return fmt.Errorf("EndTxn %s of %s: %w: %w", what, txn, twophase.ErrTransactionLost, err)
	default:
		return fmt.Errorf("EndTxn %s of %s: %w", what, txn, err)
	}
}

// repeatWhileConcurrent calls send until it returns anything but
// CONCURRENT_TRANSACTIONS, concurrentWait passed, or ctx ended.
func repeatWhileConcurrent(ctx context.Context, send func() error) error {
	deadline := time.Now().Add(concurrentWait)
	backoff := 20 * time.Millisecond
	for {
		err := send()
		if !errors.Is(err, kerr.ConcurrentTransactions) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// fence bumps the epoch of transactional id through cl by a raw
// InitProducerID, which makes the coordinator abort any transaction of that
// id still open (a transaction a crashed attempt left behind). It rides out
// an unreachable cluster, coordinator moves and CONCURRENT_TRANSACTIONS
// (the abort of a previous fence still being written) through tr, for tr's
// tolerance, or until ctx ends.
func fence(ctx context.Context, cl *kgo.Client, tr *outage.Tracker, id string, timeout time.Duration) error {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &id
	req.TransactionTimeoutMillis = int32(timeout / time.Millisecond)
	req.ProducerID = -1
	req.ProducerEpoch = -1
	what := "fencing transactional id " + id
	return tr.Do(ctx, what, func(ctx context.Context) error {
		err := repeatWhileConcurrent(ctx, func() error {
			resp, err := req.RequestWith(ctx, cl)
			if err == nil {
				err = kerr.ErrorForCode(resp.ErrorCode)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// TransactionVersion asks the cluster for its finalized transaction.version
// feature, once (no retry). Kafka leaves a feature finalized at level 0 out
// of the list, so a cluster that finalizes other features (metadata.version,
// on every KRaft cluster) but not this one runs version 0. A cluster that
// finalizes no feature at all (kfake, ZooKeeper clusters) is judged by the
// EndTxn versions it supports: v5 and above means KIP-890 semantics (2),
// below means 1.
func TransactionVersion(ctx context.Context, cl *kgo.Client) (int16, error) {
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "onceflow"
	req.ClientSoftwareVersion = "0"
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("asking the cluster for its api versions: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, fmt.Errorf("asking the cluster for its api versions: %w", err)
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" {
			return f.MaxVersionLevel, nil
		}
	}
	if len(resp.FinalizedFeatures) > 0 {
		return 0, nil
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == kmsg.EndTxn.Int16() {
			if k.MaxVersion >= 5 {
				return 2, nil
			}
			return 1, nil
		}
	}
	return 1, nil
}
