// Package fetchpool holds the memory a franz-go client fetches into
// (kgo.WithPools), reused once the fetched records are recycled.
package fetchpool

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Pool is the memory a pooled client fetches into (kgo.WithPools): the
// slices of kgo.Records a record batch is decoded into and the buffers it
// is decompressed into. kgo takes a batch's two slices from the pool when
// it decodes the batch and puts them back once every record of the batch
// kept for the reader was recycled (kgo.Record.Recycle); a record never
// recycled keeps its batch out of the pool, and the garbage collector
// frees it as it would without a pool.
//
// It keeps at most its budget and leaves the rest to the collector; when
// full, a larger slice evicts smaller ones, which serve fewer gets.
// Batches differ in size, so a get takes the smallest free slice large
// enough and at most half as large again (a larger one would pin memory
// the batch does not use while the batch is in flight); a slice made on a
// miss has a quarter to spare (a size class, four per power of two), so
// that it also serves the slightly larger batches that follow. It is safe
// for concurrent use: kgo gets from it on its fetch goroutines and puts
// into it from whichever goroutine recycles a batch's last record.
type Pool struct {
	recs  freeList[kgo.Record]
	bytes freeList[byte]

	budget       int64        // bytes kept at most
	held         atomic.Int64 // bytes in the free lists
	hits, misses atomic.Int64 // gets served from a free list, and not
}

const (
	recSize = int(unsafe.Sizeof(kgo.Record{}))
	// xerialMagic starts a snappy stream in xerial's framing.
	xerialMagic = "\x82SNAPPY\x00"
)

var (
	_ kgo.PoolRecords         = (*Pool)(nil)
	_ kgo.PoolDecompressBytes = (*Pool)(nil)
)

// New returns a pool that keeps at most budget bytes.
func New(budget int) *Pool { return &Pool{budget: int64(budget)} }

// Hits is how many gets a free slice served.
func (p *Pool) Hits() int64 { return p.hits.Load() }

// Misses is how many gets made a new slice.
func (p *Pool) Misses() int64 { return p.misses.Load() }

// roundUp is n rounded up to 4, 5, 6 or 7 times a power of two.
func roundUp(n int) int {
	if n <= 4 {
		return 4
	}
	k := bits.Len(uint(n)) - 3 // n>>k is 4 to 7
	if m := n >> k; m<<k < n {
		return (m + 1) << k
	}
	return n
}

// freeList is a pool's free slices of one kind.
type freeList[T any] struct {
	mu   sync.Mutex
	free [][]T
}

// get removes and returns the smallest free slice with room for n, emptied.
func (l *freeList[T]) get(n int) ([]T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	best := -1
	for i, s := range l.free {
		if cap(s) >= n && cap(s) <= n+n/2 && (best < 0 || cap(s) < cap(l.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return nil, false
	}
	s := l.free[best]
	last := len(l.free) - 1
	l.free[best], l.free[last] = l.free[last], nil
	l.free = l.free[:last]
	return s[:0], true
}

// put files s, first evicting free slices smaller than s, smallest
// first, while held plus s would exceed budget; s is dropped, and nothing
// evicted, if evicting them all would not make room. So a full pool keeps
// the largest slices, which serve the most gets.
func (l *freeList[T]) put(s []T, held *atomic.Int64, budget int64, elem int) {
	size := int64(cap(s) * elem)
	if size == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if held.Load()+size > budget {
		var smaller int64
		for _, f := range l.free {
			if cap(f) < cap(s) {
				smaller += int64(cap(f) * elem)
			}
		}
		if held.Load()-smaller+size > budget {
			return
		}
	}
	for held.Load()+size > budget {
		small := -1
		for i, f := range l.free {
			if cap(f) < cap(s) && (small < 0 || cap(f) < cap(l.free[small])) {
				small = i
			}
		}
		if small < 0 {
			return
		}
		held.Add(-int64(cap(l.free[small]) * elem))
		last := len(l.free) - 1
		l.free[small], l.free[last] = l.free[last], nil
		l.free = l.free[:last]
	}
	held.Add(size)
	l.free = append(l.free, s)
}

// take serves a get of n elements of elem bytes each from l, or makes a
// slice with room to spare.
func take[T any](p *Pool, l *freeList[T], n, elem int) []T {
	if s, ok := l.get(n); ok {
		p.held.Add(-int64(cap(s) * elem))
		p.hits.Add(1)
		return s
	}
	p.misses.Add(1)
	return make([]T, 0, roundUp(n))
}

// GetRecords implements kgo.PoolRecords: an empty slice with room for at
// least n records, all zero (kgo zeroes the records it puts back).
func (p *Pool) GetRecords(n int) []kgo.Record { return take(p, &p.recs, n, recSize) }

// PutRecords implements kgo.PoolRecords.
func (p *Pool) PutRecords(s []kgo.Record) { p.recs.put(s, &p.held, p.budget, recSize) }

// GetDecompressBytes implements kgo.PoolDecompressBytes: an empty buffer
// for the decompressed batch, as large as snappy's header says (s2 reads
// snappy's block format) and four times the compressed size for the
// other codecs; kgo grows one that is too small.
func (p *Pool) GetDecompressBytes(compressed []byte, codec kgo.CompressionCodecType) []byte {
	want := 4 * len(compressed)
	// Java's clients frame snappy as xerial does; kgo's and librdkafka's
	// write a bare block, whose header is its decoded length.
	if codec == kgo.CodecSnappy && !(len(compressed) >= len(xerialMagic) && string(compressed[:len(xerialMagic)]) == xerialMagic) {
		if n, err := s2.DecodedLen(compressed); err == nil {
			want = n
		}
	}
	return take(p, &p.bytes, want, 1)
}

// PutDecompressBytes implements kgo.PoolDecompressBytes.
func (p *Pool) PutDecompressBytes(b []byte) { p.bytes.put(b, &p.held, p.budget, 1) }
