package kafka

import (
	"strings"
	"testing"
	"time"
)

// TestNewSourceRefusesBadOptionsByName: NewSource refuses each option of
// the source and of its Reader that it cannot run with, in a message
// naming the option and the bad value, before any reader connects
// (before: a bad start position, a committed start without a group, a
// timestamp start without a time, a bad out-of-range policy, a partition
// group that does not exist and a negative purge interval passed NewSource
// and failed, if at all, only when a subtask opened its reader, without
// naming the option).
func TestNewSourceRefusesBadOptionsByName(t *testing.T) {
	r := ReaderOptions{Topics: []string{"in"}}
	with := func(f func(*SourceOptions[string])) SourceOptions[string] {
		o := SourceOptions[string]{Reader: r, Decode: valueDecoder}
		f(&o)
		return o
	}
	for _, tc := range []struct {
		name string
		opts SourceOptions[string]
		want []string
	}{
		{"no decoder", SourceOptions[string]{Reader: r}, []string{"option Decode", "no decoder"}},
		{"no topic", SourceOptions[string]{Decode: valueDecoder}, []string{"option Reader.Topics", "[]", "no topic"}},
		{"unknown decode policy", with(func(o *SourceOptions[string]) { o.OnDecodeError = "retry" }), []string{"option OnDecodeError", `"retry"`}},
		{"dead letter without a topic", with(func(o *SourceOptions[string]) { o.OnDecodeError = DecodeDeadLetter }), []string{"option DeadLetterTopic", `""`, "dead-letter topic"}},
		{"negative out-of-orderness", with(func(o *SourceOptions[string]) { o.MaxOutOfOrderness = -time.Second }), []string{"option MaxOutOfOrderness", "-1s"}},
		{"negative idle timeout", with(func(o *SourceOptions[string]) { o.IdleTimeout = -time.Second }), []string{"option IdleTimeout", "-1s"}},
		{"unknown start", with(func(o *SourceOptions[string]) { o.Reader.Start = "middle" }), []string{"option Reader.Start", `"middle"`}},
		{"committed without a group", with(func(o *SourceOptions[string]) { o.Reader.Start = StartCommitted }), []string{"option Reader.Group", `""`, "committed"}},
		{"timestamp without a time", with(func(o *SourceOptions[string]) { o.Reader.Start = StartTimestamp }), []string{"option Reader.StartTime", "0001-01-01"}},
		{"unknown out-of-range policy", with(func(o *SourceOptions[string]) { o.Reader.OnOutOfRange = "skip" }), []string{"option Reader.OnOutOfRange", `"skip"`, "fail, earliest, latest"}},
		{"partition group outside its count", with(func(o *SourceOptions[string]) { o.Reader.PartitionGroup = PartitionGroup{Index: 3, Count: 3} }), []string{"option Reader.PartitionGroup", "3 of 3"}},
		{"negative purge interval", with(func(o *SourceOptions[string]) { o.Reader.PurgeInterval = -time.Minute }), []string{"option Reader.PurgeInterval", "-1m0s"}},
		{"negative fetch bound", with(func(o *SourceOptions[string]) { o.Reader.FetchMaxBytes = -1 }), []string{"option Reader.FetchMaxBytes", "-1", "negative"}},
		{"fetch bound beyond a request", with(func(o *SourceOptions[string]) { o.Reader.FetchMaxBytes = 1 << 31 }), []string{"option Reader.FetchMaxBytes", "2147483648", "above 2147483647"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSource(tc.opts)
			if err == nil {
				t.Fatal("NewSource accepted the options")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	for _, ok := range []SourceOptions[string]{
		{Reader: r, Decode: valueDecoder},
		with(func(o *SourceOptions[string]) { o.LagInterval, o.Reader.DiscoveryInterval = -1, -1 }),
		with(func(o *SourceOptions[string]) { o.Reader.Start, o.Reader.Group = StartCommitted, "g" }),
		with(func(o *SourceOptions[string]) { o.Reader.Start, o.Reader.StartTime = StartTimestamp, time.UnixMilli(1) }),
		with(func(o *SourceOptions[string]) { o.Reader.FetchMaxBytes = 64 << 10 }),
	} {
		if _, err := NewSource(ok); err != nil {
			t.Errorf("NewSource(%+v): %v", ok, err)
		}
	}
}
