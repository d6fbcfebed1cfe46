package api

import (
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/net/http/httpguts"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// Lean parking of long-polls (http.lean_polls). A poll parked by net/http
// keeps its connection's serving goroutine (its stack grown by the handler
// chain), a second goroutine that watches for the client's disconnect, the
// connection's 4 KiB read and write buffers, the request, its context and
// a timer: about 22 KB each, measured. A parked kratos poll needs only its
// socket and its waiter. So a poll that has to wait takes its connection
// over from net/http (Hijack), which frees all of that, and waits in one
// small goroutine blocked reading the socket with the hold's deadline
// (the work after the wait runs on a worker: see "Waiting and working"):
//
//   - the client closes: the read fails, the waiter is released at once
//     (spec 5.2.2);
//   - a change wakes the waiter: its callback moves the read deadline to
//     the past, the read returns, a worker re-polls and answers (or the
//     poll waits again if the wake leaves nothing to answer);
//   - the hold ends, or the server shuts down: -304.
//
// The answer is written as net/http would (status, Content-Type,
// Content-Length, Date, Kratos-Status-Code), then the connection goes back
// to the HTTP server through the listener (reentryListener), which serves
// the client's next request on it as on a new connection: kept alive, as
// kratos expects. TLS connections and requests that cannot be kept alive
// are parked the ordinary way.

// leanPoll is one connection taken over for long-polls. It serves the
// polls of that connection itself, one after the other (kratos polls again
// as soon as it has an answer), and gives the connection back to the HTTP
// server at the first request that is not a plain poll.
type leanPoll struct {
	s      *Server
	conn   net.Conn
	prefix []byte // bytes read from the client and not served yet
	// The current poll.
	req      registry.PollRequest
	w        *registry.Waiter
	answer   func(*registry.PollResult) [][]byte
	deadline time.Time
	route    int
	parked   bool // counted in s.parked

	// mu orders the wake and shutdown callbacks (which move the read
	// deadline) against the end: once released, the connection belongs
	// to the HTTP server again (or is closed), and a late callback must
	// not touch it.
	mu       sync.Mutex
	released bool

	// fresh: taken at accept (lean writes), no request read yet.
	fresh bool
	// resp is the buffered answer of a lean write, reused per request.
	resp leanResponse
	// remote is the client's address (http.Request.RemoteAddr).
	remote string
	// lprev, lnext link the connection in s.leanConns (guarded by
	// s.leanMu) from its start until it is let go (release), so that
	// Shutdown can interrupt its wait (s.interruptLean). A list, not a
	// context.AfterFunc per connection: 16 bytes against 170.
	lprev, lnext *leanPoll
	linked       bool
	// The head being read: its length once whole (scanHead), and how much
	// of p.prefix was searched for its end.
	headLen, scanned int
}

// interrupt ends the blocked read now, unless the connection was let go.
func (p *leanPoll) interrupt() {
	p.mu.Lock()
	if !p.released {
		_ = p.conn.SetReadDeadline(aLongTimeAgo)
	}
	p.mu.Unlock()
}

// release ends the connection's lean life (given back or closed): late
// callbacks leave it alone, and Shutdown no longer interrupts it.
func (p *leanPoll) release() {
	p.mu.Lock()
	p.released = true
	p.mu.Unlock()
	p.s.leanUnlink(p)
}

// unpark stops counting the poll as parked (before its answer is written,
// as an ordinary poll stops counting when its handler returns).
func (p *leanPoll) unpark() {
	if p.parked {
		p.parked = false
		p.s.parked.Add(-1)
	}
}

// deadlineExceeded reports whether a read ended at its deadline (a wake,
// shutdown or the hold's end), not because the client went away. Not
// errors.As on net.Error: its reflection grows a parked poll's 2 KiB
// goroutine stack to 4 KiB on every wake (seen with a probe on
// runtime.morestack).
func deadlineExceeded(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// aLongTimeAgo is a read deadline in the past: the blocked read returns.
var aLongTimeAgo = time.Unix(1, 0)

// maxLeanRequest bounds the head of a request read on a lean connection;
// a longer one goes to the HTTP server, which applies its own limits.
const maxLeanRequest = 8 << 10

// canLean reports whether this poll's connection may be taken over: plain
// HTTP/1.1 on the server's reentry listener, keep-alive, no body.
func (s *Server) canLean(c echo.Context) bool {
	r := c.Request()
	if !s.cfg.LeanPolls || s.reentry.Load() == nil || r.TLS != nil || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close ||
		r.ContentLength > 0 {
		return false
	}
	if v := r.Header.Get("Connection"); v != "" && !strings.EqualFold(v, "keep-alive") {
		return false
	}
	_, ok := c.Response().Writer.(http.Hijacker)
	return ok
}

// parkLean takes the connection over and parks the poll on it; the
// handler returns nil at once (nothing more is written through net/http).
// ok false: the connection could not be taken (the handler parks as usual).
// The poll is already counted in s.parked.
func (s *Server) parkLean(c echo.Context, req registry.PollRequest, w *registry.Waiter, hold time.Duration, answer func(*registry.PollResult) [][]byte) bool {
	if !s.leanAdd() {
		return false // shutting down: parked the ordinary way, answered -304 at once
	}
	conn, brw, err := http.NewResponseController(c.Response().Writer).Hijack()
	if err != nil {
		s.leanWG.Done()
		return false
	}
	p := &leanPoll{s: s, conn: conn, req: req, w: w, answer: answer, deadline: time.Now().Add(hold), route: routeIndex(c.Path()), parked: true}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Peek(n)
		p.prefix = append([]byte(nil), b...)
	}
	c.Set(ctxKeyCode, codeLabelLean) // counted when answered (leanPoll.respond)
	s.leanTotal.Add(1)
	s.leanLink(p)   // Shutdown answers the parked poll at once
	go p.waitHold() // counted by leanAdd above
	return true
}

// Waiting and working. A lean connection spends its life waiting: for its
// poll's change, or for the client's next request. Each wait runs in a
// goroutine started for it that only reads the socket (waitHold,
// waitHead; the latter also serves lean writes, see headWait); what ends
// the wait is acted on by a worker (leanWorker): re-polling, answering,
// parsing the next poll, parking it. So the stack of a parked poll's
// goroutine stays at the runtime's starting size (2 KiB). When that
// goroutine also did the work, the work grew its stack to 4 KiB at each
// wake-up, and a wake-up of 10 000 polls held the grown stack of every
// woken poll besides the new one of its next wait: 42 MB of stacks at the
// peak against 21 MB parked (measured), kept by the heap afterwards. The
// workers' stacks grow once.

// holdEnd is what ended a parked poll's wait.
type holdEnd uint8

const (
	holdGone  holdEnd = iota // the client went away, or the socket failed
	holdOver                 // the hold's end, or shutdown
	holdWoken                // a change (or a late callback of an earlier waiter)
)

// headState is how far the next request's head has been read.
type headState uint8

const (
	headReady    headState = iota // p.prefix[:p.headLen] is a whole head
	headPoll                      // a whole head, and not a lean write
	headMore                      // more bytes are needed
	headGiveBack                  // too long, or lines ended by LF alone: the HTTP server's
	headClosed                    // the client closed, timed out, or the server shuts down
	headDone                      // the connection was let go already (a write's answer failed); waitHead hands no task
)

// leanTask is the end of one wait, for a worker to act on.
type leanTask struct {
	p    *leanPoll
	hold bool  // the wait was waitHold's (st is a holdEnd), else waitHead's (a headState)
	st   uint8 // holdEnd or headState
}

func (t leanTask) run() {
	if t.hold {
		t.p.afterHold(holdEnd(t.st))
	} else {
		t.p.serve(headState(t.st))
	}
}

// leanWorkerIdle is how long an idle worker waits for a task before it
// ends, so that a burst of wake-ups mostly reuses workers. Nothing bounds
// their number: during a wake-up of 10 000 polls, go_goroutines was up to
// about 160 above the parked polls (each worker has a grown stack, a few
// KiB).
const leanWorkerIdle = 2 * time.Second

// handOff runs t on an idle worker, or on a new one when none is idle (so
// that a worker blocked writing to a slow client delays no other
// connection). Called by a counted lean goroutine.
func (s *Server) handOff(t leanTask) {
	select {
	case s.leanTasks <- t:
	default:
		s.leanWG.Add(1)
		go s.leanWorker(t)
	}
}

// leanWorker runs tasks until it has been idle for leanWorkerIdle, or the
// server shuts down (a task handed off then starts a new worker).
func (s *Server) leanWorker(t leanTask) {
	defer s.leanWG.Done()
	idle := time.NewTimer(leanWorkerIdle)
	defer idle.Stop()
	for {
		t.run()
		t.p = nil // an idle worker keeps no connection reachable
		idle.Reset(leanWorkerIdle)
		select {
		case t = <-s.leanTasks:
		case <-idle.C:
			return
		case <-s.pollCtx.Done():
			return
		}
	}
}

// waitFor starts the connection's next wait: for the parked poll (hold)
// or for the next request's head. Called by a counted lean goroutine.
func (p *leanPoll) waitFor(hold bool) {
	p.s.leanWG.Add(1)
	if hold {
		go p.waitHold()
	} else {
		go p.waitHead()
	}
}

func (p *leanPoll) waitHold() {
	defer p.s.leanWG.Done()
	p.s.handOff(leanTask{p: p, hold: true, st: uint8(p.holdWait())})
}

func (p *leanPoll) waitHead() {
	defer p.s.leanWG.Done()
	if st := p.headWait(); st != headDone {
		p.s.handOff(leanTask{p: p, st: uint8(st)})
	}
}

// holdWait waits for the current poll's change, its end or the client's
// disconnect. It runs on the waiting goroutine: reads, and nothing else.
func (p *leanPoll) holdWait() holdEnd {
	s := p.s
	var b [16]byte
	for {
		// The deadline first, then the callback: a wake in between moves
		// the deadline back to the past, it is never overwritten.
		if err := p.conn.SetReadDeadline(p.deadline); err != nil {
			return holdGone
		}
		// A shutdown whose interrupt ran before the deadline was set
		// would otherwise wait for the whole hold.
		if s.pollCtx.Err() != nil {
			p.interrupt()
		}
		p.w.OnWake(p.interrupt)
		n, err := p.conn.Read(b[:])
		if n > 0 {
			// A request sent before the answer (pipelining): kept for later.
			if len(p.prefix)+n > maxLeanRequest {
				return holdGone
			}
			p.prefix = append(p.prefix, b[:n]...)
			continue
		}
		if !deadlineExceeded(err) {
			return holdGone
		}
		if s.pollCtx.Err() != nil || !time.Now().Before(p.deadline) {
			return holdOver
		}
		return holdWoken
	}
}

// afterHold answers the parked poll (on a worker) and goes on with the
// connection.
func (p *leanPoll) afterHold(e holdEnd) {
	switch e {
	case holdGone:
		// The client went away (or the socket failed): release the
		// waiter at once, write nothing (spec 5.2.2).
		p.w.Close()
		p.close(codeLabelCanceled)
		return
	case holdOver:
		p.w.Close()
		if !p.respond(wire.CodeNotModified, [][]byte{stdAnswerOf(wire.CodeNotModified).body}) {
			return
		}
	default:
		// Woken (or a late second call of an earlier waiter's callback):
		// re-poll. The appid that woke us is answered even if the client's
		// latest_timestamp is ahead of it (spec 5.3.2); a wake that leaves
		// nothing to answer arms a new waiter.
		res, next := p.s.reg.Repoll(p.req, p.w)
		if res == nil {
			p.w = next
			p.waitFor(true)
			return
		}
		if !p.respond(wire.CodeOK, p.answer(res)) {
			return
		}
	}
	p.serve(p.scanHead())
}

// respond writes the answer as net/http does; false when the write failed
// (the connection is then closed).
func (p *leanPoll) respond(code int, parts [][]byte) bool {
	p.unpark()
	n := 0
	for _, b := range parts {
		n += len(b)
	}
	// One buffer, one write: the connection is a wrapper (limitConn)
	// without writev, and a write per part costs a syscall each.
	bp := p.s.answerBuf()
	b := append((*bp)[:0], "HTTP/1.1 200 OK\r\nContent-Type: "...)
	b = append(b, contentTypeJSON...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "\r\nDate: "...)
	now := time.Now()
	b = p.s.date.append(b, now)
	b = append(b, "\r\nKratos-Status-Code: "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, "\r\n\r\n"...)
	for _, part := range parts {
		b = append(b, part...)
	}
	_ = p.conn.SetWriteDeadline(now.Add(p.s.cfg.RequestTimeout))
	_, err := p.conn.Write(b)
	p.s.putAnswerBuf(bp, b)
	if err != nil {
		p.close(codeLabelCanceled)
		return false
	}
	p.s.observeLean(p.route, fmtCode(code))
	return true
}

// serve serves the client's next requests (on a worker), from the head
// state st. A plain poll is answered at once (and the next request
// served), or parked; a write is served (lean writes). Anything else, or
// anything odd, goes back to the HTTP server with the bytes read. When
// more bytes are needed, a wait for them starts.
func (p *leanPoll) serve(st headState) {
	s := p.s
	for ; ; st = p.scanHead() {
		switch st {
		case headMore:
			p.waitFor(false)
			return
		case headGiveBack:
			p.giveBack()
			return
		case headClosed:
			p.close("")
			return
		case headReady: // may be a lean write (headPoll: waitHead saw it is not)
			if served, ok := p.serveLeanWrite(); served {
				if !ok {
					return
				}
				continue
			}
		case headPoll:
		}
		head := p.prefix[:p.headLen]
		p.fresh = false
		req, route, ok := s.leanRequest(head)
		if !ok || !s.cfg.LeanPolls || !s.ready() || len(p.prefix) > len(head) {
			// Not a plain poll, the node not ready (the gate answers -503),
			// or a further request behind this one: the HTTP server handles
			// the connection from here, in order.
			p.giveBack()
			return
		}
		if route == routeIndex(pathPoll) && !s.reg.Exists(req.req.Env, req.req.AppIDs[0], req.req.Zone) {
			p.giveBack() // answered at once the ordinary way (spec 4.8.1)
			return
		}
		p.prefix = p.prefix[:0]
		if cap(p.prefix) > maxKeptBuf {
			p.prefix = nil
		}
		p.route = route
		if route == routeIndex(pathPoll) {
			p.answer = pollAnswer
		} else {
			p.answer = pollsBody
		}
		res, w := s.reg.Poll(req.req)
		if res != nil {
			if !p.respond(wire.CodeOK, p.answer(res)) {
				return
			}
			continue
		}
		hold := holdFor(s.cfg.PollHold, req.bmspy)
		code := 0
		switch {
		case hold <= 0 || s.pollCtx.Err() != nil:
			code = wire.CodeNotModified
		case s.parked.Add(1) > int64(s.maxPollers):
			s.parked.Add(-1)
			code = wire.CodeUnavailable
		}
		if code != 0 {
			w.Close()
			if !p.respond(code, [][]byte{stdAnswerOf(code).body}) {
				return
			}
			continue
		}
		p.parked = true
		s.leanTotal.Add(1)
		if len(p.prefix) == 0 {
			p.prefix = nil // a parked poll holds no read buffer
		}
		p.req, p.w, p.deadline = req.req, w, time.Now().Add(hold)
		p.waitFor(true)
		return
	}
}

// pollAnswer is the answer of /discovery/poll: the one appid's info.
func pollAnswer(res *registry.PollResult) [][]byte {
	return [][]byte{okDataPrefix, res.Changed[0].JSON, closeBrace}
}

// scanHead looks for the end of the next request's head in p.prefix.
// Each byte is searched once (p.scanned: a client sending a byte at a time
// costs no more than one sending its head at once).
func (p *leanPoll) scanHead() headState {
	if i := indexHeadEnd(p.prefix, max(0, p.scanned-3)); i >= 0 {
		bare := hasBareLF(p.prefix[:i], max(0, p.scanned-1))
		p.scanned = 0 // from the start of the request after this one
		if bare {
			return headGiveBack // a line ended by LF alone before the end: net/http reads it otherwise
		}
		p.headLen = i
		return headReady
	}
	bare := hasBareLF(p.prefix, max(0, p.scanned-1))
	p.scanned = len(p.prefix)
	if len(p.prefix) > maxLeanRequest || bare {
		// Too long, or lines ended by LF alone (which net/http reads and
		// this loop does not): the HTTP server's.
		return headGiveBack
	}
	return headMore
}

// headWait serves the client's lean writes and reads until a request's
// head that is not one is whole (or is the HTTP server's, or the
// connection ends). It runs on the waiting goroutine. Writes are served
// here, not on a worker: a connection of writes (a client's renews) is
// rarely idle for long, and a hand-off per write cost 8-10 % more node CPU
// per register (measured); a connection that parks a poll leaves this
// goroutine, and its stack, behind.
func (p *leanPoll) headWait() headState {
	for {
		st := p.readHead()
		if st != headReady || !p.s.cfg.LeanWrites {
			return st
		}
		served, ok := p.serveLeanWrite()
		switch {
		case !served:
			return headPoll
		case !ok:
			return headDone
		}
	}
}

// serveLeanWrite serves the whole head p.prefix[:p.headLen] if it is a
// lean write (served); ok false when the connection was let go.
func (p *leanPoll) serveLeanWrite() (served, ok bool) {
	s := p.s
	if !s.cfg.LeanWrites {
		return false, true
	}
	if p.remote == "" {
		p.remote = p.conn.RemoteAddr().String()
	}
	lw, isWrite := s.leanWriteRequest(p.prefix[:p.headLen], p.remote)
	if !isWrite {
		return false, true
	}
	p.fresh = false
	body, err := p.readBody(p.headLen, lw.bodyLen)
	return true, p.serveWrite(lw, body, err)
}

// readHead reads until the next request's head is whole (or is the HTTP
// server's), bounded: the idle timeout for its first byte, then the header
// timeout.
func (p *leanPoll) readHead() headState {
	s := p.s
	deadline := time.Now().Add(s.cfg.IdleTimeout)
	if len(p.prefix) > 0 || p.fresh { // a new connection has ReadHeaderTimeout for its first request, as in net/http
		deadline = time.Now().Add(s.cfg.ReadHeaderTimeout)
	}
	for {
		if st := p.scanHead(); st != headMore {
			return st
		}
		if s.pollCtx.Err() != nil {
			return headClosed // shutdown: an idle connection is closed, as net/http does
		}
		if err := p.conn.SetReadDeadline(deadline); err != nil {
			return headClosed
		}
		if s.pollCtx.Err() != nil { // shut down since the check above
			return headClosed
		}
		// Into the buffer's room: kept by a connection of writes, dropped
		// when a poll parks (serve).
		if cap(p.prefix)-len(p.prefix) < 256 {
			p.prefix = slices.Grow(p.prefix, 512)
		}
		n, err := p.conn.Read(p.prefix[len(p.prefix):cap(p.prefix)])
		if n > 0 {
			if len(p.prefix) == 0 && !p.fresh { // a new connection's deadline runs from its accept
				deadline = time.Now().Add(s.cfg.ReadHeaderTimeout)
			}
			p.prefix = p.prefix[:len(p.prefix)+n]
			continue
		}
		if deadlineExceeded(err) && time.Now().Before(deadline) {
			continue // a late wake callback of the last poll, or shutdown (checked above)
		}
		return headClosed
	}
}

// indexHeadEnd returns the length of the head (through CRLF CRLF) in b,
// or -1; the search starts at from.
func indexHeadEnd(b []byte, from int) int {
	for i := from; i+3 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' && b[i+2] == '\r' && b[i+3] == '\n' {
			return i + 4
		}
	}
	return -1
}

