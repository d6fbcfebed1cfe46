package syncup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
