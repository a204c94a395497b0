package jobs

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/config"
)

func TestDecodeWindowEvent(t *testing.T) {
	w := config.Window{Key: "user.id", Aggregate: "sum", Field: "amount", Time: config.WindowTime{Field: "ts", Format: "rfc3339"}}
	decode := decodeWindowEvent(w)
	rec := func(v string) *kgo.Record {
		return &kgo.Record{Key: []byte("k"), Value: []byte(v), Timestamp: time.UnixMilli(5)}
	}
	e, err := decode(rec(`{"user":{"id":12.50},"amount":2.5,"ts":"2026-12-03T10:00:00.250Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	// A number key keeps its text as written, as encoding/json's
	// json.Number did.
	if e.Key != "12.50" || e.X != 2.5 || e.TS != time.Date(2026, 12, 3, 10, 0, 0, 250e6, time.UTC).UnixMilli() {
		t.Fatalf("decoded %+v", e)
	}
	if e, err := decodeWindowEvent(config.Window{Key: "u", Aggregate: "count"})(rec(`{"u":true}`)); err != nil || e.Key != "true" || e.TS != 5 {
		t.Fatalf("bool key without a time field: %+v %v", e, err)
	}
	for v, want := range map[string]string{
		`[1]`:                          "value is not a JSON object",
		`{"user":`:                     "value is not a JSON object",
		`{"amount":1,"ts":"x"}`:        `key field "user.id" is missing`,
		`{"user":{"id":[1]}}`:          `key field "user.id" is not a string, number or boolean`,
		`{"user":{"id":"a"},"ts":"x"}`: `field "amount" is missing or not a number`,
		`{"user":{"id":"a"},"amount":"1","ts":"x"}`: `field "amount" is missing or not a number`,
		`{"user":{"id":"a"},"amount":1}`:            `time field "ts" is missing`,
		`{"user":{"id":"a"},"amount":1,"ts":7}`:     `time field "ts": not an RFC 3339 string`,
	} {
		if _, err := decode(rec(v)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", v, err, want)
		}
	}
}

func TestWindowAccCodecRoundTrips(t *testing.T) {
	c := windowAccCodec{}
	for _, a := range []windowAcc{{}, {N: 3, Sum: -1.5, Min: -7, Max: 1e300}} {
		b, err := c.Encode(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(b)
		if err != nil || got != a {
			t.Fatalf("%+v came back as %+v, %v", a, got, err)
		}
	}
	if _, err := c.Decode(make([]byte, 31)); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("a short accumulator: %v", err)
	}
}
