package fetchpool

import (
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
)

const testBudget = 4 << 20

func TestRoundUp(t *testing.T) {
	for _, tc := range [][2]int{{0, 4}, {4, 4}, {5, 5}, {8, 8}, {9, 10}, {100, 112}, {112, 112}, {113, 128}, {1000, 1024}, {1025, 1280}} {
		if got := roundUp(tc[0]); got != tc[1] {
			t.Errorf("roundUp(%d) = %d, want %d", tc[0], got, tc[1])
		}
	}
	for n := 5; n < 1<<20; n = n*3/2 + 1 {
		if r := roundUp(n); r < n || r > n+n/4 {
			t.Fatalf("roundUp(%d) = %d: not within a quarter above", n, r)
		}
	}
}

func TestPoolServesTheSmallestFreeSliceLargeEnough(t *testing.T) {
	p := New(testBudget)
	s := p.GetRecords(100)
	if len(s) != 0 || cap(s) != 112 {
		t.Fatalf("GetRecords(100): len %d cap %d, want 0 and 112 (a quarter to spare at most)", len(s), cap(s))
	}
	big := p.GetRecords(1000)
	p.PutRecords(big[:cap(big)])
	p.PutRecords(s[:cap(s)])
	if again := p.GetRecords(105); cap(again) != 112 || &again[:1][0] != &s[:1][0] {
		t.Fatalf("GetRecords(105) with 112 and 1024 free: cap %d, not the smaller slice put back", cap(again))
	}
	// A free slice more than half as large again as asked is not handed
	// out: the batch would pin what it does not use.
	if again := p.GetRecords(105); cap(again) != 112 {
		t.Fatalf("GetRecords(105) with only 1024 free: cap %d, want a new slice of 112", cap(again))
	}
	if again := p.GetRecords(700); cap(again) != 1024 {
		t.Fatalf("GetRecords(700) with 1024 free: cap %d, want the free slice", cap(again))
	}
	if h, m := p.hits.Load(), p.misses.Load(); h != 2 || m != 3 {
		t.Fatalf("hits %d misses %d, want 2 and 3", h, m)
	}
	if p.held.Load() != 0 {
		t.Fatalf("%d bytes held with every slice taken out", p.held.Load())
	}
	if got := p.GetRecords(2000); cap(got) != 2048 || p.misses.Load() != 4 {
		t.Fatalf("GetRecords(2000) with nothing free: cap %d, misses %d", cap(got), p.misses.Load())
	}

	b := p.GetDecompressBytes(make([]byte, 1000), kgo.CodecLz4)
	if len(b) != 0 || cap(b) != 4096 {
		t.Fatalf("GetDecompressBytes(1000 bytes of lz4): len %d cap %d, want 0 and 4096 (four times)", len(b), cap(b))
	}
	// Snappy's block header is the decoded length; xerial's framing has
	// none, so four times again.
	block := s2.EncodeSnappy(nil, make([]byte, 50000))
	if b := p.GetDecompressBytes(block, kgo.CodecSnappy); cap(b) != 57344 {
		t.Fatalf("GetDecompressBytes(snappy block of 50000): cap %d, want 57344", cap(b))
	}
	xerial := append([]byte(xerialMagic), make([]byte, 1000)...)
	if b := p.GetDecompressBytes(xerial, kgo.CodecSnappy); cap(b) < 4*len(xerial) {
		t.Fatalf("GetDecompressBytes(xerial framing of %d): cap %d", len(xerial), cap(b))
	}
}

func TestPoolKeepsWithinItsBudgetTheLargestSlices(t *testing.T) {
	p := New(testBudget)
	for range 8 {
		p.PutDecompressBytes(make([]byte, 0, 1<<20))
	}
	if h := p.held.Load(); h != testBudget {
		t.Fatalf("the pool holds %d bytes after 8 puts of 1 MiB, want its budget %d (four kept)", h, testBudget)
	}
	// A larger slice evicts smaller ones to make room...
	p.PutDecompressBytes(make([]byte, 0, 3<<19))
	if h, n := p.held.Load(), len(p.bytes.free); h != 2<<20+3<<19 || n != 3 {
		t.Fatalf("after a put of 1.5 MiB: %d bytes in %d slices, want 3.5 MiB in 3 (two of the four 1 MiB slices evicted)", h, n)
	}
	// ...but one the budget cannot hold evicts nothing.
	p.PutDecompressBytes(make([]byte, 0, testBudget+1))
	if h := p.held.Load(); h != 2<<20+3<<19 {
		t.Fatalf("a slice beyond the budget changed what the pool holds: %d bytes", h)
	}
	// Nor does a slice of the other kind, which only evicts its own.
	p.PutRecords(make([]kgo.Record, 0, (1<<20)/recSize))
	if h := p.held.Load(); h != 2<<20+3<<19 {
		t.Fatalf("a record slice evicted buffers: %d bytes held", h)
	}
	if b := p.GetDecompressBytes(make([]byte, 300<<10), kgo.CodecLz4); cap(b) != 3<<19 {
		t.Fatalf("GetDecompressBytes(4 x 300 KiB) with 1 and 1.5 MiB free: cap %d, want the 1.5 MiB slice", cap(b))
	}
}
