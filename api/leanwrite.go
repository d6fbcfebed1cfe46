package api

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"

	"github.com/discovery-go/discovery/api/wire"
)

// Lean writes (http.lean_writes). A kratos process registers once and then
// renews every 30 s on a keep-alive connection; each of those requests
// costs more in net/http (reading and parsing the head into a header map,
// a background-read goroutine, its context, the buffered response) than
// in the registry. So a plain connection is read by a lean connection
// loop (leanPoll) from its first byte: a plain form POST of register,
// renew or cancel (or a peer's replicate) is read here and run through the same echo handler chain
// as any request (so limits, metrics, peer-parameter stripping, write
// policies and refusal logs are the ones every request gets), its answer
// written as net/http writes it. A plain poll is served as lean polls are.
// Anything else (another route or method, a body that is not a small
// urlencoded form, chunked, Expect, Upgrade, Connection: close, HTTP/1.0,
// an odd header) goes back to the HTTP server with the bytes read, which
// serves the connection from then on.

// maxKeptBuf bounds the read buffer and the answer buffer a connection
// keeps between requests (a kratos write needs well under 1 KiB of each).
const maxKeptBuf = 4 << 10

// maxLeanBody bounds a body read here; a larger one (within
// limits.max_body_bytes) is read by the HTTP server.
const maxLeanBody = 64 << 10

// leanWriteRoutes are the routes served here (POST): kratos' writes, and
// the peers' replicate requests (JSON bodies, small answers). Digests are
// not: their answers can be megabytes, which net/http streams.
var leanWriteRoutes = [...]string{pathRenew, pathRegister, pathCancel, wire.PathReplicate}

// leanContentType is the one Content-Type a lean route's body may have
// ("" also allows none).
func leanContentType(path string) (want string, optional bool) {
	if path == wire.PathReplicate {
		return "application/json", false
	}
	return "application/x-www-form-urlencoded", true
}

// takeFresh starts the lean loop on a new plain connection (before its
// first byte): true when taken.
func (s *Server) takeFresh(c net.Conn) bool {
	if !s.cfg.LeanWrites || s.pollCtx.Err() != nil || !s.leanAdd() {
		return false
	}
	p := &leanPoll{s: s, conn: c, fresh: true}
	s.leanLink(p)   // Shutdown ends the wait for the first request
	go p.waitHead() // counted by leanAdd above
	return true
}

// leanWrite is a write request read from a lean connection.
type leanWrite struct {
	r       *http.Request
	st      *leanWriteState // what r is built in; back to the pool after the answer
	bodyLen int
}

// leanWriteState is what a lean write is built in besides its head and body:
// the request, its URL, its header map and the form's map. They are
// pooled: the two maps and the request were 1.8 of a lean register's 2.7
// KB (measured), allocated at every write for the GC to collect. They
// live only while the handler chain runs; nothing a handler keeps points
// into them (the registry copies what it stores, and the strings point
// into the head's copy and the body, which are fresh per request).
type leanWriteState struct {
	r    http.Request
	u    url.URL
	h    http.Header
	hv   []string // backing of h's values, cap leanHeaderVals
	body leanBody
}

// leanHeaderVals is the room for header values kept per pooled request
// (a kratos write has 5 header lines); more lines each allocate.
const leanHeaderVals = 16

// leanKeptKeys bounds the keys of a pooled map: a map keeps its room
// after clear, and a rare form of thousands of parameters must not pin it.
const leanKeptKeys = 64

func (s *Server) getWriteState() *leanWriteState {
	if st, _ := s.writeStates.Get().(*leanWriteState); st != nil {
		return st
	}
	return &leanWriteState{h: make(http.Header, leanHeaderVals), hv: make([]string, 0, leanHeaderVals)}
}

// putWriteState returns st to the pool, holding nothing of its request.
func (s *Server) putWriteState(st *leanWriteState) {
	if len(st.h) > leanKeptKeys {
		st.h = make(http.Header, leanHeaderVals)
	}
	clear(st.h)
	clear(st.hv[:cap(st.hv)])
	st.hv = st.hv[:0]
	st.r, st.u = http.Request{}, url.URL{}
	st.body.reset()
	s.writeStates.Put(st)
}

