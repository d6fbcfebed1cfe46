package api

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connCaps are the connection caps shared by every listener of a server
// (plain and HTTPS): at most max at once, and at most perIP from one
// client address (loopback excepted: the same host).
type connCaps struct {
	max, perIP int
	refused    *prometheus.CounterVec // reason: global, per_ip

	mu    sync.Mutex // guards total and byIP
	total int
	byIP  map[netip.Addr]int
}

func newConnCaps(max, perIP int, refused *prometheus.CounterVec) *connCaps {
	return &connCaps{max: max, perIP: perIP, refused: refused, byIP: map[netip.Addr]int{}}
}

// admit takes a slot for ip, or returns the reason it cannot.
func (k *connCaps) admit(ip netip.Addr) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.total >= k.max:
		return "global"
	case !ip.IsLoopback() && k.byIP[ip] >= k.perIP:
		return "per_ip"
	}
	k.total++
	k.byIP[ip]++
	return ""
}

func (k *connCaps) release(ip netip.Addr) {
	k.mu.Lock()
	k.total--
	if n := k.byIP[ip] - 1; n > 0 {
		k.byIP[ip] = n
	} else {
		delete(k.byIP, ip)
	}
	k.mu.Unlock()
}

func (k *connCaps) open() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.total
}

// limitListener applies the caps at accept. A connection beyond a cap is
// closed at once, after a one-line HTTP 503 on a plain listener (a TLS
// client could not read it), so one host cannot take the file descriptors
// every other client needs.
type limitListener struct {
	net.Listener
	caps  *connCaps
	plain bool
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
		reason := l.caps.admit(ip)
		if reason == "" {
			return &limitConn{Conn: c, caps: l.caps, ip: ip}, nil
		}
		l.caps.refused.WithLabelValues(reason).Inc()
		if l.plain {
			// A new socket's send buffer is empty: this write does not
			// block; the deadline is for a peer that never reads.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refusal[reason])
		}
		_ = c.Close()
	}
}

var refusal = map[string][]byte{
	"global": refusalAnswer("too many connections (max_conns)\n"),
	"per_ip": refusalAnswer("too many connections from your address (max_conns_per_ip)\n"),
}

// refusalAnswer is the whole HTTP answer of a refused connection, its
// Content-Length counted from the body.
func refusalAnswer(body string) []byte {
	return []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
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
	caps *connCaps
	ip   netip.Addr
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.caps.release(c.ip) })
	return err
}
