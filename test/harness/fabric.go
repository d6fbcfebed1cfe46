package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

func (f *Fabric) debugf(format string, args ...any) {
	if f.debug {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000000")+" fabric: "+format+"\n", args...)
	}
}

func (ep *endpoint) String() string {
	if ep == nil {
		return "-"
	}
	return ep.name
}

// Fabric is the harness's fault-injection network. Each node started with
// Options.Faults advertises proxy addresses instead of its own listeners, so
// every byte its peers send it (gossip over UDP and TCP on one port, and peer
// HTTP) passes through proxies the fabric owns. Blocking a pair of nodes
// drops their UDP packets and refuses or cuts their TCP connections in both
// directions.
//
// Why proxies and not network namespaces: they need no root, no iproute2 and
// no cleanup of kernel state after a crashed test, they cost two goroutines
// per connection (cheap on a 2-core CI machine), and they leave the direct
// listeners reachable, so a test can still read and write on a cut-off node.
//
// Direction: a proxy sits in front of its destination node, so the sender
// must be identified. UDP packets come from the sender's gossip socket, whose
// bound address the harness knows. TCP connections come from ephemeral ports;
// the proxy looks up which process owns the client socket in /proc (see
// socketOwner). Traffic whose sender is not a node (the test itself, client
// programs) is never blocked.
type Fabric struct {
	// debug, when set (DISCOVERY_TEST_FABRIC_DEBUG=1), prints every TCP
	// decision to stderr.
	debug bool

	mu      sync.Mutex
	closed  bool
	done    chan struct{} // closed by Close
	ends    []*endpoint
	blocked map[[2]*endpoint]bool
	wg      sync.WaitGroup
}

// NewFabric returns an empty fabric; Close releases it.
func NewFabric() *Fabric {
	return &Fabric{blocked: map[[2]*endpoint]bool{}, done: make(chan struct{}), debug: os.Getenv("DISCOVERY_TEST_FABRIC_DEBUG") == "1"}
}

// endpoint is one node's place in the fabric: its proxies and what is known
// of the process behind them.
type endpoint struct {
	f    *Fabric
	name string

	// guarded by f.mu
	pid         int
	gossipBound netip.AddrPort // source address of the node's UDP packets

	gossip *proxy // TCP and UDP on one port, like memberlist
	http   *proxy // TCP

	known     chan struct{} // closed once the upstreams are set
	knownOnce sync.Once
}

type proxy struct {
	f     *Fabric
	owner *endpoint
	ln    net.Listener
	pc    *net.UDPConn // nil for HTTP

	// guarded by f.mu
	upstream netip.AddrPort
	conns    map[*pipe]struct{}
	udpUps   map[netip.AddrPort]*net.UDPConn
}

type pipe struct {
	src  *endpoint // nil: not a node (or not known as one when accepted)
	a, b net.Conn
}

// addEndpoint creates the proxies of a new node. Their addresses are what the
// node advertises; upstreams are set once the node reports its listeners.
func (f *Fabric) addEndpoint(name string) (*endpoint, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, errors.New("fabric closed")
	}
	f.mu.Unlock()
	ep := &endpoint{f: f, name: name, known: make(chan struct{})}
	var err error
	if ep.gossip, err = f.newProxy(ep, true); err != nil {
		return nil, err
	}
	if ep.http, err = f.newProxy(ep, false); err != nil {
		ep.gossip.close()
		return nil, err
	}
	f.mu.Lock()
	f.ends = append(f.ends, ep)
	f.mu.Unlock()
	ep.gossip.start()
	ep.http.start()
	return ep, nil
}

// newProxy listens on 127.0.0.1 with an ephemeral port; with udp it also
// binds UDP on the same port number (retrying if another socket has it).
func (f *Fabric) newProxy(owner *endpoint, udp bool) (*proxy, error) {
	p := &proxy{f: f, owner: owner, conns: map[*pipe]struct{}{}, udpUps: map[netip.AddrPort]*net.UDPConn{}}
	var lastErr error
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		if !udp {
			p.ln = ln
			return p, nil
		}
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort()))
		if err != nil {
			lastErr = err
			ln.Close()
			continue
		}
		p.ln, p.pc = ln, pc
		return p, nil
	}
	return nil, fmt.Errorf("no port free for TCP and UDP: %w", lastErr)
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) start() {
	p.f.wg.Add(1)
	go p.acceptLoop()
	if p.pc != nil {
		p.f.wg.Add(1)
		go p.udpLoop()
	}
}