// leanWriteRequest parses a request head: ok only for a POST of a lean
// write route over HTTP/1.1, kept alive, with a Host, a Content-Length of
// at most maxLeanBody (and limits.max_body_bytes), no Content-Type or an
// urlencoded one, and well-formed header fields. The request gets no
// context of its own (these handlers never wait).
func (s *Server) leanWriteRequest(head []byte, remote string) (leanWrite, bool) {
	var out leanWrite
	hs := string(head) // one copy: the header strings outlive the read buffer
	line, rest, ok := strings.Cut(hs, "\r\n")
	if !ok {
		return out, false
	}
	method, rest1, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 || method != http.MethodPost || proto != "HTTP/1.1" {
		return out, false
	}
	path, rawQuery, _ := strings.Cut(target, "?")
	if !slices.Contains(leanWriteRoutes[:], path) || !plainQuery(rawQuery) {
		return out, false
	}
	// One backing array for the values, kept with the pooled request.
	st := s.getWriteState()
	vals, hdr := st.hv[:0], st.h
	ctWant, ctOptional := leanContentType(path)
	host, hosts, lengths, types := "", 0, 0, 0
	n := int64(-1)
	ok = leanHeaders(rest, func(k, v string) bool {
		switch k {
		case "Host":
			host, hosts = v, hosts+1
			return true // net/http moves it to Request.Host
		case "Content-Length":
			lengths++
			if v == "" || len(v) > 7 || strings.Trim(v, "0123456789") != "" {
				return false
			}
			n, _ = strconv.ParseInt(v, 10, 64)
		case "Content-Type":
			if types++; v != ctWant {
				return false
			}
		case "Connection":
			if !strings.EqualFold(v, "keep-alive") {
				return false
			}
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Te":
			return false
		}
		if hdr[k] == nil && len(vals) < cap(vals) {
			vals = append(vals, v)
			hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
		} else {
			hdr[k] = append(hdr[k], v)
		}
		return true
	})
	st.hv = vals
	if !ok || hosts != 1 || !httpguts.ValidHostHeader(host) || lengths != 1 || n > maxLeanBody || n > s.cfg.Limits.MaxBodyBytes ||
		types > 1 || (types == 0 && !ctOptional) {
		s.putWriteState(st)
		return out, false
	}
	st.u = url.URL{Path: path, RawQuery: rawQuery}
	st.r = http.Request{
		Method:        method,
		URL:           &st.u,
		Proto:         proto,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		ContentLength: n,
		Host:          host,
		RemoteAddr:    remote,
		RequestURI:    target,
	}
	out.r, out.st, out.bodyLen = &st.r, st, int(n)
	return out, true
}

// leanHeader splits a header line into its canonical name and trimmed
// value; false for a folded line, a bad name or value (the HTTP server
// answers those).
func leanHeader(h string) (k, v string, ok bool) {
	k, v, ok = strings.Cut(h, ":")
	if !ok || !httpguts.ValidHeaderFieldName(k) {
		return "", "", false
	}
	v = strings.Trim(v, " \t")
	if !httpguts.ValidHeaderFieldValue(v) {
		return "", "", false
	}
	return textproto.CanonicalMIMEHeaderKey(k), v, true
}

// leanHeaders calls f with the canonical name and the value of each
// header line of rest (a head after its request line); false when a line
// is malformed or f refuses it.
func leanHeaders(rest string, f func(k, v string) bool) bool {
	for rest != "" {
		var h string
		h, rest, _ = strings.Cut(rest, "\r\n")
		if h == "" {
			continue // the head's final CRLF
		}
		k, v, ok := leanHeader(h)
		if !ok || !f(k, v) {
			return false
		}
	}
	return true
}

// plainQuery reports whether a query string has no control character,
// space or '#' (net/url refuses those; the HTTP server answers them).
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c == 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// readBody reads a write's body (after the head of length headLen in
// p.prefix), bounded by RequestTimeout, growing with what arrives. It
// returns the body (a copy the handler may keep) and leaves what follows
// in p.prefix. A failed read (the deadline, the client gone) returns what
// arrived and the error: the handler reads it as net/http would give it
// (a -400 naming the body), and the connection ends after the answer.
func (p *leanPoll) readBody(headLen, n int) ([]byte, error) {
	total := headLen + n
	var err error
	deadline := time.Now().Add(p.s.cfg.RequestTimeout)
	if len(p.prefix) < total {
		err = p.conn.SetReadDeadline(deadline)
	}
	for err == nil && len(p.prefix) < total {
		if p.s.closed.Load() {
			err = net.ErrClosed // Close: nothing waits for a body
			break
		}
		if cap(p.prefix)-len(p.prefix) < 512 {
			p.prefix = slices.Grow(p.prefix, min(len(p.prefix), total-len(p.prefix))+512)
		}
		var m int
		m, err = p.conn.Read(p.prefix[len(p.prefix):min(cap(p.prefix), total)])
		p.prefix = p.prefix[:len(p.prefix)+m]
		switch {
		case len(p.prefix) == total:
			err = nil
		case errors.Is(err, io.EOF):
			err = io.ErrUnexpectedEOF
		case deadlineExceeded(err) && time.Now().Before(deadline):
			// A late wake of the connection's last poll, or Shutdown (a
			// body that is arriving is still served, as net/http does).
			err = p.conn.SetReadDeadline(deadline)
		}
	}
	end := min(total, len(p.prefix))
	body := make([]byte, end-headLen)
	copy(body, p.prefix[headLen:end])
	p.prefix = p.prefix[:copy(p.prefix, p.prefix[end:])]
	if cap(p.prefix) > maxKeptBuf {
		// A large body's room is not kept for the connection's life.
		p.prefix = append([]byte(nil), p.prefix...)
	}
	return body, err
}

