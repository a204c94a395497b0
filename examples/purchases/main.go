// Command purchases is an example of a job written in Go against the
// engine API, for work the built-in jobs (copy, wordcount, aggregate) do
// not cover. It reads purchases as JSON from one topic, drops refunds,
// keeps a running total per customer in Pebble, and writes every new
// total exactly once to another topic:
//
//	{"customer":"ana","cents":1250}   →   key ana, value {"customer":"ana","purchases":3,"cents":4100}
//
// Run it against the local broker of `make broker`:
//
//	go run ./examples/purchases -brokers 127.0.0.1:9092 -in purchases -out totals
//
// It checkpoints every second into ./data/purchases, resumes from the
// latest checkpoint when started again, and stops with a savepoint on
// SIGTERM or SIGINT (a second signal cancels). A record that is not a
// purchase fails the job, naming its topic, partition and offset.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/checkpoint/dirstore"
	"github.com/onceflow/onceflow/engine"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
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

func (t *totals) Open(ctx *engine.KeyedContext) error {
	var err error
	t.total, err = state.NewValueState(ctx.Backend(), "total", state.JSONCodec[Total]{})
	return err
}

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

// Options are what the job needs from its environment.
type Options struct {
	Brokers     []string
	In, Out     string
	Dir         string // checkpoints in Dir/checkpoints, Pebble in Dir/state
	Parallelism int
	Interval    time.Duration
	Logger      *slog.Logger
}

// BuildJob wires source → filter → keyBy(customer) → running total →
// JSON → exactly-once sink. Operator uids are fixed: they name the state
// in every checkpoint.
func BuildJob(o Options) (*engine.Job, error) {
	storage, err := dirstore.NewFileStorage(filepath.Join(o.Dir, "checkpoints"), "purchases", dirstore.StorageOptions{Retained: 3})
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(o.Dir, "state")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	if err := state.CleanPebbleDir(nil, stateDir); err != nil {
		return nil, err
	}
	j := engine.NewJob("purchases", engine.Options{
		Checkpoint: engine.CheckpointOptions{Interval: o.Interval, Mode: engine.ExactlyOnce, Timeout: time.Minute},
		Restart:    engine.FixedDelay(3, time.Second),
		Storage:    storage,
		Backend:    state.NewPebbleBackendFactory(state.PebbleOptions{Dir: stateDir, Incremental: true}),
		Logger:     o.Logger,
	})
	client := []kgo.Opt{kgo.SeedBrokers(o.Brokers...)}
	src, err := sourcekafka.NewSource(sourcekafka.SourceOptions[Purchase]{
		Reader: sourcekafka.ReaderOptions{ClientOpts: client, Topics: []string{o.In}, Start: sourcekafka.StartEarliest,
			Group: "purchases", Logger: o.Logger},
		Decode: decodePurchase,
	})
	if err != nil {
		return nil, err
	}
	sink, err := sinkkafka.NewSink(sinkkafka.SinkOptions{ClientOpts: client, Topic: o.Out, Delivery: sinkkafka.DeliveryExactlyOnce,
		TransactionalIDPrefix: "purchases", TransactionTimeout: 5 * time.Minute, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	purchases := engine.FromSource(j, "source", o.Parallelism, src)
	paid := engine.Filter(purchases, "drop-refunds", func(p Purchase) bool { return p.Cents > 0 })
	byCustomer := engine.KeyBy(paid, func(p Purchase) string { return p.Customer }, state.StringCodec{})
	running := engine.Process(byCustomer, "totals", o.Parallelism, func() engine.KeyedProcessFunction[string, Purchase, Total] {
		return &totals{}
	})
	records := engine.Map(running, "to-json", func(t Total) (*kgo.Record, error) {
		v, err := json.Marshal(t)
		return &kgo.Record{Key: []byte(t.Customer), Value: v}, err
	})
	engine.SinkTo(records, "sink", o.Parallelism, sink)
	return j, nil
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
	in := flag.String("in", "purchases", "input topic")
	out := flag.String("out", "totals", "output topic")
	dir := flag.String("dir", "./data/purchases", "checkpoints and state")
	parallelism := flag.Int("parallelism", 2, "subtasks per operator")
	interval := flag.Duration("interval", time.Second, "checkpoint interval")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	j, err := BuildJob(Options{Brokers: strings.Split(*brokers, ","), In: *in, Out: *out, Dir: *dir,
		Parallelism: *parallelism, Interval: *interval, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "purchases:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() { // owned by main: ends with the process
		<-sigs
		log.Info("stopping with a savepoint; a second signal cancels")
		go func() { <-sigs; cancel() }()
		if path, err := j.StopWithSavepoint(ctx); err != nil {
			log.Error("stop with a savepoint failed; cancelling", "err", err)
			cancel()
		} else {
			log.Info("stopped", "savepoint", path)
		}
	}()
	switch err := j.Run(ctx); {
	case err == nil, errors.Is(err, engine.ErrStopped):
	default:
		fmt.Fprintln(os.Stderr, "purchases:", err)
		os.Exit(1)
	}
}
