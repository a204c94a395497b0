package kafka

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// setTransactionVersion finalizes the cluster's transaction.version (an
// upgrade or a downgrade), as kafka-features.sh does.
func setTransactionVersion(t *testing.T, ctx context.Context, client []kgo.Opt, level int16) {
	t.Helper()
	req := kmsg.NewPtrUpdateFeaturesRequest()
	u := kmsg.NewUpdateFeaturesRequestFeatureUpdate()
	u.Feature = "transaction.version"
	u.MaxVersionLevel = level
	u.UpgradeType = 2 // safe downgrade, or upgrade
	u.AllowDowngrade = true
	req.FeatureUpdates = append(req.FeatureUpdates, u)
	resp, err := req.RequestWith(ctx, plainClient(t, client))
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("setting transaction.version %d: %v", level, err)
	}
	if v, err := TransactionVersion(ctx, plainClient(t, client)); err != nil || v != level {
		t.Fatalf("the cluster reports transaction.version %d (%v), want %d", v, err, level)
	}
}

// A transaction is committed with the EndTxn version of the transaction
// version it was begun under, whatever the cluster runs when the restore
// commits it: EndTxn v5 and above mean KIP-890 semantics to the broker,
// and Kafka 4.1 refuses to repeat, at v5, the commit of a transaction
// that was begun and committed under version 0 (INVALID_TXN_STATE).
func TestRestoredTransactionsAreCommittedWithTheirOwnEndTxnVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, client := fakeKafka(t)
	var mu sync.Mutex
	sent := map[string][]int16{} // EndTxn versions by transactional id
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		defer mu.Unlock()
		r := req.(*kmsg.EndTxnRequest)
		sent[r.TransactionalID] = append(sent[r.TransactionalID], r.GetVersion())
		return nil, nil, false // observe only
	})
	endTxnVersions := func(id string) []int16 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sent[id])
	}
	precommit := func(prefix, value string) [][]byte {
		t.Helper()
		s, x := newSink(t, ctx, client, prefix)
		if err := s.Restore(ctx, nil); err != nil {
			t.Fatal(err)
		}
		produceAll(t, ctx, s, value)
		entries, err := s.SnapshotState(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		x.Close() // a crash before the commit
		return entries
	}
	tvOf := func(entries [][]byte) int16 {
		var e struct {
			Txn []byte `json:"txn"`
		}
		var txn Txn
		if err := json.Unmarshal(entries[0], &e); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(e.Txn, &txn); err != nil {
			t.Fatal(err)
		}
		return txn.TransactionVersion
	}

	setTransactionVersion(t, ctx, client, 0)
	old := precommit("old", "a")
	if tv := tvOf(old); tv != 0 {
		t.Fatalf("the checkpoint records transaction version %d, want 0", tv)
	}
	setTransactionVersion(t, ctx, client, 2)
	s, _ := newSink(t, ctx, client, "old")
	if err := s.Restore(ctx, old); err != nil {
		t.Fatal(err)
	}
	if v := endTxnVersions(TransactionalID("old", 0, 0)); len(v) == 0 || slices.Max(v) > 4 {
		t.Fatalf("a version-0 transaction was committed on a version-2 cluster with EndTxn versions %v, want v4 or lower", v)
	}

	young := precommit("young", "b")
	if tv := tvOf(young); tv != 2 {
		t.Fatalf("the checkpoint records transaction version %d, want 2", tv)
	}
	setTransactionVersion(t, ctx, client, 0)
	s2, _ := newSink(t, ctx, client, "young")
	if err := s2.Restore(ctx, young); err != nil {
		t.Fatal(err)
	}
	if v := endTxnVersions(TransactionalID("young", 0, 0)); len(v) == 0 || slices.Min(v) < 5 {
		t.Fatalf("a version-2 transaction was committed with EndTxn versions %v, want v5 or higher", v)
	}
	if got := committedValues(t, ctx, client); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("read_committed saw %v, want [a b]", got)
	}
}
