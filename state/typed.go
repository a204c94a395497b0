package state

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
)

// StateOption configures a typed state.
type StateOption func(*stateConfig)

type stateConfig struct {
	ttl time.Duration
}

// WithTTL makes entries expire d after they were last written (Flink's
// OnCreateAndWrite update type with NeverReturnExpired visibility). An
// expired entry reads as absent and is deleted when it is next accessed.
// The expiry time is stored with every entry (8 bytes), so turning TTL on or
// off for a state that has a snapshot is refused on restore; changing d is
// allowed and applies to later writes. The clock is KeyedBackendOptions.Now.
func WithTTL(d time.Duration) StateOption {
	return func(c *stateConfig) { c.ttl = d }
}

// TimeSource is implemented by backends that carry the clock of
// KeyedBackendOptions.Now; typed states with TTL read time through it and
// fall back to time.Now for backends that do not implement it.
type TimeSource interface {
	Now() time.Time
}

// typedBase holds what every typed state shares: the raw state, the name for
// errors, and the TTL wrapping of stored values.
type typedBase struct {
	name string
	raw  RawState
	ttl  time.Duration
	now  func() time.Time
}

func newTypedBase(b KeyedBackend, meta checkpoint.StateMeta, opts []StateOption) (typedBase, error) {
	var cfg stateConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ttl < 0 {
		return typedBase{}, fmt.Errorf("state %q: negative TTL %v", meta.Name, cfg.ttl)
	}
	meta.TTL = cfg.ttl
	raw, err := b.Register(meta)
	if err != nil {
		return typedBase{}, err
	}
	now := time.Now
	if ts, ok := b.(TimeSource); ok {
		now = ts.Now
	}
	return typedBase{name: meta.Name, raw: raw, ttl: cfg.ttl, now: now}, nil
}

// wrap prefixes payload with its expiry time when TTL is on.
func (s *typedBase) wrap(payload []byte) []byte {
	if s.ttl == 0 {
		return payload
	}
	out := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint64(out, uint64(s.now().Add(s.ttl).UnixNano()))
	return append(out, payload...)
}

// unwrap returns the payload of a stored value and whether it is still live.
func (s *typedBase) unwrap(stored []byte) ([]byte, bool, error) {
	if s.ttl == 0 {
		return stored, true, nil
	}
	if len(stored) < 8 {
		return nil, false, fmt.Errorf("state %q: stored value of %d bytes has no TTL header", s.name, len(stored))
	}
	exp := int64(binary.BigEndian.Uint64(stored))
	return stored[8:], s.now().UnixNano() < exp, nil
}

func (s *typedBase) errorf(op string, err error) error {
	return fmt.Errorf("state %q: %s: %w", s.name, op, err)
}

// ValueState holds one value per key.
type ValueState[T any] struct {
	typedBase
	c Codec[T]
}

// NewValueState registers (or re-opens) a value state named name on b.
func NewValueState[T any](b KeyedBackend, name string, c Codec[T], opts ...StateOption) (*ValueState[T], error) {
	base, err := newTypedBase(b, checkpoint.StateMeta{Name: name, Kind: checkpoint.KindValue, ValueCodec: c.Name()}, opts)
	if err != nil {
		return nil, err
	}
	return &ValueState[T]{typedBase: base, c: c}, nil
}

// Value returns the current key's value and whether there is one.
func (s *ValueState[T]) Value() (T, bool, error) {
	var zero T
	b, ok, err := s.raw.Get(nil)
	if err != nil || !ok {
		if err != nil {
			err = s.errorf("get", err)
		}
		return zero, false, err
	}
	p, live, err := s.unwrap(b)
	if err != nil {
		return zero, false, err
	}
	if !live {
		if err := s.raw.Delete(nil); err != nil {
			return zero, false, s.errorf("delete expired", err)
		}
		return zero, false, nil
	}
	v, err := s.c.Decode(p)
	if err != nil {
		return zero, false, s.errorf("decode", err)
	}
	return v, true, nil
}

