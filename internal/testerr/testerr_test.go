package testerr

import (
	"errors"
	"testing"
)

// recorder is a testing.TB that records a failure instead of stopping.
type recorder struct {
	testing.TB
	failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

func TestAssertions(t *testing.T) {
	for _, c := range []struct {
		name string
		run  func(tb testing.TB)
		fail bool
	}{
		{"Must nil", func(tb testing.TB) { Must(tb, nil) }, false},
		{"Must error", func(tb testing.TB) { Must(tb, errors.New("x")) }, true},
		{"Contains all", func(tb testing.TB) { Contains(tb, errors.New("state \"a\": bad codec"), `"a"`, "codec") }, false},
		{"Contains a missing part", func(tb testing.TB) { Contains(tb, errors.New("state \"a\""), "codec") }, true},
		{"Contains nil", func(tb testing.TB) { Contains(tb, nil, "x") }, true},
	} {
		r := &recorder{TB: t}
		c.run(r)
		if r.failed != c.fail {
			t.Errorf("%s: failed %v, want %v", c.name, r.failed, c.fail)
		}
	}
}
