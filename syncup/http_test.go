package syncup

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// lateHandler lets the HTTP server exist before the Cluster it serves
// (the Cluster needs its advertised address at construction).
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := l.h.Load()
	if h == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// startHTTPNode runs a node whose peers reach it over real HTTP on
// 127.0.0.1:0, with the internal handler mounted like cmd does.
func startHTTPNode(t testing.TB, join []*tnode, cfg func(*Config)) *tnode {
	t.Helper()
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lh := &lateHandler{}
	mux := http.NewServeMux()
	mux.Handle("/discovery/internal/", lh)
	srv := httptest.NewUnstartedServer(mux)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	n := startNode(t, nodeOpt{http: true, addr: ln.Addr().String(), join: join, cfg: cfg})
	h := n.c.Handler()
	lh.h.Store(&h)
	n.lh = lh
	return n
}

// C56, C60, C61 over the HTTP transport: replicate, the renew handshake,
// startup sync by snapshot and anti-entropy digests.
func TestHTTP_ClusterRoundTrip(t *testing.T) {
	a := startHTTPNode(t, nil, nil)
	fill(t, a, 500)
	b := startHTTPNode(t, []*tnode{a}, nil)
	testkit.EventuallyTrue(t, waitTimeout, "B synced over HTTP", b.c.Ready)
	if got, want := instanceCount(b), instanceCount(a); got < want {
		t.Fatalf("B holds %d instances after sync, want %d", got, want)
	}
	stored := a.clientRegister(t, testInstance("demo.http", "z1"))
	testkit.EventuallyTrue(t, waitTimeout, "register replicated over HTTP", func() bool { return b.has(stored.Key()) })

	only, _, _ := a.reg.Register(testInstance("demo.http", "z1"), 0)
	ins, _ := a.reg.Renew(only.Key(), false, 0)
	a.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	testkit.EventuallyTrue(t, waitTimeout, "-404 handshake over HTTP", func() bool { return b.has(only.Key()) })

	onlyB, _, _ := b.reg.Register(testInstance("demo.http2", "z1"), 0)
	a.c.syncer.trigger(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "anti-entropy over HTTP", func() bool { return a.has(onlyB.Key()) })
}

func TestHTTP_SnapshotStreamRoundTrip(t *testing.T) {
	a := startHTTPNode(t, nil, nil)
	fill(t, a, 300)
	if _, err := a.reg.Cancel(registry.Key{Env: "test", AppID: "demo.fill.1", Zone: "z1", Hostname: "gone"}, time.Now().UnixNano()); err == nil {
		t.Fatal("cancel of an absent key should answer not found")
	}
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second, Auth: a.c.auth})
	defer tr.CloseIdleConnections()
	var got registry.Snapshot
	ready, err := tr.Snapshot(t.Context(), a.addr, func(it SnapshotItem) error {
		if it.Instance != nil {
			got.Instances = append(got.Instances, *it.Instance)
		} else {
			got.Tombstones = append(got.Tombstones, *it.Tombstone)
		}
		return nil
	})
	if err != nil || !ready {
		t.Fatalf("snapshot: ready=%v err=%v", ready, err)
	}
	want := a.reg.Snapshot()
	sortI := cmpopts.SortSlices(func(x, y registry.Instance) bool { return x.Hostname < y.Hostname })
	sortT := cmpopts.SortSlices(func(x, y registry.Tombstone) bool { return x.Key.Hostname < y.Key.Hostname })
	ignoreRenew := cmpopts.IgnoreFields(registry.Instance{}, "RenewTimestamp")
	if d := cmp.Diff(want, got, sortI, sortT, ignoreRenew, cmpopts.EquateEmpty()); d != "" {
		t.Fatalf("snapshot over HTTP differs (-want +got):\n%s", d)
	}
	if len(got.Tombstones) != 1 {
		t.Fatalf("tombstones: %v", got.Tombstones)
	}
}

