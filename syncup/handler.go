package syncup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// handler serves the peer endpoints (spec 10.1): replicate batches, applied
// op by op (an original write from another zone is also forwarded inside
// this zone), snapshot streams and digest comparisons. Every method is safe
// for concurrent use.
type handler struct {
	cfg   Config
	reg   Registry
	repl  *replicator
	recs  *records
	ready func() bool
	met   *metrics
	log   *slog.Logger
	// auth verifies every request (nil without a secret). Without it, open
	// says whether unauthenticated peers are taken at all (cluster.insecure);
	// a node with neither takes no peer request.
	auth *PeerAuth
	open bool
	// sem bounds the peer requests served at once.
	sem chan struct{}
}

// RefusedHeader names why a peer request was refused (HTTP 401 or 503), for
// the HTTP layer's refusal metric and log.
const RefusedHeader = "X-Discovery-Refused"

// errBadRequest marks a payload a peer should not resend (HTTP 400).
var errBadRequest = errors.New("bad request")

// errNotReady refuses an anti-entropy round while the startup sync runs
// (HTTP 503, retried at the peer's next round): the sync brings the state,
// and the peer would otherwise push its whole registry beside it.
var errNotReady = errors.New("not ready: startup sync in progress")

// replicate applies a batch from a peer, op by op. A replicated op is
// applied and never forwarded. An "original" op from another zone is
// applied and forwarded to our own zone only, marked replicated: it can
// therefore travel at most zone → zone → peer, and never back (spec 7.2).
func (h *handler) replicate(_ context.Context, req *ReplicateRequest) (*ReplicateResponse, error) {
	if err := req.Validate(h.cfg.MaxBatchOps); err != nil {
		return nil, errors.Join(errBadRequest, err)
	}
	resp := &ReplicateResponse{Results: make([]OpResult, len(req.Ops))}
	for i := range req.Ops {
		h.met.countReceived(&req.Ops[i])
		resp.Results[i] = h.apply(&req.Ops[i])
	}
	return resp, nil
}

func (h *handler) apply(op *Op) OpResult {
	// An original write from another zone is forwarded inside our zone
	// only (forward with crossZone false).
	forward := !op.Replication
	switch op.Kind {
	case OpRegister:
		if h.recs.own(op.Instance.Key(), op.Instance.DirtyTimestamp) {
			return OpResult{Code: CodeOK}
		}
		if !forward { // a replicated op goes no further: no stored copy to build
			applied, err := h.reg.RegisterNoCopy(*op.Instance, op.Instance.LatestTimestamp, op.Owner)
			if err != nil {
				return errResult(err)
			}
			return OpResult{Code: CodeOK, Applied: applied}
		}
		stored, applied, err := h.reg.RegisterFrom(*op.Instance, op.Instance.LatestTimestamp, op.Owner)
		if err != nil {
			return errResult(err)
		}
		if stored.Hostname != "" { // zero when a tombstone blocked it: nothing to forward
			h.repl.forward(Op{Kind: OpRegister, Instance: &stored, Owner: op.Owner}, false) // stored is a fresh copy
		}
		return OpResult{Code: CodeOK, Applied: applied}
	case OpImport:
		return OpResult{Code: CodeOK, Applied: h.recs.admit(*op.Instance)}
	case OpRenew:
		// No copy of the instance unless it conflicts: a replicated renew
		// reaches every peer, for every instance, every 30 s.
		dirty, conflict, err := h.reg.RenewNoCopy(*op.Key, true, op.DirtyTimestamp)
		switch {
		case err == nil:
			if forward {
				h.repl.forward(Op{Kind: OpRenew, Key: op.Key, DirtyTimestamp: dirty}, false)
			}
			return OpResult{Code: CodeOK}
		case errors.Is(err, registry.ErrConflict):
			return OpResult{Code: CodeConflict, Message: "receiver holds a newer copy", Instance: conflict}
		default:
			return errResult(err)
		}
	case OpCancel:
		if h.recs.own(*op.Key, op.DirtyTimestamp) {
			return OpResult{Code: CodeOK}
		}
		t, err := h.reg.Cancel(*op.Key, op.DirtyTimestamp)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return errResult(err)
		}
		if forward {
			if t.At == 0 {
				t = registry.Tombstone{Key: *op.Key, At: op.DirtyTimestamp}
			}
			h.repl.forward(Op{Kind: OpCancel, Key: op.Key, DirtyTimestamp: t.At}, false)
		}
		if err != nil {
			return errResult(err)
		}
		return OpResult{Code: CodeOK, Applied: true}
	case OpSet:
		if _, err := h.reg.Set(setRequest(op.Set)); err != nil {
			return errResult(err)
		}
		if forward {
			h.repl.forward(Op{Kind: OpSet, Set: op.Set}, false)
		}
		return OpResult{Code: CodeOK}
	}
	return OpResult{Code: CodeInvalid, Message: "unknown op"}
}

