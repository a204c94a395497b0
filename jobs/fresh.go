package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
)

// setAsideStamp is the UTC time in the name of a set-aside location.
const setAsideStamp = "20060102T150405.000000000Z"

// freshStartWarning is what a fresh start that set checkpoints aside logs.
const freshStartWarning = "fresh start: the job's retained checkpoints and savepoints are ignored and set aside (not deleted); " +
	"transactions they still held will be aborted, and the source starts at source.start"

// setAside moves the job's checkpoints and savepoints out of its way
// (--fresh), so that the new run starts with no checkpoint and its ids
// start at 1, and logs at Warn level where they went and which ones they
// were (moved_from, moved_to, ignored). Nothing is deleted.
//
// Where checkpoint.dir is a directory, <checkpoint.dir>/<job.name> is
// renamed to <job.name>.set-aside-<UTC time> next to it: one rename, done
// or not.
//
// Where checkpoint.dir is s3://<bucket>/<prefix>, every object under
// <prefix>/<job.name>/ is copied to the same relative key under
// <prefix>/<job.name>.set-aside-<UTC time>/ and then deleted from
// <prefix>/<job.name>/ (s3store.SetAside): S3 has no rename, and the
// store has no server-side copy, so the bytes pass through this process
// (a job's retained checkpoints and its savepoints, about its state's
// size per savepoint kept and once more, once per --fresh). Every copy is
// made before the first deletion: a failure or a crash while copying
// leaves the job's checkpoints where they were (and a partial copy); one
// while deleting leaves a whole copy and what was not deleted yet, oldest
// manifests first, so that the checkpoints left are the newest ones, each
// whole. Either way Build fails, and the next --fresh sets what is left
// aside again, under a new name. The job must be stopped meanwhile on
// every machine: the copy does not fence a running instance, and the new
// run's epochs start at 1 again, below an old instance's.
//
// A job with nothing to set aside logs that at Info level. A directory
// that cannot be read or renamed is a *ConfigError naming checkpoint.dir;
// an object store that fails is an error naming the location (it may
// come back, as in newStorage).
func setAside(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	dir, isS3, err := config.ParseS3Dir(cfg.Checkpoint.Dir)
	if err != nil {
		return &ConfigError{Key: "checkpoint.dir", Err: err}
	}
	stamp := time.Now().UTC().Format(setAsideStamp)
	if isS3 {
		return setAsideS3(ctx, cfg, dir, stamp, log)
	}
	return setAsideDir(ctx, cfg, stamp, log)
}

// setAsideDir renames the job's checkpoint directory.
func setAsideDir(ctx context.Context, cfg *config.Config, stamp string, log *slog.Logger) error {
	root := filepath.Join(cfg.Checkpoint.Dir, cfg.Job.Name)
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		log.Info("fresh start: the job has no checkpoint directory yet", "dir", root)
		return nil
	} else if err != nil {
		return &ConfigError{Key: "checkpoint.dir", Err: err}
	}
	storage, err := dirstore.NewFileStorage(cfg.Checkpoint.Dir, cfg.Job.Name, dirstore.StorageOptions{Retained: cfg.Checkpoint.Retain})
	if err != nil {
		return &ConfigError{Key: "checkpoint.dir", Err: err}
	}
	infos, err := storage.List(ctx)
	if err != nil {
		return &ConfigError{Key: "checkpoint.dir", Err: fmt.Errorf("listing the checkpoints of %s: %w", root, err)}
	}
	aside := root + ".set-aside-" + stamp
	if err := os.Rename(root, aside); err != nil {
		return &ConfigError{Key: "checkpoint.dir", Err: fmt.Errorf("setting the checkpoints of %s aside: %w", root, err)}
	}
	var ignored []string
	for _, in := range infos {
		ignored = append(ignored, filepath.Base(in.Path))
	}
	log.Warn(freshStartWarning, "moved_from", root, "moved_to", aside, "ignored", ignored)
	return nil
}

// setAsideS3 moves the job's objects to the set-aside prefix.
func setAsideS3(ctx context.Context, cfg *config.Config, dir config.S3Dir, stamp string, log *slog.Logger) error {
	store, err := OpenObjectStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	name := cfg.Job.Name
	asideName := name + ".set-aside-" + stamp
	from, to := name, asideName
	if dir.Prefix != "" {
		from, to = dir.Prefix+"/"+name, dir.Prefix+"/"+asideName
	}
	res, err := s3store.SetAside(ctx, store, from, to)
	if err != nil {
		return fmt.Errorf("checkpoint.dir %s: --fresh: %w", dir.Job(name), err)
	}
	if len(res.Keys) == 0 {
		log.Info("fresh start: the job has no checkpoints yet", "location", dir.Job(name))
		return nil
	}
	log.Warn(freshStartWarning, "moved_from", dir.Job(name), "moved_to", dir.Job(asideName),
		"ignored", res.Checkpoints, "objects", len(res.Keys))
	return nil
}
