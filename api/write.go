package api

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"unsafe"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// form returns the request's parameters: the query string for every method
// plus, for POST, an urlencoded (or multipart) body, merged per spec 2.2.2.
// The body is bounded by Limits.MaxBodyBytes; a JSON body is rejected
// (spec 2.2.3). Every failure is a *paramError.
func (s *Server) form(c echo.Context) (url.Values, error) {
	v, _, err := s.formBody(c)
	return v, err
}

// formBody is form that also returns the urlencoded body as read (what a
// peer's signature covers).
func (s *Server) formBody(c echo.Context) (url.Values, []byte, error) {
	r := c.Request()
	var query url.Values
	if r.URL.RawQuery != "" { // kratos sends POST parameters in the body only
		var err error
		if query, err = parseQuery(r.URL.RawQuery); err != nil {
			return nil, nil, err
		}
	}
	if r.Method != http.MethodPost || r.Body == nil || r.Body == http.NoBody {
		return query, nil, nil
	}
	max := s.cfg.Limits.MaxBodyBytes
	ct := r.Header.Get(echo.HeaderContentType)
	mt := "application/x-www-form-urlencoded" // no Content-Type: assume a form
	if ct != "" && ct != mt {                 // what kratos sends: no parameters to parse
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, nil, perr("body", "bad Content-Type %s", quoteTrunc(ct))
		}
	}
	// A body read whole by a lean connection is already within max (and
	// only ever urlencoded): its bytes are taken as they are, no second copy.
	lb, lean := r.Body.(*leanBody)
	if !lean {
		r.Body = http.MaxBytesReader(c.Response(), r.Body, max)
	}
	var body url.Values
	var raw []byte
	switch mt {
	case "application/x-www-form-urlencoded":
		var err error
		if lean {
			if body, err = lb.parseForm(); err != nil {
				return nil, nil, err
			}
			raw = lb.b
			break
		}
		b, err := readBody(r.Body, max)
		if err != nil {
			return nil, nil, bodyReadError(err, max)
		}
		if body, err = parseURLEncoded(b); err != nil {
			return nil, nil, err
		}
		raw = unsafe.Slice(unsafe.StringData(b), len(b))
	case "multipart/form-data":
		if err := r.ParseMultipartForm(max); err != nil {
			return nil, nil, bodyReadError(err, max)
		}
		defer func() { _ = r.MultipartForm.RemoveAll() }()
		body = url.Values(r.MultipartForm.Value)
	case "application/json":
		return nil, nil, perr("body", "JSON bodies are not accepted; send application/x-www-form-urlencoded")
	default:
		// Like net/http's ParseForm: other bodies carry no parameters.
		return query, nil, nil
	}
	if len(query) == 0 {
		return body, raw, nil
	}
	return mergeForm(body, query), raw, nil
}

// readBody reads a whole (already bounded) body. The buffer grows with what
// arrives, never from the announced Content-Length, so a client announcing
// a large body and sending it slowly holds nothing. The bytes are returned
// as a string without a copy: the buffer is never written again, and the
// parameters parsed from it are substrings of it.
func readBody(body io.Reader, max int64) (string, error) {
	buf := make([]byte, 0, min(512, max+1))
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		m, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	if len(buf) == 0 {
		return "", nil
	}
	return unsafe.String(&buf[0], len(buf)), nil
}

func bodyReadError(err error, max int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return perr("body", "larger than %d bytes", max)
	}
	return perr("body", "cannot read: %v", err)
}

// writeForm reads a write's parameters and settles who sent it. Peer-only
// parameters (spec 4.0) count only from a node of the cluster; from anyone
// else they are dropped, so the write is a plain client write stamped by
// this node. peer reports a node; admin the admin token.
func (s *Server) writeForm(c echo.Context) (v url.Values, peer, admin bool, err error) {
	v, body, err := s.formBody(c)
	if err != nil {
		return nil, false, false, err
	}
	if hasPeerParams(v) {
		var legacy bool
		if peer, legacy = s.guard.fromPeer(c, body); !peer {
			stripPeerParams(v)
			s.guard.refused(c, "peer_params", "peer-only parameters from a client dropped")
		}
		if legacy {
			// The original forwards a multi-address instance with its
			// addrs comma-joined in one value (Defect D4): split them back,
			// so a joined addr is never stored or spread here.
			if a, ok := v["addrs"]; ok {
				v["addrs"], _ = wire.SplitJoinedAddrs(a)
			}
		}
	}
	return v, peer, s.guard.hasAdmin(c), nil
}

