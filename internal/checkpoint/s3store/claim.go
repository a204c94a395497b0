package s3store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/objstore"
)

// ErrNotClaimable is matched (errors.Is) by Claim's refusal of a job
// whose restore point cannot be decided by the storage alone: the newest
// checkpoint or savepoint is damaged, or DiscardAll deleted checkpoints
// newer than the newest one left. A claim would publish a checkpoint
// above them and so hide them from the restore, which then replays what
// their transactions may have committed (see the engine's refusals of a
// damaged newest checkpoint and of a cancelled job's deleted checkpoints).
// Resuming on purpose from a chosen checkpoint (Adopt, the engine's
// RestoreFrom) puts it above them, and a later Claim then succeeds.
var ErrNotClaimable = errors.New("the job's restore point cannot be claimed without a decision")

// claimTries is how many ids Claim tries before it gives up. Each lost id
// was published by a writer of a lower epoch between Claim's listing and
// its put; a zombie publishes at most one checkpoint per interval, so
// more than a few in a row means something else is writing.
const claimTries = 5

// ClaimResult is what Claim published.
type ClaimResult struct {
	// Metadata is the claim: the job's newest checkpoint, at an id above
	// every checkpoint and savepoint, under this writer's epoch, as
	// Latest now returns it (Path is its manifest's key; Committed is its
	// source's). When the job had no checkpoint it is empty: Claim is set
	// and it has no operators.
	Metadata *checkpoint.Metadata
	// From is the checkpoint or savepoint claimed, as Latest returned it
	// before the claim (its original id, Path and Committed); nil when
	// the job had none (or only an empty claim), so that the claim is
	// empty.
	From *checkpoint.Metadata
	// Lost counts the ids writers of a lower epoch published between
	// Claim's listing and its put; each such checkpoint was complete, and
	// the next try claimed it in turn.
	Lost int
}

// Empty reports whether the claim holds no state: the job had no
// checkpoint, and a restore of the claim is a fresh start.
func (r *ClaimResult) Empty() bool { return r.Metadata.Claim }

// Claim takes the job over for this writer, before it runs anything
// (docs/distributed.md, "Who runs a group"). The Storage must have been
// opened with an epoch above every manifest's (NewestEpoch of a probe + 1).
// Claim publishes the next checkpoint id, create-only, under that epoch:
// the checkpoint Latest would restore, copied as Adopt copies it (the
// committed marker first when it was committed), or, when there is none,
// an empty checkpoint (checkpoint.Metadata.Claim). Every writer of a lower
// epoch is fenced from then on: its next Complete finds a manifest of a
// higher epoch by listing, or finds its own id taken and reads it back,
// and fails with ErrFenced, so it never publishes again and its uploads
// stay orphans.
//
// When a writer of a lower epoch publishes the id first (a zombie that
// has not seen the claim yet), its checkpoint is complete and its
// transactions still open: Claim lists again and claims that one at the
// next id, up to claimTries ids, then fails naming the last id lost. It
// deletes what it wrote for a lost id (copies, and the committed marker
// it put beside the other writer's manifest: left there, it would make
// a restore skip committing that checkpoint's transactions). A committed
// marker of that kind that a crashed claim left behind (it says adopted,
// under another epoch than its manifest's) is deleted before the claim
// and not believed.
//
// A manifest of a higher epoch fails Claim with ErrFenced (a
// *FencedError naming it and both epochs), and the Storage stays fenced;
// what it wrote for the id is deleted as for a lost one. When another
// writer of the same epoch (a second process that read the same newest
// epoch) published the id first, Claim fails naming its manifest: only
// one of them claims, and the other may open a new Storage above
// NewestEpoch and claim again.
// A claim lists the manifests once per id it tries (and once more to
// learn who took an id it lost) and deletes nothing of what it
// supersedes: it is on the path of every takeover, and the owner's first
// Complete collects what retention no longer keeps anyway.
// A damaged newest checkpoint, or checkpoints deleted by DiscardAll above
// the newest one left, fail it with ErrNotClaimable, changing nothing.
// Any other failure (the store not answering) is returned as it is; the
// claim may then exist or not, and a later Claim claims anew above it.
func (s *Storage) Claim(ctx context.Context) (*ClaimResult, error) {
	lost := 0
	var lastLost string
	for range claimTries {
		// One listing per try: the restore point, the id and the
		// publication below all work from it (the put is create-only,
		// so an id taken since is refused, not overwritten).
		if err := s.current(ctx); err != nil {
			return nil, s.errorf("claim: %w", err)
		}
		latest, infos, err := s.latestOf(ctx, s.cached())
		if err != nil {
			return nil, fmt.Errorf("claim: %w", err)
		}
		if err := s.claimable(ctx, latest, infos); err != nil {
			return nil, err
		}
		if latest != nil && latest.Committed && !latest.Savepoint {
			stray, err := s.dropStrayMarker(ctx, latest.CheckpointID)
			if err != nil {
				return nil, s.errorf("claim: %w", err)
			}
			if stray {
				latest.Committed = false
			}
		}
		s.mu.Lock()
		id := s.newest + 1
		s.mu.Unlock()
		var md *checkpoint.Metadata
		if latest == nil || latest.Claim {
			md, err = s.publishClaim(ctx, id)
		} else {
			md, err = s.adopt(ctx, latest, id, false)
		}
		if err == nil {
			if latest != nil && latest.Claim {
				latest = nil
			}
			return &ClaimResult{Metadata: md, From: latest, Lost: lost}, nil
		}
		at, terr := s.takenBy(ctx, id)
		if errors.Is(err, ErrFenced) || errors.Is(terr, ErrFenced) || at.lower {
			s.dropLost(ctx, id)
		}
		switch {
		case errors.Is(err, ErrFenced):
			return nil, fmt.Errorf("claim: %w", err)
		case terr != nil:
			return nil, fmt.Errorf("claim: %w (then: %w)", err, terr)
		case at.same:
			return nil, fmt.Errorf("claim: %w (another writer of this epoch, %d, claimed %s first: open the storage at an epoch above NewestEpoch to claim again)", err, s.opts.Epoch, at.key)
		case !at.lower:
			return nil, fmt.Errorf("claim: %w", err)
		}
		lost++
		lastLost = at.key
		s.logf("s3 checkpoint storage %s: claim of checkpoint %d lost to %s, published by a writer of a lower epoch first; claiming it in turn", s.root, id, at.key)
	}
	return nil, s.errorf("claim: gave up after %d tries: each time a writer of a lower epoch published the id first, the last %s", claimTries, lastLost)
}

