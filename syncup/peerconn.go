package syncup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Replicate requests do not go through net/http's client. A peer link
// sends one request at a time, so its sender goroutine can write the
// request and read the answer on a kept-alive connection itself: no
// writeLoop/readLoop goroutines to hand the request and the answer
// through (two wake-ups on the replication lag path, four per request),
// no per-request header map, one writev for header and body, and
// deadlines on the connection instead of timers. The answer is parsed by
// net/http (http.ReadResponse), so any HTTP/1.1 server shape is read.

// connPool keeps idle connections per peer address.
type connPool struct {
	dialer net.Dialer
	mu     sync.Mutex
	idle   map[string][]*peerConn
	closed bool
	swept  time.Time
}

type peerConn struct {
	conn net.Conn
	br   *bufio.Reader
	used time.Time // when it went idle
}

const (
	maxIdlePerAddr = 4
	// idleReuse: older idle connections are closed rather than reused, so
	// the peer's http.idle_timeout (default 90 s) rarely closes one under
	// us. A connection closed anyway costs one immediate resend.
	idleReuse = 30 * time.Second
)

func (p *connPool) get(addr string) *peerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[addr]
	for len(l) > 0 {
		c := l[len(l)-1]
		l[len(l)-1] = nil
		l = l[:len(l)-1]
		if time.Since(c.used) < idleReuse {
			p.idle[addr] = l
			return c
		}
		c.conn.Close()
	}
	delete(p.idle, addr)
	return nil
}

func (p *connPool) put(addr string, c *peerConn) {
	now := time.Now()
	c.used = now
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.swept) > idleReuse {
		p.sweepLocked(now)
	}
	if p.closed || len(p.idle[addr]) >= maxIdlePerAddr {
		c.conn.Close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]*peerConn{}
	}
	p.idle[addr] = append(p.idle[addr], c)
}

// sweepLocked closes connections idle for longer than idleReuse, also
// those to addresses no longer used (a restarted peer has a new port):
// get only looks at the address it is asked for. Senders return
// connections at least every renew_interval (the node's own renew), so
// sweeps keep happening on a quiet node.
func (p *connPool) sweepLocked(now time.Time) {
	p.swept = now
	for addr, l := range p.idle {
		keep := l[:0]
		for _, c := range l {
			if now.Sub(c.used) < idleReuse {
				keep = append(keep, c)
			} else {
				c.conn.Close()
			}
		}
		clear(l[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = keep
		}
	}
}

// drop closes the idle connections to addr (after one of them turned out
// to be closed by the peer, the others likely are too).
func (p *connPool) drop(addr string) {
	p.mu.Lock()
	l := p.idle[addr]
	delete(p.idle, addr)
	p.mu.Unlock()
	for _, c := range l {
		c.conn.Close()
	}
}

// close closes every idle connection; later ones are closed when they
// are returned.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.conn.Close()
		}
	}
}

// errReused marks a failure on a kept-alive connection before any answer
// arrived: the peer may have closed it while idle.
var errReused = errors.New("kept-alive connection failed")

// replicateConn posts body to addr's replicate endpoint and appends the
// answer's body to *out. The request is idempotent (spec 7.2.3), so a
// kept-alive connection that fails before answering is retried at once on
// a new one.
func (t *HTTPTransport) replicateConn(ctx context.Context, addr string, body []byte, out *[]byte) error {
	for {
		c := t.pool.get(addr)
		reused := c != nil
		if c == nil {
			conn, err := t.pool.dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			c = &peerConn{conn: conn, br: bufio.NewReaderSize(conn, 16<<10)}
		}
		err := t.exchange(ctx, c, reused, addr, body, out)
		if errors.Is(err, errReused) && ctx.Err() == nil {
			t.pool.drop(addr)
			continue
		}
		return err
	}
}

// exchange runs one request on c and returns c to the pool when it can be
// reused, else closes it.
func (t *HTTPTransport) exchange(ctx context.Context, c *peerConn, reused bool, addr string, body []byte, out *[]byte) (err error) {
	keep := false
	var stop func() bool
	defer func() {
		// A cancel that fired may still be setting a past deadline: such a
		// connection is not reused.
		if stop != nil && !stop() {
			keep = false
		}
		if keep {
			t.pool.put(addr, c)
		} else {
			c.conn.Close()
		}
	}()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(t.timeout)
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return err
	}
	stop = context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) error {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		case errors.Is(err, os.ErrDeadlineExceeded) && ok:
			// The connection's deadline is the context's: it may expire
			// a moment before the context says so.
			return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
		}
		return err
	}

	hp := getBuf()
	defer putBuf(hp)
	h := append((*hp)[:0], "POST "+PathReplicate+" HTTP/1.1\r\nHost: "...)
	h = append(h, addr...)
	h = append(h, "\r\nUser-Agent: discovery-syncup\r\nContent-Type: application/json\r\nContent-Length: "...)
	h = strconv.AppendInt(h, int64(len(body)), 10)
	h = append(h, "\r\n\r\n"...)
	*hp = h
	bufs := net.Buffers{h, body}
	_, werr := bufs.WriteTo(c.conn)
	// Even after a failed write the peer may have answered (e.g. 400 for
	// a body over its limit, then closed): read what is there.
	resp, rerr := http.ReadResponse(c.br, nil)
	if rerr != nil {
		if werr == nil {
			werr = rerr
		}
		if reused && c.br.Buffered() == 0 {
			return fail(fmt.Errorf("%w: %w", errReused, werr))
		}
		return fail(werr)
	}
	defer resp.Body.Close()
	if err := statusError(resp); err != nil {
		return err
	}
	if *out, err = readAll((*out)[:0], resp.Body, resp.ContentLength, t.max); err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	keep = werr == nil && !resp.Close
	return nil
}
