// Package freeport picks free TCP ports on 127.0.0.1 for the servers the
// test kit and the benchmark harness start (brokers, S3 servers,
// contenders' HTTP APIs).
package freeport

import (
	"net"
	"slices"
)

// Pick returns n distinct free ports on 127.0.0.1, none of them in
// exclude. It holds every port it tried open until all are picked, so the
// kernel cannot hand one out twice (a port closed at once may be the next
// one it gives), and then frees them for the caller to bind. Another
// process may still take one meanwhile: the caller's server then fails to
// start, and should say on which port.
func Pick(n int, exclude ...int) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		if p := l.Addr().(*net.TCPAddr).Port; !slices.Contains(exclude, p) {
			out = append(out, p)
		}
	}
	return out, nil
}
