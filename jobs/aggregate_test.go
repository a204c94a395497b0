package jobs

import (
	"slices"
	"strings"
	"testing"
)

func TestAggregateFunctions(t *testing.T) {
	xs := []float64{3, -1.5, 10, 2}
	want := map[Function]string{Count: "4", Sum: "13.5", Min: "-1.5", Max: "10"}
	for f, w := range want {
		var a Acc
		for _, x := range xs {
			a = f.Add(a, x)
		}
		if got := Format(a.Value); got != w {
			t.Errorf("%s = %s, want %s", f, got, w)
		}
	}
}

func TestExtract(t *testing.T) {
	g, x, err := Extract([]byte(`{"customer":{"id":42},"amount":12.5}`), "customer.id", "amount", Sum)
	if err != nil || g != "42" || x != 12.5 {
		t.Fatalf("got %q %v %v", g, x, err)
	}
	if g, _, err := Extract([]byte(`{"c":"x"}`), "c", "", Count); err != nil || g != "x" {
		t.Fatalf("count needs no field: %q %v", g, err)
	}
	for in, want := range map[string]string{
		`not json`:                 "not a JSON object",
		`{"amount":1}`:             `group field "c" is missing`,
		`{"c":"x"}`:                `field "amount" is missing`,
		`{"c":"x","amount":"12"}`:  `field "amount" is not a number`,
		`{"c":[1],"amount":1}`:     `group field "c" is not`,
		`{"c":"x","amount":1e999}`: `field "amount"`,
	} {
		if _, _, err := Extract([]byte(in), "c", "amount", Sum); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Extract(%s) = %v, want %q", in, err, want)
		}
	}
}

func TestWords(t *testing.T) {
	if got := Words([]byte("  hello\tworld\n hello ")); !slices.Equal(got, []string{"hello", "world", "hello"}) {
		t.Fatalf("got %q", got)
	}
}
