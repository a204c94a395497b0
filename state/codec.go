package state

// Codec turns values of T into bytes and back. Name identifies the encoding
// and is recorded in every checkpoint next to the state that used it, so a
// restore with a different codec is refused with an error naming the state
// instead of decoding garbage. Two codecs with the same Name must read each
// other's bytes.
type Codec[T any] interface {
	Name() string
	Encode(v T) ([]byte, error)
	Decode(b []byte) (T, error)
}
