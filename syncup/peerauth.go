package syncup

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peer requests are authenticated by an HMAC-SHA256 signature with a key
// derived from the cluster secret (keys.go), in one header:
//
//	X-Discovery-Peer-Auth: v1;key=<key id>;ts=<unix ns>;nonce=<32 hex>;body=<sha256 hex>;sig=<base64url>
//
// The signature covers the method, the request URI, the timestamp, the
// nonce and the body's SHA-256, so a request is accepted once (the nonce
// is remembered for the skew window), only within max_clock_skew of the
// receiver's clock, and only with the body it was signed with. Because the
// body digest is part of the signed header, a request without a valid
// signature is refused before its body is read.
//
// Answers to signed requests are signed too, bound to the request's nonce,
// so a host that intercepts peer traffic cannot slip in a forged -409 copy
// or digest state:
//
//	X-Discovery-Peer-Sig: v1;key=<key id>;body=<sha256 hex>;sig=<base64url>
//
// (a header for replicate and digest answers, an HTTP trailer for snapshot
// streams, whose digest is known only at the end).
const (
	HeaderPeerAuth = "X-Discovery-Peer-Auth"
	HeaderPeerSig  = "X-Discovery-Peer-Sig"
)

// Errors of peer authentication; the handler answers HTTP 401 for each.
var (
	ErrPeerUnauthenticated = errors.New("peer request not authenticated")
	ErrPeerReplay          = errors.New("peer request replayed")
)

// maxNonces bounds the replay cache: only requests with a valid signature
// enter it, so it grows with the peers' request rate within the skew
// window, never with an attacker's.
const maxNonces = 1 << 20

// PeerAuth signs requests to peers and verifies those from peers with the
// keys of the cluster secret. Safe for concurrent use.
type PeerAuth struct {
	keys []signKey // primary (signs) first; every one verifies
	skew time.Duration
	now  func() time.Time

	mu     sync.Mutex // guards seen and order
	seen   map[string]int64
	order  []nonceEntry // insertion order, for expiry
	oldest int
}

type nonceEntry struct {
	nonce  string
	expiry int64
}

func newPeerAuth(kr *keyring, skew time.Duration) *PeerAuth {
	if kr == nil {
		return nil
	}
	return &PeerAuth{keys: kr.sign, skew: skew, now: time.Now, seen: map[string]int64{}}
}

func bodyDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

