package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

var t0 = time.Unix(1_700_000_000, 0)

const (
	tEnv = "prod"
	z1   = "sh001"
	z2   = "sh002"
	appA = "demo.a"
	appB = "demo.b"
)

// allowedCodes are the only discovery codes a node may emit (C11).
var allowedCodes = []int{0, -304, -400, -404, -409, -503}

// fakeRepl records forwarded writes.
type fakeRepl struct {
	mu       sync.Mutex
	register []fwd[registry.Instance]
	renew    []fwd[renewFwd]
	cancel   []fwd[registry.Tombstone]
	set      []fwd[registry.SetRequest]
}

type fwd[T any] struct {
	V        T
	FromZone bool
}

func (f *fakeRepl) Register(ins registry.Instance, fromZone bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.register = append(f.register, fwd[registry.Instance]{ins, fromZone})
}

// renewFwd is what a forwarded renew carries.
type renewFwd struct {
	Key   registry.Key
	Dirty int64
}

func (f *fakeRepl) Renew(k registry.Key, dirty int64, fromZone bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renew = append(f.renew, fwd[renewFwd]{renewFwd{k, dirty}, fromZone})
}

func (f *fakeRepl) Cancel(t registry.Tombstone, fromZone bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancel = append(f.cancel, fwd[registry.Tombstone]{t, fromZone})
}

func (f *fakeRepl) Set(req registry.SetRequest, fromZone bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = append(f.set, fwd[registry.SetRequest]{req, fromZone})
}

func (f *fakeRepl) counts() [4]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return [4]int{len(f.register), len(f.renew), len(f.cancel), len(f.set)}
}

var _ Replicator = (*fakeRepl)(nil)

// tenv is one node under test: a real registry on a manual clock, the API
// served by Server.Serve on 127.0.0.1:0, a fake replicator.
type tenv struct {
	t       *testing.T
	clock   *registry.ManualClock
	reg     *registry.Registry
	srv     *Server
	ts      testServer
	client  *http.Client
	repl    *fakeRepl
	ready   atomic.Bool
	prom    *prometheus.Registry
	logs    *syncBuffer
	codesMu sync.Mutex
	codes   []int
}

type options struct {
	cfg    func(*Config)
	regCfg func(*registry.Config)
	deps   func(*Deps)
	level  slog.Level
	noRepl bool
	// refusals: the test provokes the security layer's -401/-403
	// (docs/security.md), codes outside the protocol's that C11 exempts.
	refusals bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peerHeader is the PeerCheck of the protocol tests: a request that carries
// peer-only parameters counts as a peer's, as the spec's tests assume (the
// security tests use the real check, syncup.PeerAuth, instead).
type peerHeader struct{}

func (peerHeader) FromPeer(*http.Request, []byte) bool { return true }

func newEnv(t *testing.T, opt ...options) *tenv {
	t.Helper()
	var o options
	if len(opt) > 0 {
		o = opt[0]
	}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	rcfg := registry.DefaultConfig()
	if o.regCfg != nil {
		o.regCfg(&rcfg)
	}
	e := &tenv{t: t, clock: registry.NewManualClock(t0), repl: &fakeRepl{}, prom: prometheus.NewRegistry(), logs: &syncBuffer{}}
	e.ready.Store(true)
	reg, err := registry.New(rcfg, e.clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	// Logs go both to the test output (shown on failure / -v) and to a
	// buffer some tests inspect.
	level := o.level
	logger := slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: level}),
	))
	deps := Deps{
		Registry:   reg,
		Peers:      peerHeader{},
		Replicator: e.repl,
		Ready:      e.ready.Load,
		Self:       wire.Node{Addr: "127.0.0.1:7171", Status: 0, Zone: z1},
		Logger:     logger,
		Metrics:    e.prom,
		Gatherer:   e.prom,
	}
	if o.noRepl {
		deps.Replicator = nil
	}
	if o.deps != nil {
		o.deps(&deps)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	// Served as a node serves (Serve on a real listener: connection caps,
	// lean writes and lean polls).
	served := make(chan error, 1)
	ln := listen(t)
	e.ts = testServer{URL: "http://" + ln.Addr().String()}
	go func() { served <- srv.Serve(ln) }()
	e.client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(func() {
		// Release parked polls first, then stop the test server.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		e.client.CloseIdleConnections()
		e.codesMu.Lock()
		defer e.codesMu.Unlock()
		for _, c := range e.codes {
			if o.refusals && (c == wire.CodeUnauthorized || c == wire.CodeForbidden) {
				continue
			}
			if !slices.Contains(allowedCodes, c) { // C11, for every answer of every test
				t.Errorf("C11: emitted code %d not in %v", c, allowedCodes)
			}
		}
	})
	return e
}