// claimable refuses (ErrNotClaimable) to claim latest when Latest skipped
// a damaged checkpoint newer than it (infos), or when DiscardAll deleted
// checkpoints newer than it.
func (s *Storage) claimable(ctx context.Context, latest *checkpoint.Metadata, infos []checkpoint.CheckpointInfo) error {
	instead := "an empty checkpoint"
	if latest != nil {
		instead = latest.Path
	}
	for _, in := range infos {
		if in.Damaged {
			return s.errorf("claim: the newest checkpoint %s is damaged (%v); claiming %s instead would replay what its transactions may have committed: %w",
				in.Path, in.Err, instead, ErrNotClaimable)
		}
	}
	disc, err := s.discarded(ctx)
	if err != nil {
		return s.errorf("claim: %w", err)
	}
	if disc.Through > 0 && (latest == nil || latest.CheckpointID < disc.Through) {
		return s.errorf("claim: the checkpoints up to %d were deleted when the job was cancelled (%s%s); claiming %s would resume from an older point and replay what their transactions may have committed: %w",
			disc.Through, s.root, discardedKey, instead, ErrNotClaimable)
	}
	return nil
}

// publishClaim publishes an empty claim at id (create-only, as Complete
// publishes), above every checkpoint and savepoint, from the view of the
// manifests Claim has just listed.
func (s *Storage) publishClaim(ctx context.Context, id int64) (*checkpoint.Metadata, error) {
	fail := func(err error) (*checkpoint.Metadata, error) {
		return nil, s.errorf("publish an empty claim as checkpoint %d: %w", id, err)
	}
	s.lockExclusive()
	defer s.completeMu.Unlock()
	s.mu.Lock()
	if id <= s.newest || s.pending[id] != nil || s.aborted[id] {
		top := s.newest
		s.mu.Unlock()
		return fail(fmt.Errorf("id %d is not above %d, the highest in the storage, or is in flight", id, top))
	}
	s.mu.Unlock()
	name := chkName(id)
	md := &checkpoint.Metadata{Version: checkpoint.MetadataVersion, Job: s.job, CheckpointID: id, Timestamp: s.opts.Now().UTC(),
		Operators: []checkpoint.OperatorSnapshot{}, Claim: true}
	m, err := s.publish(ctx, name, md)
	if err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.manifests[name] = m
	s.rebuildLocked()
	s.mu.Unlock()
	return cloneMetadata(m)
}

