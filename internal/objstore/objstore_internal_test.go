package objstore

import (
	"strings"
	"testing"
)

func TestSameContent(t *testing.T) {
	big := strings.Repeat("0123456789", 10000) // several chunks
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"", "", true}, {"a", "a", true}, {big, big, true}, {"a", "", false}, {"", "a", false},
		{"ab", "ac", false}, {big, big + "x", false}, {big + "x", big, false}, {big[:32<<10], big[:32<<10], true},
		{big[:32<<10], big[:32<<10+1], false},
	} {
		got, err := sameContent(strings.NewReader(c.a), strings.NewReader(c.b))
		if err != nil || got != c.want {
			t.Errorf("sameContent(%d bytes, %d bytes) = %v, %v; want %v", len(c.a), len(c.b), got, err, c.want)
		}
	}
}

func TestQuoteETag(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": `"abc"`, `"abc"`: `"abc"`, `W/"abc"`: `W/"abc"`} {
		if got := quoteETag(in); got != want {
			t.Errorf("quoteETag(%q) = %q, want %q", in, got, want)
		}
	}
}