// testServer is where a tenv's node listens.
type testServer struct{ URL string }

// resp is one HTTP answer.
type resp struct {
	t      *testing.T
	Status int
	Header http.Header
	Body   []byte
}

// env decodes the body as a discovery envelope (standard or map shape).
func (r resp) env() map[string]json.RawMessage {
	r.t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &m); err != nil {
		r.t.Fatalf("body %q is not a JSON object: %v", r.Body, err)
	}
	return m
}

func (r resp) code() int {
	r.t.Helper()
	var c int
	if err := json.Unmarshal(r.env()["code"], &c); err != nil {
		r.t.Fatalf("code in %s: %v", r.Body, err)
	}
	return c
}

func (r resp) message() string {
	r.t.Helper()
	var s string
	if err := json.Unmarshal(r.env()["message"], &s); err != nil {
		r.t.Fatalf("message in %s: %v", r.Body, err)
	}
	return s
}

// data decodes the data key into v (it must be present).
func (r resp) data(v any) {
	r.t.Helper()
	raw, ok := r.env()["data"]
	if !ok {
		r.t.Fatalf("no data key in %s", r.Body)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		r.t.Fatalf("data of %s: %v", r.Body, err)
	}
}

func (r resp) hasKey(k string) bool {
	r.t.Helper()
	_, ok := r.env()[k]
	return ok
}

// wantCode asserts the HTTP 200 envelope with the given code.
func (r resp) wantCode(code int) resp {
	r.t.Helper()
	if r.Status != http.StatusOK {
		r.t.Fatalf("HTTP %d, want 200; body %s", r.Status, r.Body)
	}
	if got := r.code(); got != code {
		r.t.Fatalf("code %d, want %d; body %s", got, code, r.Body)
	}
	return r
}

// wantBadParam asserts a -400 whose message names field (and each extra
// substring, e.g. the limit).
func (r resp) wantBadParam(field string, extra ...string) {
	r.t.Helper()
	r.wantCode(-400)
	msg := r.message()
	if !strings.HasPrefix(msg, field+":") {
		r.t.Fatalf("-400 message %q does not name field %q", msg, field)
	}
	for _, s := range extra {
		if !strings.Contains(msg, s) {
			r.t.Fatalf("-400 message %q lacks %q", msg, s)
		}
	}
	if r.hasKey("data") {
		r.t.Fatalf("-400 has data: %s", r.Body)
	}
}

func (r resp) wantBody(want string) {
	r.t.Helper()
	if string(r.Body) != want {
		r.t.Fatalf("body\n got %s\nwant %s", r.Body, want)
	}
}

func (e *tenv) do(req *http.Request) resp {
	e.t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := resp{t: e.t, Status: res.StatusCode, Header: res.Header, Body: b}
	// C11 is about the protocol's routes; the admin API is ours (and
	// answers -401/-403 by design).
	if strings.HasPrefix(req.URL.Path, "/discovery/") && !strings.HasPrefix(req.URL.Path, "/discovery/prometheus/") &&
		!strings.HasPrefix(req.URL.Path, "/discovery/admin/") && res.StatusCode == http.StatusOK {
		var m struct{ Code *int }
		if json.Unmarshal(b, &m) == nil && m.Code != nil {
			e.codesMu.Lock()
			e.codes = append(e.codes, *m.Code)
			e.codesMu.Unlock()
		}
	}
	return r
}

