package syncup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// Internal endpoint paths (spec 10.1). The handler also accepts them with
// the /discovery/internal prefix stripped.
const (
	PathReplicate = wire.PathReplicate
	PathSnapshot  = wire.PathSnapshot
	PathDigest    = wire.PathDigest
	ReadyHeader   = wire.ReadyHeader
)

// HTTPTransportConfig configures NewHTTPTransport.
type HTTPTransportConfig struct {
	// Client, if set, is used as is (shared, keep-alive). Nil: one is built
	// with Timeout as dial and response-header timeout.
	Client *http.Client
	// Timeout bounds dialing and waiting for response headers; default 5 s.
	// Whole requests are bounded by the caller's ctx.
	Timeout time.Duration
	// MaxResponseBytes bounds replicate and digest answers; default 1 GiB.
	// Snapshots are streamed and not bounded here.
	MaxResponseBytes int64
}

// HTTPTransport is the production Transport: JSON over HTTP/1.1 to the
// peers' internal endpoints, through one shared keep-alive client.
type HTTPTransport struct {
	client  *http.Client
	max     int64
	timeout time.Duration
	// raw: replicate requests use pool (peerconn.go) rather than client;
	// only when the client is our own.
	raw  bool
	pool connPool
}

var (
	_ Transport     = (*HTTPTransport)(nil)
	_ RawReplicator = (*HTTPTransport)(nil)
)

// NewHTTPTransport builds an HTTPTransport.
func NewHTTPTransport(cfg HTTPTransportConfig) *HTTPTransport {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 30
	}
	t := &HTTPTransport{max: cfg.MaxResponseBytes, timeout: cfg.Timeout, client: cfg.Client}
	if t.client == nil {
		t.raw = true
		t.pool.dialer = net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
		tr := &http.Transport{
			Proxy:                 nil, // peers are reached directly
			DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			ExpectContinueTimeout: time.Second,
		}
		t.client = &http.Client{Transport: tr}
	}
	return t
}

// CloseIdleConnections closes kept-alive connections; meant for shutdown:
// replicate connections are not kept any more afterwards.
func (t *HTTPTransport) CloseIdleConnections() {
	t.client.CloseIdleConnections()
	t.pool.close()
}

func (t *HTTPTransport) post(ctx context.Context, addr, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return &PermanentError{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if err := statusError(resp); err != nil {
		return err
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, t.max))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s%s: %w", addr, path, err)
	}
	return nil
}

// Replicate implements Transport: the request is encoded by the wire
// package's hand-written encoder and sent by ReplicateRaw.
func (t *HTTPTransport) Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error) {
	bp := getBuf()
	defer putBuf(bp)
	*bp = wire.AppendReplicateRequest((*bp)[:0], req)
	return t.ReplicateRaw(ctx, addr, *bp)
}

// ReplicateRaw implements RawReplicator: body is a complete replicate
// request.
func (t *HTTPTransport) ReplicateRaw(ctx context.Context, addr string, body []byte) (*ReplicateResponse, error) {
	if t.raw {
		bp := getBuf()
		defer putBuf(bp)
		if err := t.replicateConn(ctx, addr, body, bp); err != nil {
			return nil, err
		}
		out, err := wire.DecodeReplicateResponse(*bp)
		if err != nil {
			return nil, fmt.Errorf("decode answer of %s%s: %w", addr, PathReplicate, err)
		}
		return out, nil
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+PathReplicate, bytes.NewReader(body))
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	hreq.Header[contentType] = jsonType
	resp, err := t.client.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	if err := statusError(resp); err != nil {
		return nil, err
	}
	bp := getBuf()
	defer putBuf(bp)
	if *bp, err = readAll((*bp)[:0], resp.Body, resp.ContentLength, t.max); err != nil {
		return nil, fmt.Errorf("read answer of %s%s: %w", addr, PathReplicate, err)
	}
	out, err := wire.DecodeReplicateResponse(*bp)
	if err != nil {
		return nil, fmt.Errorf("decode answer of %s%s: %w", addr, PathReplicate, err)
	}
	return out, nil
}

// Header values shared by every request and answer (never modified).
var (
	contentType = http.CanonicalHeaderKey("Content-Type")
	jsonType    = []string{"application/json"}
)

// Buffers for bodies, reused across requests. Buffers that grew large are
// dropped rather than kept.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufPool.Put(b)
	}
}

// errTooLarge: a body or answer over its limit.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("larger than %d bytes", e.limit) }