// Bad payloads are a 400 naming the field, never a panic, and change nothing.
func TestHandler_BadPayloads(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork(), cfg: func(c *Config) { c.MaxBatchOps = 64; c.MaxBodyBytes = 64 << 10; c.MaxDigests = 2 }})
	h := n.c.Handler()
	before := n.reg.Snapshot()
	reg := `{"op":"register","replication":true,"instance":{"env":"test","appid":"a","zone":"z1","hostname":"h","addrs":["http://x:1"],"status":1,"dirty_timestamp":5}}`
	many := strings.TrimSuffix(strings.Repeat(reg+",", 65), ",")
	cases := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"not json", "POST", PathReplicate, "{", 400, "invalid JSON"},
		{"wrong type", "POST", PathReplicate, `{"ops":"x"}`, 400, "invalid JSON"},
		{"empty ops", "POST", PathReplicate, `{"ops":[]}`, 400, "ops"},
		{"unknown kind", "POST", PathReplicate, `{"ops":[{"op":"drop","replication":true}]}`, 400, "unknown kind"},
		{"no flags", "POST", PathReplicate, `{"ops":[` + strings.Replace(reg, `"replication":true`, `"replication":false`, 1) + `]}`, 400, "from_zone"},
		{"register without instance", "POST", PathReplicate, `{"ops":[{"op":"register","replication":true}]}`, 400, "instance"},
		{"register without hostname", "POST", PathReplicate, `{"ops":[` + strings.Replace(reg, `"hostname":"h"`, `"hostname":""`, 1) + `]}`, 400, "hostname"},
		{"register without dirty", "POST", PathReplicate, `{"ops":[` + strings.Replace(reg, `"dirty_timestamp":5`, `"dirty_timestamp":0`, 1) + `]}`, 400, "dirty_timestamp"},
		{"renew without key", "POST", PathReplicate, `{"ops":[{"op":"renew","replication":true,"dirty_timestamp":1}]}`, 400, "key"},
		{"cancel without time", "POST", PathReplicate, `{"ops":[{"op":"cancel","replication":true,"key":{"env":"e","appid":"a","zone":"z","hostname":"h"}}]}`, 400, "dirty_timestamp"},
		{"set without hostnames", "POST", PathReplicate, `{"ops":[{"op":"set","replication":true,"set":{"env":"e","appid":"a","zone":"z","set_timestamp":1}}]}`, 400, "hostnames"},
		{"too many ops", "POST", PathReplicate, `{"ops":[` + many + `]}`, 400, "at most 64"},
		{"body too large", "POST", PathReplicate, `{"ops":[` + strings.Repeat(" ", 70<<10) + `]}`, 400, "larger than"},
		{"trailing data", "POST", PathReplicate, `{"ops":[` + reg + `]} {}`, 400, "trailing"},
		{"digest without appid", "POST", PathDigest, `{"digests":[{"env":"e","digest":1}]}`, 400, "digests[0]"},
		{"too many digests", "POST", PathDigest, `{"digests":[{"env":"e","appid":"a","digest":1},{"env":"e","appid":"b","digest":1},{"env":"e","appid":"c","digest":1}]}`, 400, "digests: at most 2, got 3"},
		{"wrong method", "GET", PathReplicate, "", 405, "not allowed"},
		{"snapshot by POST", "POST", PathSnapshot, "", 405, "not allowed"},
		{"unknown path", "GET", "/discovery/internal/nope", "", 404, "unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			n.c.auth.Sign(req, []byte(tc.body))
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tc.code, tc.msg)
			}
		})
	}
	after := n.reg.Snapshot()
	if len(after.Instances) != len(before.Instances) || len(after.Tombstones) != len(before.Tombstones) {
		t.Fatal("a rejected payload changed the registry")
	}
}

// Beyond cluster.max_peer_requests served at once, a peer request is
// refused at once with 503 peer_busy (the sender retries), and served again
// when a slot frees.
func TestHandler_PeerBusy(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork(), cfg: func(c *Config) { c.MaxPeerRequests = 2 }})
	h := n.c.Handler()
	body := `{"digests":[]}`
	serve := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, PathDigest, strings.NewReader(body))
		n.c.auth.Sign(req, []byte(body))
		h.ServeHTTP(rec, req)
		return rec
	}
	// Two requests in service: their slots are taken as the handler takes them.
	n.c.handler.sem <- struct{}{}
	n.c.handler.sem <- struct{}{}
	if rec := serve(); rec.Code != 503 || rec.Header().Get("X-Discovery-Refused") != "peer_busy" {
		t.Fatalf("third request: %d %q refused=%q, want 503 peer_busy", rec.Code, rec.Body.String(), rec.Header().Get("X-Discovery-Refused"))
	}
	<-n.c.handler.sem
	if rec := serve(); rec.Code != 200 {
		t.Fatalf("with a free slot: %d %q", rec.Code, rec.Body.String())
	}
}

// Per-op results: registry errors are per-op codes in a 200 answer; the
// renew handshake codes of spec 7.3 (C26/C60 semantics on the internal path).
func TestHandler_PerOpCodes(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork()})
	h := http.StripPrefix("/discovery/internal", n.c.Handler()) // mounted with the prefix stripped
	reg := func(status int, dirty int64) string {
		return fmt.Sprintf(`{"op":"register","replication":true,"instance":{"env":"test","appid":"demo.codes","zone":"z1","hostname":"h1","addrs":["http://x:1"],"status":%d,"dirty_timestamp":%d}}`, status, dirty)
	}
	renew := func(dirty int64) string {
		return fmt.Sprintf(`{"op":"renew","replication":true,"key":{"env":"test","appid":"demo.codes","zone":"z1","hostname":"h1"},"dirty_timestamp":%d}`, dirty)
	}
	body := `{"ops":[` + strings.Join([]string{renew(100), reg(3, 100), reg(1, 100), renew(100), renew(50), renew(200)}, ",") + `]}`
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, PathReplicate, strings.NewReader(body))
	n.c.auth.Sign(req, []byte(body))
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
	}
	var resp ReplicateResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	want := []int{CodeNotFound, CodeInvalid, CodeOK, CodeOK, CodeConflict, CodeNotFound}
	if len(resp.Results) != len(want) {
		t.Fatalf("results %+v", resp.Results)
	}
	for i, w := range want {
		if resp.Results[i].Code != w {
			t.Fatalf("op %d: code %d, want %d (%+v)", i, resp.Results[i].Code, w, resp.Results)
		}
	}
	if c := resp.Results[4].Instance; c == nil || c.DirtyTimestamp != 100 || c.Hostname != "h1" {
		t.Fatalf("-409 must carry the receiver's copy: %+v", c)
	}
	if !resp.Results[2].Applied {
		t.Fatal("register that changed state must say applied")
	}
}

