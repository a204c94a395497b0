package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// newStorage opens the job's checkpoint storage: a directory under
// checkpoint.dir, or, for an s3:// checkpoint.dir, the S3 storage
// (internal/checkpoint/s3store) of the job under <prefix>/<job.name>/ in the bucket.
//
// For S3 it first checks the bucket (objstore.New): an endpoint that does
// not answer, refused credentials or a missing bucket is an error naming
// the endpoint and the bucket, not a *ConfigError (the service may come
// back, as a broker may); options the object store cannot use are a
// *ConfigError naming checkpoint.s3.
//
// The epoch: a single instance opens the job's storage once to read the
// manifests and takes the newest manifest's epoch + 1 as its own (see
// s3store.Options.Epoch), so each start has a higher epoch than any
// process before it. When a second processor is started on the same job
// (on another machine: on one machine the local lock refuses it), the
// first one's next checkpoint after the second one's first is refused with
// s3store.ErrFenced, and the first processor's job fails for good (no
// restart: see fencedStop) instead of restarting into the second one.
// This does not make two processes of one job safe: before that fence,
// the second one's producers take the transactional ids over and may
// abort a transaction of a checkpoint the first one completed meanwhile,
// whose records are then lost (the processor reports it: DATA MAY BE
// LOST). Two processes opening at the same moment may also draw the same
// epoch. The claim protocol of distributed mode closes both gaps; until
// then one instance per job must be ensured by the deployment.
//
// A partition group's storage (g not nil) is the S3 storage of job
// <job.name>/pg-<g>, opened with the newest epoch + 1 like a single
// instance's, and then claimed (see claimGroup) before Build returns.
func newStorage(ctx context.Context, cfg *config.Config, g *Group, log *slog.Logger) (checkpoint.Storage, error) {
	ck := cfg.Checkpoint
	logf := func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) }
	dir, isS3, err := config.ParseS3Dir(ck.Dir)
	if err != nil {
		return nil, &ConfigError{Key: "checkpoint.dir", Err: err}
	}
	if !isS3 && g != nil {
		return nil, &ConfigError{Key: "checkpoint.dir", Err: fmt.Errorf("a partition group needs s3:// checkpoints, not the local directory %q", ck.Dir)}
	}
	if !isS3 {
		// Removals in the background: a completion that subsumes a large
		// materialization does not wait for its files to be unlinked.
		st, err := dirstore.NewFileStorage(ck.Dir, cfg.Job.Name, dirstore.StorageOptions{Retained: ck.Retain, Logf: logf, RemoveInBackground: true})
		if err != nil {
			return nil, &ConfigError{Key: "checkpoint.dir", Err: err}
		}
		return st, nil
	}
	store, err := OpenObjectStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// The probe only reads the epochs: it would log itself fenced by them.
	name := jobName(cfg, g)
	opts := s3store.Options{Prefix: dir.Prefix, Job: name, Epoch: 1, Retained: ck.Retain}
	probe, err := s3store.New(ctx, store, opts)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("checkpoint.dir %s: %w", dir.Job(name), err)
	}
	opts.Epoch, opts.Logf = probe.NewestEpoch()+1, logf
	// Deletions in the background, as the file storage's: a completion
	// (and the commit its notification starts) does not wait for the
	// round trips that delete a subsumed checkpoint's objects.
	opts.CollectInBackground = true
	st, err := s3store.New(ctx, store, opts)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("checkpoint.dir %s: %w", dir.Job(name), err)
	}
	log.Info("checkpoints in S3", "location", dir.Job(name), "endpoint", endpointName(ck.S3), "epoch", opts.Epoch)
	if g != nil {
		if err := claimGroup(ctx, st, log); err != nil {
			_ = store.Close()
			return nil, final(fmt.Errorf("checkpoint.dir %s: %w", dir.Job(name), err))
		}
	}
	return fencedStop{st}, nil
}

