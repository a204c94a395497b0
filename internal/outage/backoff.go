package outage

import (
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The backoff of a Kafka client between its retries: 100ms after the
// first failure, doubling after each further one up to ClientBackoffMax,
// each wait spread by ±20% so that clients that failed together do not
// retry together. These are the Java clients' defaults (retry.backoff.ms
// and retry.backoff.max.ms, KIP-580), which a Flink or Kafka Streams job
// runs with. franz-go's own default grows to 5s, so a consumer that kept
// failing through a broker restart may sit out up to 5s after the broker
// is back; with this one it fetches again within ClientBackoffMax.
const (
	clientBackoffMin = 100 * time.Millisecond
	// ClientBackoffMax is the longest wait between two attempts of a
	// client that uses ClientBackoff: the longest a reader or a sink
	// waits to try again once a broker is back.
	ClientBackoffMax = time.Second
)

// ClientBackoff is the wait before a client's next attempt after fails
// consecutive failures (see above); it never exceeds ClientBackoffMax.
func ClientBackoff(fails int) time.Duration {
	d := clientBackoffMin
	for i := 1; i < fails && d < ClientBackoffMax; i++ {
		d *= 2
	}
	d = time.Duration(float64(min(d, ClientBackoffMax)) * (0.8 + 0.4*rand.Float64()))
	return min(d, ClientBackoffMax)
}

// ClientOpts are the options the source, the sink and the processor's
// runner put before the client options they are given: ClientBackoff as
// the retry backoff. A kgo.RetryBackoffFn among those given replaces it.
func ClientOpts() []kgo.Opt { return []kgo.Opt{kgo.RetryBackoffFn(ClientBackoff)} }
