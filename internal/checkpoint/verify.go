package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// ErrIntegrity is matched (errors.Is) by the error of a read of a state
// file that is not what its FileRef records: the wrong size or CRC32C. A
// storage tells such damage from its own failures (a disk or a service
// that does not answer) by it.
var ErrIntegrity = errors.New("checkpoint: state file does not match its reference")

// integrityError carries the message naming the file; it matches
// ErrIntegrity.
type integrityError struct{ msg string }

func (e *integrityError) Error() string        { return e.msg }
func (e *integrityError) Is(target error) bool { return target == ErrIntegrity }

// Integrityf returns an error with that message that matches ErrIntegrity,
// for a backend's own checks of a stored file (a size that differs from
// the reference before reading).
func Integrityf(format string, args ...any) error {
	return &integrityError{fmt.Sprintf(format, args...)}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenInline returns a reader of an inline file's bytes (FileRef.Inline),
// after checking their size and CRC32C against ref: a mismatch matches
// ErrIntegrity.
func OpenInline(ref FileRef) (io.ReadCloser, error) {
	if sum := crc32.Checksum(ref.Data, castagnoli); int64(len(ref.Data)) != ref.Size || sum != ref.CRC32C {
		return nil, Integrityf("inline state file %s: %d bytes with CRC32C %08x, expected %d with %08x",
			ref.Path, len(ref.Data), sum, ref.Size, ref.CRC32C)
	}
	return io.NopCloser(bytes.NewReader(ref.Data)), nil
}

// VerifyReader reads r and checks, as it goes and when it reaches the
// end, that it holds ref.Size bytes with checksum ref.CRC32C; a mismatch
// is an error naming name that matches ErrIntegrity. wrap, when set,
// wraps r's own errors (other than io.EOF) with the file's name. Close
// closes c.
func VerifyReader(r io.Reader, c io.Closer, name string, ref FileRef, wrap bool) io.ReadCloser {
	return &verifyingReader{r: r, c: c, name: name, ref: ref, crc: crc32.New(castagnoli), wrap: wrap}
}

type verifyingReader struct {
	r    io.Reader
	c    io.Closer
	name string
	ref  FileRef
	crc  hash.Hash32
	n    int64
	wrap bool
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.crc.Write(p[:n])
	v.n += int64(n)
	if v.n > v.ref.Size {
		return n, Integrityf("state file %s is longer than the %d bytes recorded", v.name, v.ref.Size)
	}
	switch {
	case err == io.EOF:
		if v.n != v.ref.Size {
			return n, Integrityf("state file %s: read %d bytes, expected %d (truncated)", v.name, v.n, v.ref.Size)
		}
		if got := v.crc.Sum32(); got != v.ref.CRC32C {
			return n, Integrityf("state file %s: checksum %08x, expected %08x (corrupt)", v.name, got, v.ref.CRC32C)
		}
	case err != nil && v.wrap:
		err = fmt.Errorf("state file %s: %w", v.name, err)
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.c.Close() }
