// Package runner is the command line of onceflow's processor as a
// library: it runs jobs (job.mode single and distributed, with the HTTP
// API, metrics, signals and savepoints) and operates on what they leave
// behind (checkpoints, savepoints and Kafka transactions).
//
// cmd/processor is Main(Job{}): the built-in job types. A Go job's program
// passes its Dataflow (see Job) and gets the same commands, flags,
// configuration and behaviour for its own graph.
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
	"path/filepath"
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

// Job is a program's job, for Main and Execute.
//
// The zero Job is the processor itself: it runs the built-in job types
// (job.type copy, wordcount and aggregate) and refuses job.type go.
type Job struct {
	// Name is the default of job.name: a configuration file, the
	// environment (ONCEFLOW_JOB_NAME) or --set job.name=... still override
	// it. Empty leaves job.name without a default (it must be configured).
	Name string
	// Dataflow is the job's graph (jobs.Dataflow): with it, job.type
	// defaults to go, every build of the job (job.mode single, and each
	// partition group of job.mode distributed) is handed it in
	// jobs.Env.Dataflow, and a configured job.type other than go is
	// refused (exit 2). Nil makes the program the processor.
	Dataflow jobs.Dataflow
}

// processorName is the program name of the processor (a Job without a
// Dataflow), whatever its binary is called: its usage and error lines
// start with it.
const processorName = "processor"

// Main runs the command line os.Args for j (see Execute) and exits the
// process with its exit code: 0 success, 1 the job or command failed, 2
// bad usage or configuration. It does not return.
//
// A Go job's program is
//
//	func main() { runner.Main(runner.Job{Name: "purchases", Dataflow: purchases}) }
//
// and cmd/processor is runner.Main(runner.Job{}).
//
// The process is the job's own, so Main also applies process.memory_budget
// to the Go runtime's collector, which Execute leaves alone.
func Main(j Job) {
	d := productionDeps()
	d.ownsRuntime = true
	os.Exit(executeDeps(context.Background(), j, os.Args, os.Stdout, os.Stderr, d))
}

// Execute runs the command line args for j as the processor does (run,
// savepoint, stop, checkpoints, savepoints, transactions, version) and
// returns the exit code: 0 success, 1 the job or command failed, 2 bad
// usage or configuration (a job.type the program cannot run is refused
// before anything is touched). args is a whole command
// line as os.Args holds it: args[0] names the program (its base name, in
// usage and on every error line; the processor, a Job without a Dataflow,
// is always "processor"), the rest are its arguments. Output goes to
// stdout (a stopped job's savepoint path, list output), logs and the
// failure (prefixed with the program's name) to stderr. Cancelling ctx cancels a running job
// without a savepoint (exit 1); run stops with a savepoint on SIGTERM or
// SIGINT, which Execute handles while a job runs.
//
// Execute runs inside a process that is not only the job's (a test's, a
// service's), so it leaves the Go runtime's collector settings alone:
// process.memory_budget applies under Main.
func Execute(ctx context.Context, j Job, args []string, stdout, stderr io.Writer) int {
	return executeDeps(ctx, j, args, stdout, stderr, productionDeps())
}

// executeDeps is Execute over d.
func executeDeps(ctx context.Context, j Job, args []string, stdout, stderr io.Writer, d deps) int {
	argv0 := ""
	if len(args) > 0 {
		argv0, args = args[0], args[1:]
	}
	return execute(ctx, newProgramRoot(j, programName(j, argv0), d), args, stdout, stderr)
}

// programName is the name j's program goes by: "processor" for the
// processor, else the base name of argv0 (without .exe), else j.Name, else
// "runner".
func programName(j Job, argv0 string) string {
	if j.Dataflow == nil {
		return processorName
	}
	name := strings.TrimSuffix(filepath.Base(argv0), ".exe")
	switch {
	case argv0 != "" && name != "." && name != string(filepath.Separator):
		return name
	case j.Name != "":
		return j.Name
	default:
		return "runner"
	}
}

// execute runs the command line args (without the program name) on root
// and returns the exit code, printing a failure as one line on stderr that
// starts with the program's name.
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
	fmt.Fprintf(stderr, "%s: %v\n", root.Name(), err)
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

// newRoot is the processor's command tree as it runs in production.
func newRoot() *cobra.Command { return newRootDeps(productionDeps()) }

// newRootDeps is the processor's command tree over deps (tests pass their
// own).
func newRootDeps(d deps) *cobra.Command { return newProgramRoot(Job{}, processorName, d) }

// newProgramRoot is the command tree of j's program, called name, over
// deps.
func newProgramRoot(j Job, name string, d deps) *cobra.Command {
	short := "onceflow: Kafka in, stateful operators, Kafka out, every record exactly once"
	if j.Dataflow != nil {
		short = "a onceflow Go job: Kafka in, stateful operators, Kafka out, every record exactly once"
	}
	root := &cobra.Command{
		Use:           name,
		Short:         short,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(d, j), newSavepointCmd(d), newStopCmd(d), newVersionCmd(), newCheckpointsCmd(), newSavepointsCmd(), newTransactionsCmd())
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
			if name := cmd.Root().Name(); name != processorName {
				fmt.Fprintf(cmd.OutOrStdout(), "%s (onceflow %s)\n", name, version)
				return
			}
			fmt.Fprintln(cmd.OutOrStdout(), "onceflow processor", version)
		},
	}
}
