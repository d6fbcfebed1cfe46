package api

import (
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
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
	return writeBody(c, wire.CodeOK, okDataPrefix, res[0].JSON, closeBrace)
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
	return writeBody(c, wire.CodeOK, appMapBody(`{"code":0,"message":"0","ttl":1,"data":{`, res, `}}`)...)
}

// fetchAll: GET /discovery/fetch/all (spec 4.5): appid → every instance of
// every env, zone and status, with original timestamps.
func (s *Server) fetchAll(c echo.Context) error {
	all := s.reg.FetchAll()
	if all == nil {
		all = map[string][]*registry.Instance{}
	}
	for _, list := range all {
		for _, in := range list {
			normalize(in)
		}
	}
	return s.replyData(c, wire.CodeOK, all)
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