// OpenObjectStore connects to the object store of an s3:// checkpoint.dir
// and checks its bucket (see newStorage for the errors). The caller closes
// it.
func OpenObjectStore(ctx context.Context, cfg *config.Config) (*objstore.S3, error) {
	dir, _, err := config.ParseS3Dir(cfg.Checkpoint.Dir)
	if err != nil {
		return nil, &ConfigError{Key: "checkpoint.dir", Err: err}
	}
	s := cfg.Checkpoint.S3
	o := objstore.Options{Bucket: dir.Bucket, Endpoint: s.Endpoint, Region: s.Region, PathStyle: s.PathStyle,
		CAFile: s.CAFile, InsecureSkipVerify: s.InsecureSkipVerify,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: string(s.SecretAccessKey)}
	if err := o.Validate(); err != nil {
		return nil, &ConfigError{Key: "checkpoint.s3", Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, guardTimeout)
	defer cancel()
	store, err := objstore.New(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("checkpoint.dir %s (checkpoint.s3.endpoint %s): %w", dir, endpointName(s), err)
	}
	return store, nil
}

func endpointName(s config.S3) string {
	if s.Endpoint == "" {
		return "AWS S3 in " + s.Region
	}
	return s.Endpoint
}

// fencedStop is the S3 storage with its fencing made final: an error
// matching s3store.ErrFenced (a newer process published a checkpoint of
// the job) is marked engine.NonRecoverable, so the job fails without a
// restart once the failed checkpoints exceed the tolerated ones, instead
// of restarting and fencing the newer process's transactions in turn.
type fencedStop struct{ checkpoint.Storage }

func final(err error) error {
	if errors.Is(err, s3store.ErrFenced) {
		return engine.NonRecoverable(fmt.Errorf("another processor took this job over (started later, it opened the job's S3 checkpoints with a higher epoch); stopping this one: %w", err))
	}
	return err
}

func (f fencedStop) Writer(id int64, uid string, subtask int) (checkpoint.SnapshotWriter, error) {
	w, err := f.Storage.Writer(id, uid, subtask)
	return w, final(err)
}

func (f fencedStop) Complete(ctx context.Context, md *checkpoint.Metadata) error {
	return final(f.Storage.Complete(ctx, md))
}

func (f fencedStop) MarkCommitted(ctx context.Context, id int64) error {
	return final(f.Storage.MarkCommitted(ctx, id))
}

func (f fencedStop) Adopt(ctx context.Context, md *checkpoint.Metadata, newID int64) (*checkpoint.Metadata, error) {
	out, err := f.Storage.Adopt(ctx, md, newID)
	return out, final(err)
}

func (f fencedStop) Sweep(ctx context.Context) ([]checkpoint.CheckpointInfo, error) {
	out, err := f.Storage.Sweep(ctx)
	return out, final(err)
}

func (f fencedStop) DiscardAll() error { return final(f.Storage.DiscardAll()) }

// PruneSavepoints forwards to the S3 storage's (checkpoint.SavepointPruner),
// which the embedded interface would hide from the engine.
func (f fencedStop) PruneSavepoints(ctx context.Context, opts checkpoint.PruneOptions) (checkpoint.PruneResult, error) {
	res, err := checkpoint.PruneSavepoints(ctx, f.Storage, opts)
	return res, final(err)
}

// claimGroup publishes the group's next checkpoint id under this
// owner's epoch before anything of the group runs (s3store.Storage.Claim,
// docs/distributed.md "Who runs a group"): a former owner still running
// (a zombie) can then publish nothing more, and the restore that follows
// commits what the claimed checkpoint holds before the sink fences the
// group's transactional ids. A claim that meets a newer epoch fails with
// s3store.ErrFenced: another instance owns the group now.
func claimGroup(ctx context.Context, st *s3store.Storage, log *slog.Logger) error {
	c, err := st.Claim(ctx)
	if err != nil {
		return fmt.Errorf("claiming the group: %w", err)
	}
	if c.Empty() {
		log.Info("claimed the group, which has no checkpoint yet: starting fresh", "claim", c.Metadata.CheckpointID)
		return nil
	}
	log.Info("claimed the group's newest checkpoint", "from", c.From.CheckpointID, "from_savepoint", c.From.Savepoint,
		"as", c.Metadata.CheckpointID, "lost_to_older_owner", c.Lost)
	return nil
}
