package s3store

import "github.com/onceflow/onceflow/internal/checkpoint"

// EncodeManifestForTest renders md as a manifest of epoch, for tests that
// write manifests no Storage would (one naming another savepoint's
// objects).
func EncodeManifestForTest(md *checkpoint.Metadata, epoch int64) ([]byte, error) {
	return encodeManifest(md, epoch)
}

// WaitCollectorForTest waits until the collector goroutine
// (Options.CollectInBackground) has nothing left to do.
func (s *Storage) WaitCollectorForTest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.collecting {
		s.deleted.Wait()
	}
}
