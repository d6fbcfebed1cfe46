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
	r := c.Request()
	var query url.Values
	if r.URL.RawQuery != "" { // kratos sends POST parameters in the body only
		var err error
		if query, err = parseQuery(r.URL.RawQuery); err != nil {
			return nil, err
		}
	}
	if r.Method != http.MethodPost || r.Body == nil || r.Body == http.NoBody {
		return query, nil
	}
	max := s.cfg.Limits.MaxBodyBytes
	ct := r.Header.Get(echo.HeaderContentType)
	mt := "application/x-www-form-urlencoded" // no Content-Type: assume a form
	if ct != "" && ct != mt {                 // what kratos sends: no parameters to parse
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return nil, perr("body", "bad Content-Type %s", quoteTrunc(ct))
		}
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, max)
	var body url.Values
	switch mt {
	case "application/x-www-form-urlencoded":
		b, err := readBody(r.Body, r.ContentLength, max)
		if err != nil {
			return nil, bodyReadError(err, max)
		}
		if body, err = parseURLEncoded(b); err != nil {
			return nil, err
		}
	case "multipart/form-data":
		if err := r.ParseMultipartForm(max); err != nil {
			return nil, bodyReadError(err, max)
		}
		defer func() { _ = r.MultipartForm.RemoveAll() }()
		body = url.Values(r.MultipartForm.Value)
	case "application/json":
		return nil, perr("body", "JSON bodies are not accepted; send application/x-www-form-urlencoded")
	default:
		// Like net/http's ParseForm: other bodies carry no parameters.
		return query, nil
	}
	if len(query) == 0 {
		return body, nil
	}
	return mergeForm(body, query), nil
}

// readBody reads a whole (already bounded) body in one allocation when its
// length is announced. The bytes are returned as a string without a copy:
// the buffer is never written again, and the parameters parsed from it are
// substrings of it.
func readBody(body io.Reader, length, max int64) (string, error) {
	n := 512
	if length > 0 {
		n = int(min(length, max)) + 1 // +1: room for the read that sees EOF
	}
	buf := make([]byte, 0, n)
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

// register: POST /discovery/register (spec 4.1).
func (s *Server) register(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseRegister(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	// DirtyTimestamp > 0 is the sender's (a peer, same zone or cross-zone);
	// a client sends none, so the registry stamps now (spec 3.3).
	stored, applied, err := s.reg.Register(p.Instance, p.Latest)
	if err != nil {
		return s.replyWriteError(c, err)
	}
	// Not applied: a newer copy or tombstone is kept (answer still 0, spec
	// 4.1.1); there is nothing new to forward.
	if applied && !p.Replication && s.repl != nil {
		s.repl.Register(stored, p.FromZone)
	}
	return reply(c, wire.CodeOK)
}

// renew: POST /discovery/renew (spec 4.2). data is the renewed instance on
// 0 and -409 (peers adopt it, spec 7.3), null on -404.
func (s *Server) renew(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseRenew(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	ins, err := s.reg.Renew(p.Key, p.Replication, p.Dirty)
	switch code := codeOf(err); code {
	case wire.CodeOK:
		if !p.Replication && s.repl != nil {
			s.repl.Renew(ins, p.FromZone)
		}
		return replyInstance(c, wire.CodeOK, &ins)
	case wire.CodeConflict:
		return replyInstance(c, wire.CodeConflict, &ins)
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
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseCancel(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	var at int64
	if p.Replication || p.FromZone {
		at = p.Latest
	}
	tomb, err := s.reg.Cancel(p.Key, at)
	if err != nil {
		return s.replyWriteError(c, err)
	}
	if !p.Replication && s.repl != nil {
		s.repl.Cancel(tomb, p.FromZone)
	}
	return reply(c, wire.CodeOK)
}

// set: POST /discovery/set (spec 4.4). Everything is validated before
// anything changes (Defect D7): parameters here, instances in the registry.
func (s *Server) set(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseSet(v, s.cfg.Limits)
	if err != nil {
		return replyBadRequest(c, err)
	}
	// The registry checks the instances and changes them in one step; its
	// errors name the offending field first, like ours.
	changed, err := s.reg.Set(p.Req)
	if err != nil {
		return s.replyWriteError(c, err)
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
	switch code {
	case wire.CodeBadRequest:
		return replyBadRequest(c, err)
	case wire.CodeUnavailable:
		s.log.Error("registry write failed", "route", c.Path(), "err", err)
	}
	return reply(c, code)
}

// normalize makes an instance's JSON match what clients expect from answers:
// addrs an array and metadata an object, never null (spec 3.1.3, 3.2.4).
// Instances from the registry are copies, so this edits our own value.
func normalize(in *registry.Instance) *registry.Instance {
	if in.Addrs == nil {
		in.Addrs = []string{}
	}
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	return in
}