func (e *tenv) newReq(ctx context.Context, method, path string, query url.Values, body io.Reader, ct string) *http.Request {
	e.t.Helper()
	u := e.ts.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return req
}

// post sends form as an urlencoded body, like kratos.
func (e *tenv) post(path string, form url.Values) resp {
	e.t.Helper()
	return e.do(e.newReq(context.Background(), http.MethodPost, path, nil,
		strings.NewReader(form.Encode()), "application/x-www-form-urlencoded"))
}

// postRaw sends a raw body and a raw query.
func (e *tenv) postRaw(path, rawQuery, ct, body string) resp {
	e.t.Helper()
	req := e.newReq(context.Background(), http.MethodPost, path, nil, strings.NewReader(body), ct)
	req.URL.RawQuery = rawQuery
	return e.do(req)
}

func (e *tenv) get(path string, query url.Values) resp {
	e.t.Helper()
	return e.do(e.newReq(context.Background(), http.MethodGet, path, query, nil, ""))
}

func (e *tenv) getRaw(path, rawQuery string) resp {
	e.t.Helper()
	req := e.newReq(context.Background(), http.MethodGet, path, nil, nil, "")
	req.URL.RawQuery = rawQuery
	return e.do(req)
}

// form builds url.Values from alternating name, value pairs (repeats allowed).
func form(kv ...string) url.Values {
	if len(kv)%2 != 0 {
		panic("form: odd number of arguments")
	}
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func with(v url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = []string{kv[i+1]}
	}
	return out
}

func without(v url.Values, names ...string) url.Values {
	out := with(v)
	for _, n := range names {
		delete(out, n)
	}
	return out
}

// regForm is a kratos-like register of host in zone of appid.
func regForm(appid, zone, host string, extra ...string) url.Values {
	v := form("region", "sh", "zone", zone, "env", tEnv, "hostname", host, "appid", appid,
		"addrs", "grpc://10.0.0.5:9000", "version", "v1", "status", "1", "metadata", "")
	for i := 0; i < len(extra); i += 2 {
		v[extra[i]] = []string{extra[i+1]}
	}
	return v
}

func keyForm(appid, zone, host string) url.Values {
	return form("region", "sh", "zone", zone, "env", tEnv, "hostname", host, "appid", appid)
}

func (e *tenv) register(appid, zone, host string, extra ...string) {
	e.t.Helper()
	e.post("/discovery/register", regForm(appid, zone, host, extra...)).wantCode(0)
}

// typed instance for field comparisons.
type inst = registry.Instance

type typedInfo struct {
	Instances       map[string][]inst `json:"instances"`
	LatestTimestamp int64             `json:"latest_timestamp"`
}

// fetch returns the typed InstanceInfo of appid (status 3, all zones) or
// fails when the answer is not 0.
func (e *tenv) fetch(appid string) typedInfo {
	e.t.Helper()
	var ti typedInfo
	e.get("/discovery/fetch", form("env", tEnv, "appid", appid, "status", "3")).wantCode(0).data(&ti)
	return ti
}

func (e *tenv) instance(appid, zone, host string) inst {
	e.t.Helper()
	for _, in := range e.fetch(appid).Instances[zone] {
		if in.Hostname == host {
			return in
		}
	}
	e.t.Fatalf("no instance %s/%s/%s", appid, zone, host)
	return inst{}
}

// state is a fingerprint of the whole registry for "nothing changed" checks:
// every instance with every timestamp, and the app latest timestamps.
func (e *tenv) state() string {
	e.t.Helper()
	snap := e.reg.Snapshot()
	var b strings.Builder
	for _, in := range snap.Instances {
		fmt.Fprintf(&b, "%+v\n", in)
	}
	fmt.Fprintf(&b, "%+v\n", snap.Tombstones)
	for k := range e.reg.FetchAll() {
		for _, envName := range []string{tEnv, "dev"} {
			if info, err := e.reg.Fetch(envName, k, "", 3); err == nil {
				fmt.Fprintf(&b, "%s/%s latest=%d\n", envName, k, info.LatestTimestamp)
			}
		}
	}
	return b.String()
}

