package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/joblock"
)

// newSavepointsCmd is processor savepoints list|prune: the savepoints a
// job keeps in its checkpoint directory or S3 prefix, and the operator's
// way to remove old ones (a running job removes those beyond
// checkpoint.retain_savepoints itself, after each savepoint).
func newSavepointsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "savepoints",
		Short: "List a job's savepoints, or remove the oldest beyond a count",
	}
	var s3f s3Flags
	list := &cobra.Command{
		Use:   "list DIR",
		Short: "List the savepoints in a job's checkpoint directory (<checkpoint.dir>/<job.name>), oldest first",
		Long: `List the savepoints in a job's checkpoint directory
(<checkpoint.dir>/<job.name>), oldest first, from their metadata: when each
was taken, the size of its state, and which one is the job's newest restore
point (a plain run resumes from it). It writes nothing and may run while
the job does. processor checkpoints list also verifies every state file.

DIR may be a job's S3 location, s3://<bucket>/<prefix>/<job.name>, read with
the checkpoint.s3 keys of --config, ONCEFLOW_CHECKPOINT_S3_* or --set; there
each savepoint's metadata is read through a load, which verifies its files.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var infos []checkpoint.SavepointInfo
			if config.IsS3Dir(args[0]) {
				st, closeStore, err := openS3Job(cmd.Context(), args[0], s3f)
				if err != nil {
					return err
				}
				defer closeStore()
				if infos, err = s3Savepoints(cmd.Context(), st); err != nil {
					return err
				}
			} else {
				st, err := jobStorage(args[0])
				if err != nil {
					return err
				}
				if infos, err = dirstore.ListSavepoints(cmd.Context(), st); err != nil {
					return err
				}
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTAKEN\tSIZE\tPATH\tSTATUS")
			for _, in := range infos {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", in.ID, takenAt(in.Taken), sizeOf(in), in.Path, savepointStatus(in))
			}
			return w.Flush()
		},
	}
	list.Flags().StringVarP(&s3f.config, "config", "c", "", "the job's YAML configuration file, for the checkpoint.s3 keys of an s3:// location")
	list.Flags().StringArrayVar(&s3f.set, "set", nil, "set a configuration key for an s3:// location (key=value; repeatable)")
	cmd.AddCommand(list)
	var keep int
	var dryRun bool
	var pruneS3 s3Flags
	prune := &cobra.Command{
		Use:   "prune --keep N DIR",
		Short: "Remove the oldest savepoints of a job beyond the newest N",
		Long: `Remove the oldest complete savepoints of a job's checkpoint directory
(<checkpoint.dir>/<job.name>) beyond the newest N (--keep, at least 1).
Never removed: the job's newest restore point (found as a restore would
find it, every file of the newest candidates verified), a savepoint whose
files a kept checkpoint names, and incomplete or damaged savepoints (they
are listed: decide yourself). Each savepoint loses its _metadata first, so
an interrupted prune leaves an incomplete savepoint, never a damaged one.

The job must not run: prune takes the job's lock (<checkpoint.dir>/<job>.lock)
and refuses while a processor holds it. A running job removes the savepoints
beyond checkpoint.retain_savepoints itself after each savepoint. To keep a
savepoint for good, copy its directory out of the checkpoint directory
first: it is self-contained, and run --from restores the copy.

DIR may be a job's S3 location, s3://<bucket>/<prefix>/<job.name> (a
partition group's: .../<job.name>/pg-<g>), read with the checkpoint.s3 keys
of --config, ONCEFLOW_CHECKPOINT_S3_* or --set. The same rules hold; each
savepoint loses its manifest first, then its objects. There is no lock to
take, and the job may run meanwhile: it only adds savepoints newer than
those removed. prune works at the epoch of the job's newest checkpoint and
refuses, removing nothing, once a newer owner took the job over (fenced).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("keep") {
				return usagef("savepoints prune: --keep N is required (how many of the newest savepoints stay)")
			}
			if keep < 1 {
				return usagef("savepoints prune: --keep %d: at least 1 savepoint must stay (the newest may be the job's restore point)", keep)
			}
			return pruneSavepoints(cmd, args[0], keep, dryRun, pruneS3)
		},
	}
	prune.Flags().IntVar(&keep, "keep", 0, "how many of the newest complete savepoints stay (at least 1)")
	prune.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be removed, remove nothing")
	prune.Flags().StringVarP(&pruneS3.config, "config", "c", "", "the job's YAML configuration file, for the checkpoint.s3 keys of an s3:// location")
	prune.Flags().StringArrayVar(&pruneS3.set, "set", nil, "set a configuration key for an s3:// location (key=value; repeatable)")
	cmd.AddCommand(prune)
	return cmd
}

