// Package objstore is what checkpoint storage needs from an object store:
// whole-object puts, some of them conditional, reads, listings by prefix and
// idempotent deletes, with the failures that matter to fencing told apart
// by typed errors.
//
// Two implementations: S3 (any S3-compatible service, through
// aws-sdk-go-v2) and Memory (a goroutine-safe fake for unit tests, with
// atomic conditional puts). Faulty wraps either and fails chosen calls.
// The conformance suite in objstoretest holds every implementation to the
// same contract.
//
// # Fencing
//
// A checkpoint becomes visible by writing its manifest under a new name
// with a create-only put (PutOptions.IfNoneMatch, S3's If-None-Match: *).
// Of several writers of one name exactly one succeeds; the others get
// ErrExists and keep nothing of theirs in the store. A put that replaces
// one known version (PutOptions.IfMatch, S3's If-Match) fails with
// ErrPreconditionFailed when the object changed or vanished since that
// version was read. Both are only as atomic as the service: AWS S3 and the
// Memory store decide simultaneous writers atomically; versitygw's posix
// backend does not for writers within the same millisecond (a writer
// seconds late, such as a zombie, is refused).
//
// An ETag names content, not a write: S3 gives a single-part upload the
// MD5 of its bytes as ETag (without SSE-KMS), so rewriting identical bytes
// gives the same ETag, and If-Match cannot tell the two writes apart. Data
// that must tell writers apart carries the writer's identity (an epoch) in
// its bytes.
//
// # Errors
//
// Every error names the operation and the object (s3://bucket/key or
// mem://name/key) and wraps, with %w, the cause: one of the sentinel errors
// below, the service's error (errors.As finds smithy.APIError for S3), or
// the context's error.
//
//   - ErrNotFound: Get or Stat of a key that does not exist in a bucket
//     that does. A missing bucket is never reported as ErrNotFound, so that
//     a deleted or misnamed bucket cannot pass for "no checkpoint yet".
//   - ErrExists: a create-only put found the key present.
//   - ErrPreconditionFailed: a conditional put was not applied: an If-Match
//     version is stale or gone, or other writes of the key kept conflicting
//     (S3's 409 ConditionalRequestConflict, retried a bounded number of
//     times). ErrExists is one of these too: errors.Is(err,
//     ErrPreconditionFailed) holds for it. Nothing of the refused put is
//     in the store. A caller that must know who won re-reads the key.
//   - ErrKeyConflict: a put of a key that extends another object's key
//     past a "/" (a/b when a is an object) or that another object's key
//     extends (a when a/b is an object). AWS S3 stores both; services
//     that keep objects as files (versitygw's posix backend: 409
//     ObjectParentIsFile, ExistingObjectIsDirectory) refuse the second,
//     and so does the Memory store, so that a key layout tested in memory
//     works on them. Layouts keep every object's key from being another's
//     "directory".
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is an object store of one bucket (or one in-memory namespace).
// Implementations are safe for concurrent use. Every call honours its
// context: one cancelled or past its deadline fails with an error wrapping
// the context's error, and a put it interrupts may or may not have been
// applied.
type Store interface {
	// Put writes the bytes body holds from its current offset to its end
	// as the object key, replacing any object there unless opts make the
	// put conditional. body is read more than once when the put is
	// retried (it is sought back to where it started); it is not closed.
	// On success Put returns the object's size and ETag (LastModified is
	// zero). A refused conditional put returns ErrExists or
	// ErrPreconditionFailed and changes nothing. Put reports success for a
	// conditional put whose response was lost and whose retry was refused,
	// when the key holds exactly body's bytes (the lost attempt applied
	// them).
	Put(ctx context.Context, key string, body io.ReadSeeker, opts PutOptions) (Info, error)

	// Get opens the object key for reading: the whole object, or the
	// range opts name. The caller reads and closes the body; a body not
	// read to its end holds a connection until it is closed. Info
	// describes the whole object (Size is its full size even for a range).
	// A missing key fails with ErrNotFound.
	Get(ctx context.Context, key string, opts GetOptions) (io.ReadCloser, Info, error)

	// Stat describes the object key without reading it. A missing key
	// fails with ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)

	// List returns every object whose key starts with prefix (a plain
	// string prefix, not a directory: "a/b" lists "a/b", "a/bc" and
	// "a/b/c"), sorted by key in byte order, however many requests that
	// takes. An empty result is an empty slice and no error.
	List(ctx context.Context, prefix string) ([]Info, error)

	// Delete removes the object key. A key that does not exist is not an
	// error: deleting twice, or deleting what another process deleted, is
	// fine. A missing bucket is an error.
	Delete(ctx context.Context, key string) error

	// Close releases the store's resources (idle connections). Calls
	// after Close may fail.
	Close() error
}

