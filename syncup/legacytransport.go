package syncup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// LegacyTransport speaks to a node of the original bilibili/discovery,
// which has no internal endpoints: every op goes to the public endpoint of
// its kind in the public replication form (spec 7.2: a POST form with
// replication, from_zone, dirty_timestamp, set_timestamp; addrs repeated,
// never comma-joined), one request per op, in order; a snapshot is its
// GET /discovery/fetch/all. It has no digests (Digest fails with
// ErrUnsupported): anti-entropy against a legacy node is the periodic pull.
//
// Requests are signed when Auth is set, which the original ignores; a node
// of ours reached by mistake through a legacy address then still takes
// them as a peer's.
type LegacyTransport struct {
	client *http.Client
	max    int64
	auth   *PeerAuth
}

var _ Transport = (*LegacyTransport)(nil)

// ErrUnsupported is the answer of a transport to a request its peer
// cannot serve (a legacy node has no digest route).
var ErrUnsupported = errors.New("not supported by this peer")

// NewLegacyTransport builds a LegacyTransport; cfg.TLS is not used (the
// original speaks plain HTTP).
func NewLegacyTransport(cfg HTTPTransportConfig) *LegacyTransport {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 1 << 30 // a fetch/all of a large registry
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	return &LegacyTransport{client: &http.Client{Transport: tr}, max: cfg.MaxResponseBytes, auth: cfg.Auth}
}

// CloseIdleConnections closes kept-alive connections (shutdown).
func (t *LegacyTransport) CloseIdleConnections() { t.client.CloseIdleConnections() }

