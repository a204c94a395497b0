package statebackend

import (
	"context"
	"fmt"
	"io"
	"maps"
	"sort"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/savepoint"
	"github.com/onceflow/onceflow/state"
)

// normalizeOptions fills in defaults and validates the key-group range.
func normalizeOptions(o *state.KeyedBackendOptions) error {
	if o.MaxParallelism <= 0 {
		o.MaxParallelism = state.DefaultMaxParallelism
	}
	if o.MaxParallelism > 1<<15 {
		return fmt.Errorf("max parallelism %d exceeds %d", o.MaxParallelism, 1<<15)
	}
	if o.KeyGroups == (checkpoint.KeyGroupRange{}) {
		if o.Parallelism > 0 {
			o.KeyGroups = state.KeyGroupRangeForSubtask(o.Subtask, o.Parallelism, o.MaxParallelism)
		} else {
			o.KeyGroups = checkpoint.KeyGroupRange{Start: 0, End: o.MaxParallelism}
		}
	}
	if o.KeyGroups.Start < 0 || o.KeyGroups.End > o.MaxParallelism || o.KeyGroups.End < o.KeyGroups.Start {
		return fmt.Errorf("key-group range %v outside [0,%d)", o.KeyGroups, o.MaxParallelism)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

func validateMeta(meta checkpoint.StateMeta) error {
	if meta.Name == "" {
		return fmt.Errorf("register state: empty name")
	}
	switch meta.Kind {
	case checkpoint.KindValue, checkpoint.KindList, checkpoint.KindReducing, checkpoint.KindAggregating:
		if meta.UserKeyCodec != "" {
			return fmt.Errorf("state %q: %s state has no user key codec", meta.Name, meta.Kind)
		}
	case checkpoint.KindMap:
		if meta.UserKeyCodec == "" {
			return fmt.Errorf("state %q: map state needs a user key codec", meta.Name)
		}
	default:
		return fmt.Errorf("state %q: unknown kind %q", meta.Name, meta.Kind)
	}
	return nil
}

// entrySource is implemented by backends that can stream their contents in
// the canonical format: capture runs on the owner goroutine at the barrier
// and returns the states and an iteration over a consistent view, which may
// run later in another goroutine (in key-group order; within a key group,
// state entries in state, key, user-key order, and timers).
type entrySource interface {
	captureEntries() (states []checkpoint.StateMeta, iterate func(ctx context.Context, sink savepoint.Sink) error, release func(), err error)
	KeyGroups() checkpoint.KeyGroupRange
}

// SavepointSnapshot begins a savepoint of b: a snapshot in the canonical,
// backend-independent format (checkpoint.Handle.Backend "canonical") that
// every backend restores, at any parallelism. Call it where Snapshot would be
// called (on the owner goroutine, at the barrier) and run the returned
// state.AsyncSnapshot like a checkpoint's; then Complete the metadata with
// Savepoint set.
func SavepointSnapshot(b state.KeyedBackend, checkpointID int64, w checkpoint.SnapshotWriter) (state.AsyncSnapshot, error) {
	src, ok := b.(entrySource)
	if !ok {
		return nil, fmt.Errorf("savepoint %d: backend %T cannot write the canonical format", checkpointID, b)
	}
	return canonicalSnapshot(src, checkpoint.BackendCanonical, checkpointID, w)
}

func canonicalSnapshot(src entrySource, backend string, checkpointID int64, w checkpoint.SnapshotWriter) (state.AsyncSnapshot, error) {
	states, iterate, release, err := src.captureEntries()
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
	}
	kgs := src.KeyGroups()
	return func(ctx context.Context) (h *checkpoint.Handle, err error) {
		defer release()
		f, err := w.Create("keyed-"+backend, false)
		if err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
		}
		defer func() {
			if err != nil {
				f.Abort()
			}
		}()
		cw, err := savepoint.NewWriter(f)
		if err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
		}
		if err := iterate(ctx, cw.Sink()); err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
		}
		if err := cw.Finish(); err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
		}
		ref, err := f.Close()
		if err != nil {
			return nil, fmt.Errorf("snapshot %d: %w", checkpointID, err)
		}
		return &checkpoint.Handle{Backend: backend, KeyGroups: kgs, States: states, Files: []checkpoint.FileRef{ref}}, nil
	}, nil
}

