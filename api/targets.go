package api

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/registry"
)

// targetGroup is one Prometheus http_sd target group (spec 10.3).
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// targets: GET /discovery/prometheus/targets (spec 10.3). Outside the
// envelope: a bare JSON array, HTTP 503 while not ready (Prometheus keeps
// its last list on a non-200), HTTP 400 on bad parameters.
func (s *Server) targets(c echo.Context) error {
	if !s.ready() {
		return c.String(http.StatusServiceUnavailable, "not ready: init-protect\n")
	}
	q, err := parseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return c.String(http.StatusBadRequest, err.Error()+"\n")
	}
	p, err := parseTargets(q, s.cfg.Limits)
	if err != nil {
		return c.String(http.StatusBadRequest, err.Error()+"\n")
	}
	var instances []*registry.Instance
	if p.Env != "" && len(p.AppIDs) > 0 {
		// Narrow query: look the apps up instead of copying the registry.
		for _, appid := range p.AppIDs {
			info, err := s.reg.Fetch(p.Env, appid, p.Zone, registry.StatusUp)
			if err != nil {
				continue
			}
			for _, list := range info.Instances {
				instances = append(instances, list...)
			}
		}
	} else {
		for _, list := range s.reg.FetchAll() {
			instances = append(instances, list...)
		}
	}
	groups := buildTargetGroups(instances, p)
	b, err := json.Marshal(groups)
	if err != nil {
		s.log.Error("encode targets", "err", err)
		return c.String(http.StatusInternalServerError, "internal error\n")
	}
	return c.Blob(http.StatusOK, "application/json", b)
}

// buildTargetGroups filters UP instances by p and returns one group per
// (instance, addr of p.Scheme), sorted for a stable answer.
func buildTargetGroups(instances []*registry.Instance, p targetParams) []targetGroup {
	slices.SortFunc(instances, func(a, b *registry.Instance) int {
		return cmp.Or(cmp.Compare(a.Env, b.Env), cmp.Compare(a.AppID, b.AppID),
			cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Hostname, b.Hostname))
	})
	groups := []targetGroup{}
	for _, in := range instances {
		if in.Status != registry.StatusUp ||
			(p.Env != "" && in.Env != p.Env) ||
			(p.Zone != "" && in.Zone != p.Zone) ||
			(len(p.AppIDs) > 0 && !slices.Contains(p.AppIDs, in.AppID)) {
			continue
		}
		for _, addr := range in.Addrs {
			u, err := url.Parse(addr)
			if err != nil || !strings.EqualFold(u.Scheme, p.Scheme) || u.Host == "" || !scrapable(u.Hostname()) {
				continue
			}
			groups = append(groups, targetGroup{Targets: []string{u.Host}, Labels: targetLabels(in)})
		}
	}
	return groups
}

// scrapable keeps Prometheus from being pointed, by whoever can register,
// at addresses a scraper must not reach: link-local (cloud metadata at
// 169.254.169.254, fe80::/10), multicast and unspecified. Loopback stays:
// it is how Prometheus scrapes apps on its own host, and it reaches only
// what that host serves Prometheus anyway (docs/security.md).
func scrapable(host string) bool {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return true // a name: resolved by Prometheus, outside what the node can judge
	}
	ip = ip.Unmap()
	return !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() && !ip.IsMulticast() && !ip.IsUnspecified() && !ip.IsInterfaceLocalMulticast()
}

func targetLabels(in *registry.Instance) map[string]string {
	l := map[string]string{
		"__meta_discovery_appid":    in.AppID,
		"__meta_discovery_env":      in.Env,
		"__meta_discovery_zone":     in.Zone,
		"__meta_discovery_region":   in.Region,
		"__meta_discovery_hostname": in.Hostname,
		"__meta_discovery_version":  in.Version,
		"__meta_discovery_status":   strconv.FormatUint(uint64(in.Status), 10),
	}
	// Sorted so that when two keys sanitise to one name the result is stable.
	keys := make([]string, 0, len(in.Metadata))
	for k := range in.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		l["__meta_discovery_metadata_"+sanitizeLabel(k)] = in.Metadata[k]
	}
	return l
}

// sanitizeLabel maps every byte outside [a-zA-Z0-9_] to '_' (spec 10.3).
func sanitizeLabel(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch != '_' && (ch < 'a' || ch > 'z') && (ch < 'A' || ch > 'Z') && (ch < '0' || ch > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