// setPID records the node's process id. The harness calls it right after
// starting the process, before the node can open a connection, so every
// TCP connection can be attributed to it.
func (ep *endpoint) setPID(pid int) {
	ep.f.mu.Lock()
	defer ep.f.mu.Unlock()
	ep.pid = pid
}

// setUpstreams records the node's process id and real listeners (which the
// node picks itself, port 0, and reports in its address file). Connections
// that reached the proxies earlier wait for them (see upstreamOf); UDP
// packets that arrived earlier were dropped, like on a network where the
// node is not up yet. Nodes only ever get blocked after the harness knows
// their listeners, so no packet of theirs crosses a cut unattributed.
func (ep *endpoint) setUpstreams(pid int, httpAddr, gossipAddr netip.AddrPort) {
	ep.f.mu.Lock()
	ep.pid = pid
	ep.gossipBound = gossipAddr
	ep.gossip.upstream = gossipAddr
	ep.http.upstream = httpAddr
	ep.f.mu.Unlock()
	ep.knownOnce.Do(func() { close(ep.known) })
}

// upstreamWait bounds how long a connection waits for its node's listeners.
const upstreamWait = 30 * time.Second

// upstreamOf waits until the owner's listeners are known and returns the
// proxy's upstream (invalid if the fabric closes or the wait times out).
func (p *proxy) upstreamOf() netip.AddrPort {
	t := time.NewTimer(upstreamWait)
	defer t.Stop()
	select {
	case <-p.owner.known:
	case <-p.f.done:
		return netip.AddrPort{}
	case <-t.C:
		return netip.AddrPort{}
	}
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	return p.upstream
}

// Block cuts all traffic between a and b (both directions) until Heal.
// Existing connections between them are closed.
func (f *Fabric) block(a, b *endpoint) {
	if a == b {
		return
	}
	f.reidentify()
	f.debugf("block %s <-> %s", a, b)
	f.mu.Lock()
	f.blocked[[2]*endpoint{a, b}] = true
	f.blocked[[2]*endpoint{b, a}] = true
	var cut []*pipe
	for _, ep := range f.ends {
		for _, p := range []*proxy{ep.gossip, ep.http} {
			for c := range p.conns {
				if f.blocked[[2]*endpoint{c.src, p.owner}] {
					cut = append(cut, c)
				}
			}
		}
	}
	f.mu.Unlock()
	for _, c := range cut {
		f.debugf("cut %s -> %s", c.src, c.b.RemoteAddr())
		c.a.Close()
		c.b.Close()
	}
}

// reidentify looks again for the sender of open connections accepted while
// it was unknown (e.g. opened before the harness learnt a node's pid), so a
// block cuts them too.
func (f *Fabric) reidentify() {
	f.mu.Lock()
	var unknown []*pipe
	var owners []*proxy
	for _, ep := range f.ends {
		for _, p := range []*proxy{ep.gossip, ep.http} {
			for c := range p.conns {
				if c.src == nil {
					unknown = append(unknown, c)
					owners = append(owners, p)
				}
			}
		}
	}
	f.mu.Unlock()
	for i, c := range unknown {
		src, _ := owners[i].identify(c.a)
		if src != nil {
			f.mu.Lock()
			c.src = src
			f.mu.Unlock()
		}
	}
}

// heal lifts every block.
func (f *Fabric) heal() {
	f.debugf("heal")
	f.mu.Lock()
	clear(f.blocked)
	f.mu.Unlock()
}

func (f *Fabric) isBlocked(src, dst *endpoint) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return src != nil && f.blocked[[2]*endpoint{src, dst}]
}

func (f *Fabric) byUDPSource(a netip.AddrPort) *endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ep := range f.ends {
		if ep.gossipBound.IsValid() && sameEndpoint(ep.gossipBound, a) {
			return ep
		}
	}
	return nil
}

func (f *Fabric) byPID(pid int) *endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ep := range f.ends {
		if ep.pid == pid {
			return ep
		}
	}
	return nil
}

func (f *Fabric) pids() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, ep := range f.ends {
		if ep.pid > 0 {
			out = append(out, ep.pid)
		}
	}
	return out
}