// Update sets the current key's value.
func (s *ValueState[T]) Update(v T) error {
	b, err := s.c.Encode(v)
	if err != nil {
		return s.errorf("encode", err)
	}
	if err := s.raw.Put(nil, s.wrap(b)); err != nil {
		return s.errorf("put", err)
	}
	return nil
}

// Clear removes the current key's value.
func (s *ValueState[T]) Clear() error {
	if err := s.raw.Clear(); err != nil {
		return s.errorf("clear", err)
	}
	return nil
}

// ListState holds a list per key. The list is stored as one value (a
// sequence of length-prefixed elements, each with its own expiry under TTL),
// so Add costs a read and a write of the whole list.
type ListState[T any] struct {
	typedBase
	c Codec[T]
}

// NewListState registers (or re-opens) a list state named name on b.
func NewListState[T any](b KeyedBackend, name string, c Codec[T], opts ...StateOption) (*ListState[T], error) {
	base, err := newTypedBase(b, checkpoint.StateMeta{Name: name, Kind: checkpoint.KindList, ValueCodec: c.Name()}, opts)
	if err != nil {
		return nil, err
	}
	return &ListState[T]{typedBase: base, c: c}, nil
}

// elements splits the stored list into its raw (still wrapped) elements.
func (s *ListState[T]) elements() ([][]byte, error) {
	b, ok, err := s.raw.Get(nil)
	if err != nil {
		return nil, s.errorf("get", err)
	}
	if !ok {
		return nil, nil
	}
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("state %q: corrupt list encoding", s.name)
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}

func (s *ListState[T]) store(elems [][]byte) error {
	if len(elems) == 0 {
		if err := s.raw.Delete(nil); err != nil {
			return s.errorf("delete", err)
		}
		return nil
	}
	var out []byte
	for _, e := range elems {
		out = binary.AppendUvarint(out, uint64(len(e)))
		out = append(out, e...)
	}
	if err := s.raw.Put(nil, out); err != nil {
		return s.errorf("put", err)
	}
	return nil
}