func errResult(err error) OpResult {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return OpResult{Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, registry.ErrConflict):
		return OpResult{Code: CodeConflict, Message: err.Error()}
	case errors.Is(err, registry.ErrInvalid):
		return OpResult{Code: CodeInvalid, Message: err.Error()}
	}
	return OpResult{Code: CodeServerFail, Message: err.Error()}
}

// snapshot streams the full state: instances, then tombstones.
func (h *handler) snapshot(ctx context.Context, sink func(SnapshotItem) error) error {
	s := h.reg.Snapshot()
	for i := range s.Instances {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := sink(SnapshotItem{Instance: &s.Instances[i]}); err != nil {
			return err
		}
	}
	for i := range s.Tombstones {
		if err := sink(SnapshotItem{Tombstone: &s.Tombstones[i]}); err != nil {
			return err
		}
	}
	return nil
}

// digest compares the peer's digests with ours and answers the apps that
// differ (present on one side only, or different versions) with our state
// of them.
func (h *handler) digest(_ context.Context, req *DigestRequest) (*DigestResponse, error) {
	if !h.ready() {
		return nil, errNotReady
	}
	theirs := make(map[registry.AppKey]uint64, len(req.Digests))
	for i, d := range req.Digests {
		if d.Env == "" || d.AppID == "" {
			return nil, errors.Join(errBadRequest, fmt.Errorf("digests[%d]: env and appid are required", i))
		}
		theirs[registry.AppKey{Env: d.Env, AppID: d.AppID}] = d.Digest
	}
	diff := diffDigests(h.reg.AppDigests(), theirs)
	apps, state := boundedState(h.reg, diff, h.cfg.MaxRepairInstances)
	resp := &DigestResponse{Apps: apps, State: state}
	return resp, nil
}

// boundedState returns the state of the first apps of diff whose
// instances and tombstones stay within budget (at least one app, so every
// round makes progress), and those apps. diff comes from map iteration, so
// each round starts elsewhere.
func boundedState(reg Registry, diff []registry.AppKey, budget int) ([]registry.AppKey, registry.Snapshot) {
	var out registry.Snapshot
	n := 0
	for i, k := range diff {
		st := reg.AppState([]registry.AppKey{k})
		size := len(st.Instances) + len(st.Tombstones)
		if i > 0 && n+size > budget {
			return diff[:i], out
		}
		n += size
		out.Instances = append(out.Instances, st.Instances...)
		out.Tombstones = append(out.Tombstones, st.Tombstones...)
	}
	if diff == nil {
		diff = []registry.AppKey{}
	}
	return diff, out
}

func diffDigests(mine, theirs map[registry.AppKey]uint64) []registry.AppKey {
	var diff []registry.AppKey
	for k, d := range mine {
		if td, ok := theirs[k]; !ok || td != d {
			diff = append(diff, k)
		}
	}
	for k := range theirs {
		if _, ok := mine[k]; !ok {
			diff = append(diff, k)
		}
	}
	return diff
}

