package kafka

import "github.com/onceflow/onceflow/engine"

var _ engine.StateFormatVersioner = (*Source[any])(nil)

// offsetsStateFormat is the format version of the source's operator state:
// one JSON entry per partition with its next offset (Reader.SnapshotState).
// Bump it when a binary of the previous version would misread the entries
// (a field it must not ignore, a changed meaning); a new field an older
// binary can safely ignore needs none. See engine.StateFormatVersioner.
const offsetsStateFormat = 1

// StateFormatVersion implements engine.StateFormatVersioner: every
// checkpoint records it for the source, and this binary refuses to
// restore offsets stored in a newer format.
func (s *Source[T]) StateFormatVersion() int { return offsetsStateFormat }
