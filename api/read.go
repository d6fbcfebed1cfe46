package api

import (
	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/registry"
)

// fetch: GET /discovery/fetch (spec 4.6). Unknown app or zone: -404 with
// "data":null.
func (s *Server) fetch(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseFetch(v, s.cfg.Limits, false)
	if err != nil {
		return replyBadRequest(c, err)
	}
	info, err := s.reg.Fetch(p.Env, p.AppIDs[0], p.Zone, p.Status)
	if err != nil {
		code := codeOf(err)
		if code != codeNotFound {
			return s.replyWriteError(c, err)
		}
		return s.replyData(c, code, nil)
	}
	return s.replyData(c, codeOK, normalizeInfo(info))
}

// fetchs: GET /discovery/fetchs (spec 4.7). Unknown appids are left out;
// the code is 0 even when none is found ("data":{}).
func (s *Server) fetchs(c echo.Context) error {
	v, err := s.form(c)
	if err != nil {
		return replyBadRequest(c, err)
	}
	p, err := parseFetch(v, s.cfg.Limits, true)
	if err != nil {
		return replyBadRequest(c, err)
	}
	out := make(map[string]*registry.InstanceInfo, len(p.AppIDs))
	for _, appid := range p.AppIDs {
		if _, dup := out[appid]; dup {
			continue
		}
		info, err := s.reg.Fetch(p.Env, appid, p.Zone, p.Status)
		if err != nil {
			if codeOf(err) == codeNotFound {
				continue
			}
			return s.replyWriteError(c, err)
		}
		out[appid] = normalizeInfo(info)
	}
	return s.replyData(c, codeOK, out)
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
	return s.replyData(c, codeOK, all)
}

// nodesHandler: GET /discovery/nodes (spec 4.10): same-zone nodes, self
// included.
func (s *Server) nodesHandler(c echo.Context) error {
	var list []Node
	if s.nodes != nil {
		list = s.nodes()
	} else {
		list = []Node{s.self}
	}
	if list == nil {
		list = []Node{}
	}
	return s.replyData(c, codeOK, list)
}

// normalizeInfo fills empty zone lists and instance fields so the JSON has
// arrays and objects, never null (spec 3.1.3, 3.2.4, 4.6.3).
func normalizeInfo(info *registry.InstanceInfo) *registry.InstanceInfo {
	if info.Instances == nil {
		info.Instances = map[string][]*registry.Instance{}
	}
	for zone, list := range info.Instances {
		if list == nil {
			info.Instances[zone] = []*registry.Instance{}
		}
		for _, in := range list {
			normalize(in)
		}
	}
	return info
}
