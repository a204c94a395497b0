package statebackend

import (
	"fmt"
	"testing"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/state"
)

// Clearing the value of a one-value state (value, list, reducing,
// aggregating) is one buffered deletion, like a Put: it keeps the other
// buffered writes in the write buffer, and reads see it at once. Only a
// map's Clear, a range deletion, writes the buffer out first. (Before, every
// Clear wrote the whole buffer to Pebble: a session window operator clears
// its key's list of sessions at most firings.)
func TestClearOfAOneValueStateKeepsTheWriteBuffer(t *testing.T) {
	b := newBackend(t, pebbleFactory_(t, false), state.KeyedBackendOptions{}).(*pebbleBackend)
	vs, err := b.Register(checkpoint.StateMeta{Name: "v", Kind: checkpoint.KindValue, ValueCodec: "bytes"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		b.SetCurrentKey(fmt.Appendf(nil, "k%d", i))
		if err := vs.Put(nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	buffered := len(b.dirty)
	b.SetCurrentKey([]byte("k7"))
	if err := vs.Clear(); err != nil {
		t.Fatal(err)
	}
	if len(b.dirty) != buffered {
		t.Fatalf("after a value's Clear the write buffer holds %d entries, want the %d written before it", len(b.dirty), buffered)
	}
	if _, ok, err := vs.Get(nil); err != nil || ok {
		t.Fatalf("Get after Clear: ok %v, err %v; want no value", ok, err)
	}
	b.SetCurrentKey([]byte("k8"))
	if _, ok, err := vs.Get(nil); err != nil || !ok {
		t.Fatalf("Get of another key after Clear: ok %v, err %v; want its value", ok, err)
	}
	// The deletion reaches Pebble with the buffer.
	if err := b.flushDirty(); err != nil {
		t.Fatal(err)
	}
	b.SetCurrentKey([]byte("k7"))
	if _, ok, err := vs.Get(nil); err != nil || ok {
		t.Fatalf("Get after the buffer was written: ok %v, err %v; want no value", ok, err)
	}
}