// clientWriteRefused applies the rules for writes that come from clients
// (not peers): infra.discovery is the nodes' own, security.write_cidrs,
// and key ownership (keys are the instances the write touches). It returns
// a non-nil answer error when the write is refused.
func (s *Server) clientWriteRefused(c echo.Context, admin bool, appid string, keys ...registry.Key) (bool, error) {
	if appid == wire.InfraAppID {
		return true, s.guard.refuse(c, "reserved_appid", "appid: "+wire.InfraAppID+" is reserved for discovery nodes")
	}
	if admin {
		return false, nil
	}
	if !s.guard.writeAllowed(c) {
		return true, s.guard.refuse(c, "write_cidr", "source address "+source(c).String()+" may not write (security.write_cidrs)")
	}
	if s.guard.owners {
		src := source(c).String()
		for _, k := range keys {
			if o := s.reg.Owner(k); o != "" && o != src {
				return true, s.guard.refuse(c, "key_owner", "hostname: "+k.Hostname+" is registered from another address; only that address or the admin token may change it")
			}
		}
	}
	return false, nil
}

// register: POST /discovery/register (spec 4.1).
func (s *Server) register(c echo.Context) error {
	v, peer, admin, err := s.writeForm(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseRegister(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	owner := ""
	if !peer {
		if refused, err := s.clientWriteRefused(c, admin, p.Instance.AppID, p.Instance.Key()); refused {
			return err
		}
		owner = source(c).String()
	}
	// DirtyTimestamp > 0 is the sender's (a peer, same zone or cross-zone);
	// a client sends none, so the registry stamps now (spec 3.3).
	if p.Replication || !s.forwards(p.FromZone) { // nothing to forward: no stored copy to build
		applied, err := s.reg.RegisterNoCopy(p.Instance, p.Latest, owner)
		if err != nil {
			return s.replyWriteError(c, err)
		}
		// A peer that appeared while the write was applied still gets
		// it, as it would have had the check come after the write: its
		// startup sync may have read this node before the write.
		if applied && !p.Replication && s.forwards(p.FromZone) {
			if stored, ok := s.reg.Get(p.Instance.Key()); ok {
				s.repl.Register(stored, p.FromZone)
			}
		}
		return reply(c, wire.CodeOK)
	}
	stored, applied, err := s.reg.RegisterFrom(p.Instance, p.Latest, owner)
	if err != nil {
		return s.replyWriteError(c, err)
	}
	// Not applied: a newer copy or tombstone is kept (answer still 0, spec
	// 4.1.1); there is nothing new to forward.
	if applied {
		s.repl.Register(stored, p.FromZone)
	}
	return reply(c, wire.CodeOK)
}

// forwards reports whether a client's register accepted now may reach a
// peer (always, for a Replicator that cannot tell).
func (s *Server) forwards(fromZone bool) bool {
	return s.repl != nil && (s.fwd == nil || s.fwd.Forwards(fromZone))
}

// renew: POST /discovery/renew (spec 4.2). data is the renewed instance on
// 0 and -409 (peers adopt it, spec 7.3), null on -404.
func (s *Server) renew(c echo.Context) error {
	v, peer, admin, err := s.writeForm(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseRenew(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	if !peer {
		if refused, err := s.clientWriteRefused(c, admin, p.Key.AppID, p.Key); refused {
			return err
		}
	}
	// The answer's instance is appended as JSON straight from the record,
	// without a copy (renews are most of a registry's writes), into a
	// pooled buffer: the answer is written (copied) before the handler
	// returns.
	bp := s.answerBuf()
	b, dirty, err := s.reg.RenewAppend(slices.Grow((*bp)[:0], 512)[:instanceHead], p.Key, p.Replication, p.Dirty)
	defer s.putAnswerBuf(bp, b)
	switch code := codeOf(err); code {
	case wire.CodeOK:
		if !p.Replication && s.repl != nil {
			s.repl.Renew(p.Key, dirty, p.FromZone)
		}
		return replyInstance(c, wire.CodeOK, b)
	case wire.CodeConflict:
		return replyInstance(c, wire.CodeConflict, b)
	case wire.CodeNotFound:
		return writeBody(c, wire.CodeNotFound, bodyNotFoundNullData)
	default:
		return s.replyWriteError(c, err)
	}
}

// cancel: POST /discovery/cancel (spec 4.3). A client cancel is stamped now;
// a cancel forwarded by a node carries the sender's latest_timestamp, which
// becomes the tombstone time so an older cancel cannot remove a newer
// registration.
func (s *Server) cancel(c echo.Context) error {
	v, peer, admin, err := s.writeForm(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseCancel(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	if !peer {
		if refused, err := s.clientWriteRefused(c, admin, p.Key.AppID, p.Key); refused {
			return err
		}
	}
	var at int64
	if p.Replication || p.FromZone {
		at = p.Latest
	}
	tomb, err := s.reg.Cancel(p.Key, at)
	if err != nil {
		return s.replyWriteError(c, err)
	}
	if admin {
		s.guard.audit(c, "cancel", "env", p.Key.Env, "appid", p.Key.AppID, "zone", p.Key.Zone, "hostname", p.Key.Hostname)
	}
	if !p.Replication && s.repl != nil {
		s.repl.Cancel(tomb, p.FromZone)
	}
	return reply(c, wire.CodeOK)
}

// set: POST /discovery/set (spec 4.4). Everything is validated before
// anything changes (Defect D7): parameters here, instances in the registry.
// From a client it needs the admin token when one is configured.
func (s *Server) set(c echo.Context) error {
	v, peer, admin, err := s.writeForm(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	if !peer {
		if ok, err := s.guard.requireAdmin(c); !ok {
			return err
		}
	}
	p, err := parseSet(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	if !peer {
		keys := make([]registry.Key, len(p.Req.Hostnames))
		for i, h := range p.Req.Hostnames {
			keys[i] = registry.Key{Env: p.Req.Env, AppID: p.Req.AppID, Zone: p.Req.Zone, Hostname: h}
		}
		if refused, err := s.clientWriteRefused(c, admin, p.Req.AppID, keys...); refused {
			return err
		}
	}
	// The registry checks the instances and changes them in one step; its
	// errors name the offending field first, like ours.
	changed, err := s.reg.Set(p.Req)
	if err != nil {
		return s.replyWriteError(c, err)
	}
	if !peer {
		s.guard.audit(c, "set", "env", p.Req.Env, "appid", p.Req.AppID, "zone", p.Req.Zone, "hostnames", p.Req.Hostnames,
			"statuses", p.Req.Statuses, "changed", len(changed))
	}
	if !p.Replication && s.repl != nil {
		req := p.Req
		// Peers must stamp the same time (spec 4.4.5).
		if req.SetTimestamp == 0 && len(changed) > 0 {
			req.SetTimestamp = changed[0].DirtyTimestamp
		}
		if req.SetTimestamp > 0 {
			s.repl.Set(req, p.FromZone)
		}
	}
	return reply(c, wire.CodeOK)
}

// replyWriteError answers a registry error of a write without data.
func (s *Server) replyWriteError(c echo.Context, err error) error {
	code := codeOf(err)
	switch {
	case code == wire.CodeBadRequest:
		return replyBadRequest(c, err)
	case errors.Is(err, registry.ErrFull):
		// The caps protect the node; the client tries another node.
		return writeBody(c, wire.CodeUnavailable, envelope(wire.CodeUnavailable, err.Error(), nil))
	case code == wire.CodeUnavailable:
		s.log.Error("registry write failed", "route", c.Path(), "err", err)
	}
	return reply(c, code)
}
