// Package kafka is the Kafka sink of onceflow, with three delivery
// guarantees: none and at_least_once (Writer: an idempotent producer,
// flushed and checked at every barrier for at_least_once) and exactly_once
// (Transactor, driven by twophase.Sink).
//
// # Exactly-once: how a Kafka transaction spans a checkpoint
//
// Records written between barrier n-1 and barrier n go into one Kafka
// transaction. At barrier n the sink flushes it (pre-commit) and records
// (transactional id, producer id, epoch, transaction version) in
// checkpoint n; when checkpoint n completes, the transaction is committed.
// Until then read_committed readers do not see it, so output and input
// offsets become visible together or not at all.
//
// Committing from another process. After a crash the restored checkpoint
// holds pre-committed transactions that must still be committed, but the
// producer that began them is gone, and creating a kgo client for the same
// transactional id would initialise a new producer id, which aborts them.
// On the wire a commit is only an EndTxn request naming the transactional
// id, producer id and epoch, and the coordinator accepts it from any
// connection, so recovery sends a raw kmsg.EndTxnRequest through a client
// without a transactional id (endTxn). Repeating a commit that already
// succeeded succeeds again, which makes recovery idempotent: a crash during
// recovery just repeats it. The same raw request is the fallback when a
// slot's own client cannot confirm a commit: that client is closed instead
// of retried, since kgo re-initialises the producer id after an
// unconfirmed EndTxn and would abort the transaction. Under transaction
// versions 0 and 1 every commit is a raw EndTxn (see Transactor.Commit).
//
// A bounded pool of ids. Each subtask cycles through Slots transactional
// ids <prefix>-<subtask>-<slot>, one kgo client each. Unique ids per
// checkpoint would make the broker keep state for every one of them for
// transactional.id.expiration.ms (7 days by default). When every slot is
// taken the pool grows by one, up to MaxSlots: recovery fences every id of
// the subtask whatever its slot number (found by listing transactions),
// and a kept id beyond the pool joins it, held.
//
// Flushes at the barrier. The subtask waits at each barrier for its
// transaction's flush, as Flink's Kafka sink does, so that every record of
// a checkpoint's transaction is on the broker before any record of the
// next one is sent: a partition keeps the order of its writes. With
// SinkOptions.AsyncPreCommit (off by default) twophase records the
// transaction as pending at once and flushes it on a goroutine while the
// subtask writes the next transaction on the next slot; the engine
// acknowledges the checkpoint only once the flush succeeded
// (engine.AsyncSnapshotWriter), so no checkpoint completes, and no commit
// is sent, before its records are on the broker, and a failed flush fails
// the checkpoint and every later call of the writer. The order holds there
// too: a transaction begun while the previous one may still be open keeps
// its records in a queue of its slot's (slot.after, slot.queue) until the
// previous one's flush ended, then produces them in order; a full queue
// (MaxBufferedRecords) makes Write wait, and PreCommit waits before it
// flushes. Without that queue the two transactions' records interleaved
// on a partition: under a broker restart the running word count's output
// showed a word's count 380 after its 448 (integration
// TestRollingRestartCostsNoJobRestart and TestLeaderAndCoordinatorLossIsExact
// failed so; TestATransactionWaitsForThePreviousOnesRecords holds a flush
// on kfake). What the subtask gains is the work of reading and processing
// during the flush, not the producer's: the broker takes the next
// transaction's records only after the previous one's. PreCommit runs
// concurrently with Begin, Write and Commit of other slots then, and
// returns the transaction unchanged, as twophase.Options.AsyncPreCommit
// requires.
//
// Commits beside the writing. With SinkOptions.AsyncCommit (off by
// default) twophase runs the commits of a completed checkpoint on a
// goroutine of its own, one batch at a time, so the subtask writes the
// next transaction, on another id, during the EndTxn round trip. Commit
// may therefore run concurrently with Begin, Write and PreCommit; the
// Transactor's mutex guards the slot flags and clients they share.
//
// Warm start. The recovery fences each free slot's id by creating the
// slot's own client and initialising its producer id, all slots at once
// and beside the listing of transactions (Transactor.AbortLingering), and
// keeps those clients: a group taken over runs after one such round trip
// instead of one per id and then one more per slot, and no transaction in
// the first seconds waits for it.
//
// When an id may be used again. A committed transaction is still named by
// the latest completed checkpoint until a later checkpoint, taken after the
// commit, completes; a restore from it commits the transaction again, and
// that commit must still succeed. Were the id fenced or reused in between,
// the epoch would have moved on and the repeated commit would be refused
// as fenced, which is indistinguishable from a lost transaction. So a slot
// stays held after its commit until twophase.Sink releases it
// (twophase.Releaser), and recovery does not fence the ids it just
// committed.
//
// Transaction versions. With transaction.version 2 (KIP-890, the Kafka 4
// default) every EndTxn bumps the producer epoch, so (id, producer id,
// epoch) names exactly one transaction. With version 0 or 1 (Kafka 3.x
// semantics) the epoch stays the same across the transactions of one
// producer session, and replaying an old commit could commit a later,
// un-checkpointed transaction. Under those versions a slot's client is
// recreated before the slot is reused, which bumps the epoch, and EndTxn
// is capped at v4, the last version with the old semantics. Each
// transaction records the version it was begun under, and its commit is
// sent at an EndTxn version of that version, whatever the cluster runs
// by then: a cluster upgraded from 0 to 2 between two runs reads EndTxn
// v5 as a version-2 end, and Kafka 4.1 refuses to repeat at v5 the commit
// of a transaction begun and committed under version 0, so the restore
// after a stop or a crash would report it lost.
//
// Recovery order. 1) Commit every transaction of the restored checkpoint
// with raw EndTxn. 2) Fence every other id the subtask may own (its slots,
// and ids of subtasks that no longer exist after a rescale, found by
// listing the cluster's transactions) with a raw InitProducerID, which
// aborts whatever failed attempts left open. 3) Only then create the slot
// clients. An open transaction holds its partitions' last stable offset,
// stalling every read_committed reader, so step 2 is what lets downstream
// consumers move on after a crash.
//
// Broker trouble. Every call to the cluster (the transaction version
// probe, beginning a transaction, producing and the barrier's flush, the
// commits, fencing, the listing of transactions, warming) rides out an
// unreachable or restarting broker, a moving leader or coordinator and
// other retriable errors for the job's outage tolerance
// (SinkOptions.Outage, kafka.outage_tolerance), with backoff, the outage
// logged once when it starts and once when it ends (internal/outage).
// Past the tolerance the call fails with an *outage.Error, which the
// restart strategy handles; what was pre-committed stays in the
// checkpoint for the restore. A fenced producer, an invalid epoch or an
// unknown transaction is never waited on: a commit refused so is the loud
// lost-transaction error below. On a free slot (no pre-committed
// transaction on its id) a failed start of a transaction drops the client
// and the retry creates a new one; a slot whose transaction awaits its
// commit never gets a new client.
//
// Timeouts. The broker aborts a transaction that outlives its timeout;
// for a pre-committed transaction of a completed checkpoint that is lost
// output. CheckTransactionTimeout refuses a timeout above the broker's
// transaction.max.timeout.ms or not comfortably (5/4) above checkpoint
// interval + (tolerable failures + 1) × checkpoint timeout + outage
// tolerance + restart delay (TimeoutBudget); twophase.Sink warns when a
// pending transaction passes 80% of its timeout; and a recovery commit refused as
// fenced or in an invalid state is a non-recoverable error saying data may
// be lost and naming the checkpoint and the transaction (never ignored, as
// in Flink's FLINK-8086).
package kafka