// Close stops every proxy and waits for their goroutines.
func (f *Fabric) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	ends := f.ends
	f.mu.Unlock()
	for _, ep := range ends {
		ep.gossip.close()
		ep.http.close()
	}
	f.wg.Wait()
}

func (p *proxy) close() {
	p.ln.Close()
	if p.pc != nil {
		_ = p.pc.Close()
	}
	p.f.mu.Lock()
	conns := make([]*pipe, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	ups := make([]*net.UDPConn, 0, len(p.udpUps))
	for _, u := range p.udpUps {
		ups = append(ups, u)
	}
	p.f.mu.Unlock()
	for _, c := range conns {
		c.a.Close()
		c.b.Close()
	}
	for _, u := range ups {
		_ = u.Close()
	}
}

func (p *proxy) acceptLoop() {
	defer p.f.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.f.wg.Add(1)
		go p.serve(c)
	}
}

// serve identifies the sender, applies the blocks and pipes the connection
// to the node.
func (p *proxy) serve(c net.Conn) {
	defer p.f.wg.Done()
	src, known := p.identify(c)
	p.f.debugf("accept %s -> %s(%s): src %v known %v blocked %v", c.RemoteAddr(), p.owner, p.addr(), src, known, p.f.isBlocked(src, p.owner))
	if !known {
		// No process holds the client end any more: its sender closed it
		// or died. The kernel may have completed the handshake while a
		// partition was in force, or before the sender was SIGKILLed; what
		// it buffered must not reach the node later, as it would not on a
		// real network.
		c.Close()
		return
	}
	if p.f.isBlocked(src, p.owner) {
		c.Close()
		return
	}
	up := p.upstreamOf()
	if !up.IsValid() {
		c.Close()
		return
	}
	u, err := net.DialTimeout("tcp", up.String(), 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	pp := &pipe{src: src, a: c, b: u}
	p.f.mu.Lock()
	if p.f.closed || p.f.blocked[[2]*endpoint{src, p.owner}] {
		p.f.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[pp] = struct{}{}
	p.f.mu.Unlock()

	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the half-close on so request/response protocols finish.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(u, c)
	go cp(c, u)
	<-done
	<-done
	c.Close()
	u.Close()
	p.f.mu.Lock()
	delete(p.conns, pp)
	p.f.mu.Unlock()
}

// identify returns the node that opened c (nil when it is not a node) and
// whether its sender is known at all. Known non-nodes are the test process
// and the helper programs it started; a socket no live known process holds
// (its sender is gone, or is dying and its fd table already unreadable)
// is unknown.
func (p *proxy) identify(c net.Conn) (*endpoint, bool) {
	ra, ok1 := c.RemoteAddr().(*net.TCPAddr)
	la, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return nil, false
	}
	nodes := p.f.pids()
	cands := append(append(nodes, os.Getpid()), helperPIDs()...)
	pid, found, err := socketOwner(ra.AddrPort(), la.AddrPort(), cands)
	if err != nil {
		return nil, true // no lookup possible here: treat as a non-node
	}
	if !found || pid == 0 {
		return nil, false
	}
	return p.f.byPID(pid), true // nil for the test and its helpers
}

// udpLoop forwards datagrams to the node through one upstream socket per
// sender, so that a reply the node sends to the datagram's source finds its
// way back. (memberlist itself answers to the advertised address carried in
// the message, which is the sender's own proxy.)
func (p *proxy) udpLoop() {
	defer p.f.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		src := p.f.byUDPSource(from)
		if p.f.isBlocked(src, p.owner) {
			continue
		}
		u := p.udpUpstream(from, src)
		if u == nil {
			continue
		}
		_, _ = u.Write(buf[:n])
	}
}

func (p *proxy) udpUpstream(from netip.AddrPort, src *endpoint) *net.UDPConn {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if u := p.udpUps[from]; u != nil {
		return u
	}
	if !p.upstream.IsValid() || p.f.closed {
		return nil
	}
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.upstream))
	if err != nil {
		return nil
	}
	p.udpUps[from] = u
	p.f.wg.Add(1)
	go func() {
		defer p.f.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := u.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED after the node died
			}
			if p.f.isBlocked(src, p.owner) {
				continue
			}
			_, _ = p.pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return u
}
