// Command purchases is an example of a job written in Go on package
// runner, for work the built-in jobs (copy, wordcount, aggregate) do not
// cover. It reads purchases as JSON, drops refunds, keeps a running total
// per customer in keyed state, and writes every new total exactly once:
//
//	{"customer":"ana","cents":1250}   →   key ana, value {"customer":"ana","purchases":3,"cents":4100}
//
// The program supplies only its Dataflow; the runner gives it what
// `processor run` gives the built-in jobs: the configuration file, ONCEFLOW_*
// variables and --set, --from and --fresh, a savepoint on SIGTERM or SIGINT
// (a second signal cancels), the HTTP API and metrics, job.mode distributed,
// and the processor's exit codes. Run it against the local broker of
// `make broker`:
//
//	go run ./examples/purchases run --config examples/purchases/purchases.yaml
//
// A record that is not a purchase fails the job, naming its topic,
// partition and offset.
package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/engine"
	"github.com/onceflow/onceflow/jobs"
	"github.com/onceflow/onceflow/runner"
	"github.com/onceflow/onceflow/state"
)

// Purchase is one input record.
type Purchase struct {
	Customer string `json:"customer"`
	Cents    int64  `json:"cents"`
}

// Total is a customer's running total, the keyed state and the output.
type Total struct {
	Customer  string `json:"customer"`
	Purchases int64  `json:"purchases"`
	Cents     int64  `json:"cents"`
}

// Dataflow is source → drop refunds → keyBy(customer) → running total →
// JSON → exactly-once sink. Operator uids are fixed: they name the state
// in every checkpoint.
func Dataflow(b *jobs.Builder) error {
	purchases := jobs.Source(b, "source", decodePurchase)
	paid := engine.Filter(purchases, "drop-refunds", func(p Purchase) bool { return p.Cents > 0 })
	byCustomer := jobs.KeyBy(b, paid, "totals", func(p Purchase) string { return p.Customer },
		state.StringCodec{}, state.JSONCodec[Purchase]{})
	running := engine.Process(byCustomer, "totals", b.Parallelism(), func() engine.KeyedProcessFunction[string, Purchase, Total] {
		return &totals{}
	})
	jobs.Sink(b, engine.Map(running, "to-json", func(t Total) (*kgo.Record, error) {
		v, err := json.Marshal(t)
		return &kgo.Record{Key: []byte(t.Customer), Value: v}, err
	}), "sink")
	return nil
}

// decodePurchase refuses records that are not purchases; the source
// names the record's topic, partition and offset in the error.
func decodePurchase(r *kgo.Record) (Purchase, error) {
	var p Purchase
	if err := json.Unmarshal(r.Value, &p); err != nil {
		return p, fmt.Errorf("not a purchase: %w", err)
	}
	if p.Customer == "" {
		return p, errors.New("not a purchase: no customer")
	}
	return p, nil
}

// totals keeps each customer's Total in keyed state.
type totals struct{ total *state.ValueState[Total] }

// Open creates the keyed state.
func (t *totals) Open(ctx *engine.KeyedContext) error {
	var err error
	t.total, err = state.NewValueState(ctx.Backend(), "total", state.JSONCodec[Total]{})
	return err
}

// Process adds one purchase to its customer's total and emits the total.
func (t *totals) Process(_ *engine.KeyedContext, customer string, p Purchase, out func(Total)) error {
	tot, _, err := t.total.Value()
	if err != nil {
		return fmt.Errorf("reading the total of %s: %w", customer, err)
	}
	tot.Customer = customer
	tot.Purchases++
	tot.Cents += p.Cents
	if err := t.total.Update(tot); err != nil {
		return fmt.Errorf("updating the total of %s: %w", customer, err)
	}
	out(tot)
	return nil
}

func main() { runner.Main(runner.Job{Name: "purchases", Dataflow: Dataflow}) }
