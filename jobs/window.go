package jobs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"

	"github.com/onceflow/onceflow/config"
	"github.com/onceflow/onceflow/engine"
	sinkkafka "github.com/onceflow/onceflow/sink/kafka"
	sourcekafka "github.com/onceflow/onceflow/source/kafka"
	"github.com/onceflow/onceflow/window"
)

// UIDWindow is the uid of the window job's window operator.
const UIDWindow = "window"

// The window job (job.type window) aggregates a JSON field per key and per
// event-time window (the window section): source → decode (key, value,
// event time) → KeyBy(key) → window.Aggregate → a JSON result per fired
// window into sink.topic, and each record too late for every window into
// window.late_topic, in the same transactions. A result is
//
//	key <the group's key>, value {"key": …, "start": …, "end": …, "value": …}
//
// with start inclusive and end exclusive in epoch milliseconds, and value
// an integer for count, a number otherwise.

// windowEvent is one input of the window job.
type windowEvent struct {
	Key string  `json:"k"`
	X   float64 `json:"x"`
	// TS is the event time; Raw and RawKey the record as read, for the
	// late topic.
	TS     int64  `json:"t"`
	Raw    []byte `json:"r,omitempty"`
	RawKey []byte `json:"rk,omitempty"`
}

// windowAcc is a window's accumulator.
type windowAcc struct {
	N   int64
	Sum float64
	Min float64
	Max float64
}

// windowAccCodec stores a windowAcc in 32 bytes: N, then the float64 bits
// of Sum, Min and Max, big-endian.
type windowAccCodec struct{}

func (windowAccCodec) Name() string { return "window-acc-v1" }

func (windowAccCodec) Encode(a windowAcc) ([]byte, error) {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, uint64(a.N))
	binary.BigEndian.PutUint64(b[8:], math.Float64bits(a.Sum))
	binary.BigEndian.PutUint64(b[16:], math.Float64bits(a.Min))
	binary.BigEndian.PutUint64(b[24:], math.Float64bits(a.Max))
	return b, nil
}

func (windowAccCodec) Decode(b []byte) (windowAcc, error) {
	if len(b) != 32 {
		return windowAcc{}, fmt.Errorf("a window accumulator is 32 bytes, got %d", len(b))
	}
	return windowAcc{
		N:   int64(binary.BigEndian.Uint64(b)),
		Sum: math.Float64frombits(binary.BigEndian.Uint64(b[8:])),
		Min: math.Float64frombits(binary.BigEndian.Uint64(b[16:])),
		Max: math.Float64frombits(binary.BigEndian.Uint64(b[24:])),
	}, nil
}

// windowAgg folds windowEvents with the configured function.
type windowAgg struct{ fn string }

func (windowAgg) New() windowAcc { return windowAcc{} }

func (windowAgg) Add(a windowAcc, e windowEvent) (windowAcc, error) {
	if a.N == 0 || e.X < a.Min {
		a.Min = e.X
	}
	if a.N == 0 || e.X > a.Max {
		a.Max = e.X
	}
	a.N++
	a.Sum += e.X
	return a, nil
}

func (windowAgg) Merge(a, b windowAcc) (windowAcc, error) {
	switch {
	case a.N == 0:
		return b, nil
	case b.N == 0:
		return a, nil
	}
	return windowAcc{N: a.N + b.N, Sum: a.Sum + b.Sum, Min: min(a.Min, b.Min), Max: max(a.Max, b.Max)}, nil
}

// Result is the JSON number of the window's value.
func (g windowAgg) Result(a windowAcc) (json.Number, error) {
	switch g.fn {
	case "count":
		return json.Number(strconv.FormatInt(a.N, 10)), nil
	case "sum":
		return json.Number(Format(a.Sum)), nil
	case "min":
		return json.Number(Format(a.Min)), nil
	case "max":
		return json.Number(Format(a.Max)), nil
	case "avg":
		return json.Number(Format(a.Sum / float64(a.N))), nil
	}
	return "", fmt.Errorf("window.aggregate %q is not one of count, sum, min, max, avg", g.fn)
}

// windowAssigner maps the window section's kind onto an assigner.
func windowAssigner(w config.Window) (window.Assigner, error) {
	var a window.Assigner
	var err error
	switch w.Kind {
	case "tumbling":
		a, err = window.NewTumbling(w.Size, 0)
	case "sliding":
		a, err = window.NewSliding(w.Size, w.Slide, 0)
	case "session":
		a, err = window.NewSession(w.Gap)
	default:
		err = fmt.Errorf("%q is not one of tumbling, sliding, session", w.Kind)
	}
	if err != nil {
		return nil, &ConfigError{Key: "window.kind", Err: err}
	}
	return a, nil
}

