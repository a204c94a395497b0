package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// groupConfig is a distributed job's configuration with its checkpoints
// in the test's S3 service.
func groupConfig(t *testing.T) *config.Config {
	t.Helper()
	if testing.Short() {
		t.Skip("needs an S3 service")
	}
	ep := s3test.Bootstrap(t)
	cfg, err := config.Load(config.Sources{Env: []string{}, Set: []string{
		"job.name=wc", "job.mode=distributed", "source.topic=in", "sink.topic=out",
		"checkpoint.dir=s3://" + ep.Bucket + "/" + strings.TrimSuffix(s3test.Prefix(t), "/"),
		"checkpoint.s3.endpoint=" + ep.URL, "checkpoint.s3.region=" + ep.Region, "checkpoint.s3.path_style=true",
		"checkpoint.s3.access_key_id=" + ep.AccessKeyID, "checkpoint.s3.secret_access_key=" + ep.SecretAccessKey,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A group's storage lives under <prefix>/<job>/pg-<g>/ and is claimed
// when it opens: the storage of the group's former owner, opened before
// the claim, can publish nothing after it (non-recoverable ErrFenced), and
// another group's storage is not touched.
func TestGroupStorageClaimsAndFencesTheFormerOwner(t *testing.T) {
	cfg := groupConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func(g int) checkpoint.Storage {
		t.Helper()
		st, err := newStorage(ctx, cfg, &Group{Index: g, Count: 4}, log)
		if err != nil {
			t.Fatalf("opening group %d: %v", g, err)
		}
		return st
	}
	old := open(3)
	other := open(1)
	infos, err := old.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || !strings.Contains(infos[0].Path, "/wc/pg-3/manifest/chk-1") {
		t.Fatalf("group 3 after its first claim lists %+v; want the claim chk-1 under wc/pg-3/", infos)
	}
	// The next owner claims id 2; the former one's checkpoint 2 is refused.
	_ = open(3)
	err = old.Complete(ctx, &checkpoint.Metadata{CheckpointID: 2, Timestamp: time.Now()})
	if !errors.Is(err, s3store.ErrFenced) || !engine.IsNonRecoverable(err) {
		t.Fatalf("the former owner's Complete after the claim = %v; want a non-recoverable ErrFenced", err)
	}
	if err := other.Complete(ctx, &checkpoint.Metadata{CheckpointID: 2, Timestamp: time.Now()}); err != nil {
		t.Fatalf("group 1's checkpoint after group 3 changed hands: %v", err)
	}
}
