package kafka

import "github.com/onceflow/onceflow/engine"

var _ engine.StateFormatVersioner = (*Sink)(nil)

// txnStateFormat is the format version of the sink's operator state: one
// JSON entry per pre-committed transaction still to commit (twophase,
// with the Txn of this package). Bump it when a binary of the previous
// version would misread the entries (a field it must not ignore, a
// changed meaning); a new field an older binary can safely ignore needs
// none. See engine.StateFormatVersioner.
const txnStateFormat = 1

// StateFormatVersion implements engine.StateFormatVersioner: every
// checkpoint records it for the sink, and this binary refuses to restore
// transactions stored in a newer format.
func (s *Sink) StateFormatVersion() int { return txnStateFormat }