// NewMemoryFactory returns the factory of heap backends: state lives
// in Go maps per key group. A checkpoint is copy-on-write: at the barrier
// the backend only records the current maps of every key group (O(states x
// key groups)) and starts a new generation; the first write after it to a
// key group copies that group's map of keys (shallowly), and the first write
// to a key copies that key's entries, so the maps the state.AsyncSnapshot reads
// are never modified. Values are never modified in place. state.Timers are kept
// per domain and key group in a min-heap with a set for de-duplication,
// copy-on-write in the same way (see timers_memory.go). The state.AsyncSnapshot
// writes the captured maps and timers in the canonical format. It restores
// memory and canonical handles, keeping only its own key groups.
func NewMemoryFactory() state.KeyedBackendFactory { return memoryFactory{} }

type memoryFactory struct{}

func (memoryFactory) Name() string { return checkpoint.BackendMemory }

func (memoryFactory) CreateKeyedBackend(ctx context.Context, opts state.KeyedBackendOptions) (state.KeyedBackend, error) {
	if err := normalizeOptions(&opts); err != nil {
		return nil, fmt.Errorf("memory backend %s/%d: %w", opts.OperatorUID, opts.Subtask, err)
	}
	b := &memBackend{opts: opts, states: map[string]*memState{}, gen: 1, timers: newMemTimers(opts.KeyGroups.Len())}
	for _, h := range opts.Restore {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := b.restore(h); err != nil {
			return nil, fmt.Errorf("memory backend %s/%d: %w", opts.OperatorUID, opts.Subtask, err)
		}
	}
	return b, nil
}

type memBackend struct {
	opts   state.KeyedBackendOptions
	states map[string]*memState
	// gen is the current copy-on-write generation; every snapshot starts a
	// new one.
	gen    uint64
	key    []byte
	kg     int // index into groups, valid when keyErr is nil
	keyErr error
	// timers[d-1][kg-start] holds the timers of domain d and key group
	// kg (nil when there never were any).
	timers [numTimeDomains][]*memTimerGroup
	// firing is the FireTimers call in progress, nil outside one.
	firing *timerFiring
}

// memGroup maps a serialized key to its entries.
type memGroup map[string]*memEntry

// memEntry holds the entries of one key by user key ("" for states without
// user keys). It is modified only while gen is the backend's generation.
type memEntry struct {
	gen  uint64
	vals map[string][]byte
}

type memState struct {
	b          *memBackend
	meta       checkpoint.StateMeta
	registered bool
	// groups[kg-start] is the map of key group kg; owner[kg-start] the
	// generation that may modify it.
	groups []memGroup
	owner  []uint64
}

func (b *memBackend) newState(meta checkpoint.StateMeta) *memState {
	n := b.opts.KeyGroups.Len()
	s := &memState{b: b, meta: meta, groups: make([]memGroup, n), owner: make([]uint64, n)}
	for i := range s.groups {
		s.groups[i] = memGroup{}
		s.owner[i] = b.gen
	}
	b.states[meta.Name] = s
	return s
}