// ServeHTTP serves the internal endpoints (mounted at /discovery/internal/;
// the paths are also accepted with that prefix stripped). Every request is
// authenticated first (before its body is read), then takes one of
// max_peer_requests slots; every answer to an authenticated request is
// signed.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !strings.HasPrefix(path, "/discovery/internal/") {
		path = "/discovery/internal" + path
	}
	method := http.MethodPost
	switch path {
	case PathReplicate, PathDigest:
	case PathSnapshot:
		method = http.MethodGet
	default:
		httpError(w, http.StatusNotFound, "unknown internal endpoint "+r.URL.Path)
		return
	}
	if !allow(w, r, method) {
		return
	}
	var claim peerClaim
	switch {
	case h.auth != nil:
		var err error
		uri := path // signed as sent: the full path, whatever prefix the mux stripped
		if r.URL.RawQuery != "" {
			uri += "?" + r.URL.RawQuery
		}
		if claim, err = h.auth.verifyHeader(r, uri); err != nil {
			reason := "peer_auth"
			if errors.Is(err, ErrPeerReplay) {
				reason = "peer_replay"
			}
			refuse(w, http.StatusUnauthorized, reason, err.Error())
			return
		}
	case !h.open:
		refuse(w, http.StatusUnauthorized, "no_secret", "this node has no cluster.secret: it takes no peer requests")
		return
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		refuse(w, http.StatusServiceUnavailable, "peer_busy", fmt.Sprintf("more than %d peer requests at once; retry", cap(h.sem)))
		return
	}
	var body []byte
	if method == http.MethodPost {
		bp := getBuf()
		defer putBuf(bp)
		var err error
		body, err = readAll((*bp)[:0], r.Body, r.ContentLength, h.cfg.MaxBodyBytes)
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
	}
	if h.auth != nil { // a GET has no body: the signature must vouch for none
		if err := claim.checkBody(body); err != nil {
			refuse(w, http.StatusUnauthorized, "peer_auth", err.Error())
			return
		}
	}
	switch path {
	case PathReplicate:
		h.serveReplicate(w, r, body, claim)
	case PathDigest:
		var req DigestRequest
		if err := json.Unmarshal(body, &req); err != nil {
			httpError(w, http.StatusBadRequest, "body: invalid JSON: "+err.Error())
			return
		}
		if len(req.Digests) > h.cfg.MaxDigests {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("digests: at most %d, got %d", h.cfg.MaxDigests, len(req.Digests)))
			return
		}
		resp, err := h.digest(r.Context(), &req)
		if err != nil {
			h.answer(w, nil, err)
			return
		}
		out, err := json.Marshal(resp)
		if err != nil {
			h.answer(w, nil, err)
			return
		}
		h.writeSigned(w, claim, append(out, '\n'))
	case PathSnapshot:
		h.serveSnapshot(w, r, claim)
	}
}

// refuse answers a refused peer request, naming the reason for the HTTP
// layer's refusal metric.
func refuse(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set(RefusedHeader, reason)
	httpError(w, code, msg)
}

// writeSigned answers 200 with body, signed for the request of claim.
func (h *handler) writeSigned(w http.ResponseWriter, claim peerClaim, body []byte) {
	hdr := w.Header()
	hdr[contentType] = jsonType
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	if h.auth != nil {
		hdr.Set(HeaderPeerSig, h.auth.answerSig(claim.key, claim.nonce, http.StatusOK, bodyDigest(body)))
	}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(body); err != nil {
		h.log.Debug("write answer", "err", err)
	}
}

// serveReplicate decodes a replicate batch (wire's decoder), applies it
// and answers by wire's encoder.
func (h *handler) serveReplicate(w http.ResponseWriter, r *http.Request, body []byte, claim peerClaim) {
	var req ReplicateRequest
	if err := wire.DecodeReplicateRequest(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "body: invalid JSON: "+err.Error())
		return
	}
	resp, err := h.replicate(r.Context(), &req)
	if err != nil {
		h.answer(w, nil, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	*out = wire.AppendReplicateResponse((*out)[:0], resp)
	*out = append(*out, '\n')
	h.writeSigned(w, claim, *out)
}

// hashingWriter hashes what it writes.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	return n, err
}

// serveSnapshot streams the snapshot; its signature follows as a trailer.
func (h *handler) serveSnapshot(w http.ResponseWriter, r *http.Request, claim peerClaim) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(ReadyHeader, strconv.FormatBool(h.ready()))
	if h.auth != nil {
		w.Header().Set("Trailer", HeaderPeerSig)
	}
	w.WriteHeader(http.StatusOK)
	hw := &hashingWriter{w: w, h: sha256.New()}
	bw := bufio.NewWriterSize(hw, 256<<10)
	if err := wire.EncodeSnapshot(bw, func(sink func(SnapshotItem) error) error {
		return h.snapshot(r.Context(), sink)
	}); err != nil {
		h.log.Debug("snapshot stream aborted", "err", err)
		return
	}
	if h.auth != nil {
		w.Header().Set(HeaderPeerSig, h.auth.answerSig(claim.key, claim.nonce, http.StatusOK, hex.EncodeToString(hw.h.Sum(nil))))
	}
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	httpError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed, use "+method)
	return false
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
		h.log.Debug("write answer", "err", err)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

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
// beyond). The buffer grows with what arrives, never from a declared
// length: a peer announcing a huge Content-Length and sending slowly pins
// nothing.
func readAll(b []byte, r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return b, errTooLarge{limit}
	}
	for {
		if len(b) == cap(b) {
			b = append(b, make([]byte, max(cap(b), 4<<10))...)[:len(b)]
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
