package embed_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/embed"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
	"github.com/discovery-go/discovery/syncup"
	"github.com/discovery-go/discovery/test/harness"
)

// The attacker of these tests is one host that reaches the HTTP port and
// the gossip port and holds no credential. Each attack of issue #11 is run
// through the node's real interfaces, and the registry is checked
// unchanged afterwards, not only the answer's code.

const adminToken = "an-admin-token-of-some-length"

// secure is a node with a secret and an admin token.
func secure(t *testing.T, edit func(*configs.Config)) (*embed.Node, *harness.Client) {
	t.Helper()
	cfg := testConfig("victim")
	cfg.Security.AdminToken = adminToken
	if edit != nil {
		edit(&cfg)
	}
	n := start(t, cfg, embed.Options{})
	ready(t, n)
	return n, client(t, n)
}

// state is what the registry holds, timestamps of renews aside.
func state(n *embed.Node) []wire.Instance {
	s := n.Registry().Snapshot().Instances
	for i := range s {
		s[i].RenewTimestamp = 0
	}
	return s
}

func unchanged(t *testing.T, n *embed.Node, before []wire.Instance) {
	t.Helper()
	if after := state(n); !slices.EqualFunc(before, after, func(a, b wire.Instance) bool { return fmt.Sprint(a) == fmt.Sprint(b) }) {
		t.Fatalf("registry changed:\nbefore %+v\nafter  %+v", before, after)
	}
}

func legit(host string) wire.Instance {
	return wire.Instance{Region: "r", Zone: "zone01", Env: "dev", AppID: "app.legit", Hostname: host, Addrs: []string{"grpc://10.1.1.1:9000"}, Status: 1}
}

// raw sends one request with an optional body and headers and returns the
// status and body.
func raw(t *testing.T, n *embed.Node, method, path, body string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+n.Addrs().HTTP+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func form(pairs ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Add(pairs[i], pairs[i+1])
	}
	return v
}