func (b *memBackend) restore(h *checkpoint.Handle) error {
	if h == nil {
		return nil
	}
	if h.Backend != checkpoint.BackendMemory && h.Backend != checkpoint.BackendCanonical {
		return fmt.Errorf("cannot restore a %q snapshot into the memory backend (take a savepoint to change backends)", h.Backend)
	}
	targets := make([]*memState, len(h.States))
	for i, meta := range h.States {
		s, ok := b.states[meta.Name]
		if !ok {
			s = b.newState(meta)
		} else if err := compatible(s.meta, meta); err != nil {
			return fmt.Errorf("restored snapshots disagree: %w", err)
		}
		targets[i] = s
	}
	kgs := b.opts.KeyGroups
	return openHandleData(h, b.opts.Storage, func(name string, r io.Reader) error {
		return savepoint.Read(r, name, savepoint.Sink{
			State: func(kg, si int, key, uk, val []byte) error {
				if si >= len(targets) {
					return fmt.Errorf("%s: entry names state %d of %d", name, si, len(targets))
				}
				if !kgs.Contains(kg) {
					return nil
				}
				g := targets[si].groups[kg-kgs.Start]
				e := g[string(key)]
				if e == nil {
					e = &memEntry{gen: b.gen, vals: map[string][]byte{}}
					g[string(key)] = e
				}
				e.vals[string(uk)] = val
				return nil
			},
			Timer: func(kg int, d state.TimeDomain, ts int64, key []byte) error {
				if !kgs.Contains(kg) {
					return nil
				}
				if err := b.restoreTimer(kg, d, ts, key); err != nil {
					return fmt.Errorf("%s: key group %d: %w", name, kg, err)
				}
				return nil
			},
		})
	})
}

func (b *memBackend) Now() time.Time { return b.opts.Now() }

func (b *memBackend) SetCurrentKey(key []byte) {
	b.key = append(b.key[:0], key...)
	kg := state.KeyGroupOf(key, b.opts.MaxParallelism)
	if !b.opts.KeyGroups.Contains(kg) {
		b.keyErr = fmt.Errorf("key %q is in key group %d, outside this subtask's range %v", key, kg, b.opts.KeyGroups)
		return
	}
	b.keyErr = nil
	b.kg = kg - b.opts.KeyGroups.Start
}

func (b *memBackend) CurrentKey() []byte                  { return b.key }
func (b *memBackend) KeyGroups() checkpoint.KeyGroupRange { return b.opts.KeyGroups }

func (b *memBackend) Register(meta checkpoint.StateMeta) (state.RawState, error) {
	if err := validateMeta(meta); err != nil {
		return nil, err
	}
	if s, ok := b.states[meta.Name]; ok {
		if err := compatible(s.meta, meta); err != nil {
			return nil, err
		}
		if s.registered && s.meta != meta {
			return nil, fmt.Errorf("state %q: registered again with different settings (%+v, was %+v)", meta.Name, meta, s.meta)
		}
		s.meta, s.registered = meta, true
		return s, nil
	}
	s := b.newState(meta)
	s.registered = true
	return s, nil
}

func (s *memState) check() error {
	if s.b.keyErr != nil {
		return s.b.keyErr
	}
	if s.b.key == nil {
		return fmt.Errorf("state %q: no current key", s.meta.Name)
	}
	return nil
}

// entry returns the current key's entries for reading (nil when none).
func (s *memState) entry() (*memEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.groups[s.b.kg][string(s.b.key)], nil
}

// writableGroup returns the current key group's map, copying it first if a
// snapshot may still read it.
func (s *memState) writableGroup() memGroup {
	gi := s.b.kg
	if s.owner[gi] != s.b.gen {
		s.groups[gi] = maps.Clone(s.groups[gi])
		if s.groups[gi] == nil {
			s.groups[gi] = memGroup{}
		}
		s.owner[gi] = s.b.gen
	}
	return s.groups[gi]
}

// writableEntry returns the current key's entries for writing, copying them
// first if a snapshot may still read them; nil when there are none and
// create is false.
func (s *memState) writableEntry(create bool) *memEntry {
	g := s.writableGroup()
	k := string(s.b.key)
	e := g[k]
	switch {
	case e == nil && !create:
		return nil
	case e == nil:
		e = &memEntry{gen: s.b.gen, vals: map[string][]byte{}}
		g[k] = e
	case e.gen != s.b.gen:
		e = &memEntry{gen: s.b.gen, vals: maps.Clone(e.vals)}
		g[k] = e
	}
	return e
}

