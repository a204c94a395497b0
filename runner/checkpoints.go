package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/dirstore"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/jobs"
)

func newCheckpointsCmd() *cobra.Command {
	var s3f s3Flags
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List and inspect a job's checkpoints and savepoints",
		Long: `List and inspect a job's checkpoints and savepoints, in its checkpoint
directory (<checkpoint.dir>/<job.name>) or, read-only, in S3:
s3://<bucket>/<prefix>/<job.name> for list, and a checkpoint's or
savepoint's s3://<bucket>/<prefix>/<job.name>/manifest/<name> for inspect.
For S3 the checkpoint.s3 keys (endpoint, region, credentials) come from the
job's configuration file (--config), ONCEFLOW_CHECKPOINT_S3_* variables or
--set; with neither static key set, from the AWS default chain.`,
	}
	cmd.PersistentFlags().StringVarP(&s3f.config, "config", "c", "", "the job's YAML configuration file, for the checkpoint.s3 keys of an s3:// location")
	cmd.PersistentFlags().StringArrayVar(&s3f.set, "set", nil, "set a configuration key for an s3:// location (key=value; repeatable)")
	cmd.AddCommand(&cobra.Command{
		Use:   "list DIR",
		Short: "List the checkpoints and savepoints in a job's checkpoint directory (<checkpoint.dir>/<job.name>), verifying each complete one's files",
		Long: `List the checkpoints and savepoints in a job's checkpoint directory
(<checkpoint.dir>/<job.name>), oldest first. Every complete one is verified
(metadata checksum, then the size and checksum of every state file it names).
STATUS is one of:
  complete             usable
  complete, committed  usable; its transactions are known to be committed
  incomplete           never completed (no _metadata): ignored, swept later
  DAMAGED: <reason>    its metadata or a state file is unreadable, missing
                       or corrupt: a restore cannot use it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var st checkpoint.Storage
			var jobDir string
			if config.IsS3Dir(args[0]) {
				s3, closeStore, err := openS3Job(cmd.Context(), args[0], s3f)
				if err != nil {
					return err
				}
				defer closeStore()
				st, jobDir = s3, strings.TrimSuffix(s3.Root(), "/")
			} else {
				var err error
				if st, err = jobStorage(args[0]); err != nil {
					return err
				}
				if jobDir, err = filepath.Abs(args[0]); err != nil {
					return err
				}
			}
			infos, err := st.List(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tKIND\tPATH\tSTATUS")
			for _, in := range infos {
				kind := "checkpoint"
				if in.Savepoint {
					kind = "savepoint"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", in.ID, kind, in.Path, checkpointStatus(cmd.Context(), st, jobDir, in))
			}
			return w.Flush()
		},
	})
	inspect := &cobra.Command{
		Use:   "inspect PATH",
		Short: "Verify a checkpoint or savepoint (chk-<n> or savepoint-<id> directory) and print its metadata",
		Long: `Verify a checkpoint or savepoint (chk-<n> or savepoint-<id> directory, or
its _metadata file) and print its metadata: the version of the binary that
wrote it, whether it is committed, where an adopted one came from, and per
operator subtask its keyed state, files, bytes, operator state and the
format version of that operator state (FORMAT; "-" when none was recorded:
the operator declares none, or the checkpoint predates recorded formats).
A binary refuses to restore a checkpoint whose operator state format is
newer than its operator reads.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var md *checkpoint.Metadata
			var err error
			if config.IsS3Dir(args[0]) {
				md, err = loadS3Checkpoint(cmd.Context(), args[0], s3f)
			} else {
				md, err = loadCheckpoint(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			kind := "checkpoint"
			if md.Savepoint {
				kind = "savepoint"
			}
			fmt.Fprintf(out, "%s %d of job %s, taken %s\n", kind, md.CheckpointID, md.Job, md.Timestamp.Format("2006-01-02T15:04:05.000Z07:00"))
			if md.WriterVersion != "" {
				fmt.Fprintf(out, "written by version %s\n", md.WriterVersion)
			} else {
				fmt.Fprintln(out, "written by an unrecorded version (before versions were recorded)")
			}
			if md.Committed {
				fmt.Fprintln(out, "committed: its transactions are known to be committed")
			}
			if md.RestoredFrom != "" {
				fmt.Fprintf(out, "restored from %s\n", md.RestoredFrom)
			}
			if sup := md.Supersedes; sup != nil {
				fmt.Fprintf(out, "supersedes checkpoint %d (%s)\n", sup.CheckpointID, sup.Path)
			}
			w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "OPERATOR\tSUBTASK\tKEYED\tKEY GROUPS\tFILES\tBYTES\tOPERATOR STATE\tFORMAT")
			for _, op := range md.Operators {
				for _, sub := range op.Subtasks {
					keyed, kgs, files, bytes := "-", "-", 0, int64(0)
					if h := sub.Keyed; h != nil {
						keyed, kgs = h.Backend, h.KeyGroups.String()
						files = len(h.Files)
						for _, f := range h.Files {
							bytes += f.Size
						}
						bytes += int64(len(h.Inline))
					}
					opState := "-"
					if h := sub.Operator; h != nil {
						opState = fmt.Sprintf("%d bytes", len(h.Inline))
					}
					format := "-"
					if op.StateFormat != 0 {
						format = strconv.Itoa(op.StateFormat)
					}
					fmt.Fprintf(w, "%s\t%d/%d\t%s\t%s\t%d\t%d\t%s\t%s\n", op.UID, sub.Subtask, op.Parallelism, keyed, kgs, files, bytes, opState, format)
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if v, _ := cmd.Flags().GetBool("json"); v {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(md)
			}
			return nil
		},
	}
	inspect.Flags().Bool("json", false, "also print the whole metadata as JSON")
	cmd.AddCommand(inspect)
	return cmd
}

// checkpointStatus is the STATUS of one listed checkpoint: a complete one
// is loaded, which verifies every file it names. Reasons name files
// relative to the job directory jobDir.
func checkpointStatus(ctx context.Context, st checkpoint.Storage, jobDir string, in checkpoint.CheckpointInfo) string {
	reason := func(err error) string {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		// The PATH column names the checkpoint already.
		for _, prefix := range []string{"load " + in.Path + ": ", "checkpoint " + in.Path + ": "} {
			msg = strings.TrimPrefix(msg, prefix)
		}
		return strings.ReplaceAll(msg, jobDir+string(filepath.Separator), "")
	}
	switch {
	case in.Damaged:
		return "DAMAGED: " + reason(in.Err)
	case !in.Complete:
		return "incomplete"
	}
	md, err := st.Load(ctx, in.Path)
	if err != nil {
		if ctx.Err() != nil {
			return "unknown: " + reason(err)
		}
		if _, isS3 := st.(*s3store.Storage); isS3 {
			// A running job's retention removed it after List when it is
			// no longer listed.
			if infos, lerr := st.List(ctx); lerr == nil && !slices.ContainsFunc(infos, func(i checkpoint.CheckpointInfo) bool { return i.Path == in.Path }) {
				return "removed while listing"
			}
			return "DAMAGED: " + reason(err)
		}
		if _, serr := os.Stat(in.Path); errors.Is(serr, fs.ErrNotExist) {
			// A running job's retention removed it after List.
			return "removed while listing"
		}
		return "DAMAGED: " + reason(err)
	}
	if md.Committed {
		return "complete, committed"
	}
	return "complete"
}

// jobStorage opens the storage of the job whose checkpoint directory is
// dir (<checkpoint.dir>/<job.name>), which must exist, read-only: these
// commands create, remove and rename nothing, so they work on a directory
// they may not write and beside a running job.
func jobStorage(dir string) (checkpoint.Storage, error) {
	if err := refuseS3(dir); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("checkpoint directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("checkpoint directory %s is not a directory", abs)
	}
	return dirstore.NewFileStorage(filepath.Dir(abs), filepath.Base(abs), dirstore.StorageOptions{ReadOnly: true})
}

// loadCheckpoint verifies and loads the checkpoint or savepoint at path (its
// directory or its _metadata file).
func loadCheckpoint(ctx context.Context, path string) (*checkpoint.Metadata, error) {
	if err := refuseS3(path); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if filepath.Base(abs) == "_metadata" {
		abs = filepath.Dir(abs)
	}
	st, err := jobStorage(filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	return st.Load(ctx, abs)
}

// refuseS3 refuses an s3:// location where only a checkpoint directory
// can be (the directory branches of the checkpoints and savepoints
// commands): a usage error (exit 2) saying how to see the S3 checkpoints
// instead.
func refuseS3(arg string) error {
	if !config.IsS3Dir(arg) {
		return nil
	}
	return usagef("%s: checkpoints in S3 are not supported by this command yet (it reads checkpoint directories only); "+
		"processor checkpoints list and savepoints list s3://<bucket>/<prefix>/<job.name> --config <the job's file> list a job's S3 checkpoints and savepoints, "+
		"and processor run resumes from the newest by itself", arg)
}

// s3Flags are the checkpoints commands' way to the checkpoint.s3 keys.
type s3Flags struct {
	config string
	set    []string
}

// openS3Job opens, read-only, the S3 checkpoints of the job at loc,
// s3://<bucket>/<prefix>/<job.name>. The service is reached with the
// checkpoint.s3 keys of the job's configuration (f.config, the
// environment, f.set), checkpoint.dir taken from loc; the bucket is
// checked as a run checks it. The Storage only lists and reads (its epoch,
// 1, never writes anything: nothing here calls a method that writes).
// The returned func closes the connection.
func openS3Job(ctx context.Context, loc string, f s3Flags) (*s3store.Storage, func(), error) {
	return openS3JobAt(ctx, loc, f, false)
}

// openS3JobAt is openS3Job; with owner it opens the Storage at the epoch
// of the newest manifest (1 when there is none), as the job's current
// owner writes, so that its deletions are not fenced by the manifests
// already there. It never claims the job: a newer owner still fences it.
func openS3JobAt(ctx context.Context, loc string, f s3Flags, owner bool) (*s3store.Storage, func(), error) {
	d, _, err := config.ParseS3Dir(loc)
	if err != nil {
		return nil, nil, usagef("%v", err)
	}
	prefix, job := "", d.Prefix
	if i := strings.LastIndexByte(d.Prefix, '/'); i >= 0 {
		prefix, job = d.Prefix[:i], d.Prefix[i+1:]
	}
	if job == "" {
		return nil, nil, usagef("%s: name the job: s3://<bucket>/<prefix>/<job.name>", loc)
	}
	dir := config.S3Dir{Bucket: d.Bucket, Prefix: prefix}
	// Only checkpoint.s3 matters here: the keys a job requires get
	// stand-ins, so that the S3 keys alone (in the environment or --set)
	// suffice; --set beats them.
	set := append([]string{"checkpoint.dir=" + dir.String(), "job.name=" + job, "source.topic=" + job + "-in", "sink.topic=" + job + "-out"}, f.set...)
	cfg, err := config.Load(config.Sources{File: f.config, Set: set})
	if err != nil {
		return nil, nil, usagef("%s: the checkpoint.s3 keys come from the job's configuration (--config, ONCEFLOW_* variables, --set): %w", loc, err)
	}
	store, err := jobs.OpenObjectStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	opts := s3store.Options{Prefix: prefix, Job: job, Epoch: 1}
	st, err := s3store.New(ctx, store, opts)
	if err == nil && owner && st.NewestEpoch() > 1 {
		opts.Epoch = st.NewestEpoch()
		st, err = s3store.New(ctx, store, opts)
	}
	if err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("%s: %w", loc, err)
	}
	return st, func() { _ = store.Close() }, nil
}

// loadS3Checkpoint verifies and loads the checkpoint or savepoint at
// s3://<bucket>/<prefix>/<job.name>/manifest/<name>.
func loadS3Checkpoint(ctx context.Context, loc string, f s3Flags) (*checkpoint.Metadata, error) {
	jobLoc, name, ok := strings.Cut(loc, "/manifest/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return nil, usagef("%s: name a checkpoint or savepoint: s3://<bucket>/<prefix>/<job.name>/manifest/<chk-<n> or savepoint-<id>>", loc)
	}
	st, closeStore, err := openS3Job(ctx, jobLoc, f)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	return st.Load(ctx, name)
}