// unchanged asserts that f leaves the registry exactly as it was.
func (e *tenv) unchanged(f func()) {
	e.t.Helper()
	before := e.state()
	f()
	if after := e.state(); after != before {
		e.t.Fatalf("state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func (e *tenv) waitWaiters(n int) {
	e.t.Helper()
	testkit.EventuallyTrue(e.t, 10*time.Second, fmt.Sprintf("%d parked waiters", n), func() bool { return e.reg.Stats().Waiters == n })
}

// pollAsync starts a GET in a goroutine; the result arrives on the channel.
// The request is cancelled when ctx ends.
func (e *tenv) pollAsync(ctx context.Context, path string, q url.Values, hdr ...string) <-chan resp {
	e.t.Helper()
	req := e.newReq(ctx, http.MethodGet, path, q, nil, "")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ch := make(chan resp, 1)
	go func() {
		res, err := e.client.Do(req)
		if err != nil {
			ch <- resp{t: e.t, Status: -1, Body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		ch <- resp{t: e.t, Status: res.StatusCode, Header: res.Header, Body: b}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan resp) resp {
	t.Helper()
	select {
	case r := <-ch:
		if r.Status < 0 {
			t.Fatalf("request failed: %s", r.Body)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no answer within 20 s")
	}
	return resp{}
}

func pollsQuery(env, host string, pairs ...any) url.Values {
	v := form("env", env, "hostname", host)
	for i := 0; i < len(pairs); i += 2 {
		v.Add("appid", pairs[i].(string))
		v.Add("latest_timestamp", fmt.Sprint(pairs[i+1]))
	}
	return v
}

// pollsData decodes a polls success into appid → InstanceInfo and the
// error.-404 list.
func pollsData(r resp) (map[string]typedInfo, []string) {
	r.t.Helper()
	var d map[string]typedInfo
	r.data(&d)
	var errs map[string][]string
	if err := json.Unmarshal(r.env()["error"], &errs); err != nil {
		r.t.Fatalf("error key of %s: %v", r.Body, err)
	}
	return d, errs["-404"]
}

func ns(t time.Time) int64 { return t.UnixNano() }

func i64(n int64) string { return strconv.FormatInt(n, 10) }

// noGuard turns self-preservation off so evictions are not held back.
func noGuard(c *registry.Config) { c.SelfPreservation = false }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// httpGet is a one-shot GET on its own connection (closed afterwards), safe
// to call from any goroutine; failures come back as Status -1.
func httpGet(t *testing.T, u string) resp {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get(u)
	if err != nil {
		return resp{t: t, Status: -1, Body: []byte(err.Error())}
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{t: t, Status: res.StatusCode, Header: res.Header, Body: b}
}

// metric returns the value of one sample of the node's metrics; labels are
// name, value pairs that must all match.
func (e *tenv) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// discardWriter is a ResponseWriter that keeps only the body length.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

// wantSharedAnswer serves GET u through h, wants an answer of at least
// minBytes with its exact Content-Length, then fails if serving it again
// allocates more than an eighth of the answer per request: the answer must
// be the registry's shared encoded bytes, not a per-request copy or encode.
func wantSharedAnswer(t *testing.T, h http.Handler, u string, minBytes int) {
	t.Helper()
	serve := func() *discardWriter {
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, u, nil))
		return w
	}
	first := serve() // encodes the answer once
	if first.code != http.StatusOK || first.n < minBytes || first.h.Get("Content-Length") != strconv.Itoa(first.n) {
		t.Fatalf("%s: HTTP %d, %d bytes, Content-Length %q", u, first.code, first.n, first.h.Get("Content-Length"))
	}
	const n = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		serve()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > uint64(first.n)/8 {
		t.Errorf("%s: %d bytes allocated per answer of %d bytes: the answer is copied or encoded per request", u, per, first.n)
	} else {
		t.Logf("%s: %d bytes allocated per answer of %d bytes", u, per, first.n)
	}
}
