package jobs

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/onceflow/onceflow/config"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
)

// Group scopes a Build to one partition group of a distributed job
// (job.mode distributed, docs/distributed.md): the pipeline reads only
// the input partitions p with p mod Count == Index, and everything it
// owns is the group's own, apart from every other group's and from the
// single-process job's:
//
//   - its checkpoints: <checkpoint.dir>/<job.name>/pg-<Index>/;
//   - its transactional ids: <sink.transactional_id_prefix>-pg<Index>-…;
//   - its Pebble state: <state.dir>/<job.name>/pg-<Index>;
//   - its engine job name, in logs and checkpoint metadata:
//     <job.name>/pg-<Index>.
type Group struct {
	// Index is the group, in [0, Count).
	Index int
	// Count is G, the job's number of partition groups.
	Count int
	// CommitOffsets commits the group's checkpointed input offsets to the
	// job's consumer group as the member that owns them (lag monitoring);
	// nil commits nothing.
	CommitOffsets func(ctx context.Context, offsets kadm.Offsets) error
}

func (g *Group) validate() error {
	if g.Count < 1 || g.Index < 0 || g.Index >= g.Count {
		return &ConfigError{Key: "job.partition_groups", Err: fmt.Errorf("partition group %d of %d does not exist", g.Index, g.Count)}
	}
	return nil
}

// segment is the group's name under the job: pg-<Index>.
func (g *Group) segment() string { return fmt.Sprintf("pg-%d", g.Index) }

// scoped is cfg as the group's pipeline sees it: its transactional id
// prefix. The other per-group names are derived where they are used
// (jobName, stateDir, the storage), from the unscoped job name.
func (g *Group) scoped(cfg *config.Config) *config.Config {
	c := *cfg
	c.Sink.TransactionalIDPrefix = fmt.Sprintf("%s-pg%d", cfg.Sink.TransactionalIDPrefix, g.Index)
	return &c
}

// jobName is the engine job's name: the job's, or a group's
// <job>/pg-<g>.
func jobName(cfg *config.Config, g *Group) string {
	if g == nil {
		return cfg.Job.Name
	}
	return cfg.Job.Name + "/" + g.segment()
}

// stateDir is where the Pebble backend keeps the pipeline's state.
func stateDir(cfg *config.Config, g *Group) string {
	if g == nil {
		return filepath.Join(cfg.State.Dir, cfg.Job.Name)
	}
	return filepath.Join(cfg.State.Dir, cfg.Job.Name, g.segment())
}

// partitionGroup is the source's restriction.
func partitionGroup(g *Group) sourcekafka.PartitionGroup {
	if g == nil {
		return sourcekafka.PartitionGroup{}
	}
	return sourcekafka.PartitionGroup{Index: g.Index, Count: g.Count}
}
