// Package twophase is the two-phase-commit protocol between a checkpointing
// job and an external transactional system: begin a transaction, write,
// pre-commit at the barrier, keep pre-committed transactions in the
// checkpoint, commit them when the checkpoint completes, and after a crash
// commit what the restored checkpoint holds and abort what failed attempts
// left behind.
package twophase
