package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
)

// StringCodec stores a string as its UTF-8 bytes.
type StringCodec struct{}

// Name returns "string".
func (StringCodec) Name() string { return "string" }

// Encode returns v's bytes; it never fails.
func (StringCodec) Encode(v string) ([]byte, error) { return []byte(v), nil }

// Decode returns b as a string (any bytes, also invalid UTF-8); it never
// fails.
func (StringCodec) Decode(b []byte) (string, error) { return string(b), nil }

// BytesCodec stores a byte slice as is. Decode returns a copy, so callers
// may keep and modify the result.
type BytesCodec struct{}

// Name returns "bytes".
func (BytesCodec) Name() string { return "bytes" }

// Encode returns a copy of v; it never fails.
func (BytesCodec) Encode(v []byte) ([]byte, error) {
	return append([]byte(nil), v...), nil
}

// Decode returns a copy of b; it never fails.
func (BytesCodec) Decode(b []byte) ([]byte, error) { return append([]byte(nil), b...), nil }

// Int64Codec stores an int64 as 8 bytes big-endian with the sign bit flipped,
// so that the byte order of encoded values is their numeric order (useful for
// map state user keys, which iterate in byte order).
type Int64Codec struct{}

// Name returns "int64-be-ordered".
func (Int64Codec) Name() string { return "int64-be-ordered" }

// Encode returns v as 8 bytes big-endian with the sign bit flipped; it
// never fails.
func (Int64Codec) Encode(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, uint64(v)^(1<<63)), nil
}

// Decode reads back what Encode wrote. It fails, naming the length, when b
// is not exactly 8 bytes.
func (Int64Codec) Decode(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("int64 codec: want 8 bytes, got %d", len(b))
	}
	return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)), nil
}

// Uint64Codec stores a uint64 as 8 bytes big-endian (byte order is numeric
// order).
type Uint64Codec struct{}

// Name returns "uint64-be".
func (Uint64Codec) Name() string { return "uint64-be" }

// Encode returns v as 8 bytes big-endian; it never fails.
func (Uint64Codec) Encode(v uint64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, v), nil
}

// Decode reads back what Encode wrote. It fails, naming the length, when b
// is not exactly 8 bytes.
func (Uint64Codec) Decode(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("uint64 codec: want 8 bytes, got %d", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// JSONCodec stores values of T with encoding/json. Its Name carries the Go
// type name, so restoring state written for another type is refused.
type JSONCodec[T any] struct{}

// Name returns "json:" followed by T's Go type name (as reflect prints
// it, e.g. "json:main.Order").
func (JSONCodec[T]) Name() string {
	return "json:" + reflect.TypeFor[T]().String()
}

// Encode returns v marshalled with encoding/json. It fails, naming T, when
// json.Marshal does (a channel, a func, a cyclic value, NaN).
func (JSONCodec[T]) Encode(v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json codec: encode %T: %w", v, err)
	}
	return b, nil
}

// Decode unmarshals b into a T with encoding/json. It fails, naming T,
// when b is not JSON that fits T.
func (JSONCodec[T]) Decode(b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("json codec: decode %T: %w", v, err)
	}
	return v, nil
}

// Compile-time checks.
var (
	_ Codec[string] = StringCodec{}
	_ Codec[[]byte] = BytesCodec{}
	_ Codec[int64]  = Int64Codec{}
	_ Codec[uint64] = Uint64Codec{}
	_ Codec[int]    = JSONCodec[int]{}
)
