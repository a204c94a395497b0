package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Op names a Store method for fault injection.
type Op string

// The Store methods a Fault can fail.
const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpDelete Op = "delete"
)

// ErrInjected is what a Fault returns when it names no error of its own.
var ErrInjected = errors.New("injected fault")

// Fault fails calls of one kind of a Faulty store.
type Fault struct {
	// Op is the method to fail.
	Op Op
	// Key, when set, restricts the fault to calls on this key (for List:
	// on this prefix).
	Key string
	// Nth fails only the Nth matching call after Inject (1 is the next
	// one); the fault is then spent. 0 fails every matching call until
	// Clear.
	Nth int
	// Err is returned, wrapped with the call's operation and key; nil
	// returns ErrInjected.
	Err error
	// Applied makes the call on the wrapped store first and returns Err
	// after it: a put or delete that took effect but whose response was
	// lost. Without it the wrapped store is not called.
	Applied bool
}

// Faulty wraps a Store and fails the calls its faults choose, for tests of
// what callers do when the store fails. It is safe for concurrent use;
// faults can be injected while calls run.
type Faulty struct {
	inner Store

	mu     sync.Mutex
	faults []*activeFault
	calls  map[Op]int
}

type activeFault struct {
	Fault
	seen int // matching calls since Inject
}

var _ Store = (*Faulty)(nil)

// NewFaulty wraps inner; with no fault injected it passes every call
// through.
func NewFaulty(inner Store) *Faulty {
	return &Faulty{inner: inner, calls: map[Op]int{}}
}

// Inject adds a fault. Faults are checked in the order injected; the
// first that fires fails the call.
func (f *Faulty) Inject(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &activeFault{Fault: ft})
}

// Clear removes every fault.
func (f *Faulty) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// Calls returns how many calls of op the wrapper has seen, failed ones
// included.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// fire counts the call and returns the fault that fails it, if any.
func (f *Faulty) fire(op Op, key string) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	for i, a := range f.faults {
		if a.Op != op || (a.Key != "" && a.Key != key) {
			continue
		}
		a.seen++
		if a.Nth == 0 {
			return a.Fault, true
		}
		if a.seen == a.Nth {
			f.faults = append(f.faults[:i:i], f.faults[i+1:]...)
			return a.Fault, true
		}
	}
	return Fault{}, false
}

func (ft Fault) error(key string) error {
	err := ft.Err
	if err == nil {
		err = ErrInjected
	}
	when := "instead of the call"
	if ft.Applied {
		when = "after the call took effect"
	}
	return fmt.Errorf("objstore: %s %s: fault injected %s: %w", ft.Op, key, when, err)
}

// Put implements Store.
func (f *Faulty) Put(ctx context.Context, key string, body io.ReadSeeker, opts PutOptions) (Info, error) {
	ft, ok := f.fire(OpPut, key)
	if !ok {
		return f.inner.Put(ctx, key, body, opts)
	}
	if ft.Applied {
		_, _ = f.inner.Put(ctx, key, body, opts)
	}
	return Info{}, ft.error(key)
}

// Get implements Store.
func (f *Faulty) Get(ctx context.Context, key string, opts GetOptions) (io.ReadCloser, Info, error) {
	ft, ok := f.fire(OpGet, key)
	if !ok {
		return f.inner.Get(ctx, key, opts)
	}
	if ft.Applied {
		if rc, _, err := f.inner.Get(ctx, key, opts); err == nil {
			_ = rc.Close()
		}
	}
	return nil, Info{}, ft.error(key)
}

// Stat implements Store.
func (f *Faulty) Stat(ctx context.Context, key string) (Info, error) {
	ft, ok := f.fire(OpStat, key)
	if !ok {
		return f.inner.Stat(ctx, key)
	}
	if ft.Applied {
		_, _ = f.inner.Stat(ctx, key)
	}
	return Info{}, ft.error(key)
}

// List implements Store.
func (f *Faulty) List(ctx context.Context, prefix string) ([]Info, error) {
	ft, ok := f.fire(OpList, prefix)
	if !ok {
		return f.inner.List(ctx, prefix)
	}
	if ft.Applied {
		_, _ = f.inner.List(ctx, prefix)
	}
	return nil, ft.error(prefix)
}

// Delete implements Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	ft, ok := f.fire(OpDelete, key)
	if !ok {
		return f.inner.Delete(ctx, key)
	}
	if ft.Applied {
		_ = f.inner.Delete(ctx, key)
	}
	return ft.error(key)
}

// Close closes the wrapped store; it is never failed.
func (f *Faulty) Close() error { return f.inner.Close() }