// hasBareLF reports whether b, from from on, holds a LF not preceded by
// CR.
func hasBareLF(b []byte, from int) bool {
	for i := from; i < len(b); i++ {
		if b[i] == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
	}
	return false
}

type leanReq struct {
	req   registry.PollRequest
	bmspy string
}

// leanRequest parses a request head: ok only for a GET of /discovery/polls
// or /discovery/poll over HTTP/1.1, without a body, kept alive, whose
// parameters parse; the rest is the HTTP server's to answer.
func (s *Server) leanRequest(head []byte) (leanReq, int, bool) {
	var out leanReq
	line, rest, ok := strings.Cut(string(head), "\r\n")
	if !ok {
		return out, 0, false
	}
	method, rest1, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 || method != http.MethodGet || proto != "HTTP/1.1" {
		return out, 0, false
	}
	path, rawQuery, _ := strings.Cut(target, "?")
	var route int
	switch path {
	case pathPolls:
		route = routeIndex(pathPolls)
	case pathPoll:
		route = routeIndex(pathPoll)
	default:
		return out, 0, false
	}
	if !plainQuery(rawQuery) {
		return out, 0, false
	}
	hosts := 0
	ok = leanHeaders(rest, func(k, v string) bool {
		switch k {
		case "Host":
			hosts++
			return httpguts.ValidHostHeader(v)
		case "Content-Length":
			return v == "0"
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Te":
			return false
		case "Connection":
			return strings.EqualFold(v, "keep-alive")
		case headerBmTimeout:
			out.bmspy = v
		}
		return true
	})
	if !ok {
		return out, 0, false
	}
	if hosts != 1 {
		return out, 0, false
	}
	v, err := parseQuery(rawQuery)
	if err != nil {
		return out, 0, false
	}
	pp, err := parsePoll(v, s.cfg.Limits, route == routeIndex(pathPolls))
	if err != nil {
		return out, 0, false
	}
	out.req = compactPollRequest(pp.Req)
	return out, route, true
}

