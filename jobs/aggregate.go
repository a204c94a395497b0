package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Function is an aggregate function of the aggregate job.
type Function string

const (
	// Count counts the records of a group; it reads no numeric field.
	Count Function = "count"
	// Sum adds up the numeric field over the records of a group.
	Sum Function = "sum"
	// Min keeps the smallest value of the numeric field in a group.
	Min Function = "min"
	// Max keeps the largest value of the numeric field in a group.
	Max Function = "max"
)

// Acc is the running aggregate of one group, kept in keyed state.
type Acc struct {
	N     int64   `json:"n"`
	Value float64 `json:"v"`
}

// Add folds one observation into the aggregate.
func (f Function) Add(a Acc, x float64) Acc {
	switch f {
	case Count:
		a.Value++
	case Sum:
		a.Value += x
	case Min:
		if a.N == 0 || x < a.Value {
			a.Value = x
		}
	case Max:
		if a.N == 0 || x > a.Value {
			a.Value = x
		}
	}
	a.N++
	return a
}

// Format renders an aggregate as a decimal string: integers without a
// fraction, others in the shortest form that reads back the same.
func Format(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Extract reads the group and (unless f is Count) the numeric field of a
// JSON object. Nested fields are addressed with dots ("customer.id"). The
// error says which field is missing or not a number.
func Extract(value []byte, groupBy, field string, f Function) (group string, x float64, err error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return "", 0, fmt.Errorf("value is not a JSON object: %w", err)
	}
	g, ok := lookup(doc, groupBy)
	if !ok {
		return "", 0, fmt.Errorf("group field %q is missing", groupBy)
	}
	switch gv := g.(type) {
	case string:
		group = gv
	case json.Number:
		group = gv.String()
	case bool:
		group = strconv.FormatBool(gv)
	default:
		return "", 0, fmt.Errorf("group field %q is not a string, number or boolean", groupBy)
	}
	if f == Count {
		return group, 0, nil
	}
	v, ok := lookup(doc, field)
	if !ok {
		return "", 0, fmt.Errorf("field %q is missing", field)
	}
	n, ok := v.(json.Number)
	if !ok {
		return "", 0, fmt.Errorf("field %q is not a number", field)
	}
	x, err = n.Float64()
	if err != nil {
		return "", 0, fmt.Errorf("field %q: %w", field, err)
	}
	return group, x, nil
}

func lookup(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Words splits a line into the words the wordcount job counts: maximal
// runs of non-whitespace.
func Words(line []byte) []string { return strings.Fields(string(line)) }
