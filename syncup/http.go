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
	"strconv"
	"strings"
	"time"

	"github.com/discovery-go/discovery/registry"
)

// Internal endpoint paths (spec 10.1). The handler also accepts them with
// the /discovery/internal prefix stripped.
const (
	PathReplicate = "/discovery/internal/replicate"
	PathSnapshot  = "/discovery/internal/snapshot"
	PathDigest    = "/discovery/internal/digest"

	// ReadyHeader on a snapshot answer tells whether the serving node had
	// finished its own startup sync ("true"/"false").
	ReadyHeader = "X-Discovery-Ready"
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
	client *http.Client
	max    int64
}

var _ Transport = (*HTTPTransport)(nil)

// NewHTTPTransport builds an HTTPTransport.
func NewHTTPTransport(cfg HTTPTransportConfig) *HTTPTransport {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 30
	}
	cl := cfg.Client
	if cl == nil {
		tr := &http.Transport{
			Proxy:                 nil, // peers are reached directly
			DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			ExpectContinueTimeout: time.Second,
		}
		cl = &http.Client{Transport: tr}
	}
	return &HTTPTransport{client: cl, max: cfg.MaxResponseBytes}
}

// CloseIdleConnections closes kept-alive connections (at shutdown).
func (t *HTTPTransport) CloseIdleConnections() { t.client.CloseIdleConnections() }

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

// Replicate implements Transport.
func (t *HTTPTransport) Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error) {
	var out ReplicateResponse
	if err := t.post(ctx, addr, PathReplicate, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
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
	return ready, DecodeSnapshot(bufio.NewReaderSize(resp.Body, 256<<10), sink)
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

// encodeSnapshot writes a snapshot stream: {"instances":[...],"tombstones":[...]}.
// produce hands every item to its sink; items must come instances
// first (as serveSnapshot produces them).
func encodeSnapshot(w *bufio.Writer, produce func(sink func(SnapshotItem) error) error) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if _, err := w.WriteString(`{"instances":[`); err != nil {
		return err
	}
	inTombs, first := false, true
	err := produce(func(it SnapshotItem) error {
		if it.Tombstone != nil && !inTombs {
			inTombs, first = true, true
			if _, err := w.WriteString(`],"tombstones":[`); err != nil {
				return err
			}
		}
		if !first {
			if err := w.WriteByte(','); err != nil {
				return err
			}
		}
		first = false
		if it.Tombstone != nil {
			return enc.Encode(it.Tombstone)
		}
		if inTombs {
			return errors.New("snapshot: instance after tombstones")
		}
		return enc.Encode(it.Instance)
	})
	if err != nil {
		return err
	}
	if !inTombs {
		if _, err := w.WriteString(`],"tombstones":[`); err != nil {
			return err
		}
	}
	if _, err := w.WriteString("]}\n"); err != nil {
		return err
	}
	return w.Flush()
}

// DecodeSnapshot reads a snapshot stream written by the snapshot endpoint
// and hands each element to sink. Unknown keys are skipped; malformed
// input is an error, never a panic.
func DecodeSnapshot(r io.Reader, sink func(SnapshotItem) error) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		key, _ := tok.(string)
		switch key {
		case "instances", "tombstones":
			if err := expectDelim(dec, '['); err != nil {
				return err
			}
			for dec.More() {
				var it SnapshotItem
				if key == "instances" {
					it.Instance = new(registry.Instance)
					err = dec.Decode(it.Instance)
				} else {
					it.Tombstone = new(registry.Tombstone)
					err = dec.Decode(it.Tombstone)
				}
				if err != nil {
					return fmt.Errorf("snapshot %s: %w", key, err)
				}
				if err := sink(it); err != nil {
					return err
				}
			}
			if err := expectDelim(dec, ']'); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
	}
	return expectDelim(dec, '}')
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return fmt.Errorf("snapshot: expected %q, got %v", d, tok)
	}
	return nil
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
		servePost(h, w, r, h.c.serveReplicate)
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
		if err := encodeSnapshot(bw, func(sink func(SnapshotItem) error) error {
			return h.c.serveSnapshot(r.Context(), sink)
		}); err != nil {
			h.c.log.Debug("snapshot stream aborted", "err", err)
		}
	default:
		httpError(w, http.StatusNotFound, "unknown internal endpoint "+r.URL.Path)
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
	body := http.MaxBytesReader(w, r.Body, h.c.cfg.MaxBodyBytes)
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
		if errors.Is(err, errBadRequest) {
			code = http.StatusBadRequest
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