// readAll appends r's content to b, at most limit bytes (errTooLarge
// beyond). size, when known (Content-Length), sizes the buffer once.
func readAll(b []byte, r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return b, errTooLarge{limit}
	}
	if size > 0 && int64(cap(b)-len(b)) < size+1 {
		b = slices.Grow(b, int(size)+1) // +1: room to see EOF without growing
	}
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, max(cap(b), 4<<10))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return b, errTooLarge{limit}
		}
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// Digest implements Transport.
func (t *HTTPTransport) Digest(ctx context.Context, addr string, req *DigestRequest) (*DigestResponse, error) {
	var out DigestResponse
	if err := t.post(ctx, addr, PathDigest, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Snapshot implements Transport: the answer is decoded as a stream, one
// instance at a time, so memory stays flat whatever the registry size.
func (t *HTTPTransport) Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+PathSnapshot, nil)
	if err != nil {
		return false, &PermanentError{Err: err}
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return false, err
	}
	defer drainClose(resp.Body)
	if err := statusError(resp); err != nil {
		return false, err
	}
	ready := resp.Header.Get(ReadyHeader) == "true"
	return ready, wire.DecodeSnapshot(bufio.NewReaderSize(resp.Body, 256<<10), sink)
}

func statusError(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	err := fmt.Errorf("peer answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		return &PermanentError{Err: err}
	}
	return err
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}

// handler serves the internal endpoints of one Cluster.
type handler struct{ c *Cluster }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !strings.HasPrefix(path, "/discovery/internal/") {
		path = "/discovery/internal" + path
	}
	switch path {
	case PathReplicate:
		h.replicate(w, r)
	case PathDigest:
		servePost(h, w, r, h.c.serveDigest)
	case PathSnapshot:
		if !allow(w, r, http.MethodGet) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(ReadyHeader, strconv.FormatBool(h.c.Ready()))
		w.WriteHeader(http.StatusOK)
		bw := bufio.NewWriterSize(w, 256<<10)
		if err := wire.EncodeSnapshot(bw, func(sink func(SnapshotItem) error) error {
			return h.c.serveSnapshot(r.Context(), sink)
		}); err != nil {
			h.c.log.Debug("snapshot stream aborted", "err", err)
		}
	default:
		httpError(w, http.StatusNotFound, "unknown internal endpoint "+r.URL.Path)
	}
}

// replicate serves the replicate endpoint: the body is read whole (bounded
// by max_body_bytes), decoded by the fast codec (encoding/json when it
// gives up, with the same errors as servePost) and answered by hand.
func (h *handler) replicate(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	body, err := readAll((*bp)[:0], r.Body, r.ContentLength, h.c.cfg.MaxBodyBytes)
	*bp = body
	var tl errTooLarge
	switch {
	case errors.As(err, &tl):
		httpError(w, http.StatusBadRequest, fmt.Sprintf("body: larger than %d bytes", tl.limit))
		return
	case err != nil:
		httpError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var req ReplicateRequest
	if err := wire.DecodeReplicateRequest(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "body: invalid JSON: "+err.Error())
		return
	}
	resp, err := h.c.serveReplicate(r.Context(), &req)
	if err != nil {
		h.answer(w, nil, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	*out = wire.AppendReplicateResponse((*out)[:0], resp)
	*out = append(*out, '\n')
	hdr := w.Header()
	hdr[contentType] = jsonType
	hdr["Content-Length"] = []string{strconv.Itoa(len(*out))}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(*out); err != nil {
		h.c.log.Debug("write answer", "err", err)
	}
}

// servePost answers a JSON POST endpoint: method check, bounded decode,
// serve, JSON answer.
func servePost[Req, Resp any](h *handler, w http.ResponseWriter, r *http.Request, serve func(context.Context, *Req) (*Resp, error)) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	var req Req
	if !h.decode(w, r, &req) {
		return
	}
	resp, err := serve(r.Context(), &req)
	h.answer(w, resp, err)
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	httpError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed, use "+method)
	return false
}

func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return h.decodeFrom(w, http.MaxBytesReader(w, r.Body, h.c.cfg.MaxBodyBytes), v)
}

// decodeBytes is decode for a body already read.
func (h *handler) decodeBytes(w http.ResponseWriter, body []byte, v any) bool {
	return h.decodeFrom(w, bytes.NewReader(body), v)
}

func (h *handler) decodeFrom(w http.ResponseWriter, body io.Reader, v any) bool {
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("body: larger than %d bytes", mbe.Limit))
			return false
		}
		httpError(w, http.StatusBadRequest, "body: invalid JSON: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		httpError(w, http.StatusBadRequest, "body: trailing data after the JSON object")
		return false
	}
	return true
}

func (h *handler) answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, errBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, errNotReady):
			code = http.StatusServiceUnavailable
		}
		httpError(w, code, strings.TrimPrefix(err.Error(), errBadRequest.Error()+"\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		h.c.log.Debug("write answer", "err", err)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