// HTTP 400 from a peer is permanent (not resent); 5xx is retried.
func TestHTTPTransport_StatusErrors(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if strings.HasSuffix(r.URL.Path, "replicate") {
			http.Error(w, `{"error":"ops: bad"}`, http.StatusBadRequest)
			return
		}
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second})
	defer tr.CloseIdleConnections()
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, err := tr.Replicate(t.Context(), addr, &ReplicateRequest{Ops: []Op{{Kind: OpRenew}}})
	var perm *PermanentError
	if err == nil || !errors.As(err, &perm) || !strings.Contains(err.Error(), "ops: bad") {
		t.Fatalf("400 must be a PermanentError with the message, got %v", err)
	}
	_, err = tr.Digest(t.Context(), addr, &DigestRequest{})
	if err == nil || errors.As(err, &perm) {
		t.Fatalf("503 must be retryable, got %v", err)
	}
}

func TestDecodeSnapshot_Malformed(t *testing.T) {
	for _, in := range []string{"", "[]", `{"instances":{}}`, `{"instances":[1]}`, `{"instances":[{}]`, `{"tombstones":[{"key":5}]}`, `{"x":`} {
		if err := wire.DecodeSnapshot(strings.NewReader(in), func(SnapshotItem) error { return nil }); err == nil {
			t.Errorf("%q: expected an error", in)
		}
	}
	n := 0
	err := wire.DecodeSnapshot(strings.NewReader(`{"extra":{"a":[1]},"instances":[{"appid":"x"}],"tombstones":[]}`), func(SnapshotItem) error { n++; return nil })
	if err != nil || n != 1 {
		t.Fatalf("unknown keys must be skipped: n=%d err=%v", n, err)
	}
}

func FuzzHandlerReplicate(f *testing.F) {
	f.Add(`{"ops":[{"op":"register","replication":true,"instance":{"env":"e","appid":"a","zone":"z","hostname":"h","addrs":["x"],"status":1,"dirty_timestamp":5}}]}`)
	f.Add(`{"ops":[{"op":"set","from_zone":true,"set":{"env":"e","appid":"a","zone":"z","hostnames":["h"],"statuses":[1,2],"set_timestamp":3}}]}`)
	f.Add(`{"ops":[{"op":"cancel","replication":true,"key":{"env":"e","appid":"a","zone":"z","hostname":"h"},"dirty_timestamp":9}]}`)
	reg, err := registry.New(registry.DefaultConfig(), nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	c, err := New(testConfig(), Self{Env: "e", Zone: "z", Hostname: "h", HTTPAddr: "10.0.0.1:7171"}, reg, Deps{Transport: NewMemNetwork().Transport("x")})
	if err != nil {
		f.Fatal(err)
	}
	h := c.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, PathReplicate, strings.NewReader(body))
		c.auth.Sign(req, []byte(body))
		h.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("code %d", rec.Code)
		}
	})
}

// encodeSnapshot output is valid JSON with both arrays even when empty.
func TestEncodeSnapshot_Empty(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if err := wire.EncodeSnapshot(bw, func(func(SnapshotItem) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var s registry.Snapshot
	if err := json.NewDecoder(io.LimitReader(&buf, 1<<20)).Decode(&s); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
}

// Over HTTP a batch larger than the peer's max_body_bytes is refused with
// HTTP 400 as a whole; the sender splits it and nothing is lost (a valid
// configuration: max_body_bytes 64 KiB with batch_size 512).
func TestHTTP_BatchOverPeerBodyLimitIsSplit(t *testing.T) {
	a := startHTTPNode(t, nil, func(c *Config) { c.BatchSize = 512 })
	b := startHTTPNode(t, []*tnode{a}, func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	testkit.EventuallyTrue(t, waitTimeout, "mesh", func() bool { return len(a.c.repl.same()) == 1 && b.c.Ready() })
	quiet(t, a, b)
	var keys []registry.Key
	for range 400 { // about 100 KiB of JSON: over B's limit once batched
		st, _, err := a.reg.Register(testInstance("demo.big", "z1"), 0)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, st.Key())
	}
	// B answers 503 (retried) while the ops queue up behind the first
	// batch, so the next batch holds all the others.
	h := b.lh.h.Swap(nil)
	for _, k := range keys {
		ins, _ := a.reg.Get(k)
		a.c.Register(ins, true)
	}
	p := a.peerNamed(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "A's link to B failing", p.failing.Load)
	b.lh.h.Store(h)
	quiet(t, a, b)
	for _, k := range keys {
		if !b.has(k) {
			t.Fatalf("op lost: %v (failed ops %v)", k, testutil.ToFloat64(a.c.met.failed))
		}
	}
}
