package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/outage"
)

// Delivery is the guarantee a Kafka sink gives.
type Delivery string

const (
	// DeliveryNone produces without waiting for acknowledgements at the
	// barrier: records of a failed attempt may be lost or duplicated.
	DeliveryNone Delivery = "none"
	// DeliveryAtLeastOnce flushes at every barrier and fails the checkpoint
	// on any produce error: nothing is lost, and a restart replays the
	// records after the checkpoint, which may write some twice.
	DeliveryAtLeastOnce Delivery = "at_least_once"
	// DeliveryExactlyOnce writes inside Kafka transactions committed with
	// the checkpoint (Transactor and twophase.Sink): read_committed readers
	// see every record exactly once.
	DeliveryExactlyOnce Delivery = "exactly_once"
)

// ParseDelivery checks a configured delivery guarantee.
func ParseDelivery(s string) (Delivery, error) {
	switch d := Delivery(s); d {
	case DeliveryNone, DeliveryAtLeastOnce, DeliveryExactlyOnce:
		return d, nil
	}
	return "", fmt.Errorf("unknown delivery guarantee %q (none, at_least_once, exactly_once)", s)
}

// Writer is the sink of the none and at_least_once guarantees: an
// idempotent producer without transactions.
type Writer struct {
	delivery Delivery
	cl       *kgo.Client
	outage   *outage.Tracker
	// guard is the records' delivery timeout and promise; the first
	// failure it keeps fails every later Write and Flush.
	guard *deliveryGuard
}

// NewWriter connects a producer writing to topic (for records without a
// topic of their own). It rides out an outage of the cluster for tr's
// tolerance (nil: a tracker of the Writer's own with
// outage.DefaultTolerance): a record fails only after waiting that long.
func NewWriter(delivery Delivery, topic string, clientOpts []kgo.Opt, tr *outage.Tracker) (*Writer, error) {
	if delivery != DeliveryNone && delivery != DeliveryAtLeastOnce {
		return nil, fmt.Errorf("kafka sink: Writer does not provide %s delivery", delivery)
	}
	if tr == nil {
		var err error
		if tr, err = outage.NewTracker(outage.Options{}); err != nil {
			return nil, fmt.Errorf("kafka sink: %w", err)
		}
	}
	opts := append(append(outage.ClientOpts(), clientOpts...), rideOutProduce()...)
	if topic != "" {
		opts = append(opts, kgo.DefaultProduceTopic(topic))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: creating a producer: %w", err)
	}
	w := &Writer{delivery: delivery, cl: cl, outage: tr, guard: newDeliveryGuard(tr.Tolerance())}
	w.guard.start(cl.BufferedProduceRecords)
	return w, nil
}

// Write produces rec asynchronously. A produce failure is reported by the
// next Write or Flush; with at_least_once it fails the checkpoint. Write
// takes rec and recycles it once its produce completed, as
// Transactor.Write does.
func (w *Writer) Write(ctx context.Context, rec *kgo.Record) error {
	if err := w.guard.failed(); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	w.cl.Produce(w.guard.produceCtx(ctx), rec, w.guard.promise)
	return nil
}

// Flush is called at the barrier. With at_least_once it waits until every
// record before the barrier is acknowledged and returns the first failure,
// riding out an outage of the cluster for the tracker's tolerance; with
// none it returns at once.
func (w *Writer) Flush(ctx context.Context) error {
	if w.delivery == DeliveryNone {
		return nil
	}
	if err := flush(ctx, w.cl, w.outage, "flushing at the barrier"); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	if err := w.guard.failed(); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	w.outage.Succeeded() // every record reached the cluster
	return nil
}

// Close flushes what it can within ctx and closes the producer.
func (w *Writer) Close(ctx context.Context) error {
	err := w.cl.Flush(ctx)
	w.guard.stop()
	w.cl.Close()
	return err
}
