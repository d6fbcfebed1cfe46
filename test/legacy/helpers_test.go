package legacy

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
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

const (
	testEnv  = "test"
	testZone = "zoneA"
)

// testLogger logs to the test when LEGACY_TEST_LOGS=1, else nowhere.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("LEGACY_TEST_LOGS") != "1" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start starts a node with test defaults (env test, zone zoneA) and kills it
// at cleanup unless the test closed it.
func start(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Env == "" {
		cfg.Env = testEnv
	}
	if cfg.Zone == "" {
		cfg.Zone = testZone
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	n, err := Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(n.Kill)
	return n
}

// listen pre-binds a loopback listener so a node's address is known before it
// starts.
func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// wire is a raw HTTP client for the protocol routes.
type wire struct {
	t testing.TB
	c *http.Client
}

func newWire(t testing.TB) *wire {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &wire{t: t, c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// answer is one decoded protocol answer.
type answer struct {
	Status  int
	Header  http.Header
	Body    []byte
	Keys    map[string]json.RawMessage
	Code    int
	Message string
	Data    json.RawMessage
}

func (a answer) has(k string) bool { _, ok := a.Keys[k]; return ok }

func (a answer) keys() []string {
	var ks []string
	for k := range a.Keys {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (w *wire) do(ctx context.Context, method, addr, path string, v url.Values, hdr map[string]string) (answer, error) {
	var body io.Reader
	u := "http://" + addr + path
	if method == http.MethodPost {
		body = strings.NewReader(v.Encode())
	} else if len(v) > 0 {
		u += "?" + v.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return answer{}, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	resp, err := w.c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &a.Keys); err != nil {
			return a, fmt.Errorf("decode %s: %w", b, err)
		}
		_ = json.Unmarshal(a.Keys["code"], &a.Code)
		_ = json.Unmarshal(a.Keys["message"], &a.Message)
		a.Data = a.Keys["data"]
	}
	return a, nil
}

func (w *wire) must(method, addr, path string, v url.Values, hdr map[string]string) answer {
	w.t.Helper()
	a, err := w.do(context.Background(), method, addr, path, v, hdr)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
}

func (w *wire) post(addr, path string, v url.Values) answer {
	w.t.Helper()
	return w.must(http.MethodPost, addr, path, v, nil)
}

func (w *wire) get(addr, path string, v url.Values) answer {
	w.t.Helper()
	return w.must(http.MethodGet, addr, path, v, nil)
}

// code posts and checks the answer code.
func (w *wire) postCode(addr, path string, v url.Values, want int) answer {
	w.t.Helper()
	a := w.post(addr, path, v)
	if a.Code != want {
		w.t.Fatalf("POST %s %v: code %d, want %d; body %s", path, v, a.Code, want, a.Body)
	}
	return a
}

// form builds url.Values from key, value pairs; a key may repeat.
func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// reg is a register form for the test env and zone.
func reg(appid, hostname string, addrs ...string) url.Values {
	v := form("region", "r1", "zone", testZone, "env", testEnv, "appid", appid, "hostname", hostname, "status", "1")
	for _, a := range addrs {
		v.Add("addrs", a)
	}
	return v
}

func key(appid, hostname string) url.Values {
	return form("region", "r1", "zone", testZone, "env", testEnv, "appid", appid, "hostname", hostname)
}

func with(v url.Values, kv ...string) url.Values {
	c := url.Values{}
	for k, l := range v {
		c[k] = slices.Clone(l)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Set(kv[i], kv[i+1])
	}
	return c
}

// fetchInfo fetches (test env) and decodes the InstanceInfo.
func (w *wire) fetchInfo(addr, appid string) (InstanceInfo, int) {
	w.t.Helper()
	a := w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", appid, "status", "3"))
	var info InstanceInfo
	if a.Code == 0 {
		if err := json.Unmarshal(a.Data, &info); err != nil {
			w.t.Fatalf("decode fetch: %v", err)
		}
	}
	return info, a.Code
}

// objectKeys returns the keys of a JSON object in wire order.
func objectKeys(t testing.TB, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	var ks []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

// recorder is a fake peer that records every request and answers code 0.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path string
	Form         url.Values
	RawBody      string
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		_ = req.ParseForm()
		r.mu.Lock()
		r.reqs = append(r.reqs, recorded{Method: req.Method, Path: req.URL.Path, Form: req.Form, RawBody: string(body)})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if req.URL.Path == "/discovery/fetch/all" {
			_, _ = io.WriteString(w, `{"code":0,"message":"0","ttl":1,"data":{}}`)
			return
		}
		_, _ = io.WriteString(w, `{"code":0,"message":"0","ttl":1}`)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) addr() string { return strings.TrimPrefix(r.srv.URL, "http://") }

// find returns the recorded requests to path for appid.
func (r *recorder) find(path, appid string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, q := range r.reqs {
		if q.Path == path && q.Form.Get("appid") == appid {
			out = append(out, q)
		}
	}
	return out
}
