package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// The admin API (wire.PathAdmin*): read-only views for the web page and
// `discovery ctl`, in the discovery envelope. With security.admin_token set
// every admin route needs it (it lists every app and the topology); the
// page's and ctl's actions are the public set and cancel, with the token.

// Admin read limits: a page of the apps list, and how long a changes
// request is held.
const (
	maxAppsPage      = 1000
	defaultAppsPage  = 200
	maxChangesHold   = 25 * time.Second
	holderAskTimeout = 2 * time.Second
)

func (s *Server) adminGuard(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if ok, err := s.guard.requireAdmin(c); !ok {
			return err
		}
		return h(c)
	}
}

func replyData(c echo.Context, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeBody(c, wire.CodeOK, envelope(wire.CodeOK, "0", data))
}

// adminStatus: GET /discovery/admin/status.
func (s *Server) adminStatus(c echo.Context) error {
	st := s.reg.Stats()
	out := wire.AdminStatus{
		Node: s.node,
		Registry: wire.RegistryStatus{
			Instances: st.Instances, Apps: st.Apps, Protected: st.Protected,
			ExpectedRenews: st.ExpectedRenews, RenewThreshold: st.Threshold, RenewsLastMinute: st.LastMinuteRenews,
			Evictions: st.Evictions, Tombstones: st.Tombstones,
			Full: map[string]uint64{"max_instances": st.Full.Instances, "max_apps": st.Full.Apps, "max_envs": st.Full.Envs},
		},
		Polls:       wire.PollStatus{Parked: s.parked.Load(), Max: s.maxPollers},
		Connections: wire.ConnStatus{Open: s.caps.open(), Max: s.maxConns, MaxPerIP: s.cfg.MaxConnsPerIP},
	}
	out.Node.Ready = s.ready()
	if out.Node.Started > 0 {
		out.Node.UptimeSeconds = time.Since(time.Unix(0, out.Node.Started)).Seconds()
	}
	if s.cluster != nil {
		cs := s.cluster()
		out.Node.Name = cs.Name
		out.Members, out.Replication, out.AntiEntropy, out.Legacy = cs.Members, cs.Replication, cs.AntiEntropy, cs.Legacy
	}
	if out.Members == nil {
		out.Members = []wire.MemberStatus{{Name: out.Node.Name, Addr: s.self.Addr, Zone: s.self.Zone, State: "up", Self: true}}
	}
	if out.Replication == nil {
		out.Replication = []wire.PeerStatus{}
	}
	if out.Legacy == nil {
		out.Legacy = []wire.LegacyStatus{}
	}
	return replyData(c, out)
}

// staleAfter is how long an instance may go without a renew before the
// admin views mark it: two renew intervals (kratos renews every 30 s).
const staleAfter = 60 * time.Second

// adminApps: GET /discovery/admin/apps?env=&zone=&status=up|waiting|stale&prefix=&sort=appid|instances|env&desc=1&offset=&limit=
func (s *Server) adminApps(c echo.Context) error {
	q := c.QueryParams()
	offset, err := intParam(q, "offset", 0, 1<<30)
	if err != nil {
		return replyBadRequest(c, err)
	}
	limit, err := intParam(q, "limit", defaultAppsPage, maxAppsPage)
	if err != nil {
		return replyBadRequest(c, err)
	}
	status := q.Get("status")
	switch status {
	case "", "up", "waiting", "stale":
	default:
		return replyBadRequest(c, perr("status", "must be up, waiting or stale, got %q", status))
	}
	sortBy := q.Get("sort")
	switch sortBy {
	case "", "appid", "env", "instances":
	default:
		return replyBadRequest(c, perr("sort", "must be appid, env or instances, got %q", sortBy))
	}
	zone, prefix := q.Get("zone"), q.Get("prefix")
	all := s.reg.AppSummaries(q.Get("env"), staleAfter)
	apps := make([]wire.AppSummary, 0, min(len(all), limit))
	var matched []wire.AppSummary
	for _, a := range all {
		if prefix != "" && !strings.HasPrefix(a.AppID, prefix) {
			continue
		}
		w := wire.AppSummary{Env: a.Env, AppID: a.AppID, LatestTimestamp: a.LatestTimestamp, Zones: make(map[string]wire.ZoneCounts, len(a.Zones))}
		for z, zc := range a.Zones {
			if zone != "" && z != zone {
				continue
			}
			w.Zones[z] = wire.ZoneCounts{Up: zc.Up, Waiting: zc.Waiting, Stale: zc.Stale}
			w.Up += zc.Up
			w.Waiting += zc.Waiting
			w.Stale += zc.Stale
		}
		w.Instances = w.Up + w.Waiting
		if w.Instances == 0 ||
			(status == "up" && w.Up == 0) || (status == "waiting" && w.Waiting == 0) || (status == "stale" && w.Stale == 0) {
			continue
		}
		matched = append(matched, w)
	}
	switch sortBy {
	case "env":
		slices.SortStableFunc(matched, func(x, y wire.AppSummary) int { return strings.Compare(x.Env, y.Env) })
	case "instances":
		slices.SortStableFunc(matched, func(x, y wire.AppSummary) int { return y.Instances - x.Instances })
	}
	if q.Get("desc") == "1" {
		slices.Reverse(matched)
	}
	if offset < len(matched) {
		apps = append(apps, matched[offset:min(offset+limit, len(matched))]...)
	}
	return replyData(c, wire.AppsPage{Total: len(matched), Offset: offset, Apps: apps})
}

func intParam(q url.Values, name string, def, max int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, perr(name, "must be a non-negative integer, got %q", v)
	}
	return min(n, max), nil
}

