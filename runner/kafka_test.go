package runner

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/internal/outage"
)

// Every client built from the kafka section backs off at most
// outage.ClientBackoffMax between retries, however long the failures
// last: franz-go's own default would wait up to 5s.
func TestClientsBackOffAsJavaClients(t *testing.T) {
	opts, err := clientOpts(config.Kafka{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
	if !ok {
		t.Fatalf("the client's retry backoff is a %T", cl.OptValue(kgo.RetryBackoffFn))
	}
	for fails := 1; fails <= 30; fails++ {
		if d := backoff(fails); d > outage.ClientBackoffMax {
			t.Fatalf("after %d failures the client waits %s, over %s", fails, d, outage.ClientBackoffMax)
		}
	}
}
