package logbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers on several goroutines lose nothing, and Count and Reset see it
// all (run with -race).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := b.Count("line\n"); n != 800 {
		t.Fatalf("Count = %d, want 800", n)
	}
	if strings.Count(b.String(), "\n") != 800 {
		t.Fatal("String lost lines")
	}
	b.Reset()
	if b.String() != "" {
		t.Fatalf("after Reset: %q", b.String())
	}
}
