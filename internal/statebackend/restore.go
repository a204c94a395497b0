package statebackend

import (
	"bytes"
	"fmt"
	"io"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// openHandleData calls fn with a reader over every data stream of a
// canonical or memory handle (its inline bytes or its files, verified by
// the storage).
func openHandleData(h *checkpoint.Handle, st checkpoint.Storage, fn func(name string, r io.Reader) error) error {
	if len(h.Inline) > 0 {
		if err := fn("inline snapshot", bytes.NewReader(h.Inline)); err != nil {
			return err
		}
	}
	for _, ref := range h.Files {
		if st == nil {
			return fmt.Errorf("restore %s: no storage to read it from", ref.Path)
		}
		rc, err := st.Open(ref)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		err = fn(ref.Path, rc)
		if err == nil {
			// Read to the end so the storage verifies size and checksum.
			_, err = io.Copy(io.Discard, rc)
		}
		rc.Close()
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

// compatible reports whether a state declared as want can use data written
// as have: same kind and codecs, and TTL on or off in both (the TTL header
// is part of every stored value).
func compatible(have, want checkpoint.StateMeta) error {
	switch {
	case have.Kind != want.Kind:
		return fmt.Errorf("state %q: declared as %s, but stored as %s", want.Name, want.Kind, have.Kind)
	case have.ValueCodec != want.ValueCodec:
		return fmt.Errorf("state %q: value codec %q does not match stored codec %q", want.Name, want.ValueCodec, have.ValueCodec)
	case have.UserKeyCodec != want.UserKeyCodec:
		return fmt.Errorf("state %q: user key codec %q does not match stored codec %q", want.Name, want.UserKeyCodec, have.UserKeyCodec)
	case (have.TTL > 0) != (want.TTL > 0):
		return fmt.Errorf("state %q: TTL %v does not match stored TTL %v (TTL cannot be turned on or off on restore)", want.Name, want.TTL, have.TTL)
	}
	return nil
}