// decodeWindowEvent reads the key, the value (unless count) and the event
// time (a JSON field, else the Kafka record's timestamp) of a record.
func decodeWindowEvent(w config.Window) func(r *kgo.Record) (windowEvent, error) {
	keyPath, fieldPath, timePath := strings.Split(w.Key, "."), strings.Split(w.Field, "."), strings.Split(w.Time.Field, ".")
	// Subtasks decode side by side; a fastjson.Parser is not safe for
	// concurrent use, so each call takes one from the pool.
	var parsers fastjson.ParserPool
	return func(r *kgo.Record) (windowEvent, error) {
		p := parsers.Get()
		defer parsers.Put(p)
		doc, err := p.ParseBytes(r.Value)
		if err == nil && doc.Type() != fastjson.TypeObject {
			err = fmt.Errorf("it is a JSON %s", doc.Type())
		}
		if err != nil {
			return windowEvent{}, fmt.Errorf("value is not a JSON object: %w", err)
		}
		e := windowEvent{Raw: r.Value, RawKey: r.Key, TS: r.Timestamp.UnixMilli()}
		k, ok := jsonField(doc, keyPath)
		if !ok {
			return e, fmt.Errorf("key field %q is missing", w.Key)
		}
		switch kv := k.(type) {
		case string:
			e.Key = kv
		case json.Number:
			e.Key = kv.String()
		case bool:
			e.Key = strconv.FormatBool(kv)
		default:
			return e, fmt.Errorf("key field %q is not a string, number or boolean", w.Key)
		}
		if w.Aggregate != "count" {
			v, ok := jsonField(doc, fieldPath)
			n, isNum := v.(json.Number)
			if !ok || !isNum {
				return e, fmt.Errorf("field %q is missing or not a number", w.Field)
			}
			x, err := n.Float64()
			if err != nil {
				return e, fmt.Errorf("field %q: %w", w.Field, err)
			}
			e.X = x
		}
		if w.Time.Field != "" {
			v, ok := jsonField(doc, timePath)
			if !ok {
				return e, fmt.Errorf("time field %q is missing", w.Time.Field)
			}
			ts, err := parseEventTime(v, w.Time.Format)
			if err != nil {
				return e, fmt.Errorf("time field %q: %w", w.Time.Field, err)
			}
			e.TS = ts
		}
		return e, nil
	}
}

// jsonField looks up the field at path (a dotted path split at its dots)
// in doc, and returns it as encoding/json with UseNumber would: a string,
// a json.Number (its text as written), a bool, or nil for null; objects
// and arrays come back as themselves (*fastjson.Value), which no caller
// accepts.
func jsonField(doc *fastjson.Value, path []string) (any, bool) {
	v := doc.Get(path...)
	if v == nil {
		return nil, false
	}
	switch v.Type() {
	case fastjson.TypeString:
		return string(v.GetStringBytes()), true
	case fastjson.TypeNumber:
		return json.Number(v.String()), true
	case fastjson.TypeTrue:
		return true, true
	case fastjson.TypeFalse:
		return false, true
	case fastjson.TypeNull:
		return nil, true
	}
	return v, true
}

// parseEventTime reads epoch milliseconds (a JSON number) or an RFC 3339
// string.
func parseEventTime(v any, format string) (int64, error) {
	switch format {
	case "epoch_millis":
		n, ok := v.(json.Number)
		if !ok {
			return 0, errors.New("not a number of epoch milliseconds")
		}
		ms, err := n.Int64()
		if err != nil {
			return 0, fmt.Errorf("not a whole number of epoch milliseconds: %w", err)
		}
		return ms, nil
	case "rfc3339":
		s, ok := v.(string)
		if !ok {
			return 0, errors.New("not an RFC 3339 string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, err
		}
		return t.UnixMilli(), nil
	}
	return 0, fmt.Errorf("window.time.format %q is not one of epoch_millis, rfc3339", format)
}

// windowResult is the JSON value of a result record.
type windowResult struct {
	Key   string      `json:"key"`
	Start int64       `json:"start"`
	End   int64       `json:"end"`
	Value json.Number `json:"value"`
}

// windowGraph builds the window job on j: its source's statistics, and
// the counter of late records.
func windowGraph(j *engine.Job, cfg *config.Config, src sourceConfig, sink *sinkkafka.Sink) (func() sourcekafka.SourceStats, *atomic.Int64, error) {
	w := cfg.Window
	assigner, err := windowAssigner(w)
	if err != nil {
		return nil, nil, err
	}
	s, err := sourcekafka.NewSource(sourcekafka.SourceOptions[windowEvent]{
		Reader: src.reader, OnDecodeError: src.policy, DeadLetterTopic: src.dlq, Decode: decodeWindowEvent(w),
		Timestamp:         func(_ *kgo.Record, e windowEvent) (time.Time, error) { return time.UnixMilli(e.TS), nil },
		MaxOutOfOrderness: w.MaxOutOfOrderness, IdleTimeout: w.IdleTimeout,
	})
	if err != nil {
		return nil, nil, err
	}
	p := cfg.Job.Parallelism
	late := &atomic.Int64{}
	records := windowChain(engine.FromSource(j, UIDSource, p, s), w, assigner, p, late)
	engine.SinkTo(records, UIDSink, p, sink)
	return s.Stats, late, nil
}

// windowChain is the window job after its source: KeyBy(key) →
// window.Aggregate → a record per result (and per late record, when
// window.late_topic is set), with p subtasks. late counts the late records.
func windowChain(in engine.Stream[windowEvent], w config.Window, assigner window.Assigner, p int, late *atomic.Int64) engine.Stream[*kgo.Record] {
	keyed := engine.KeyBy(in, func(e windowEvent) string { return e.Key }, keyCodec{})
	spec := window.Spec{Assigner: assigner, AllowedLateness: w.AllowedLateness, Late: late}
	if w.Time.Domain == "processing" {
		spec.Time = window.ProcessingTime
	}
	outs := window.Aggregate(keyed, UIDWindow, p, spec,
		windowAgg{fn: w.Aggregate}, windowAccCodec{})
	lateTopic := w.LateTopic
	return engine.FlatMap(outs, UIDFormat, func(o window.Output[string, windowEvent, json.Number], emit func(*kgo.Record)) error {
		if o.Late {
			if lateTopic != "" {
				emit(&kgo.Record{Topic: lateTopic, Key: o.Record.RawKey, Value: o.Record.Raw})
			}
			return nil
		}
		v, err := json.Marshal(windowResult{Key: o.Key, Start: o.Window.Start, End: o.Window.End, Value: o.Value})
		if err != nil {
			return err
		}
		emit(&kgo.Record{Key: []byte(o.Key), Value: v})
		return nil
	})
}
