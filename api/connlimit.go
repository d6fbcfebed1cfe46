package api

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener caps connections: at most max at once, and at most perIP
// from one client address (loopback excepted: the same host). A connection
// beyond a cap gets a one-line HTTP 503 and is closed at once, so one host
// cannot take the file descriptors every other client needs.
type limitListener struct {
	net.Listener
	max, perIP int
	refused    *prometheus.CounterVec // reason: global, per_ip

	mu    sync.Mutex // guards total and byIP
	total int
	byIP  map[netip.Addr]int
}

func newLimitListener(ln net.Listener, max, perIP int, refused *prometheus.CounterVec) *limitListener {
	return &limitListener{Listener: ln, max: max, perIP: perIP, refused: refused, byIP: map[netip.Addr]int{}}
}

// Accept returns the next connection within the caps; those beyond are
// refused here and never reach the server.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		reason := ""
		l.mu.Lock()
		switch {
		case l.total >= l.max:
			reason = "global"
		case !ip.IsLoopback() && l.byIP[ip] >= l.perIP:
			reason = "per_ip"
		default:
			l.total++
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if reason == "" {
			return &limitConn{Conn: c, l: l, ip: ip}, nil
		}
		l.refused.WithLabelValues(reason).Inc()
		// A new socket's send buffer is empty: this write does not block;
		// the deadline is for a peer that never reads.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(refusal[reason])
		_ = c.Close()
	}
}

var refusal = map[string][]byte{
	"global": []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\ntoo many connections (max_conns)\n"),
	"per_ip": []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 56\r\n\r\ntoo many connections from your address (max_conns_per_ip)\n"),
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	l.total--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
}

func (l *limitListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

// limitConn releases its slot once, when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