// Info describes one object.
type Info struct {
	// Key is the object's key.
	Key string
	// Size is the object's size in bytes.
	Size int64
	// ETag names the object's content, quoted as HTTP quotes entity tags
	// ("9a0364b9e99bb480dd25e1f0284c8555"); PutOptions.IfMatch takes it
	// as it is. The same content has the same ETag (see the package doc).
	ETag string
	// LastModified is when the object was written, as the service says;
	// zero in Put's result.
	LastModified time.Time
}

// PutOptions make a put conditional. The zero value puts unconditionally.
type PutOptions struct {
	// IfNoneMatch makes the put create-only (S3's If-None-Match: *): it
	// fails with ErrExists when the key exists, and the object there stays
	// as it is.
	IfNoneMatch bool
	// IfMatch, when set, makes the put replace only the version with
	// this ETag (S3's If-Match): it fails with ErrPreconditionFailed when
	// the key holds other content or no object.
	IfMatch string
}

// GetOptions choose what Get reads. The zero value reads the whole object.
type GetOptions struct {
	// Offset is the first byte to read.
	Offset int64
	// Length is how many bytes to read from Offset; 0 reads to the end.
	// A range that ends past the object's end is cut at the end; one that
	// starts at or past the end fails (an object of 0 bytes can only be
	// read whole).
	Length int64
}

// MaxKeyLen is the longest key in bytes (S3's limit).
const MaxKeyLen = 1024

// sentinel is an error value whose identity is the contract; parent makes
// errors.Is of a more specific one match a more general one too.
type sentinel struct {
	msg    string
	parent error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.parent }

// The sentinel errors; see the package doc for when each is returned.
var (
	ErrNotFound           error = &sentinel{msg: "object not found"}
	ErrPreconditionFailed error = &sentinel{msg: "precondition failed"}
	ErrExists             error = &sentinel{msg: "object already exists", parent: ErrPreconditionFailed}
	ErrKeyConflict        error = &sentinel{msg: "key conflict: an object's key cannot be another object's directory"}
)

// ValidateKey refuses a key that an object store may not hold as a
// distinct object, so that a key the in-memory store accepts works on S3
// and on file-backed S3 servers too (versitygw's posix backend keeps an
// object as a file named by its key). A key is refused when it is empty,
// longer than MaxKeyLen bytes, not UTF-8, holds a control character,
// starts or ends with "/", holds "//", or has a "." or ".." segment.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("key %.64q... is %d bytes, longer than %d", key, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("key %q is not UTF-8", key)
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/"):
		return fmt.Errorf("key %q starts or ends with /", key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("key %q holds a control character", key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("key %q holds an empty segment (//)", key)
		case ".", "..":
			return fmt.Errorf("key %q holds a %q segment", key, seg)
		}
	}
	return nil
}

// validatePut checks a put's key and options; the caller names the object.
func validatePut(key string, opts PutOptions) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return fmt.Errorf("IfNoneMatch and IfMatch %s both set: a put is create-only or replaces one version, not both", opts.IfMatch)
	}
	return nil
}

// validateGet checks a get's key and range; the caller names the object.
func validateGet(key string, opts GetOptions) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if opts.Offset < 0 || opts.Length < 0 {
		return fmt.Errorf("negative range (offset %d, length %d)", opts.Offset, opts.Length)
	}
	return nil
}

// Condition describes the put's condition for messages: " (create
// only)", " (if-match <etag>)" or "" for an unconditional put.
func (o PutOptions) Condition() string {
	switch {
	case o.IfNoneMatch:
		return " (create only)"
	case o.IfMatch != "":
		return " (if-match " + o.IfMatch + ")"
	}
	return ""
}

// sortInfos sorts a listing by key in byte order.
func sortInfos(infos []Info) {
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
}

// quoteETag returns etag in its quoted form, so that ETags from puts,
// heads, gets and listings compare equal whichever form a service used.
func quoteETag(etag string) string {
	if etag == "" || strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// sameContent reports whether a and b yield the same bytes.
func sameContent(a, b io.Reader) (bool, error) {
	const chunk = 32 << 10
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for {
		na, erra := io.ReadFull(a, ba)
		nb, errb := io.ReadFull(b, bb)
		if erra != nil && erra != io.EOF && erra != io.ErrUnexpectedEOF {
			return false, erra
		}
		if errb != nil && errb != io.EOF && errb != io.ErrUnexpectedEOF {
			return false, errb
		}
		if na != nb || string(ba[:na]) != string(bb[:nb]) {
			return false, nil
		}
		if erra != nil || errb != nil { // both ended (same length read)
			return (erra != nil) == (errb != nil), nil
		}
	}
}
