// Package outagetest takes a kfake cluster away and brings it back, the
// way a broker process dies and restarts: while it is down, its port
// refuses connections and every connection it had accepted is cut; when
// it is up again it listens on the same port with the same data.
//
//	sw := &outagetest.Switch{}
//	c, err := kfake.NewCluster(kfake.ListenFn(sw.Listen), ...)
//	sw.Down() // ... sw.Up()
package outagetest

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Switch holds the listeners of one kfake cluster (kfake.ListenFn) and
// takes them all down or up together. The zero value is ready. It is
// safe for concurrent use.
type Switch struct {
	mu sync.Mutex
	ls []*listener
}

// Listen is for kfake.ListenFn: it listens on address and keeps the
// listener under the Switch.
func (s *Switch) Listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	l := &listener{network: network, addr: ln.Addr(), ln: ln, conns: map[net.Conn]bool{}, wake: make(chan struct{})}
	close(l.wake)
	s.mu.Lock()
	s.ls = append(s.ls, l)
	s.mu.Unlock()
	return l, nil
}

// Down closes every listener's port and cuts every connection.
func (s *Switch) Down() {
	s.mu.Lock()
	ls := append([]*listener(nil), s.ls...)
	s.mu.Unlock()
	for _, l := range ls {
		l.down()
	}
}

// Up listens again on every listener's port. It fails if a port has been
// taken meanwhile.
func (s *Switch) Up() error {
	s.mu.Lock()
	ls := append([]*listener(nil), s.ls...)
	s.mu.Unlock()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.up())
	}
	return errors.Join(errs...)
}

// listener is a net.Listener whose port can close and open again; its
// Accept waits while it is down.
type listener struct {
	network string
	addr    net.Addr

	mu     sync.Mutex
	ln     net.Listener // nil while down
	conns  map[net.Conn]bool
	wake   chan struct{} // closed when up or closed
	closed bool
}

func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln, wake, closed := l.ln, l.wake, l.closed
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-wake
			continue
		}
		c, err := ln.Accept()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			if c != nil {
				c.Close()
			}
			return nil, net.ErrClosed
		}
		if l.ln != ln { // taken down meanwhile
			l.mu.Unlock()
			if c != nil {
				c.Close()
			}
			continue
		}
		if err != nil {
			l.mu.Unlock()
			return nil, err
		}
		tc := &conn{Conn: c, l: l}
		l.conns[tc] = true
		l.mu.Unlock()
		return tc, nil
	}
}

// Close closes the listener for good (kfake's Cluster.Close).
func (l *listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if l.ln != nil {
		err = l.ln.Close()
		l.ln = nil
	} else {
		close(l.wake)
	}
	return err
}

func (l *listener) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.ln == nil {
		return
	}
	l.ln.Close()
	l.ln = nil
	l.wake = make(chan struct{})
	for c := range l.conns {
		c.(*conn).Conn.Close()
		delete(l.conns, c)
	}
}

func (l *listener) up() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.ln != nil {
		return nil
	}
	ln, err := net.Listen(l.network, l.addr.String())
	if err != nil {
		return fmt.Errorf("outagetest: listening again on %s: %w", l.addr, err)
	}
	l.ln = ln
	close(l.wake)
	return nil
}

// conn forgets itself in its listener when closed.
type conn struct {
	net.Conn
	l *listener
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