func (a *PeerAuth) mac(k signKey, parts ...string) string {
	m := hmac.New(sha256.New, k.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{'\n'})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (a *PeerAuth) key(id string) (signKey, bool) {
	for _, k := range a.keys {
		if k.id == id {
			return k, true
		}
	}
	return signKey{}, false
}

// requestHeader returns the auth header value for a request and its nonce.
func (a *PeerAuth) requestHeader(method, uri string, body []byte) (value, nonce string) {
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce = hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(a.now().UnixNano(), 10)
	digest := bodyDigest(body)
	k := a.keys[0]
	sig := a.mac(k, "discovery-peer-v1", method, uri, ts, nonce, digest)
	return "v1;key=" + k.id + ";ts=" + ts + ";nonce=" + nonce + ";body=" + digest + ";sig=" + sig, nonce
}

// Sign adds the auth header to req (body is what it will send) and returns
// the nonce its answer is bound to.
func (a *PeerAuth) Sign(req *http.Request, body []byte) string {
	v, nonce := a.requestHeader(req.Method, req.URL.RequestURI(), body)
	req.Header.Set(HeaderPeerAuth, v)
	return nonce
}

// peerClaim is a verified request header: who signed it and the body
// digest it vouches for.
type peerClaim struct {
	key    signKey
	nonce  string
	digest string
}

func parseAuthFields(v string) map[string]string {
	fields := map[string]string{}
	for i, part := range strings.Split(v, ";") {
		if i == 0 {
			fields["version"] = part
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil
		}
		fields[k] = val
	}
	return fields
}

// verifyHeader checks r's auth header (key, signature, clock skew, replay)
// for the request URI uri, without reading the body; the body is checked
// against the claim later.
func (a *PeerAuth) verifyHeader(r *http.Request, uri string) (peerClaim, error) {
	v := r.Header.Get(HeaderPeerAuth)
	if v == "" {
		return peerClaim{}, fmt.Errorf("%w: no %s header", ErrPeerUnauthenticated, HeaderPeerAuth)
	}
	f := parseAuthFields(v)
	if f == nil || f["version"] != "v1" || f["ts"] == "" || len(f["nonce"]) != 32 || len(f["body"]) != 64 {
		return peerClaim{}, fmt.Errorf("%w: malformed %s header", ErrPeerUnauthenticated, HeaderPeerAuth)
	}
	k, ok := a.key(f["key"])
	if !ok {
		return peerClaim{}, fmt.Errorf("%w: unknown key %q", ErrPeerUnauthenticated, f["key"])
	}
	want := a.mac(k, "discovery-peer-v1", r.Method, uri, f["ts"], f["nonce"], f["body"])
	if !hmac.Equal([]byte(want), []byte(f["sig"])) {
		return peerClaim{}, fmt.Errorf("%w: bad signature", ErrPeerUnauthenticated)
	}
	ts, err := strconv.ParseInt(f["ts"], 10, 64)
	if err != nil {
		return peerClaim{}, fmt.Errorf("%w: bad timestamp", ErrPeerUnauthenticated)
	}
	now := a.now().UnixNano()
	if d := time.Duration(now - ts); d > a.skew || d < -a.skew {
		return peerClaim{}, fmt.Errorf("%w: timestamp %s off this node's clock (allowed %s)", ErrPeerUnauthenticated, d.Round(time.Millisecond), a.skew)
	}
	if err := a.remember(f["nonce"], now); err != nil {
		return peerClaim{}, err
	}
	return peerClaim{key: k, nonce: f["nonce"], digest: f["body"]}, nil
}

// remember records a nonce for the skew window and refuses one seen before.
func (a *PeerAuth) remember(nonce string, now int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.oldest < len(a.order) && a.order[a.oldest].expiry < now {
		delete(a.seen, a.order[a.oldest].nonce)
		a.order[a.oldest] = nonceEntry{}
		a.oldest++
	}
	if a.oldest > len(a.order)/2 && a.oldest > 1024 {
		a.order = append(a.order[:0], a.order[a.oldest:]...)
		a.oldest = 0
	}
	if _, dup := a.seen[nonce]; dup {
		return ErrPeerReplay
	}
	if len(a.seen) >= maxNonces {
		return fmt.Errorf("%w: replay cache full", ErrPeerUnauthenticated)
	}
	exp := now + 2*int64(a.skew)
	a.seen[nonce] = exp
	a.order = append(a.order, nonceEntry{nonce, exp})
	return nil
}

// checkBody compares body with the digest the signature vouches for.
func (c peerClaim) checkBody(body []byte) error {
	if !hmac.Equal([]byte(bodyDigest(body)), []byte(c.digest)) {
		return fmt.Errorf("%w: body does not match its signature", ErrPeerUnauthenticated)
	}
	return nil
}

// Verify authenticates a request whose body was already read (public
// routes with peer-only parameters).
func (a *PeerAuth) Verify(r *http.Request, body []byte) error {
	c, err := a.verifyHeader(r, r.URL.RequestURI())
	if err != nil {
		return err
	}
	return c.checkBody(body)
}

// FromPeer reports whether r (whose body was read as body) is signed by a
// node of the cluster: the HTTP layer's check for public requests that
// carry peer-only parameters.
func (a *PeerAuth) FromPeer(r *http.Request, body []byte) bool {
	return a != nil && a.Verify(r, body) == nil
}

// NewPeerAuth builds the request signer and verifier of a cluster secret
// (and the secrets also accepted), for clients of the peer protocol other
// than a node (tools, tests).
func NewPeerAuth(secret string, accept []string, skew time.Duration) (*PeerAuth, error) {
	kr, err := newKeyring(Config{Secret: secret, AcceptSecrets: accept})
	if err != nil {
		return nil, err
	}
	if kr == nil {
		return nil, errors.New("syncup: NewPeerAuth needs a secret")
	}
	return newPeerAuth(kr, skew), nil
}

// NewPeerAuthWithClock is NewPeerAuth with the clock that stamps and
// checks requests (tools that replay a capture, tests of the skew bound).
func NewPeerAuthWithClock(secret string, accept []string, skew time.Duration, now func() time.Time) (*PeerAuth, error) {
	a, err := NewPeerAuth(secret, accept, skew)
	if err != nil {
		return nil, err
	}
	a.now = now
	return a, nil
}

// answerSig returns the signature value of an answer to the request with
// nonce, signed with the key that request used.
func (a *PeerAuth) answerSig(k signKey, nonce string, status int, digest string) string {
	sig := a.mac(k, "discovery-peer-answer-v1", nonce, strconv.Itoa(status), digest)
	return "v1;key=" + k.id + ";body=" + digest + ";sig=" + sig
}

// verifyAnswer checks an answer's signature value for the request nonce.
func (a *PeerAuth) verifyAnswer(v, nonce string, status int, body []byte) error {
	return a.verifyAnswerDigest(v, nonce, status, bodyDigest(body))
}

// verifyAnswerDigest is verifyAnswer for a body whose digest is known.
func (a *PeerAuth) verifyAnswerDigest(v, nonce string, status int, digest string) error {
	f := parseAuthFields(v)
	if f == nil || f["version"] != "v1" {
		return fmt.Errorf("peer answer not authenticated: missing or malformed %s", HeaderPeerSig)
	}
	k, ok := a.key(f["key"])
	if !ok {
		return fmt.Errorf("peer answer not authenticated: unknown key %q", f["key"])
	}
	want := a.answerSig(k, nonce, status, digest)
	if !hmac.Equal([]byte(want), []byte(v)) {
		return errors.New("peer answer not authenticated: bad signature")
	}
	return nil
}