// idHolder says who holds an id a claim failed to publish.
type idHolder struct {
	key string
	// lower: a writer of a lower epoch published the id or a later one
	// (key: the newest such manifest); same: one of this writer's epoch
	// holds the id itself.
	lower, same bool
}

// takenBy lists the manifests again after a failed claim of id and says
// who published the id or later ones; its error is the listing's or the
// fence, when a manifest of a higher epoch exists.
func (s *Storage) takenBy(ctx context.Context, id int64) (idHolder, error) {
	if err := s.current(ctx); err != nil {
		return idHolder{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var h idHolder
	for _, m := range s.sortedLocked() {
		switch {
		case m.id >= id && m.epoch < s.opts.Epoch:
			h.key, h.lower, h.same = m.key, true, false
		case m.id == id && m.epoch == s.opts.Epoch && !h.lower:
			h.key, h.same = m.key, true
		}
	}
	return h, nil
}

// dropLost deletes what a failed claim of id wrote once another writer's
// manifest holds the id: its copies (under data/chk-<id>/<this writer's
// token>/, which no manifest names) and the committed marker it put
// beside that manifest (dropStrayMarker). Failures are logged; copies
// left are orphans, deleted after the grace period.
func (s *Storage) dropLost(ctx context.Context, id int64) {
	if _, err := s.dropStrayMarker(ctx, id); err != nil {
		s.logf("s3 checkpoint storage %s: %v", s.root, err)
	}
	s.mu.Lock()
	chk, sp := s.manifests[chkName(id)], s.manifests[savepointName(id)]
	s.mu.Unlock()
	if sp == nil && (chk == nil || chk.epoch == s.opts.Epoch) {
		return // nothing shows that the claim's manifest is not there
	}
	prefix := s.root + dataDir + chkName(id) + "/" + s.token + "/"
	infos, err := s.st.List(ctx, prefix)
	if err != nil {
		s.logf("s3 checkpoint storage %s: the copies of a lost claim of checkpoint %d are left as orphans: %v", s.root, id, err)
		return
	}
	for _, in := range infos {
		if err := s.st.Delete(ctx, in.Key); err != nil {
			s.logf("s3 checkpoint storage %s: the copies of a lost claim of checkpoint %d are left as orphans: %v", s.root, id, err)
		}
	}
}

// dropStrayMarker deletes manifest/chk-<id>.committed when an adoption
// put it that lost the id to another writer: it says "adopted", and
// either its epoch is not that of the manifest chk-<id> (whose writer,
// then, never committed anything through it) or there is no such
// manifest and the epoch is this writer's. It reports whether it deleted
// one. A marker the other writer puts meanwhile (MarkCommitted) may be
// deleted with it, which costs a restore committing its transactions
// again; keeping a stray one would make a restore skip them.
func (s *Storage) dropStrayMarker(ctx context.Context, id int64) (bool, error) {
	key := s.root + manifestDir + chkName(id) + committedSuf
	b, err := s.readAll(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading committed marker %s: %w", key, err)
	}
	epoch, adopted := adoptedMarkerEpoch(string(b), id)
	if !adopted {
		return false, nil
	}
	s.mu.Lock()
	m := s.manifests[chkName(id)]
	s.mu.Unlock()
	if m != nil && m.epoch == epoch || m == nil && epoch != s.opts.Epoch {
		return false, nil
	}
	if err := s.st.Delete(ctx, key); err != nil {
		return false, fmt.Errorf("deleting committed marker %s that an adoption of epoch %d left beside another writer's checkpoint: %w", key, epoch, err)
	}
	s.logf("s3 checkpoint storage %s: deleted committed marker %s: an adoption of epoch %d put it, and lost the id to another writer", s.root, key, epoch)
	return true, nil
}

// adoptedMarkerEpoch parses the committed marker Adopt writes for id,
// "committed <id> (adopted from <path>) epoch=<e>\n", returning its epoch.
func adoptedMarkerEpoch(body string, id int64) (int64, bool) {
	if !strings.HasPrefix(body, "committed "+strconv.FormatInt(id, 10)+" (adopted from ") {
		return 0, false
	}
	i := strings.LastIndex(body, " epoch=")
	if i < 0 {
		return 0, false
	}
	e, err := strconv.ParseInt(strings.TrimSpace(body[i+len(" epoch="):]), 10, 64)
	return e, err == nil
}