// Replicate sends the ops one by one. A transport failure fails the batch
// (the link sends it again: every op is idempotent, spec 7.2.3); a code is
// the op's result.
func (t *LegacyTransport) Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error) {
	out := &ReplicateResponse{Results: make([]OpResult, 0, len(req.Ops))}
	for i := range req.Ops {
		path, form, err := legacyForm(&req.Ops[i])
		if err != nil {
			out.Results = append(out.Results, OpResult{Code: CodeInvalid, Message: err.Error()})
			continue
		}
		env, err := t.post(ctx, addr, path, form)
		if err != nil {
			return nil, err
		}
		r := OpResult{Code: env.Code, Applied: env.Code == CodeOK}
		if env.Code != CodeOK {
			r.Message = env.Message
		}
		if env.Code == CodeConflict && req.Ops[i].Kind == OpRenew && len(env.Data) > 0 {
			var ins wire.Instance
			if json.Unmarshal(env.Data, &ins) == nil {
				wire.RepairJoinedAddrs(&ins)
				r.Instance = &ins
			}
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

// legacyForm is the public request of one op (spec 7.2, forwarded
// parameters of the original's registry/node.go).
func legacyForm(op *Op) (string, url.Values, error) {
	v := url.Values{}
	v.Set("replication", strconv.FormatBool(op.Replication))
	v.Set("from_zone", strconv.FormatBool(op.FromZone))
	key := func(k wire.Key) {
		v.Set("zone", k.Zone)
		v.Set("env", k.Env)
		v.Set("appid", k.AppID)
		v.Set("hostname", k.Hostname)
	}
	ts := func(name string, n int64) { v.Set(name, strconv.FormatInt(n, 10)) }
	switch op.Kind {
	case OpRegister, OpImport:
		in := op.Instance
		if in == nil {
			return "", nil, errors.New("register without instance")
		}
		key(in.Key())
		v.Set("region", in.Region)
		v["addrs"] = append([]string(nil), in.Addrs...) // repeated (7.2.1), never joined
		v.Set("status", strconv.FormatUint(uint64(in.Status), 10))
		v.Set("version", in.Version)
		if len(in.Metadata) > 0 {
			b, err := json.Marshal(in.Metadata)
			if err != nil {
				return "", nil, err
			}
			v.Set("metadata", string(b))
		}
		ts("reg_timestamp", in.RegTimestamp)
		ts("dirty_timestamp", in.DirtyTimestamp)
		ts("latest_timestamp", in.LatestTimestamp)
		if op.Kind == OpImport {
			// The original has no import: a replicated register with the
			// copy's dirty_timestamp keeps the newer copy on either side.
			v.Set("replication", "true")
		}
		return "/discovery/register", v, nil
	case OpRenew:
		if op.Key == nil {
			return "", nil, errors.New("renew without key")
		}
		key(*op.Key)
		ts("dirty_timestamp", op.DirtyTimestamp)
		return "/discovery/renew", v, nil
	case OpCancel:
		if op.Key == nil {
			return "", nil, errors.New("cancel without key")
		}
		key(*op.Key)
		ts("latest_timestamp", op.DirtyTimestamp)
		return "/discovery/cancel", v, nil
	case OpSet:
		s := op.Set
		if s == nil {
			return "", nil, errors.New("set without set")
		}
		v.Set("zone", s.Zone)
		v.Set("env", s.Env)
		v.Set("appid", s.AppID)
		v["hostname"] = append([]string(nil), s.Hostnames...)
		for _, st := range s.Statuses {
			v.Add("status", strconv.FormatUint(uint64(st), 10))
		}
		for _, m := range s.Metadata {
			b, err := json.Marshal(m)
			if err != nil {
				return "", nil, err
			}
			v.Add("metadata", string(b))
		}
		ts("set_timestamp", s.SetTimestamp)
		return "/discovery/set", v, nil
	}
	return "", nil, fmt.Errorf("unknown op %q", op.Kind)
}

// legacyEnvelope is the part of an answer the sender reads.
type legacyEnvelope struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (t *LegacyTransport) post(ctx context.Context, addr, path string, form url.Values) (*legacyEnvelope, error) {
	body := []byte(form.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, &PermanentError{Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header[idempotencyKey] = idempotent
	if t.auth != nil {
		t.auth.Sign(req, body)
	}
	resp, err := t.client.Do(req) //nolint:bodyclose // drainClose below closes it
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("legacy node %s answered HTTP %d to %s: %s", addr, resp.StatusCode, path, strings.TrimSpace(string(msg)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var env legacyEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		// The original answers an empty body to some bad requests (D5):
		// an answer about this op, not a transport failure.
		return &legacyEnvelope{Code: CodeServerFail, Message: fmt.Sprintf("not a discovery answer: %.100q", b)}, nil
	}
	return &env, nil
}

// Snapshot streams the legacy node's GET /discovery/fetch/all (spec 4.5:
// appid -> instances, all envs and zones, all timestamps; no tombstones)
// into sink, instance by instance, each with RepairJoinedAddrs applied. A
// legacy node that answers is taken as ready (an original in init-protect
// answers code -500: an error here).
func (t *LegacyTransport) Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (bool, error) {
	err := t.fetchAll(ctx, addr, func(ins wire.Instance, _ bool) error { return sink(SnapshotItem{Instance: &ins}) })
	return err == nil, err
}

// fetchAll streams addr's fetch/all into sink, each instance repaired by
// RepairJoinedAddrs; joined tells that it needed the repair.
func (t *LegacyTransport) fetchAll(ctx context.Context, addr string, sink func(ins wire.Instance, joined bool) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/discovery/fetch/all", nil)
	if err != nil {
		return err
	}
	if t.auth != nil {
		t.auth.Sign(req, nil)
	}
	resp, err := t.client.Do(req) //nolint:bodyclose // drainClose below closes it
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("legacy node %s answered HTTP %d to fetch/all", addr, resp.StatusCode)
	}
	if err := decodeFetchAll(io.LimitReader(resp.Body, t.max), sink); err != nil {
		return fmt.Errorf("legacy node %s fetch/all: %w", addr, err)
	}
	return nil
}

// decodeFetchAll walks {"code":0,...,"data":{appid:[instance,...],...}}
// with a token decoder, one instance at a time, so memory stays bounded
// by one instance whatever the registry's size: the decoder may read at
// most wire.MaxSnapshotItem past what it has consumed, so one huge value
// (an instance, or a field skipped whole) is refused rather than buffered.
func decodeFetchAll(r io.Reader, sink func(wire.Instance, bool) error) error {
	w := &aheadLimit{r: r}
	dec := json.NewDecoder(w)
	w.dec = dec
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	code, sawData := 0, false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case "code":
			if err := dec.Decode(&code); err != nil {
				return fmt.Errorf("code: %w", err)
			}
			if code != 0 {
				return fmt.Errorf("answered code %d", code)
			}
		case "data":
			sawData = true
			if err := decodeApps(dec, sink); err != nil {
				return err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return err
			}
		}
	}
	if !sawData {
		return errors.New("answer without data")
	}
	return nil
}

func decodeApps(dec *json.Decoder, sink func(wire.Instance, bool) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil { // "data":null: an empty registry
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("data: want an object, got %v", tok)
	}
	for dec.More() {
		if _, err := dec.Token(); err != nil { // the appid key
			return err
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if tok == nil {
			continue
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return fmt.Errorf("data: want an array of instances, got %v", tok)
		}
		for dec.More() {
			var ins wire.Instance
			if err := dec.Decode(&ins); err != nil {
				return fmt.Errorf("instance: %w", err)
			}
			joined := wire.RepairJoinedAddrs(&ins)
			if err := sink(ins, joined); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // ]
			return err
		}
	}
	_, err = dec.Token() // }
	return err
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}

// Digest is not served by a legacy node.
func (t *LegacyTransport) Digest(context.Context, string, *DigestRequest) (*DigestResponse, error) {
	return nil, fmt.Errorf("digest: %w", ErrUnsupported)
}

// aheadLimit refuses to feed a json.Decoder more than wire.MaxSnapshotItem
// bytes beyond the input it has consumed (InputOffset): a decoder buffers
// a whole value before decoding it.
type aheadLimit struct {
	r    io.Reader
	dec  *json.Decoder
	read int64
}

var errValueTooLarge = fmt.Errorf("a value larger than %d bytes", wire.MaxSnapshotItem)

func (a *aheadLimit) Read(p []byte) (int, error) {
	room := a.dec.InputOffset() + wire.MaxSnapshotItem - a.read
	if room <= 0 {
		return 0, errValueTooLarge
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := a.r.Read(p)
	a.read += int64(n)
	return n, err
}
