package runner

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/groups"
	"github.com/onceflow/onceflow/internal/membership"
	"github.com/onceflow/onceflow/jobs"
)

// deps are what the run command reaches outside the process: tests
// replace them (an in-memory job, no Kafka, injected signals).
type deps struct {
	// build turns the configuration into a runnable job.
	build func(ctx context.Context, cfg *config.Config, env jobs.Env) (*jobs.Built, error)
	// ping checks that the cluster answers.
	ping func(ctx context.Context, opts []kgo.Opt, brokers []string) error
	// signals delivers SIGINT and SIGTERM until the returned stop is
	// called.
	signals func() (<-chan os.Signal, func())
	// env is the environment the configuration reads (nil: os.Environ()).
	env []string
	// httpTimeouts bound the API's connections (zero: the defaults of
	// defaultHTTPTimeouts).
	httpTimeouts httpTimeouts
	// buildGroup builds one partition group of job.mode distributed (nil:
	// jobs.BuildGroup); member creates the group membership (nil:
	// membership.New); partitions counts the input topic's partitions
	// (nil: asks the cluster; 0 when the topic does not exist).
	buildGroup func(ctx context.Context, cfg *config.Config, env jobs.Env) (groups.Pipeline, error)
	member     func(membership.Config) (groups.Member, error)
	partitions func(ctx context.Context, opts []kgo.Opt, topic string) (int, error)
	// ownsRuntime says the process is the job's own (Main): run applies
	// process.memory_budget to the Go runtime, process-wide settings a
	// job run inside a test or a service must not touch.
	ownsRuntime bool
}

// getenv is the value of the environment variable name in d.env (the
// process's environment when nil), "" when unset.
func (d deps) getenv(name string) string {
	if d.env == nil {
		return os.Getenv(name)
	}
	val := ""
	for _, kv := range d.env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			val = v // the last one wins, as in os.Getenv
		}
	}
	return val
}

func productionDeps() deps {
	return deps{
		build: jobs.Build,
		ping: func(ctx context.Context, opts []kgo.Opt, brokers []string) error {
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				return fmt.Errorf("kafka client: %w", err)
			}
			defer cl.Close()
			return pingCluster(ctx, cl, brokers)
		},
		signals: func() (<-chan os.Signal, func()) {
			c := make(chan os.Signal, 2)
			signal.Notify(c, os.Interrupt, syscall.SIGTERM)
			return c, func() { signal.Stop(c) }
		},
	}
}