// adminApp: GET /discovery/admin/app?env=&appid= — every instance, with
// its renew age and which nodes hold the same version (each same-zone node
// and legacy node is asked through its public fetch, bounded).
func (s *Server) adminApp(c echo.Context) error {
	q := c.QueryParams()
	env, appid := q.Get("env"), q.Get("appid")
	if env == "" {
		return replyBadRequest(c, perr("env", "required"))
	}
	if appid == "" {
		return replyBadRequest(c, perr("appid", "required"))
	}
	info, err := s.reg.Fetch(env, appid, "", registry.StatusUp|registry.StatusWaiting)
	if err != nil {
		return writeBody(c, wire.CodeNotFound, envelope(wire.CodeNotFound, "appid: "+appid+" has no instance in env "+env, nil))
	}
	nodes := s.holderNodes()
	held := s.askHolders(c.Request().Context(), nodes, env, appid)
	now := time.Now()
	out := wire.AppDetail{Env: env, AppID: appid, LatestTimestamp: info.LatestTimestamp, StaleAfter: staleAfter.Seconds(), Nodes: nodes, Instances: []wire.InstanceDetail{}}
	zones := make([]string, 0, len(info.Instances))
	for z := range info.Instances {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	for _, z := range zones {
		for _, in := range info.Instances[z] {
			age := now.Sub(time.Unix(0, in.RenewTimestamp)).Seconds()
			d := wire.InstanceDetail{Instance: *in, RenewAgeSeconds: max(age, 0), Stale: age > staleAfter.Seconds(), HeldBy: []string{}}
			for _, n := range nodes {
				if v, ok := held[n][in.Key()]; ok && v == in.DirtyTimestamp {
					d.HeldBy = append(d.HeldBy, n)
				}
			}
			out.Instances = append(out.Instances, d)
		}
	}
	return replyData(c, out)
}

// holderNodes are the nodes asked which copies they hold: this node, the
// same-zone members and the legacy nodes.
func (s *Server) holderNodes() []string {
	nodes := []string{s.self.Addr}
	if s.nodes != nil {
		for _, n := range s.nodes() {
			if !slices.Contains(nodes, n.Addr) {
				nodes = append(nodes, n.Addr)
			}
		}
	}
	if s.cluster != nil {
		for _, l := range s.cluster().Legacy {
			if l.Zone == "" && !slices.Contains(nodes, l.Addr) {
				nodes = append(nodes, l.Addr)
			}
		}
	}
	return nodes
}

// askHolders fetches the app from every node (this one locally) and
// returns, per node, the dirty_timestamp of each instance it holds.
func (s *Server) askHolders(ctx context.Context, nodes []string, env, appid string) map[string]map[registry.Key]int64 {
	out := make(map[string]map[registry.Key]int64, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n == s.self.Addr {
			m := map[registry.Key]int64{}
			if info, err := s.reg.Fetch(env, appid, "", registry.StatusUp|registry.StatusWaiting); err == nil {
				for _, l := range info.Instances {
					for _, in := range l {
						m[in.Key()] = in.DirtyTimestamp
					}
				}
			}
			out[n] = m
			continue
		}
		wg.Go(func() {
			m := fetchHeld(ctx, s.holderClient, n, env, appid)
			mu.Lock()
			out[n] = m
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func fetchHeld(ctx context.Context, hc *http.Client, node, env, appid string) map[registry.Key]int64 {
	ctx, cancel := context.WithTimeout(ctx, holderAskTimeout)
	defer cancel()
	u := "http://" + node + "/discovery/fetch?" + url.Values{"env": {env}, "appid": {appid}, "status": {"3"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil
	}
	env2, err := wire.DecodeEnvelope(b)
	if err != nil || env2.Code != wire.CodeOK {
		return nil
	}
	var info wire.InstanceInfo
	if json.Unmarshal(env2.Data, &info) != nil {
		return nil
	}
	m := map[registry.Key]int64{}
	for _, l := range info.Instances {
		for _, in := range l {
			m[in.Key()] = in.DirtyTimestamp
		}
	}
	return m
}

// adminChanges: GET /discovery/admin/changes?since=V — answers the
// registry's change count at once when it differs from V, else when it
// changes, or after at most 25 s (or the request's x1-bmspy-timeout).
func (s *Server) adminChanges(c echo.Context) error {
	since, err := strconv.ParseUint(c.QueryParam("since"), 10, 64)
	if err != nil && c.QueryParam("since") != "" {
		return replyBadRequest(c, perr("since", "must be a change count, got %q", c.QueryParam("since")))
	}
	hold := min(maxChangesHold, s.cfg.PollHold)
	if ms, err := strconv.Atoi(c.Request().Header.Get("x1-bmspy-timeout")); err == nil && ms > 0 {
		hold = min(hold, time.Duration(ms)*time.Millisecond*9/10)
	}
	if v, _ := s.reg.Changes(); v != since || c.QueryParam("since") == "" {
		return replyData(c, wire.Changes{Version: v})
	}
	// It waits like a poll, so it counts toward http.max_pollers.
	if s.parked.Add(1) > int64(s.maxPollers) {
		s.parked.Add(-1)
		return reply(c, wire.CodeUnavailable)
	}
	defer s.parked.Add(-1)
	t := time.NewTimer(hold)
	defer t.Stop()
	for {
		v, ch := s.reg.Changes()
		if v != since {
			return replyData(c, wire.Changes{Version: v})
		}
		select {
		case <-ch:
		case <-t.C:
			return replyData(c, wire.Changes{Version: v})
		case <-c.Request().Context().Done():
			return nil
		case <-s.pollCtx.Done():
			return replyData(c, wire.Changes{Version: v})
		}
	}
}
