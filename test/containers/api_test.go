//go:build containers

package containers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// apiClient speaks the discovery wire protocol (spec section 4) to one node,
// the way kratos does: form-encoded POSTs, query-string GETs.
type apiClient struct {
	base string
	hc   *http.Client
}

func newAPIClient(base string) *apiClient {
	return &apiClient{base: base, hc: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, IdleConnTimeout: 10 * time.Second},
	}}
}

// instance is one registration (spec 3.1).
type instance = wire.Instance

func newInstance(appid, hostname string, addrs ...string) instance {
	return instance{Zone: testZone, Env: testEnv, AppID: appid, Hostname: hostname, Addrs: addrs, Status: 1}
}

type envelope = wire.Envelope

func (c *apiClient) do(ctx context.Context, method, path string, form url.Values) (envelope, error) {
	var body io.Reader
	target := c.base + path
	if method == http.MethodGet {
		target += "?" + form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return envelope{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return envelope{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return envelope{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return envelope{}, fmt.Errorf("%s %s: HTTP %d: %.200s", method, path, resp.StatusCode, b)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return envelope{}, fmt.Errorf("%s %s: %w: %.200s", method, path, err, b)
	}
	return env, nil
}

func keyForm(in instance) url.Values {
	return url.Values{"zone": {in.Zone}, "env": {in.Env}, "appid": {in.AppID}, "hostname": {in.Hostname}}
}

// register returns the discovery code (0 = acknowledged).
func (c *apiClient) register(ctx context.Context, in instance) (int, error) {
	f := keyForm(in)
	f["addrs"] = in.Addrs
	f.Set("status", strconv.FormatUint(uint64(in.Status), 10))
	f.Set("region", "region01")
	if len(in.Metadata) > 0 {
		b, _ := json.Marshal(in.Metadata)
		f.Set("metadata", string(b))
	}
	env, err := c.do(ctx, http.MethodPost, "/discovery/register", f)
	return env.Code, err
}

func (c *apiClient) renew(ctx context.Context, in instance) (int, error) {
	env, err := c.do(ctx, http.MethodPost, "/discovery/renew", keyForm(in))
	return env.Code, err
}

func (c *apiClient) cancel(ctx context.Context, in instance) (int, error) {
	env, err := c.do(ctx, http.MethodPost, "/discovery/cancel", keyForm(in))
	return env.Code, err
}

// fetch returns the hostnames of appid's instances (all zones, UP and
// WAITING). An unknown appid (-404) is an empty set.
func (c *apiClient) fetch(ctx context.Context, appid string) (map[string]instance, error) {
	env, err := c.do(ctx, http.MethodGet, "/discovery/fetch",
		url.Values{"appid": {appid}, "env": {testEnv}, "status": {"3"}})
	if err != nil {
		return nil, err
	}
	out := map[string]instance{}
	switch env.Code {
	case 0:
	case -404:
		return out, nil
	default:
		return nil, fmt.Errorf("fetch %s: code %d %s", appid, env.Code, env.Message)
	}
	var info struct {
		Instances map[string][]instance `json:"instances"`
	}
	if err := json.Unmarshal(env.Data, &info); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", appid, err)
	}
	for _, list := range info.Instances {
		for _, in := range list {
			out[in.Hostname] = in
		}
	}
	return out, nil
}

type nodeEntry = wire.Node

// nodes returns /discovery/nodes: addr -> status.
func (c *apiClient) nodes(ctx context.Context) (map[string]int, error) {
	env, err := c.do(ctx, http.MethodGet, "/discovery/nodes", url.Values{})
	if err != nil {
		return nil, err
	}
	if env.Code != 0 {
		return nil, fmt.Errorf("nodes: code %d", env.Code)
	}
	var list []nodeEntry
	if err := json.Unmarshal(env.Data, &list); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, n := range list {
		out[n.Addr] = n.Status
	}
	return out, nil
}

// infraAddrs returns the advertised addresses in the infra.discovery records.
func (c *apiClient) infraAddrs(ctx context.Context) ([]string, error) {
	ins, err := c.fetch(ctx, "infra.discovery")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range ins {
		for _, a := range in.Addrs {
			out = append(out, strings.TrimPrefix(a, "http://"))
		}
	}
	sort.Strings(out)
	return out, nil
}

// readyz returns the HTTP status of /readyz (0 when unreachable).
func (c *apiClient) readyz(ctx context.Context) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/readyz", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func (c *apiClient) close() { c.hc.CloseIdleConnections() }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
