package syncup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
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
	// Timeout bounds dialing and waiting for response headers; default 5 s.
	// Whole requests are bounded by the caller's ctx.
	Timeout time.Duration
	// MaxResponseBytes bounds replicate and digest answers; default 256 MiB.
	// Snapshots are streamed, each element bounded by wire.MaxSnapshotItem.
	MaxResponseBytes int64
	// Auth signs every request and checks the signature of every answer;
	// nil: neither (a cluster running without a secret, insecure mode).
	Auth *PeerAuth
	// TLS, when set, reaches the peers over HTTPS with it.
	TLS *tls.Config
}

// HTTPTransport is the production Transport: JSON over HTTP/1.1 to the
// peers' internal endpoints, through keep-alive clients. Replicate bodies
// are encoded by the wire package's hand-written encoder (the sender hands
// it the per-op encodings it shares between peers).
//
// Replicate requests have connections of their own (client), apart from
// snapshots and digests (bulk): a peer serves a connection that has only
// carried replicate requests in its lean loop (api/leanwrite.go), but
// hands one that carried a snapshot or a digest to net/http for good. With
// one pool, the connection of the startup sync carried every later
// replicate request through net/http, at several µs more per request.
type HTTPTransport struct {
	client *http.Client // replicate
	bulk   *http.Client // snapshot, digest
	max    int64
	auth   *PeerAuth
	scheme string
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
		cfg.MaxResponseBytes = 256 << 20
	}
	pool := func(perHost int) *http.Client {
		return &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // peers are reached directly
			DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   perHost,
			IdleConnTimeout:       30 * time.Second, // below the peers' http.idle_timeout, so they rarely close one under us
			ResponseHeaderTimeout: cfg.Timeout,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       cfg.TLS,
			TLSHandshakeTimeout:   cfg.Timeout,
		}}
	}
	scheme := "http://"
	if cfg.TLS != nil {
		scheme = "https://"
	}
	return &HTTPTransport{
		client: pool(8),
		bulk:   pool(2), // one anti-entropy round and one sync at a time per peer
		max:    cfg.MaxResponseBytes, auth: cfg.Auth, scheme: scheme,
	}
}

// CloseIdleConnections closes kept-alive connections (shutdown).
func (t *HTTPTransport) CloseIdleConnections() {
	t.client.CloseIdleConnections()
	t.bulk.CloseIdleConnections()
}

// Header values shared by every request and answer (never modified).
var (
	contentType = http.CanonicalHeaderKey("Content-Type")
	jsonType    = []string{"application/json"}
	// idempotent makes net/http resend a POST that failed on a kept-alive
	// connection the peer had closed while idle: replicate ops and digest
	// exchanges are idempotent (spec 7.2.3), so sending twice is harmless.
	idempotencyKey = http.CanonicalHeaderKey("X-Idempotency-Key")
	idempotent     = []string{"replicate"}
)

// do posts body to path and returns the answer's body, its signature
// checked against the request.
func (t *HTTPTransport) do(ctx context.Context, hc *http.Client, addr, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.scheme+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	req.Header[contentType] = jsonType
	req.Header[idempotencyKey] = idempotent
	var nonce string
	if t.auth != nil {
		nonce = t.auth.Sign(req, body)
	}
	resp, err := hc.Do(req) //nolint:bodyclose // drainClose below closes it
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	if err := statusError(resp); err != nil {
		return nil, err
	}
	out, err := readAll(nil, resp.Body, resp.ContentLength, t.max)
	if err != nil {
		return nil, fmt.Errorf("read answer of %s%s: %w", addr, path, err)
	}
	if t.auth != nil {
		if err := t.auth.verifyAnswer(resp.Header.Get(HeaderPeerSig), nonce, resp.StatusCode, out); err != nil {
			return nil, fmt.Errorf("%s%s: %w", addr, path, err)
		}
	}
	return out, nil
}

// Replicate implements Transport: the request is encoded by the wire
// package's encoder and sent by ReplicateRaw.
func (t *HTTPTransport) Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error) {
	bp := getBuf()
	defer putBuf(bp)
	*bp = wire.AppendReplicateRequest((*bp)[:0], req)
	return t.ReplicateRaw(ctx, addr, *bp)
}

// ReplicateRaw implements RawReplicator: body is a complete replicate
// request.
func (t *HTTPTransport) ReplicateRaw(ctx context.Context, addr string, body []byte) (*ReplicateResponse, error) {
	out, err := t.do(ctx, t.client, addr, PathReplicate, body)
	if err != nil {
		return nil, err
	}
	resp, err := wire.DecodeReplicateResponse(out)
	if err != nil {
		return nil, fmt.Errorf("decode answer of %s%s: %w", addr, PathReplicate, err)
	}
	return resp, nil
}

// Digest implements Transport.
func (t *HTTPTransport) Digest(ctx context.Context, addr string, req *DigestRequest) (*DigestResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	out, err := t.do(ctx, t.bulk, addr, PathDigest, body)
	if err != nil {
		return nil, err
	}
	var resp DigestResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("decode answer of %s%s: %w", addr, PathDigest, err)
	}
	return &resp, nil
}

// hashingReader hashes what it reads.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// Snapshot implements Transport: the answer is decoded as a stream, one
// instance at a time. With Auth the stream's signature arrives in a
// trailer, after the last item, so the items are held until it checks
// out and only then handed to sink: a forged stream changes nothing.
func (t *HTTPTransport) Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.scheme+addr+PathSnapshot, nil)
	if err != nil {
		return false, &PermanentError{Err: err}
	}
	var nonce string
	if t.auth != nil {
		nonce = t.auth.Sign(req, nil)
	}
	resp, err := t.bulk.Do(req) //nolint:bodyclose // drainClose below closes it
	if err != nil {
		return false, err
	}
	defer drainClose(resp.Body)
	if err := statusError(resp); err != nil {
		return false, err
	}
	ready := resp.Header.Get(ReadyHeader) == "true"
	if t.auth == nil {
		return ready, wire.DecodeSnapshot(bufio.NewReaderSize(resp.Body, 256<<10), sink)
	}
	hr := &hashingReader{r: resp.Body, h: sha256.New()}
	var held []SnapshotItem
	if err := wire.DecodeSnapshot(bufio.NewReaderSize(hr, 256<<10), func(it SnapshotItem) error {
		held = append(held, it)
		return nil
	}); err != nil {
		return false, err
	}
	if _, err := io.Copy(io.Discard, hr); err != nil { // the rest of the body, then the trailer
		return false, err
	}
	digest := hex.EncodeToString(hr.h.Sum(nil))
	if err := t.auth.verifyAnswerDigest(resp.Trailer.Get(HeaderPeerSig), nonce, resp.StatusCode, digest); err != nil {
		return false, fmt.Errorf("%s%s: %w", addr, PathSnapshot, err)
	}
	for _, it := range held {
		if err := sink(it); err != nil {
			return ready, err
		}
	}
	return ready, nil
}

func statusError(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	err := fmt.Errorf("peer answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests &&
		resp.StatusCode != http.StatusUnauthorized {
		// 401 is not permanent: a peer whose clock or keys are being
		// fixed accepts the same ops later.
		return &PermanentError{Err: err}
	}
	return err
}

func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}