// pruneSavepoints is savepoints prune on the job directory or S3
// location dir.
func pruneSavepoints(cmd *cobra.Command, dir string, keep int, dryRun bool, s3f s3Flags) error {
	opts := checkpoint.PruneOptions{Keep: keep, Verify: true, DryRun: dryRun}
	if config.IsS3Dir(dir) {
		// A dry run reads only; a prune deletes as the job's current
		// owner (its newest epoch), fenced if a newer one comes.
		st, closeStore, err := openS3JobAt(cmd.Context(), dir, s3f, !dryRun)
		if err != nil {
			return err
		}
		defer closeStore()
		res, err := st.PruneSavepoints(cmd.Context(), opts)
		return printPrune(cmd, res, err, keep, dryRun)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(abs); err != nil {
		return fmt.Errorf("checkpoint directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("checkpoint directory %s is not a directory", abs)
	}
	if !dryRun {
		// The job's own lock: no processor runs the job while savepoints
		// go, nor starts until the prune ended.
		lock, err := joblock.Acquire(joblock.Path(filepath.Dir(abs), filepath.Base(abs)))
		if err != nil {
			return fmt.Errorf("savepoints prune %s: %w", abs, err)
		}
		defer lock.Release()
	}
	// Read-only for a dry run, as the listing commands open it.
	st, err := dirstore.NewFileStorage(filepath.Dir(abs), filepath.Base(abs), dirstore.StorageOptions{Retained: 1 << 30, ReadOnly: dryRun})
	if err != nil {
		return err
	}
	res, err := checkpoint.PruneSavepoints(cmd.Context(), st, opts)
	return printPrune(cmd, res, err, keep, dryRun)
}

// printPrune prints what a prune removed (or, dryRun, would remove), kept
// beyond --keep and left alone, then returns err or a summary.
func printPrune(cmd *cobra.Command, res checkpoint.PruneResult, err error, keep int, dryRun bool) error {
	out := cmd.OutOrStdout()
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	var freed int64
	for _, in := range res.Removed {
		freed += in.Bytes
		fmt.Fprintf(out, "%s %s (savepoint %d, taken %s, %s)\n", verb, in.Path, in.ID, takenAt(in.Taken), sizeOf(in))
	}
	for _, in := range res.Kept {
		if in.Why != "" {
			fmt.Fprintf(out, "kept %s beyond --keep %d: %s\n", in.Path, keep, in.Why)
		}
	}
	for _, in := range res.Skipped {
		fmt.Fprintf(out, "left %s alone: %s\n", in.Path, in.Why)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s %d savepoint(s), %s; %d kept\n", verb, len(res.Removed), formatBytes(freed), len(res.Kept))
	return nil
}

// savepointStatus is the STATUS of a listed savepoint.
func savepointStatus(in checkpoint.SavepointInfo) string {
	var s string
	switch {
	case in.Damaged:
		s = "DAMAGED: " + strings.ReplaceAll(in.Err.Error(), "\n", "; ")
	case !in.Complete:
		s = "incomplete"
	case in.Committed:
		s = "complete, committed"
	default:
		s = "complete"
	}
	if in.RestorePoint {
		s += " (the job's newest restore point)"
	}
	return s
}

func takenAt(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func sizeOf(in checkpoint.SavepointInfo) string {
	if !in.Complete {
		return "-"
	}
	return formatBytes(in.Bytes)
}

// formatBytes is n in B, KiB, MiB, GiB or TiB, one decimal.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n)/unit, 0
	for v >= unit && exp < 3 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[exp])
}

// s3Savepoints lists the savepoints of an S3 storage as dirstore.ListSavepoints
// lists a directory's: oldest first, the newest intact checkpoint or
// savepoint marked as the restore point. Each complete savepoint is loaded
// (its files verified) for its time and size; one that fails to load is
// listed as damaged with the reason.
func s3Savepoints(ctx context.Context, st *s3store.Storage) ([]checkpoint.SavepointInfo, error) {
	infos, err := st.List(ctx)
	if err != nil {
		return nil, err
	}
	var restore int64 = -1
	for _, in := range infos {
		if in.Complete && !in.Damaged {
			restore = max(restore, in.ID)
		}
	}
	var out []checkpoint.SavepointInfo
	for _, in := range infos {
		if !in.Savepoint {
			continue
		}
		sp := checkpoint.SavepointInfo{CheckpointInfo: in, RestorePoint: in.ID == restore && in.Complete && !in.Damaged}
		if in.Complete && !in.Damaged {
			md, err := st.Load(ctx, in.Path)
			if err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				sp.Damaged, sp.Err, sp.RestorePoint = true, err, false
			} else {
				sp.Taken, sp.Committed, sp.Bytes = md.Timestamp, md.Committed, md.StateBytes()
			}
		}
		out = append(out, sp)
	}
	return out, nil
}
