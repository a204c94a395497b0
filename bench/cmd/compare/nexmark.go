package main

import (
	"math"
	"math/rand"
	"strconv"
)

// The windowed benchmark's workload (-windows): a Go port of the model of
// the Nexmark generator, simplified. Nexmark's generator numbers its
// events and, per group of 50, makes 1 person, 3 auctions and 46 bids;
// a bid goes to a "hot" auction (the newest one of an even number) half
// the time and otherwise to one of the 100 auctions in flight, from a hot
// bidder three times in four and otherwise from one of the 1000 newest
// people; prices are log-uniform between 1 and 1,000,000 (in cents ×
// 100). Event time advances by 1/rate per event.
//
// Simplifications, all the same for every contender: only bids are
// produced (persons and auctions only advance the ids and the clock, as
// q5 and q11 read bids alone); a bid is a small JSON object
// {"auction","bidder","price","ts"} without Nexmark's channel, url and
// extra fields; delayed events are a fraction of the bids whose event
// time lies up to maxDelay before their place in the sequence (Nexmark's
// out-of-order groups replaced by a bounded delay), so that the input is
// out of order within a known bound and nothing is late for a contender
// whose out-of-orderness bound (or grace) is maxDelay.

// Nexmark's proportions and hot ratios.
const (
	nexPersonProportion  = 1
	nexAuctionProportion = 3
	nexBidProportion     = 46
	nexProportions       = nexPersonProportion + nexAuctionProportion + nexBidProportion
	nexHotAuctionRatio   = 2
	nexHotBidderRatio    = 4
	nexInFlightAuctions  = 100
	nexActivePeople      = 1000
	nexFirstID           = 1000
)

// nexKind is the kind of a Nexmark event.
type nexKind int

const (
	nexPerson nexKind = iota
	nexAuction
	nexBid
)

// bid is one generated bid. DelayMS is how far its event time lies before
// its place in the sequence (0 for most bids).
type bid struct {
	Auction int64
	Bidder  int64
	Price   int64
	TS      int64 // event time, epoch ms
	DelayMS int64
}

// JSON is the bid as the contenders read it.
func (b bid) JSON() []byte {
	buf := make([]byte, 0, 80)
	buf = append(buf, `{"auction":`...)
	buf = strconv.AppendInt(buf, b.Auction, 10)
	buf = append(buf, `,"bidder":`...)
	buf = strconv.AppendInt(buf, b.Bidder, 10)
	buf = append(buf, `,"price":`...)
	buf = strconv.AppendInt(buf, b.Price, 10)
	buf = append(buf, `,"ts":`...)
	buf = strconv.AppendInt(buf, b.TS, 10)
	return append(buf, '}')
}

// nexmark generates the event sequence. Not safe for concurrent use.
type nexmark struct {
	rng *rand.Rand
	// n is the number of the next event.
	n int64
	// baseMS is the event time of event 0; rate the events per second of
	// event time (persons and auctions included).
	baseMS int64
	rate   float64
	// delayFraction of the bids are delayed by 1..maxDelayMS ms.
	delayFraction float64
	maxDelayMS    int64
	// kinds counts the events made, by kind.
	kinds [3]int64
}

func newNexmark(seed, baseMS int64, rate, delayFraction float64, maxDelayMS int64) *nexmark {
	return &nexmark{rng: rand.New(rand.NewSource(seed)), baseMS: baseMS, rate: rate,
		delayFraction: delayFraction, maxDelayMS: maxDelayMS}
}

// kindOf is the kind of event n: per group of 50, 1 person, 3 auctions,
// 46 bids.
func kindOf(n int64) nexKind {
	switch off := n % nexProportions; {
	case off < nexPersonProportion:
		return nexPerson
	case off < nexPersonProportion+nexAuctionProportion:
		return nexAuction
	default:
		return nexBid
	}
}

// lastPerson and lastAuction are the 0-based ids of the newest person and
// auction made at or before event n (-1: none yet).
func lastPerson(n int64) int64 {
	return n / nexProportions * nexPersonProportion
}

func lastAuction(n int64) int64 {
	epoch, off := n/nexProportions, n%nexProportions
	made := min(max(off-nexPersonProportion+1, 0), nexAuctionProportion)
	return epoch*nexAuctionProportion + made - 1
}

// next returns the next bid, making (and counting) the persons and
// auctions before it; ts is its event time on the generator's clock.
func (g *nexmark) next() bid {
	for kindOf(g.n) != nexBid {
		g.kinds[kindOf(g.n)]++
		g.n++
	}
	n := g.n
	g.n++
	g.kinds[nexBid]++

	la := max(lastAuction(n), 0)
	auction := la
	if g.rng.Intn(nexHotAuctionRatio) > 0 {
		auction = la / nexHotAuctionRatio * nexHotAuctionRatio
	} else {
		lo := max(la-nexInFlightAuctions+1, 0)
		auction = lo + g.rng.Int63n(la-lo+1)
	}
	lp := lastPerson(n)
	bidder := lp
	if g.rng.Intn(nexHotBidderRatio) > 0 {
		bidder = min(lp/nexHotBidderRatio*nexHotBidderRatio+1, lp)
	} else {
		lo := max(lp-nexActivePeople+1, 0)
		bidder = lo + g.rng.Int63n(lp-lo+1)
	}
	price := int64(math.Round(math.Pow(10, g.rng.Float64()*6) * 100))
	b := bid{Auction: auction + nexFirstID, Bidder: bidder + nexFirstID, Price: price,
		TS: g.baseMS + int64(float64(n)*1000/g.rate)}
	if g.maxDelayMS > 0 && g.rng.Float64() < g.delayFraction {
		b.DelayMS = 1 + g.rng.Int63n(g.maxDelayMS)
		b.TS -= b.DelayMS
	}
	return b
}
