package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// winQuery is one windowed query of -windows: the closest built-in
// equivalents of Nexmark q5 and q11 (the window job's count per key and
// window; q5's second step, the auctions with the most bids per window,
// is not computed by any contender).
type winQuery struct {
	Name string
	// Key is the bid's JSON field grouped by (and the input's Kafka key).
	Key string
	// Kind is sliding (Size every Slide) or session (Gap).
	Kind        string
	Size, Slide time.Duration
	Gap         time.Duration
}

// winQueries: q5-like, bids per auction in sliding windows of 10 s every
// 2 s; q11-like, bids per bidder in session windows with a 10 s gap.
var winQueries = []winQuery{
	{Name: "q5", Key: "auction", Kind: "sliding", Size: 10 * time.Second, Slide: 2 * time.Second},
	{Name: "q11", Key: "bidder", Kind: "session", Gap: 10 * time.Second},
}

func findQuery(name string) (winQuery, bool) {
	for _, q := range winQueries {
		if q.Name == name {
			return q, true
		}
	}
	return winQuery{}, false
}

// keyOf is the bid's grouping key as every contender writes it.
func (q winQuery) keyOf(b bid) string {
	if q.Key == "bidder" {
		return strconv.FormatInt(b.Bidder, 10)
	}
	return strconv.FormatInt(b.Auction, 10)
}

// winKey names one window's result: start inclusive, end exclusive, in
// epoch ms (a session ends at its last bid + the gap).
type winKey struct {
	Key        string
	Start, End int64
}

// timedBid is what a reference needs of a bid.
type timedBid struct {
	key string
	ts  int64
}

// reference computes every window's count from the bids, independently of
// the contenders: a sliding window [s, s+size) for every s a multiple of
// slide with s <= ts < s+size; sessions per key over the bids in event
// time order, a bid within the gap of a session's end (ts <= end, where
// end = last + gap) joining it, as Flink's, Kafka Streams' and
// onceflow's session windows merge windows that touch.
func (q winQuery) reference(bids []timedBid) map[winKey]int64 {
	out := map[winKey]int64{}
	switch q.Kind {
	case "sliding":
		size, slide := q.Size.Milliseconds(), q.Slide.Milliseconds()
		for _, b := range bids {
			last := b.ts - floorMod(b.ts, slide)
			for s := last; s > b.ts-size; s -= slide {
				out[winKey{b.key, s, s + size}]++
			}
		}
	case "session":
		gap := q.Gap.Milliseconds()
		per := map[string][]int64{}
		for _, b := range bids {
			per[b.key] = append(per[b.key], b.ts)
		}
		for k, ts := range per {
			slices.Sort(ts)
			start, end, n := ts[0], ts[0]+gap, int64(1)
			for _, t := range ts[1:] {
				if t <= end {
					end, n = max(end, t+gap), n+1
					continue
				}
				out[winKey{k, start, end}] = n
				start, end, n = t, t+gap, 1
			}
			out[winKey{k, start, end}] = n
		}
	}
	return out
}

func floorMod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// winResult is one result record's value: {"key","start","end","value"}.
// The key may be a JSON string or number.
type winResult struct {
	Key   json.RawMessage `json:"key"`
	Start int64           `json:"start"`
	End   int64           `json:"end"`
	Value json.Number     `json:"value"`
}

// parseWinResult reads a result record's value into the window it names
// and its count; a count that is not an integer is refused.
func parseWinResult(value []byte) (winKey, int64, error) {
	var r winResult
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return winKey{}, 0, fmt.Errorf("result %q: %w", value, err)
	}
	if len(r.Key) == 0 || r.End <= r.Start {
		return winKey{}, 0, fmt.Errorf("result %q: no key, or end %d not after start %d", value, r.End, r.Start)
	}
	key := string(r.Key)
	if r.Key[0] == '"' {
		if err := json.Unmarshal(r.Key, &key); err != nil {
			return winKey{}, 0, fmt.Errorf("result %q: key: %w", value, err)
		}
	}
	n, err := r.Value.Int64()
	if err != nil {
		return winKey{}, 0, fmt.Errorf("result %q: the count %q is not an integer", value, r.Value)
	}
	return winKey{key, r.Start, r.End}, n, nil
}
