package legacy

import (
	"net"
	"sync/atomic"
)

// gateListener resets every connection until open is called. The original
// syncs and self-registers before it listens, so peers reaching it early get
// a refused connection; a reset is the closest a bound listener can do, and it
// keeps two nodes syncing from each other at the same time from waiting on
// each other's backlog.
type gateListener struct {
	net.Listener
	opened atomic.Bool
}

func newGateListener(l net.Listener) *gateListener { return &gateListener{Listener: l} }

func (g *gateListener) open() { g.opened.Store(true) }

func (g *gateListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil || g.opened.Load() {
			return c, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST instead of FIN: fails the peer at once
		}
		_ = c.Close()
	}
}
