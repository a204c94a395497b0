package statebackend

import (
	"fmt"
	"testing"

	"github.com/onceflow/onceflow/state"
)

// BenchmarkTimers measures, per timer, a registration of a new timer, a
// repeated registration of the same one (a window's end, once per record)
// and a fire, on both backends.
func BenchmarkTimers(b *testing.B) {
	for _, f := range timerFactories(b) {
		b.Run(f.Name(), func(b *testing.B) {
			be := newBackend(b, f, state.KeyedBackendOptions{})
			keys := make([][]byte, 10000)
			for i := range keys {
				keys[i] = []byte(fmt.Sprintf("user-%05d", i))
			}
			b.Run("register", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					be.SetCurrentKey(keys[i%len(keys)])
					if err := be.RegisterTimer(state.EventTime, int64(i)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("register-again", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					be.SetCurrentKey(keys[i%len(keys)])
					if err := be.RegisterTimer(state.EventTime, 1<<40); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("fire", func(b *testing.B) {
				must(b, be.FireTimers(state.EventTime, 1<<62, func([]byte, int64) error { return nil }))
				for i := 0; i < b.N; i++ {
					be.SetCurrentKey(keys[i%len(keys)])
					if err := be.RegisterTimer(state.EventTime, int64(i)); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				n := 0
				must(b, be.FireTimers(state.EventTime, 1<<62, func([]byte, int64) error { n++; return nil }))
				if n != b.N {
					b.Fatalf("fired %d of %d", n, b.N)
				}
			})
		})
	}
}
