package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/state"
)

func newCheckpointsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoints",
		Short: "List and inspect a job's checkpoints and savepoints",
	}
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
			st, err := jobStorage(args[0])
			if err != nil {
				return err
			}
			infos, err := st.List(cmd.Context())
			if err != nil {
				return err
			}
			jobDir, err := filepath.Abs(args[0])
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
			md, err := loadCheckpoint(cmd.Context(), args[0])
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
func checkpointStatus(ctx context.Context, st state.Storage, jobDir string, in state.CheckpointInfo) string {
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
func jobStorage(dir string) (state.Storage, error) {
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
	return state.NewFileStorage(filepath.Dir(abs), filepath.Base(abs), state.StorageOptions{ReadOnly: true})
}

// loadCheckpoint verifies and loads the checkpoint or savepoint at path (its
// directory or its _metadata file).
func loadCheckpoint(ctx context.Context, path string) (*state.Metadata, error) {
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

// refuseS3 refuses an s3:// location: the checkpoints and savepoints
// commands read checkpoint directories only, so far. A usage error (exit
// 2) saying where the S3 checkpoints are and how to see them meanwhile.
func refuseS3(arg string) error {
	if !config.IsS3Dir(arg) {
		return nil
	}
	return usagef("%s: checkpoints in S3 are not supported by this command yet (it reads checkpoint directories only); "+
		"a job's S3 checkpoints and savepoints are the objects under <prefix>/<job.name>/manifest/ in the bucket "+
		"(list them with an S3 client), and processor run resumes from the newest by itself", arg)
}