func (s *memState) Get(userKey []byte) ([]byte, bool, error) {
	e, err := s.entry()
	if err != nil || e == nil {
		return nil, false, err
	}
	v, ok := e.vals[string(userKey)]
	return v, ok, nil
}

func (s *memState) Put(userKey, value []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	e := s.writableEntry(true)
	e.vals[string(userKey)] = append([]byte(nil), value...)
	return nil
}

func (s *memState) Delete(userKey []byte) error {
	e, err := s.entry()
	if err != nil || e == nil {
		return err
	}
	if _, ok := e.vals[string(userKey)]; !ok {
		return nil
	}
	e = s.writableEntry(false)
	delete(e.vals, string(userKey))
	if len(e.vals) == 0 {
		delete(s.groups[s.b.kg], string(s.b.key))
	}
	return nil
}

func (s *memState) Iterate(fn func(userKey, value []byte) bool) error {
	e, err := s.entry()
	if err != nil || e == nil {
		return err
	}
	keys := make([]string, 0, len(e.vals))
	for k := range e.vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, ok := e.vals[k]
		if !ok {
			continue
		}
		if !fn([]byte(k), v) {
			return nil
		}
	}
	return nil
}

func (s *memState) Clear() error {
	e, err := s.entry()
	if err != nil || e == nil {
		return err
	}
	delete(s.writableGroup(), string(s.b.key))
	return nil
}

// captureEntries records the current maps and timers and starts a new
// copy-on-write generation, so that processing can go on while they are
// written.
func (b *memBackend) captureEntries() ([]checkpoint.StateMeta, func(context.Context, savepoint.Sink) error, func(), error) {
	names := make([]string, 0, len(b.states))
	for n := range b.states {
		names = append(names, n)
	}
	sort.Strings(names)
	metas := make([]checkpoint.StateMeta, len(names))
	captured := make([][]memGroup, len(names))
	for i, n := range names {
		s := b.states[n]
		metas[i] = s.meta
		captured[i] = append([]memGroup(nil), s.groups...)
	}
	var timers [numTimeDomains][]*memTimerGroup
	for di := range timers {
		timers[di] = append([]*memTimerGroup(nil), b.timers[di]...)
	}
	b.gen++
	start := b.opts.KeyGroups.Start
	iterate := func(ctx context.Context, sink savepoint.Sink) error {
		for gi := 0; gi < b.opts.KeyGroups.Len(); gi++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			for si := range captured {
				g := captured[si][gi]
				keys := make([]string, 0, len(g))
				for k := range g {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					vals := g[k].vals
					uks := make([]string, 0, len(vals))
					for uk := range vals {
						uks = append(uks, uk)
					}
					sort.Strings(uks)
					for _, uk := range uks {
						if err := sink.State(start+gi, si, []byte(k), []byte(uk), vals[uk]); err != nil {
							return err
						}
					}
				}
			}
			for di := range timers {
				g := timers[di][gi]
				if g == nil {
					continue
				}
				for _, id := range g.sorted() {
					if err := sink.Timer(start+gi, state.TimeDomain(di+1), id.ts, []byte(id.key)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return metas, iterate, func() {}, nil
}

func (b *memBackend) Snapshot(checkpointID int64, w checkpoint.SnapshotWriter) (state.AsyncSnapshot, error) {
	return canonicalSnapshot(b, checkpoint.BackendMemory, checkpointID, w)
}

func (b *memBackend) NotifyCheckpointComplete(int64) {}
func (b *memBackend) NotifyCheckpointAborted(int64)  {}
func (b *memBackend) Close() error {
	b.states = nil
	return nil
}