// Forging, overwriting, cancelling or setting through the peer route,
// dumping through snapshot or digest: every unauthenticated peer request is
// HTTP 401 and changes nothing.
func TestAttack_PeerRoutesWithoutTheSecret(t *testing.T) {
	n, c := secure(t, nil)
	if env, _ := c.Register(t.Context(), legit("h1")); env.Code != 0 {
		t.Fatal(env.Code)
	}
	before := state(n)
	ops := []string{
		`{"op":"register","replication":false,"from_zone":true,"instance":{"env":"dev","appid":"app.legit","zone":"zone01","hostname":"h1","addrs":["http://6.6.6.6:1"],"status":1,"dirty_timestamp":` + fmt.Sprint(time.Now().Add(23*time.Hour).UnixNano()) + `}}`,
		`{"op":"cancel","replication":true,"key":{"env":"dev","appid":"app.legit","zone":"zone01","hostname":"h1"},"dirty_timestamp":` + fmt.Sprint(time.Now().UnixNano()) + `}`,
		`{"op":"set","replication":true,"set":{"env":"dev","appid":"app.legit","zone":"zone01","hostnames":["h1"],"statuses":[2],"set_timestamp":` + fmt.Sprint(time.Now().UnixNano()) + `}}`,
		`{"op":"import","replication":true,"instance":{"env":"dev","appid":"app.forged","zone":"zone01","hostname":"x","addrs":["http://6.6.6.6:1"],"status":1,"dirty_timestamp":1,"renew_timestamp":` + fmt.Sprint(time.Now().Add(23*time.Hour).UnixNano()) + `}}`,
	}
	for _, op := range ops {
		if code, body := raw(t, n, "POST", wire.PathReplicate, `{"ops":[`+op+`]}`, http.Header{"Content-Type": {"application/json"}}); code != 401 {
			t.Fatalf("replicate without the secret: HTTP %d %s", code, body)
		}
	}
	for _, r := range []struct{ method, path, body string }{{"GET", wire.PathSnapshot, ""}, {"POST", wire.PathDigest, `{"digests":[]}`}} {
		if code, body := raw(t, n, r.method, r.path, r.body, nil); code != 401 || strings.Contains(body, "app.legit") {
			t.Fatalf("%s without the secret: HTTP %d %s", r.path, code, body)
		}
	}
	unchanged(t, n, before)
	m, _ := c.Metrics(t.Context())
	if !strings.Contains(m, `discovery_auth_refusals_total{reason="peer_auth",route="/discovery/internal/*"} 6`) {
		t.Errorf("refusals not counted:\n%s", grepLines(m, "auth_refusals"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A plain public register, renew, cancel or set of infra.discovery (the
// node list kratos clients follow) is refused; the node's own record stays
// as it publishes it.
func TestAttack_HijackInfraDiscovery(t *testing.T) {
	n, c := secure(t, nil)
	before := state(n)
	own := wire.Instance{Region: "region01", Zone: "zone01", Env: "dev", AppID: wire.InfraAppID, Hostname: "victim", Addrs: []string{"http://6.6.6.6:7171"}, Status: 1}
	env, err := c.Register(t.Context(), own)
	if err != nil || env.Code != wire.CodeForbidden || !strings.Contains(env.Message, "reserved") {
		t.Fatalf("register of infra.discovery: %v %+v", err, env)
	}
	for _, path := range []string{"/discovery/renew", "/discovery/cancel"} {
		env, _ := c.Do(t.Context(), "POST", path, form("zone", "zone01", "env", "dev", "appid", wire.InfraAppID, "hostname", "victim"), nil)
		if env.Code != wire.CodeForbidden {
			t.Fatalf("%s of infra.discovery: %+v", path, env)
		}
	}
	env, _ = c.Set(t.Context(), form("zone", "zone01", "env", "dev", "appid", wire.InfraAppID, "hostname", "victim", "status", "2"))
	if env.Code != wire.CodeUnauthorized {
		t.Fatalf("set of infra.discovery without the token: %+v", env)
	}
	env, _ = c.Do(t.Context(), "POST", "/discovery/set", form("zone", "zone01", "env", "dev", "appid", wire.InfraAppID, "hostname", "victim", "status", "2"),
		http.Header{"Authorization": {"Bearer " + adminToken}})
	if env.Code != wire.CodeForbidden {
		t.Fatalf("set of infra.discovery with the token: %+v", env)
	}
	unchanged(t, n, before)
}

// fetch/all holds the whole registry, metadata included: with an admin
// token configured it needs the token (or a peer's signature).
func TestAttack_DumpThroughFetchAll(t *testing.T) {
	n, c := secure(t, nil)
	c.Register(t.Context(), legit("h1"))
	for _, tc := range []struct {
		hdr  http.Header
		code int
	}{
		{nil, wire.CodeUnauthorized},
		{http.Header{"Authorization": {"Bearer wrong-token-of-some-length"}}, wire.CodeForbidden},
		{http.Header{"Authorization": {"Bearer " + adminToken}}, wire.CodeOK},
	} {
		env, err := c.Do(t.Context(), "GET", "/discovery/fetch/all", nil, tc.hdr)
		if err != nil || env.Code != tc.code || (tc.code != 0 && strings.Contains(string(env.Body), "app.legit")) {
			t.Fatalf("fetch/all with %v: %v %s", tc.hdr, err, env.Body)
		}
	}
	// A peer's signed request gets it too (legacy nodes and tools sync by it).
	auth, err := syncup.NewPeerAuth(testSecret, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+n.Addrs().HTTP+"/discovery/fetch/all", nil)
	auth.Sign(req, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"code":0`) || !strings.Contains(string(b), "app.legit") {
		t.Fatalf("signed fetch/all: %s", b)
	}
}

// Peer-only parameters from a client have no effect: a register with a
// dirty_timestamp 23 h ahead is stamped by the node (so the real owner's
// later writes win), a set_timestamp 23 h ahead is the node's now (so the
// operator's next set undoes it), replication=true is still forwarded.
func TestAttack_FutureTimestampsFromAClient(t *testing.T) {
	n, c := secure(t, func(cfg *configs.Config) { cfg.Security.AdminToken = "" })
	far := fmt.Sprint(time.Now().Add(23 * time.Hour).UnixNano())
	ins := legit("h1")
	env, _ := c.Register(t.Context(), ins, form("dirty_timestamp", far, "replication", "true"))
	if env.Code != 0 {
		t.Fatalf("register: %+v", env)
	}
	got, _ := n.Registry().Get(ins.Key())
	if got.DirtyTimestamp > time.Now().UnixNano() {
		t.Fatalf("client's dirty_timestamp was taken: %d", got.DirtyTimestamp)
	}
	env, _ = c.Set(t.Context(), form("zone", "zone01", "env", "dev", "appid", "app.legit", "hostname", "h1", "status", "2", "set_timestamp", far))
	if env.Code != 0 {
		t.Fatalf("set: %+v", env)
	}
	if got, _ = n.Registry().Get(ins.Key()); got.Status != 2 || got.DirtyTimestamp > time.Now().UnixNano() {
		t.Fatalf("after the hostile set: %+v", got)
	}
	env, _ = c.Set(t.Context(), form("zone", "zone01", "env", "dev", "appid", "app.legit", "hostname", "h1", "status", "1"))
	if got, _ = n.Registry().Get(ins.Key()); env.Code != 0 || got.Status != 1 {
		t.Fatalf("the operator's set did not undo it: %+v %+v", env, got)
	}
	m, _ := c.Metrics(t.Context())
	if !strings.Contains(m, `reason="peer_params"`) {
		t.Errorf("dropped peer parameters not counted:\n%s", grepLines(m, "auth_refusals"))
	}
}

// Text that is not valid UTF-8, control characters, NUL and addrs that are
// not URLs are refused (-400 naming the field) and change nothing; an
// address Prometheus must not scrape (cloud metadata) never becomes a
// target even when registered with a port.
func TestAttack_HostileText(t *testing.T) {
	n, c := secure(t, nil)
	before := state(n)
	for name, mut := range map[string]func(*wire.Instance){
		"invalid UTF-8 appid": func(in *wire.Instance) { in.AppID = "app\xff" },
		"NUL hostname":        func(in *wire.Instance) { in.Hostname = "h\x00" },
		"control metadata":    func(in *wire.Instance) { in.Metadata = map[string]string{"k\x07": "v"} },
		"javascript addr":     func(in *wire.Instance) { in.Addrs = []string{"javascript:alert(1)"} },
		"CRLF addr":           func(in *wire.Instance) { in.Addrs = []string{"http://a:1\r\nX: y"} },
		"no port":             func(in *wire.Instance) { in.Addrs = []string{"http://169.254.169.254"} },
	} {
		in := legit("h-" + strings.ReplaceAll(name, " ", "-"))
		mut(&in)
		env, err := c.Register(t.Context(), in)
		if err != nil || env.Code != wire.CodeBadRequest {
			t.Errorf("%s: %v %+v", name, err, env)
		}
	}
	unchanged(t, n, before)
	md := wire.Instance{Region: "r", Zone: "zone01", Env: "dev", AppID: "app.md", Hostname: "h", Addrs: []string{"http://169.254.169.254:80"},
		Status: 1, Metadata: map[string]string{"prometheus_scrape": "true"}}
	if env, _ := c.Register(t.Context(), md); env.Code != 0 {
		t.Fatalf("register: %+v", env)
	}
	code, body := raw(t, n, "GET", "/discovery/prometheus/targets?appid=app.md&env=dev", "", nil)
	if code != 200 || strings.Contains(body, "169.254") {
		t.Fatalf("link-local target exposed: %d %s", code, body)
	}
}

// Registering beyond registry.max_instances is refused (-503, counted);
// what is held stays.
func TestAttack_UnboundedGrowth(t *testing.T) {
	n, c := secure(t, func(cfg *configs.Config) { cfg.Registry.MaxInstances = 20 })
	refused := 0
	for i := range 40 {
		env, _ := c.Register(t.Context(), legit(fmt.Sprint("h", i)))
		switch env.Code {
		case 0:
		case wire.CodeUnavailable:
			refused++
		default:
			t.Fatalf("register %d: %+v", i, env)
		}
	}
	s := n.Registry().Stats()
	if s.Instances["dev"] != 20 || refused != 21 || s.Full.Instances != 21 { // the node's own record takes one
		t.Fatalf("held %d, refused %d, stats %+v", s.Instances["dev"], refused, s.Full)
	}
	m, err := c.Metrics(t.Context())
	if err != nil || !strings.Contains(m, `discovery_registry_full_refusals_total{cap="max_instances"} 21`) {
		t.Fatalf("refusals not exported (%v):\n%s", err, grepLines(m, "full_refusals"))
	}
}

// Registrations that never renew cannot push the node into
// self-preservation: a legitimate instance that crashed is still evicted.
func TestAttack_SelfPreservationBySilentRegistrations(t *testing.T) {
	clk := registry.NewManualClock(time.Now())
	cfg := testConfig("victim")
	n := start(t, cfg, embed.Options{Clock: clk})
	ready(t, n)
	c := client(t, n)
	for i := range 2000 {
		if env, _ := c.Register(t.Context(), legit(fmt.Sprint("spam-", i))); env.Code != 0 {
			t.Fatalf("register: %+v", env)
		}
	}
	live, crashed := legit("live"), legit("crashed")
	crashed.AppID = "app.crashed"
	c.Register(t.Context(), live)
	c.Register(t.Context(), crashed)
	c.Renew(t.Context(), live)
	c.Renew(t.Context(), crashed) // it ran, then crashed
	// Each scan evicts a random subset of at most 15 % of the registry
	// (spec 6.4), so the 2 000 silent ones and the crashed one go within
	// about 40 scans, then at one a scan; 200 leaves no room for chance.
	for minute := 0; ; minute++ {
		if minute == 200 {
			t.Fatalf("crashed instance still listed after 200 scans; %+v", n.Registry().Stats())
		}
		for range 2 {
			clk.Advance(30 * time.Second)
			c.Renew(t.Context(), live)
			c.Renew(t.Context(), live) // as its replicated copy would
			n.Registry().Renew(registry.Key{Env: "dev", AppID: wire.InfraAppID, Zone: "zone01", Hostname: "victim"}, false, 0)
		}
		n.Registry().Scan()
		if n.Registry().Stats().Protected {
			t.Fatalf("silent registrations switched self-preservation on: %+v", n.Registry().Stats())
		}
		if _, ok := n.Registry().Get(crashed.Key()); !ok {
			return
		}
	}
}

// nonLoopback returns an address of this host that is not loopback, to
// connect from (the per-address caps exempt loopback).
func nonLoopback(t *testing.T) net.IP {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP
		}
	}
	t.Skip("no non-loopback address on this host")
	return nil
}

// Idle keep-alive connections from one host cannot take every descriptor:
// beyond http.max_conns_per_ip they are refused at once (HTTP 503, counted)
// and other clients are still served.
func TestAttack_IdleConnectionsFromOneHost(t *testing.T) {
	ip := nonLoopback(t)
	n, c := secure(t, func(cfg *configs.Config) {
		cfg.HTTP.Addr = "0.0.0.0:0"
		cfg.HTTP.Advertise = net.JoinHostPort(ip.String(), "1") // only published; not dialled here
		cfg.HTTP.MaxConnsPerIP = 20
	})
	_, port, _ := net.SplitHostPort(n.Addrs().HTTPListen)
	target := net.JoinHostPort(ip.String(), port)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	refused := 0
	for range 30 {
		cn, err := d.DialContext(t.Context(), "tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	for _, cn := range conns[20:] {
		_ = cn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(cn), nil)
		if err != nil {
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		// A well-formed answer: the whole message, as long as announced.
		if resp.StatusCode == http.StatusServiceUnavailable && err == nil &&
			string(body) == "too many connections from your address (max_conns_per_ip)\n" {
			refused++
		}
	}
	if refused != 10 {
		t.Fatalf("%d of the 10 connections over the cap refused", refused)
	}
	// Another client (loopback here) is served meanwhile.
	c2 := harness.NewClient(strings.Replace(n.Addrs().HTTPListen, "0.0.0.0", "127.0.0.1", 1))
	defer c2.Close()
	if ok, err := c2.Ready(t.Context()); !ok || err != nil {
		t.Fatalf("legitimate client not served: %v %v", ok, err)
	}
	_ = c
	m, _ := c2.Metrics(t.Context())
	if !strings.Contains(m, `discovery_http_conn_refusals_total{reason="per_ip"} 10`) {
		t.Errorf("refusals not counted:\n%s", grepLines(m, "conn_refusals"))
	}
}

// Slow and large bodies pin no memory: unauthenticated peer requests are
// refused before their body is read (nothing is sized from Content-Length),
// public bodies are bounded by http.limits.max_body_bytes. The heap is
// measured in this process, where the node runs.
func TestAttack_SlowAndLargeBodies(t *testing.T) {
	n, _ := secure(t, nil)
	addr := n.Addrs().HTTP
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	codes := make(chan string, 32)
	for range 16 { // slow bodies announcing 64 MiB each
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn, err := net.Dial("tcp", addr)
			if err != nil {
				codes <- err.Error()
				return
			}
			defer cn.Close()
			fmt.Fprintf(cn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"ops\":[", wire.PathReplicate, 64<<20)
			_ = cn.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := bufio.NewReader(cn).ReadString('\n')
			codes <- strings.TrimSpace(line)
		}()
	}
	for range 6 { // large public bodies
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.NewReader("metadata=" + strings.Repeat("x", 60<<20))
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://"+addr+"/discovery/register", body)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- "large: " + err.Error()
				return
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			codes <- "large: " + string(b)
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if !strings.HasPrefix(c, "HTTP/1.1 401") && !strings.Contains(c, `"code":-400`) && !strings.Contains(c, "broken pipe") && !strings.Contains(c, "reset") {
			t.Errorf("answer %q", c)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB under slow and large bodies", grew>>20)
	}
}

// A peer with the secret that sends records beyond the public limits (17
// MiB of metadata in an infra.discovery record, a huge set) gets them
// refused: by the body bound, or per op by the registry's own validation.
func TestAttack_OversizedRecordsFromAPeer(t *testing.T) {
	n, _ := secure(t, nil)
	before := state(n)
	auth, err := syncup.NewPeerAuth(testSecret, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+n.Addrs().HTTP+wire.PathReplicate, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		auth.Sign(req, []byte(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rec := func(meta string) string {
		return `{"ops":[{"op":"register","replication":true,"instance":{"env":"dev","appid":"` + wire.InfraAppID + `","zone":"zone01","hostname":"other","addrs":["http://10.0.0.9:7171"],"status":1,"metadata":{"pad":"` + meta + `"},"dirty_timestamp":` + fmt.Sprint(time.Now().UnixNano()) + `}}]}`
	}
	if code, body := post(rec(strings.Repeat("x", 17<<20))); code != 400 || !strings.Contains(body, "larger than") {
		t.Fatalf("17 MiB record: %d %.200s", code, body)
	}
	if code, body := post(rec(strings.Repeat("x", 100<<10))); code != 200 || !strings.Contains(body, `"code":-400`) || !strings.Contains(body, "metadata") {
		t.Fatalf("100 KiB metadata: %d %.300s", code, body)
	}
	unchanged(t, n, before)
}

// The auth matrix of the public routes: a client needs nothing for what
// kratos does; peer-only parameters need a peer's signature (none, wrong,
// expired or replayed: dropped, the write is a plain client write); admin
// routes need the operator's token (none -401, wrong -403).
func TestAuthMatrix_PublicRoutes(t *testing.T) {
	n, c := secure(t, nil)
	good, err := syncup.NewPeerAuth(testSecret, nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := syncup.NewPeerAuth("d3Jvbmctc2VjcmV0LW9mLTMyLWJ5dGVzLWZvci10c3Q=", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := syncup.NewPeerAuthWithClock(testSecret, nil, time.Minute, func() time.Time { return time.Now().Add(-2 * time.Minute) })
	if err != nil {
		t.Fatal(err)
	}
	// Client routes need no credential.
	ins := legit("m1")
	for _, step := range []func() (*harness.Envelope, error){
		func() (*harness.Envelope, error) { return c.Register(t.Context(), ins) },
		func() (*harness.Envelope, error) { return c.Renew(t.Context(), ins) },
		func() (*harness.Envelope, error) {
			return c.Do(t.Context(), "GET", "/discovery/fetch", form("env", "dev", "appid", "app.legit", "status", "1"), nil)
		},
		func() (*harness.Envelope, error) {
			return c.Do(t.Context(), "GET", "/discovery/polls", form("env", "dev", "appid", "app.legit", "latest_timestamp", "0", "hostname", "x"), nil)
		},
		func() (*harness.Envelope, error) { return c.Cancel(t.Context(), ins) },
	} {
		if env, err := step(); err != nil || env.Code != 0 {
			t.Fatalf("client route: %v %+v", err, env)
		}
	}
	// A replicated register (dirty_timestamp in the past) is honoured only
	// with the right signature: only then is the older copy kept.
	c.Register(t.Context(), ins)
	stored, _ := n.Registry().Get(ins.Key())
	send := func(sign func(*http.Request, []byte)) wire.Instance {
		v := harness.Form(ins)
		v.Set("replication", "true")
		v.Set("dirty_timestamp", fmt.Sprint(stored.DirtyTimestamp-1))
		v.Set("addrs", "grpc://10.9.9.9:1")
		body := v.Encode()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+n.Addrs().HTTP+"/discovery/register", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sign(req, []byte(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got, _ := n.Registry().Get(ins.Key())
		return got
	}
	var replayed http.Header
	for _, tc := range []struct {
		name    string
		sign    func(*http.Request, []byte)
		honored bool
	}{
		{"none", func(*http.Request, []byte) {}, false},
		{"wrong", func(r *http.Request, b []byte) { wrong.Sign(r, b) }, false},
		{"expired", func(r *http.Request, b []byte) { expired.Sign(r, b) }, false},
		{"right", func(r *http.Request, b []byte) { good.Sign(r, b); replayed = r.Header.Clone() }, true},
		{"replayed", func(r *http.Request, _ []byte) { r.Header = replayed }, false},
	} {
		stored, _ = n.Registry().Get(ins.Key())
		got := send(tc.sign)
		older := got.DirtyTimestamp == stored.DirtyTimestamp && got.Addrs[0] == stored.Addrs[0]
		if tc.honored != older {
			// Honoured: the older replicated copy loses (record unchanged).
			// Dropped: it is a client write, stamped now, and replaces it.
			t.Errorf("%s: honoured=%v, got %+v (was %+v)", tc.name, older, got, stored)
		}
	}
	// Admin routes.
	for _, tc := range []struct {
		hdr  http.Header
		code int
	}{{nil, -401}, {http.Header{"Authorization": {"Bearer nope-nope-nope-nope"}}, -403}, {http.Header{"Authorization": {"Bearer " + adminToken}}, 0}} {
		env, _ := c.Do(t.Context(), "POST", "/discovery/set", form("zone", "zone01", "env", "dev", "appid", "app.legit", "hostname", "m1", "status", "2"), tc.hdr)
		if env.Code != tc.code {
			t.Errorf("set with %v: %+v", tc.hdr, env)
		}
	}
}

// security.key_ownership: while an instance is live, only the address that
// registered it (or the admin token) may change it; security.write_cidrs
// refuses client writes from other networks.
func TestPolicies_KeyOwnershipAndWriteCIDRs(t *testing.T) {
	ip := nonLoopback(t)
	n, c := secure(t, func(cfg *configs.Config) {
		cfg.HTTP.Addr = "0.0.0.0:0"
		cfg.HTTP.Advertise = net.JoinHostPort(ip.String(), "1")
		cfg.Security.KeyOwnership = true
	})
	_, port, _ := net.SplitHostPort(n.Addrs().HTTPListen)
	other := harness.NewClient(net.JoinHostPort(ip.String(), port)) // connects from ip, not loopback
	defer other.Close()
	loop := harness.NewClient("127.0.0.1:" + port)
	defer loop.Close()
	ins := legit("owned")
	if env, _ := loop.Register(t.Context(), ins); env.Code != 0 {
		t.Fatal(env.Code)
	}
	before := state(n)
	if env, _ := other.Cancel(t.Context(), ins); env.Code != wire.CodeForbidden {
		t.Fatalf("cancel from another address: %+v", env)
	}
	if env, _ := other.Register(t.Context(), ins); env.Code != wire.CodeForbidden {
		t.Fatalf("replace from another address: %+v", env)
	}
	unchanged(t, n, before)
	if env, _ := other.Do(t.Context(), "POST", "/discovery/cancel", form("zone", "zone01", "env", "dev", "appid", "app.legit", "hostname", "owned"),
		http.Header{"Authorization": {"Bearer " + adminToken}}); env.Code != 0 {
		t.Fatalf("cancel with the admin token: %+v", env)
	}
	_ = c

	n2, _ := secure(t, func(cfg *configs.Config) { cfg.Security.WriteCIDRs = []string{"10.99.0.0/16"} })
	c2 := client(t, n2)
	if env, _ := c2.Register(t.Context(), legit("x")); env.Code != wire.CodeForbidden {
		t.Fatalf("register from outside write_cidrs: %+v", env)
	}
}

// Past http.max_conns every new connection is refused at once (HTTP 503,
// counted as "global"), loopback included, and the node serves again as
// soon as connections close: idle sockets cannot starve it for good.
func TestAttack_GlobalConnectionCap(t *testing.T) {
	n, c := secure(t, func(cfg *configs.Config) { cfg.HTTP.MaxConns = 12 })
	c.Close() // its keep-alive connection would take a slot
	addr := n.Addrs().HTTP
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for range 20 {
		cn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	// Admitted connections wait for a request (nothing to read before the
	// deadline); refused ones get the one-line 503 and are closed. All are
	// read at once, so the deadline is paid once.
	var refusedN atomic.Int64
	var wg sync.WaitGroup
	for _, cn := range conns {
		wg.Go(func() {
			_ = cn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(cn), nil)
			if err != nil {
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable && err == nil && string(body) == "too many connections (max_conns)\n" {
				refusedN.Add(1)
			}
		})
	}
	wg.Wait()
	refused := int(refusedN.Load())
	if refused < 8 || refused > 20-12+2 { // the node's own connections may hold a slot or two
		t.Fatalf("%d of 20 connections refused with max_conns 12", refused)
	}
	for _, cn := range conns {
		cn.Close()
	}
	conns = nil
	c2 := harness.NewClient(addr)
	defer c2.Close()
	testkit.EventuallyTrue(t, 10*time.Second, "served again once connections closed", func() bool {
		ok, err := c2.Ready(t.Context())
		return ok && err == nil
	})
	// Counted: ours, and the first tries of c2 that came before the node saw
	// the closes.
	if got, err := c2.MetricSum(t.Context(), `discovery_http_conn_refusals_total{reason="global"}`); err != nil || got < float64(refused) {
		m, _ := c2.Metrics(t.Context())
		t.Errorf("global refusals counted %v (%v), want at least %d:\n%s", got, err, refused, grepLines(m, "conn_refusals"))
	}
}