// Get returns the current key's list (nil when empty). Expired elements are
// left out and removed.
func (s *ListState[T]) Get() ([]T, error) {
	elems, err := s.elements()
	if err != nil {
		return nil, err
	}
	var out []T
	live := elems[:0:0]
	for _, e := range elems {
		p, ok, err := s.unwrap(e)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		live = append(live, e)
		v, err := s.c.Decode(p)
		if err != nil {
			return nil, s.errorf("decode", err)
		}
		out = append(out, v)
	}
	if len(live) != len(elems) {
		if err := s.store(live); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Add appends v to the current key's list.
func (s *ListState[T]) Add(v T) error {
	elems, err := s.elements()
	if err != nil {
		return err
	}
	b, err := s.c.Encode(v)
	if err != nil {
		return s.errorf("encode", err)
	}
	return s.store(append(elems, s.wrap(b)))
}

// Update replaces the current key's list; an empty vs clears it.
func (s *ListState[T]) Update(vs []T) error {
	elems := make([][]byte, 0, len(vs))
	for _, v := range vs {
		b, err := s.c.Encode(v)
		if err != nil {
			return s.errorf("encode", err)
		}
		elems = append(elems, s.wrap(b))
	}
	return s.store(elems)
}

// Clear removes the current key's list.
func (s *ListState[T]) Clear() error {
	if err := s.raw.Clear(); err != nil {
		return s.errorf("clear", err)
	}
	return nil
}

// MapState holds a map per key. Entries are stored one per user key and
// iterate in the byte order of the encoded user keys.
type MapState[K, V any] struct {
	typedBase
	kc Codec[K]
	vc Codec[V]
}

// NewMapState registers (or re-opens) a map state named name on b.
func NewMapState[K, V any](b KeyedBackend, name string, kc Codec[K], vc Codec[V], opts ...StateOption) (*MapState[K, V], error) {
	base, err := newTypedBase(b, checkpoint.StateMeta{Name: name, Kind: checkpoint.KindMap, ValueCodec: vc.Name(), UserKeyCodec: kc.Name()}, opts)
	if err != nil {
		return nil, err
	}
	return &MapState[K, V]{typedBase: base, kc: kc, vc: vc}, nil
}

func (s *MapState[K, V]) userKey(k K) ([]byte, error) {
	uk, err := s.kc.Encode(k)
	if err != nil {
		return nil, s.errorf("encode user key", err)
	}
	if uk == nil {
		uk = []byte{}
	}
	return uk, nil
}

// Get returns the value under k for the current key.
func (s *MapState[K, V]) Get(k K) (V, bool, error) {
	var zero V
	uk, err := s.userKey(k)
	if err != nil {
		return zero, false, err
	}
	b, ok, err := s.raw.Get(uk)
	if err != nil {
		return zero, false, s.errorf("get", err)
	}
	if !ok {
		return zero, false, nil
	}
	p, live, err := s.unwrap(b)
	if err != nil {
		return zero, false, err
	}
	if !live {
		if err := s.raw.Delete(uk); err != nil {
			return zero, false, s.errorf("delete expired", err)
		}
		return zero, false, nil
	}
	v, err := s.vc.Decode(p)
	if err != nil {
		return zero, false, s.errorf("decode", err)
	}
	return v, true, nil
}

// Contains reports whether the current key's map has k.
func (s *MapState[K, V]) Contains(k K) (bool, error) {
	_, ok, err := s.Get(k)
	return ok, err
}

// Put sets k to v in the current key's map.
func (s *MapState[K, V]) Put(k K, v V) error {
	uk, err := s.userKey(k)
	if err != nil {
		return err
	}
	b, err := s.vc.Encode(v)
	if err != nil {
		return s.errorf("encode", err)
	}
	if err := s.raw.Put(uk, s.wrap(b)); err != nil {
		return s.errorf("put", err)
	}
	return nil
}

// Remove deletes k from the current key's map.
func (s *MapState[K, V]) Remove(k K) error {
	uk, err := s.userKey(k)
	if err != nil {
		return err
	}
	if err := s.raw.Delete(uk); err != nil {
		return s.errorf("delete", err)
	}
	return nil
}

// All calls fn for every live entry of the current key's map in user-key
// byte order until fn returns false. fn must not modify the map; expired
// entries are skipped (and removed after the iteration).
func (s *MapState[K, V]) All(fn func(K, V) bool) error {
	return s.each(func(k K, p []byte) (bool, error) {
		v, err := s.vc.Decode(p)
		if err != nil {
			return false, s.errorf("decode", err)
		}
		return fn(k, v), nil
	})
}

// Keys calls fn with every key of the current key's map, in the order All
// uses, until fn returns false. It decodes no value, so it is the cheap
// way to look for entries by key. Expired entries are skipped and deleted,
// as by All.
func (s *MapState[K, V]) Keys(fn func(K) bool) error {
	return s.each(func(k K, _ []byte) (bool, error) { return fn(k), nil })
}

// each calls fn with the decoded key and the stored value of every live
// entry of the current key's map, then deletes the expired ones.
func (s *MapState[K, V]) each(fn func(k K, payload []byte) (bool, error)) error {
	var expired [][]byte
	var ierr error
	err := s.raw.Iterate(func(uk, b []byte) bool {
		p, live, err := s.unwrap(b)
		if err != nil {
			ierr = err
			return false
		}
		if !live {
			expired = append(expired, append([]byte(nil), uk...))
			return true
		}
		k, err := s.kc.Decode(uk)
		if err != nil {
			ierr = s.errorf("decode user key", err)
			return false
		}
		more, err := fn(k, p)
		if err != nil {
			ierr = err
			return false
		}
		return more
	})
	if err != nil {
		return s.errorf("iterate", err)
	}
	if ierr != nil {
		return ierr
	}
	for _, uk := range expired {
		if err := s.raw.Delete(uk); err != nil {
			return s.errorf("delete expired", err)
		}
	}
	return nil
}

// Clear removes the current key's map.
func (s *MapState[K, V]) Clear() error {
	if err := s.raw.Clear(); err != nil {
		return s.errorf("clear", err)
	}
	return nil
}

// ReducingState keeps one value per key, folding every added value into it
// with reduce(current, added).
type ReducingState[T any] struct {
	v      *ValueState[T]
	reduce func(T, T) (T, error)
}

// NewReducingState registers (or re-opens) a reducing state named name on b.
// reduce must be deterministic: it is applied again on replay after a
// restore.
func NewReducingState[T any](b KeyedBackend, name string, c Codec[T], reduce func(acc, v T) (T, error), opts ...StateOption) (*ReducingState[T], error) {
	base, err := newTypedBase(b, checkpoint.StateMeta{Name: name, Kind: checkpoint.KindReducing, ValueCodec: c.Name()}, opts)
	if err != nil {
		return nil, err
	}
	return &ReducingState[T]{v: &ValueState[T]{typedBase: base, c: c}, reduce: reduce}, nil
}

// Add folds v into the current key's value.
func (s *ReducingState[T]) Add(v T) error {
	cur, ok, err := s.v.Value()
	if err != nil {
		return err
	}
	if ok {
		if v, err = s.reduce(cur, v); err != nil {
			return s.v.errorf("reduce", err)
		}
	}
	return s.v.Update(v)
}

// Get returns the current key's reduced value.
func (s *ReducingState[T]) Get() (T, bool, error) { return s.v.Value() }

// Clear removes the current key's value.
func (s *ReducingState[T]) Clear() error { return s.v.Clear() }

// AggregateFunc is an incremental aggregation: Create makes an empty
// accumulator, Add folds one input into it, Result reads the output.
type AggregateFunc[IN, ACC, OUT any] struct {
	Create func() ACC
	Add    func(acc ACC, in IN) (ACC, error)
	Result func(acc ACC) (OUT, error)
}

// AggregatingState keeps an accumulator per key.
type AggregatingState[IN, ACC, OUT any] struct {
	v   *ValueState[ACC]
	agg AggregateFunc[IN, ACC, OUT]
}

// NewAggregatingState registers (or re-opens) an aggregating state named
// name on b; the accumulator is stored with accCodec.
func NewAggregatingState[IN, ACC, OUT any](b KeyedBackend, name string, accCodec Codec[ACC], agg AggregateFunc[IN, ACC, OUT], opts ...StateOption) (*AggregatingState[IN, ACC, OUT], error) {
	if agg.Create == nil || agg.Add == nil || agg.Result == nil {
		return nil, fmt.Errorf("state %q: AggregateFunc needs Create, Add and Result", name)
	}
	base, err := newTypedBase(b, checkpoint.StateMeta{Name: name, Kind: checkpoint.KindAggregating, ValueCodec: accCodec.Name()}, opts)
	if err != nil {
		return nil, err
	}
	return &AggregatingState[IN, ACC, OUT]{v: &ValueState[ACC]{typedBase: base, c: accCodec}, agg: agg}, nil
}

// Add folds in into the current key's accumulator.
func (s *AggregatingState[IN, ACC, OUT]) Add(in IN) error {
	acc, ok, err := s.v.Value()
	if err != nil {
		return err
	}
	if !ok {
		acc = s.agg.Create()
	}
	if acc, err = s.agg.Add(acc, in); err != nil {
		return s.v.errorf("aggregate", err)
	}
	return s.v.Update(acc)
}

// Get returns the current key's result, and false when nothing was added.
func (s *AggregatingState[IN, ACC, OUT]) Get() (OUT, bool, error) {
	var zero OUT
	acc, ok, err := s.v.Value()
	if err != nil || !ok {
		return zero, false, err
	}
	out, err := s.agg.Result(acc)
	if err != nil {
		return zero, false, s.v.errorf("result", err)
	}
	return out, true, nil
}

// Clear removes the current key's accumulator.
func (s *AggregatingState[IN, ACC, OUT]) Clear() error { return s.v.Clear() }