// compactPollRequest copies the request's strings into one allocation.
// They are substrings of the copy of the request's head, which a parked
// poll (its request, its waiter's zone) would otherwise keep whole: about
// 200 bytes more per parked poll.
func compactPollRequest(r registry.PollRequest) registry.PollRequest {
	n := len(r.Env) + len(r.Zone)
	for _, id := range r.AppIDs {
		n += len(id)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(r.Env)
	b.WriteString(r.Zone)
	for _, id := range r.AppIDs {
		b.WriteString(id)
	}
	all := b.String()
	cut := func(k int) string {
		v := all[:k]
		all = all[k:]
		return v
	}
	r.Env, r.Zone = cut(len(r.Env)), cut(len(r.Zone))
	for i, id := range r.AppIDs { // the parser's own slice
		r.AppIDs[i] = cut(len(id))
	}
	return r
}

// giveBack hands the connection, with the bytes read and not served, to
// the HTTP server.
func (p *leanPoll) giveBack() {
	p.release()
	_ = p.conn.SetDeadline(time.Time{})
	if !p.s.reenter(p.conn, p.prefix) {
		_ = p.conn.Close()
	}
}

// close ends the connection (label: the poll's outcome, "" when no poll
// was pending).
func (p *leanPoll) close(label string) {
	p.unpark()
	p.release()
	_ = p.conn.Close()
	if label != "" {
		p.s.observeLean(p.route, label)
	}
}

// observeLean counts a lean poll's outcome as instrument counts the
// others (poll latency is not observed for any poll).
func (s *Server) observeLean(route int, code string) {
	s.m.request(route, code).Inc()
}

// reentryListener is the plain listener the HTTP server serves: it accepts
// from the real listener (in a goroutine of its own, so Accept can also
// take connections back) and hands the server the connections whose lean
// polls were answered, so their next request is served as usual.
type reentryListener struct {
	net.Listener
	// take, if set, may keep a new connection (lean writes) instead of
	// handing it to the HTTP server.
	take     func(net.Conn) bool
	accepted chan acceptResult
	back     chan net.Conn
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newReentryListener(ln net.Listener, take func(net.Conn) bool) *reentryListener {
	return &reentryListener{Listener: ln, take: take, accepted: make(chan acceptResult), back: make(chan net.Conn), done: make(chan struct{})}
}

// start accepts; after the server can find the listener (a connection
// taken at once may have to be given back).
func (l *reentryListener) start() {
	l.wg.Add(1)
	go l.acceptLoop()
}

func (l *reentryListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err == nil && l.take != nil && l.take(c) {
			continue
		}
		select {
		case l.accepted <- acceptResult{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
}

func (l *reentryListener) Accept() (net.Conn, error) {
	select {
	case r := <-l.accepted:
		return r.c, r.err
	case c := <-l.back:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *reentryListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
	return err
}

// reenter gives a connection back to the HTTP server (with the bytes the
// client sent meanwhile); false when the server no longer accepts.
func (s *Server) reenter(c net.Conn, prefix []byte) bool {
	l := s.reentry.Load()
	if l == nil {
		return false
	}
	if pc, ok := c.(*prefixConn); ok {
		// Given back before: one layer, whatever the connection's history.
		// What the lean loop read came from pc's own prefix first, so what
		// is left of that prefix follows it.
		prefix = append(prefix, pc.r.prefix...)
		c = pc.Conn
	}
	if len(prefix) > 0 {
		c = &prefixConn{Conn: c, r: prefixReader{prefix: prefix, conn: c}}
	}
	select {
	case l.back <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefixConn reads first what was read from its connection while a poll
// was parked.
type prefixConn struct {
	net.Conn
	r prefixReader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

type prefixReader struct {
	prefix []byte
	conn   net.Conn
}

func (r *prefixReader) Read(b []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(b, r.prefix)
		r.prefix = r.prefix[n:]
		if len(r.prefix) == 0 {
			r.prefix = nil // not held for the connection's life
		}
		return n, nil
	}
	return r.conn.Read(b)
}