// leanBody is a whole body read here: formBody takes its bytes as they
// are (they are within limits.max_body_bytes, and never written again),
// and parses them into the pooled map form (values backed by vals).
type leanBody struct {
	bytes.Reader
	b    []byte
	form url.Values
	vals []string
}

func (b *leanBody) reset() {
	b.Reset(nil)
	b.b = nil
	if len(b.form) > leanKeptKeys {
		b.form, b.vals = nil, nil
	}
	clear(b.form)
	clear(b.vals)
}

// parseForm parses the body's form into the pooled map. A second call for
// the same request gets a map of its own (the first one's is in use).
func (b *leanBody) parseForm() (url.Values, error) {
	raw := unsafe.String(unsafe.SliceData(b.b), len(b.b))
	if len(b.form) > 0 {
		return parseURLEncoded(raw)
	}
	m, vals, err := parseFormInto(b.form, b.vals, raw)
	b.form, b.vals = m, vals // kept whole on an error too: reset clears them
	if err != nil {
		return nil, formBodyError(err)
	}
	return m, nil
}

func (*leanBody) Close() error { return nil }

// failedReader returns its error once the bytes before it are read.
type failedReader struct{ err error }

func (r failedReader) Read([]byte) (int, error) { return 0, r.err }

// serveWrite runs one write through the echo handler chain and writes its
// answer; false when the connection is gone (closed here).
func (p *leanPoll) serveWrite(lw leanWrite, body []byte, readErr error) bool {
	s := p.s
	if readErr != nil {
		lw.r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), failedReader{readErr}))
	} else {
		lb := &lw.st.body
		lb.Reset(body)
		lb.b = body
		lw.r.Body = lb
	}
	w := &p.resp
	w.reset()
	served := p.serveHTTP(w, lw.r)
	s.putWriteState(lw.st) // the answer is in w, which holds nothing of the request
	if !served {
		p.close("")
		return false
	}
	s.leanWrites.Add(1)
	bp := s.answerBuf()
	now := time.Now()
	b := w.appendResponse((*bp)[:0], &s.date, now)
	_ = p.conn.SetWriteDeadline(now.Add(s.cfg.RequestTimeout))
	_, err := p.conn.Write(b)
	s.putAnswerBuf(bp, b)
	if cap(w.body) > maxKeptBuf {
		w.body = nil // not held while the connection idles
	}
	// After a failed body read, the rest of the body would be read as a
	// request: the connection ends, as net/http ends it.
	if err != nil || w.close || readErr != nil {
		p.close("")
		return false
	}
	return true
}

// serveHTTP calls the handler chain; false when it aborted the request
// (http.ErrAbortHandler, which net/http answers by closing).
func (p *leanPoll) serveHTTP(w *leanResponse, r *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler { //nolint:errorlint // the sentinel value net/http panics with
				p.s.log.Error("panic in lean request", "path", r.URL.Path, "err", v)
			}
			ok = false
		}
	}()
	p.s.e.ServeHTTP(w, r)
	return true
}

// leanResponse is the ResponseWriter of a lean write: the answer is
// buffered and written at once, framed as net/http frames it. Kept per
// connection; reset per request.
type leanResponse struct {
	h     http.Header
	code  int
	body  []byte
	close bool
}

func (w *leanResponse) reset() {
	if w.h == nil {
		w.h = make(http.Header, 4)
	}
	clear(w.h)
	w.code, w.body, w.close = 0, w.body[:0], false // a large body was dropped after its write
}

func (w *leanResponse) Header() http.Header { return w.h }

func (w *leanResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *leanResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

// appendResponse frames the answer as net/http does: status line, the
// handler's headers in key order, Date and Content-Length unless set,
// Content-Type sniffed when missing.
func (w *leanResponse) appendResponse(b []byte, date *httpDate, now time.Time) []byte {
	code := w.code
	if code == 0 {
		code = http.StatusOK
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	if _, ok := w.h["Content-Type"]; !ok && len(w.body) > 0 {
		w.h["Content-Type"] = []string{http.DetectContentType(w.body)}
	}
	var keys [8]string
	ks := keys[:0]
	for k := range w.h {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		if k == "Connection" {
			w.close = true // a handler asked for the end of the connection
		}
		for _, v := range w.h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	if _, ok := w.h["Date"]; !ok {
		b = append(b, "Date: "...)
		b = date.append(b, now)
		b = append(b, "\r\n"...)
	}
	if _, ok := w.h["Content-Length"]; !ok && bodyAllowed(code) {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(w.body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if bodyAllowed(code) {
		b = append(b, w.body...)
	}
	return b
}

// appendHeaderValue writes a header value with CR and LF replaced by
// spaces, as net/http does: a value can never end the head early.
func appendHeaderValue(b []byte, v string) []byte {
	if !strings.ContainsAny(v, "\r\n") {
		return append(b, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}
