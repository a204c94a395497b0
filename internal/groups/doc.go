// Package groups runs, in one processor of a distributed job (job.mode
// distributed, docs/distributed.md), the pipelines of the partition groups
// this process owns, as Kafka's group coordinator assigns them through
// internal/membership.
//
// # Contract
//
// A Runner is the membership.Handler of the process's Member, and the
// owner of one goroutine per group it holds:
//
//   - Assigned starts, for each group, a goroutine that builds the group's
//     pipeline (Options.Build: claim, commit, fence, as jobs.Build does for
//     a jobs.Group) and runs it; it returns at once. The group is
//     "claiming" while it builds, then "running".
//   - Revoked stops each group concurrently and returns only once none of
//     their goroutines runs: a group still claiming is cancelled; a
//     running one is stopped with a final savepoint (StopWithSavepoint
//     under Revoked's ctx, which the Member ends at its revoke timeout), so
//     that it moves without replay; when the savepoint fails or ctx ends
//     first, its pipeline is cancelled (the next owner then restores the
//     last checkpoint and commits what it holds).
//   - Lost cancels each group at once, with no final checkpoint (the
//     groups may already run elsewhere), and returns once they ended.
//   - Revoked and Lost of a group the Runner does not hold are no-ops.
//
// # How a group ends by itself
//
//   - Fenced (IsFenced: the S3 checkpoint storage refused a write because a
//     newer owner claimed the group, or Kafka fenced the group's
//     transactional producers): this process is a zombie for that group.
//     The Runner logs it once at Warn, forgets the group and goes on; the
//     Member revokes or loses it later, which is then a no-op.
//   - Finished or stopped without being asked (not expected of a Kafka
//     job): logged, forgotten.
//   - Any other error, from Build or from the pipeline (its restart
//     strategy gave up, an incompatible checkpoint, a claim refused for
//     want of a decision): fatal for the process. Run stops the other
//     groups with final savepoints, leaves the consumer group and returns
//     the error, so that the process exits non-zero and is restarted.
//
// An error of a group that the Runner was stopping or cancelling is never
// fatal: it is logged.
//
// # Lifetime
//
// Run creates the Member (Options.NewMember), joins and waits. It returns
// when its ctx ends (every pipeline cancelled, the member closed: the
// groups move and are restored from their last checkpoints), when a group
// failed (see above), or after Leave (the SIGTERM path: Member.Close
// revokes every group, final savepoints, then leaves the consumer group so
// that the others take the groups over at once; Run returns nil). When
// Run returns, no goroutine of the Runner runs. A Runner runs once.
package groups
