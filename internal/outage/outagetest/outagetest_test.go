package outagetest

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// Down refuses new connections and cuts the accepted ones; Up accepts
// again on the same address; Close ends Accept.
func TestSwitchDownAndUp(t *testing.T) {
	sw := &Switch{}
	ln, err := sw.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	acceptDone := make(chan error, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptDone <- err
				return
			}
			accepted <- c
		}
	}()
	addr := ln.Addr().String()
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }

	c1, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	<-accepted
	sw.Down()
	if _, err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while down: %v, want connection refused", err)
	}
	c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read on a connection of before the outage: %v, want it cut", err)
	}
	if err := sw.Up(); err != nil {
		t.Fatal(err)
	}
	c2, err := dial()
	if err != nil {
		t.Fatalf("dial after up: %v", err)
	}
	defer c2.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection after up was not accepted")
	}
	ln.Close()
	select {
	case err := <-acceptDone:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}
