// Package runner is the command line of onceflow's processor: it runs
// jobs and operates on what they leave behind (checkpoints, savepoints
// and Kafka transactions). cmd/processor is a program that only calls
// Main.
//
// Exit codes: 0 success, 1 the job or command failed, 2 bad usage or
// configuration.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
)

// usageError marks errors of the command line or configuration (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the command line os.Args as the processor does and exits the
// process with its exit code: 0 success, 1 the job or command failed, 2
// bad usage or configuration. It does not return.
func Main() {
	os.Exit(execute(context.Background(), newRoot(), os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the command line args on root and returns the exit code,
// printing a failure as one line on stderr.
func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if strings.HasPrefix(err.Error(), "unknown command ") {
		// cobra's own error for a mistyped subcommand has no type.
		err = usageError{err}
	}
	fmt.Fprintln(stderr, "processor:", err)
	return exitCode(err)
}

// exitCode is 2 for bad usage or configuration (a *jobs.ConfigError is
// a configuration the cluster or the disk refused, and
// engine.ErrIncompatibleCheckpoint a checkpoint the configuration does not
// fit), 1 for other failures.
func exitCode(err error) int {
	var ue usageError
	var ce *jobs.ConfigError
	if errors.As(err, &ue) || errors.As(err, &ce) || errors.Is(err, engine.ErrIncompatibleCheckpoint) {
		return 2
	}
	return 1
}

// newRoot is the command tree as main runs it.
func newRoot() *cobra.Command { return newRootDeps(productionDeps()) }

// newRootDeps is the command tree over deps (tests pass their own).
func newRootDeps(d deps) *cobra.Command {
	root := &cobra.Command{
		Use:           "processor",
		Short:         "onceflow: Kafka in, stateful operators, Kafka out, every record exactly once",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(d), newSavepointCmd(d), newStopCmd(d), newVersionCmd(), newCheckpointsCmd(), newSavepointsCmd(), newTransactionsCmd())
	markArgErrors(root)
	return root
}

// markArgErrors makes every command's argument-count error a usage error.
func markArgErrors(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		markArgErrors(c)
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
}

// version is set at build time with
// -ldflags "-X github.com/onceflow/onceflow/runner.version=...".
var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "onceflow processor", version)
		},
	}
}
