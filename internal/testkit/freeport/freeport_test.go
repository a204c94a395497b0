package freeport

import (
	"net"
	"testing"
)

// The ports picked together are distinct and leave out the excluded ones:
// two listeners of one Kafka node on the same port make Kafka's storage
// tool refuse the node (seen in CI as a flaky TestThreeNodes when ports
// were picked one at a time).
func TestPickIsDistinct(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	given := l.Addr().(*net.TCPAddr).Port
	l.Close() // free again, so the picker could be handed it
	ports, err := Pick(1000, given)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 1000 {
		t.Fatalf("picked %d ports, want 1000", len(ports))
	}
	seen := map[int]bool{given: true}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d picked twice or excluded (%d picks)", p, len(ports))
		}
		seen[p] = true
	}
}
