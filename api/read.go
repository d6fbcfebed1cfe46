package api

import (
	"bufio"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
)

// fetch: GET /discovery/fetch (spec 4.6). Unknown app or zone: -404 with
// "data":null. The InstanceInfo is the registry's shared encoding, written
// as is between the envelope's framing (no copy, no per-request encode).
func (s *Server) fetch(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseFetch(v, s.cfg.Limits, false)
	if err != nil {
		return replyBadRequest(c, err)
	}
	res := s.reg.FetchEncoded(p.Env, p.Zone, p.Status, p.AppIDs)
	if len(res) == 0 {
		return writeBody(c, wire.CodeNotFound, bodyNotFoundNullData)
	}
	return s.writeJoined(c, wire.CodeOK, okDataPrefix, res[0].JSON, closeBrace)
}

// fetchs: GET /discovery/fetchs (spec 4.7). Unknown appids are left out;
// the code is 0 even when none is found ("data":{}). Appids are answered
// in sorted order, once each (as encoding/json orders a map).
func (s *Server) fetchs(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseFetch(v, s.cfg.Limits, true)
	if err != nil {
		return replyBadRequest(c, err)
	}
	slices.Sort(p.AppIDs) // ours: parsed for this request
	ids := slices.Compact(p.AppIDs)
	res := s.reg.FetchEncoded(p.Env, p.Zone, p.Status, ids)
	return s.writeJoined(c, wire.CodeOK, appMapBody(`{"code":0,"message":"0","ttl":1,"data":{`, res, `}}`)...)
}

// fetchAll: GET /discovery/fetch/all (spec 4.5): appid → every instance of
// every env, zone and status, with original timestamps. It holds the whole
// registry, metadata included: with an admin token configured only peers
// (and legacy nodes) and the token get it. The answer is streamed app by
// app (bounded memory whatever the registry's size), at most two at once.
func (s *Server) fetchAll(c echo.Context) error {
	if peer, _ := s.guard.fromPeer(c, nil); !peer {
		if ok, err := s.guard.requireAdmin(c); !ok {
			return err
		}
		if s.guard.token != nil {
			s.guard.audit(c, "fetch_all")
		}
	}
	select {
	case s.fetchAllSem <- struct{}{}:
		defer func() { <-s.fetchAllSem }()
	default:
		return writeBody(c, wire.CodeUnavailable, envelope(wire.CodeUnavailable, "fetch/all: two are already being answered; retry", nil))
	}
	w := c.Response()
	h := w.Header()
	h[echo.HeaderContentType] = hdrContentTypeJSON
	h[headerKratosCode] = stdAnswerOf(wire.CodeOK).header
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 0, 4<<10)
	buf = append(buf, `{"code":0,"message":"0","ttl":1,"data":{`...)
	first := true
	for _, appid := range s.reg.AppIDs() {
		list := s.reg.AppInstances(appid)
		if len(list) == 0 {
			continue // went away since AppIDs
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = wire.AppendString(buf, appid)
		buf = append(buf, ':', '[')
		for j := range list {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = list[j].AppendJSON(buf)
		}
		buf = append(buf, ']')
		if _, err := bw.Write(buf); err != nil {
			return nil // the client went away
		}
		buf = buf[:0]
	}
	buf = append(buf, '}', '}')
	if _, err := bw.Write(buf); err != nil {
		return nil
	}
	return bw.Flush()
}

// nodesHandler: GET /discovery/nodes (spec 4.10): same-zone nodes, self
// included.
func (s *Server) nodesHandler(c echo.Context) error {
	var list []wire.Node
	if s.nodes != nil {
		list = s.nodes()
	} else {
		list = []wire.Node{s.self}
	}
	if list == nil {
		list = []wire.Node{}
	}
	return s.replyData(c, wire.CodeOK, list)
}
