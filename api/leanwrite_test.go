package api

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
)

// rawAnswer is one answer read off a socket: status, headers without Date,
// body, and whether the server closed the connection after it.
type rawAnswer struct {
	Status int
	Header http.Header
	Body   string
	Closed bool
}

// exchange sends raw request bytes on a new connection and reads one
// answer, then whether the connection is still open.
func exchange(t *testing.T, addr, raw string) rawAnswer {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer to %q: %v", raw[:min(len(raw), 60)], err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	res.Header.Del("Date")
	a := rawAnswer{Status: res.StatusCode, Header: res.Header, Body: string(b)}
	// Still open: a second request on it is answered.
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		a.Closed = true
		return a
	}
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		a.Closed = true
		return a
	}
	_ = res.Body.Close()
	return a
}

func post(path, hdrs, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: x\r\n" + hdrs + "Content-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body
}

const ctForm = "Content-Type: application/x-www-form-urlencoded\r\n"

// Every write a lean connection serves is answered exactly as net/http
// answers it (status, headers but Date, body, the connection kept), and
// leaves the registry exactly as net/http does; every request outside the
// lean subset is handed to net/http and answered by it. Two nodes on the
// same clock, http.lean_writes on and off, get the same requests in the
// same order, each on a new connection.
func TestLeanWrites_AnswersAsNetHTTP(t *testing.T) {
	// The peer routes' handler (syncup's in a node): echoes what it read.
	internal := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Discovery-Peer-Sig", "sig-"+r.Header.Get("X-Discovery-Peer-Auth"))
		_, _ = fmt.Fprintf(w, `{"path":%q,"n":%d,"host":%q}`, r.URL.Path, len(b), r.Host)
	})
	newNode := func(lean bool) *tenv {
		return newEnv(t, options{refusals: true, cfg: func(c *Config) { c.LeanWrites = lean }, deps: func(d *Deps) { d.Peers, d.Internal = nil, internal }})
	}
	lean, plain := newNode(true), newNode(false)
	reg := regForm(appA, z1, "h1", "metadata", `{"weight":"10"}`).Encode()
	big := with(regForm(appA, z1, "h9"), "pad", strings.Repeat("x", 70<<10)).Encode() // within max_body_bytes, above the lean bound
	cases := []struct {
		name string
		raw  string
		lean bool // served by the lean connection
	}{
		{"register", post(pathRegister, ctForm, reg), true},
		{"register again (same instance)", post(pathRegister, ctForm, reg), true},
		{"register without Content-Type", post(pathRegister, "", regForm(appA, z1, "h2").Encode()), true},
		{"register missing hostname", post(pathRegister, ctForm, without(regForm(appA, z1, "h3"), "hostname").Encode()), true},
		{"register bad status", post(pathRegister, ctForm, with(regForm(appA, z1, "h3"), "status", "7").Encode()), true},
		{"register of infra.discovery refused", post(pathRegister, ctForm, regForm(wire.InfraAppID, z1, "h3").Encode()), true},
		{"register with peer parameters from a client", post(pathRegister, ctForm, with(regForm(appA, z1, "h4"), "replication", "true", "dirtytimestamp", "5").Encode()), true},
		{"renew", post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), true},
		{"renew in the query", post(pathRenew+"?"+keyForm(appA, z1, "h2").Encode(), "", ""), true},
		{"renew of an unknown instance", post(pathRenew, ctForm, keyForm(appA, z1, "nobody").Encode()), true},
		{"renew with a bad escape", post(pathRenew, ctForm, "appid=%zz"), true},
		{"cancel", post(pathCancel, ctForm, keyForm(appA, z1, "h2").Encode()), true},
		{"Connection: keep-alive", post(pathRenew, ctForm+"Connection: keep-alive\r\n", keyForm(appA, z1, "h1").Encode()), true},
		{"odd header case", post(pathRenew, "content-type: application/x-www-form-urlencoded\r\nX-Thing:  v \r\n", keyForm(appA, z1, "h1").Encode()), true},

		{"peer replicate", post(wire.PathReplicate, "Content-Type: application/json\r\nX-Discovery-Peer-Auth: v1;k\r\n", `{"ops":[]}`), true},
		{"peer digest (large answers: net/http)", post(wire.PathDigest, "Content-Type: application/json\r\n", `{}`), false},
		{"peer replicate without Content-Type", post(wire.PathReplicate, "", `{"ops":[]}`), false},
		{"peer replicate as a form", post(wire.PathReplicate, ctForm, `a=b`), false},
		{"peer snapshot (GET)", "GET " + wire.PathSnapshot + " HTTP/1.1\r\nHost: x\r\n\r\n", false},

		{"Connection: close", post(pathRenew, ctForm+"Connection: close\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"chunked", "POST " + pathRenew + " HTTP/1.1\r\nHost: x\r\n" + ctForm + "Transfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(keyForm(appA, z1, "h1").Encode()), keyForm(appA, z1, "h1").Encode()), false},
		{"Expect: 100-continue", post(pathRenew, ctForm+"Expect: 100-continue\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"HTTP/1.0", strings.Replace(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "HTTP/1.1", "HTTP/1.0", 1), false},
		{"JSON body", post(pathRegister, "Content-Type: application/json\r\n", `{"appid":"x"}`), false},
		{"multipart body", post(pathRenew, "Content-Type: multipart/form-data; boundary=zz\r\n",
			"--zz\r\nContent-Disposition: form-data; name=\"appid\"\r\n\r\n"+appA+"\r\n--zz--\r\n"), false},
		{"body above the lean bound", post(pathRegister, ctForm, big), false},
		{"set (not a lean route)", post(pathSet, ctForm, form("env", tEnv, "appid", appA, "hostname", "h1", "status", "2").Encode()), false},
		{"fetch", "GET " + pathFetch + "?" + form("env", tEnv, "appid", appA, "status", "3").Encode() + " HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"unknown path", post("/discovery/renewx", ctForm, "a=b"), false},
		{"escaped path", post("/discovery/%72enew", ctForm, keyForm(appA, z1, "h1").Encode()), false},
		{"bad header name", post(pathRenew, ctForm+"Bad Name: v\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"control character in a value", post(pathRenew, ctForm+"X-A: a\x01b\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"folded header line", post(pathRenew, ctForm+"X-A: a\r\n b\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"two Content-Lengths", post(pathRenew, ctForm+"Content-Length: 3\r\n", keyForm(appA, z1, "h1").Encode()), false},
		{"signed Content-Length", strings.Replace(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "Content-Length: ", "Content-Length: +", 1), false},
		{"no Host", strings.Replace(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "Host: x\r\n", "", 1), false},
		{"one line ended by LF alone", strings.Replace(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "Host: x\r\n", "Host: x\n", 1), false},
		{"head ended by CRLF LF", strings.Replace(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "\r\n\r\n", "\r\n\n", 1), false},
		{"lines ended by LF alone", strings.ReplaceAll(post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode()), "\r\n", "\n"), false},
		{"two Hosts", post(pathRenew, ctForm+"Host: y\r\n", keyForm(appA, z1, "h1").Encode()), false},
	}
	for _, tc := range cases {
		before := lean.srv.leanWrites.Load()
		got := exchange(t, strings.TrimPrefix(lean.ts.URL, "http://"), tc.raw)
		want := exchange(t, strings.TrimPrefix(plain.ts.URL, "http://"), tc.raw)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: lean answer differs (-net/http +lean):\n%s", tc.name, d)
		}
		if n := lean.srv.leanWrites.Load() - before; (n == 1) != tc.lean || n > 1 {
			t.Errorf("%s: %d lean writes, want lean=%v", tc.name, n, tc.lean)
		}
		if ls, ps := lean.state(), plain.state(); ls != ps {
			t.Fatalf("%s: registries differ:\nlean  %s\nplain %s", tc.name, ls, ps)
		}
	}
	if plain.srv.leanWrites.Load() != 0 {
		t.Errorf("lean_writes=false served %d writes lean", plain.srv.leanWrites.Load())
	}
	// The same counts and codes in the request metrics.
	for _, l := range [][]string{{"route", pathRegister, "code", "0"}, {"route", pathRegister, "code", "-400"}, {"route", pathRenew, "code", "-404"}} {
		if g, w := lean.metric("discovery_http_requests_total", l...), plain.metric("discovery_http_requests_total", l...); g != w || g <= 0 {
			t.Errorf("requests%v: lean %v, net/http %v", l, g, w)
		}
	}
}

// One keep-alive connection: writes served lean, a request handed to
// net/http with the bytes read, which then serves the rest; requests sent
// in one write (pipelined) are answered in order.
func TestLeanWrites_KeepAliveAndPipelining(t *testing.T) {
	e := newEnv(t)
	rc := dialRaw(t, strings.TrimPrefix(e.ts.URL, "http://"))
	renew := post(pathRenew, ctForm, keyForm(appA, z1, "h1").Encode())
	if _, err := io.WriteString(rc.c, post(pathRegister, ctForm, regForm(appA, z1, "h1").Encode())+renew+renew); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{`{"code":0,"message":"0","ttl":1}`, `"hostname":"h1"`, `"hostname":"h1"`} {
		if resp, body := rc.read(5 * time.Second); resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Fatalf("answer %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := e.srv.leanWrites.Load(); n != 3 {
		t.Fatalf("%d lean writes, want 3", n)
	}
	// A fetch and a renew behind it in one write: the connection goes to
	// net/http with both, which answers both in order.
	fetch := "GET " + pathFetch + "?" + form("env", tEnv, "appid", appA, "status", "3").Encode() + " HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(rc.c, fetch+renew); err != nil {
		t.Fatal(err)
	}
	if resp, body := rc.read(5 * time.Second); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"instances"`) {
		t.Fatalf("fetch: %d %s", resp.StatusCode, body)
	}
	if resp, body := rc.read(5 * time.Second); !strings.Contains(body, `"code":0`) || resp.Header.Get("Kratos-Status-Code") != "0" {
		t.Fatalf("renew behind the fetch: %d %s", resp.StatusCode, body)
	}
	if n := e.srv.leanWrites.Load(); n != 3 {
		t.Fatalf("%d lean writes after the hand-over, want 3", n)
	}
	// A body sent in pieces is read whole.
	body := keyForm(appA, z1, "h1").Encode()
	head := strings.TrimSuffix(post(pathRenew, ctForm, body), body)
	rc2 := dialRaw(t, strings.TrimPrefix(e.ts.URL, "http://"))
	for _, part := range []string{head[:7], head[7:], body[:5], body[5:]} {
		if _, err := io.WriteString(rc2.c, part); err != nil {
			t.Fatal(err)
		}
	}
	if resp, b := rc2.read(5 * time.Second); !strings.Contains(b, `"hostname":"h1"`) {
		t.Fatalf("renew in pieces: %d %s", resp.StatusCode, b)
	}
	if n := e.srv.leanWrites.Load(); n != 4 {
		t.Fatalf("%d lean writes, want 4", n)
	}
}

// A lean write's request, header map and form map are pooled: nothing of
// one write reaches the next. Each write lacks what the one before it had
// (a parameter, a peer header, a second addr), on one connection and
// across connections (the pool is the server's), and after a malformed
// body whose parse stopped half-way.
func TestLeanWrites_PooledStateNotCarriedOver(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	full := regForm(appA, z1, "h1", "version", "v9")
	full["addrs"] = []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000"}
	noHost := regForm(appA, z1, "h2")
	noHost.Del("hostname")
	oneAddr := regForm(appA, z1, "h3")
	renewNoApp := keyForm(appA, z1, "h1")
	renewNoApp.Del("appid")
	steps := []struct {
		name, path, hdrs, body, want string
	}{
		{"full register", pathRegister, ctForm + "X-Discovery-Peer-Auth: v1;key=x;ts=1;sig=y\r\n", full.Encode(), `"code":0`},
		{"register without hostname", pathRegister, ctForm, noHost.Encode(), `hostname`},
		{"malformed body", pathRegister, ctForm, "appid=a&zone=" + z1 + "&hostname=%zz&env=" + tEnv, `malformed form body`},
		{"register with one addr", pathRegister, ctForm, oneAddr.Encode(), `"code":0`},
		{"renew without appid", pathRenew, ctForm, renewNoApp.Encode(), `appid`},
		{"renew", pathRenew, "", keyForm(appA, z1, "h1").Encode(), `"hostname":"h1"`},
		// Refused by the lean path after its headers were read into the
		// pooled map (net/http answers it and keeps the connection): the
		// next round's first write must not see this Content-Type.
		{"renew as text/plain", pathRenew, "Content-Type: text/plain\r\n", keyForm(appA, z1, "h1").Encode(), `: required`},
	}
	for round := range 3 {
		rc := dialRaw(t, addr)
		for _, st := range steps {
			if _, err := io.WriteString(rc.c, post(st.path, st.hdrs, st.body)); err != nil {
				t.Fatal(err)
			}
			resp, body := rc.read(5 * time.Second)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, st.want) {
				t.Fatalf("round %d, %s: %d %s, want %s", round, st.name, resp.StatusCode, body, st.want)
			}
			if st.want != `"code":0` && !strings.HasPrefix(st.want, `"hostname"`) && !strings.Contains(body, `"code":-400`) {
				t.Fatalf("round %d, %s: %s, want -400", round, st.name, body)
			}
		}
	}
	if n, want := e.srv.leanWrites.Load(), int64(3*(len(steps)-1)); n != want {
		t.Fatalf("%d lean writes, want %d: the steps must run on lean connections", n, want)
	}
	ti := e.fetch(appA)
	if got := len(ti.Instances[z1]); got != 2 {
		t.Fatalf("%d instances, want h1 and h3: %+v", got, ti.Instances)
	}
	if in := e.instance(appA, z1, "h1"); in.Version != "v9" || len(in.Addrs) != 2 {
		t.Fatalf("h1: %+v", in)
	}
	if in := e.instance(appA, z1, "h3"); in.Version != "v1" || !slices.Equal(in.Addrs, []string{"grpc://10.0.0.5:9000"}) {
		t.Fatalf("h3 got what an earlier write carried: %+v", in)
	}
}

// A client that closes in the middle of a body changes nothing and leaves
// no goroutine (goleak, TestMain); one that sends nothing is closed at
// the header timeout, as net/http closes it.
func TestLeanWrites_BrokenClients(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.ReadHeaderTimeout = 300 * time.Millisecond }})
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	e.unchanged(func() {
		c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		full := post(pathRegister, ctForm, regForm(appA, z1, "h1").Encode())
		if _, err := io.WriteString(c, full[:len(full)-10]); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		// The cut body is answered -400 (to nobody) and counted.
		testkit.EventuallyTrue(t, 5*time.Second, "the cut body answered -400", func() bool {
			return e.metric("discovery_http_requests_total", "route", pathRegister, "code", "-400") == 1
		})
	})
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("silent connection: read %d, %v", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("silent connection closed after %s", d)
	}
}

// The head parser refuses what it does not fully understand (the HTTP
// server answers it) and never panics; what it accepts, net/http reads the
// same way (method, target, Host, length, every header).
func FuzzLeanWriteRequest(f *testing.F) {
	f.Add([]byte(post(pathRenew, ctForm, "")))
	f.Add([]byte("GET /discovery/polls?env=a&appid=b&hostname=h&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\nX1-Bmspy-Timeout: 5\r\n\r\n"))
	f.Add([]byte("POST /discovery/register?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"))
	f.Add([]byte("POST /discovery/cancel HTTP/1.1\r\nhost:x\r\ncontent-length:0\r\nX: \xff\r\n\r\n"))
	f.Add([]byte("POST /discovery/register?\x1d HTTP/1.1\r\nHost:\r\nContent-Length:0\r\n\r\n")) // net/url refuses it
	f.Add([]byte("POST /discovery/internal/replicate HTTP/1.1\r\nHost: 10.0.0.1:7171\r\nContent-Type: application/json\r\n" +
		"Content-Length: 00012\r\nX-Discovery-Peer-Auth: v1;key=a;ts=1\r\nX-A: \t b \t\r\nX-A: c\r\n\r\n"))
	f.Add([]byte("POST /discovery/renew?appid=a&env=b HTTP/1.1\r\nHost: [::1]:7171\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"))
	s := &Server{cfg: DefaultConfig()}
	f.Fuzz(func(t *testing.T, head []byte) {
		if indexHeadEnd(head, 0) != len(head) {
			return // readHead hands over exactly one head, through its CRLF CRLF
		}
		if _, _, ok := s.leanRequest(head); ok { // the poll path's parser
			std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
			if err != nil || std.Method != http.MethodGet || std.ContentLength > 0 || len(std.TransferEncoding) > 0 {
				t.Fatalf("poll head %q accepted; net/http: %v %+v", head, err, std)
			}
		}
		lw, ok := s.leanWriteRequest(head, "127.0.0.1:1")
		if !ok {
			return
		}
		// Back to the pool: the next input's header map must hold
		// nothing of this one (the comparison with net/http below).
		defer s.putWriteState(lw.st)
		r := lw.r
		if r.Method != http.MethodPost || !slices.Contains(leanWriteRoutes[:], r.URL.Path) || lw.bodyLen < 0 || lw.bodyLen > maxLeanBody ||
			len(r.Header["Content-Length"]) != 1 {
			t.Fatalf("accepted %q as %+v", head, r)
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted %q, which net/http refuses: %v", head, err)
		}
		if std.Method != r.Method || std.URL.Path != r.URL.Path || std.URL.RawQuery != r.URL.RawQuery || std.Host != r.Host ||
			std.ContentLength != r.ContentLength || std.RequestURI != r.RequestURI {
			t.Fatalf("%q: net/http %s %s %q host %q len %d, lean %s %s %q host %q len %d", head, std.Method, std.URL.Path, std.URL.RawQuery,
				std.Host, std.ContentLength, r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.ContentLength)
		}
		if d := cmp.Diff(std.Header, r.Header); d != "" {
			t.Fatalf("%q: headers differ (-net/http +lean):\n%s", head, d)
		}
	})
}

// A connection that sent one large body does not keep its room: 200 idle
// keep-alive connections, each after a write of almost 64 KiB, hold less
// than 6 MiB of heap together (18 MiB when each kept the buffer its body
// was read into).
func TestLeanWrites_LargeBodyRoomNotKept(t *testing.T) {
	// No replicator: the test's fake keeps every instance it is handed,
	// whose strings are views of their request's body.
	e := newEnv(t, options{noRepl: true})
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	body := with(regForm(appA, z1, "h1"), "pad", strings.Repeat("x", 60<<10)).Encode()
	req := post(pathRegister, ctForm, body)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	conns := make([]*rawConn, 200)
	for i := range conns {
		conns[i] = dialRaw(t, addr)
		if _, err := io.WriteString(conns[i].c, req); err != nil {
			t.Fatal(err)
		}
	}
	for i, rc := range conns {
		if resp, b := rc.read(10 * time.Second); resp.StatusCode != http.StatusOK {
			t.Fatalf("conn %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if n := e.srv.leanWrites.Load(); n != int64(len(conns)) {
		t.Fatalf("%d lean writes, want %d", n, len(conns))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grown := int64(ms.HeapAlloc) - int64(before); grown > 6<<20 {
		t.Fatalf("heap grew by %d KiB for %d idle connections", grown>>10, len(conns))
	}
}

// A connection given back to net/http again and again (a client
// alternating fetches and polls) stays one layer deep: the bytes not yet
// served come first, then what is left of the earlier prefix, then the
// socket.
func TestReenter_OneLayer(t *testing.T) {
	s := &Server{}
	l := newReentryListener(nil, nil)
	s.reentry.Store(l)
	back := func(c net.Conn, prefix string) *prefixConn {
		t.Helper()
		done := make(chan bool, 1)
		go func() { done <- s.reenter(c, []byte(prefix)) }()
		got := <-l.back
		if !<-done {
			t.Fatal("not given back")
		}
		pc, ok := got.(*prefixConn)
		if !ok {
			t.Fatalf("given back as %T", got)
		}
		return pc
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := a
	for i := range 100 {
		p := fmt.Sprint("P", i, ";")
		pc := back(c, p)
		if _, nested := pc.Conn.(*prefixConn); nested || pc.Conn != a {
			t.Fatalf("round %d: nested %T", i, pc.Conn)
		}
		got := make([]byte, len(p)) // served by net/http
		if _, err := io.ReadFull(pc, got); err != nil || string(got) != p {
			t.Fatalf("round %d: read %q, %v", i, got, err)
		}
		c = pc
	}
	// A prefix still unread, given back with a new one in front of it.
	pc := back(back(c, "old;"), "new;")
	go func() { _, _ = io.WriteString(b, "socket") }()
	got := make([]byte, len("new;old;socket"))
	if _, err := io.ReadFull(pc, got); err != nil || string(got) != "new;old;socket" || pc.Conn != a {
		t.Fatalf("read %q, %v (%T)", got, err, pc.Conn)
	}
}

// Lean writes on many connections at once share the pool of request
// states: every answer is its own request's (a state handed to two
// requests at once, or put back while in use, would mix them; -race).
func TestLeanWrites_PooledStateConcurrent(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	const conns, rounds = 8, 60
	var wg sync.WaitGroup
	for g := range conns {
		wg.Go(func() {
			c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			host := fmt.Sprintf("h%d", g)
			ask := func(path, body, want string) bool {
				if _, err := io.WriteString(c, post(path, ctForm, body)); err != nil {
					t.Error(err)
					return false
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Error(err)
					return false
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || !strings.Contains(string(b), want) {
					t.Errorf("%s %s: %s %v, want %s", host, path, b, err, want)
					return false
				}
				return true
			}
			for j := range rounds {
				version := fmt.Sprintf("v%d.%d", g, j)
				noHost := regForm(appA, z1, host)
				noHost.Del("hostname")
				if !ask(pathRegister, regForm(appA, z1, host, "version", version, "metadata", `{"g":"`+host+`"}`).Encode(), `"code":0`) ||
					!ask(pathRegister, noHost.Encode(), `hostname`) ||
					!ask(pathRenew, keyForm(appA, z1, host).Encode(), `"hostname":"`+host+`"`) ||
					!ask(pathRenew, keyForm(appA, z1, host).Encode(), `"version":"`+version+`"`) {
					return
				}
			}
		})
	}
	wg.Wait()
	if n := e.srv.leanWrites.Load(); n != conns*rounds*4 {
		t.Fatalf("%d lean writes, want %d", n, conns*rounds*4)
	}
	for g := range conns {
		host := fmt.Sprintf("h%d", g)
		if in := e.instance(appA, z1, host); in.Version != fmt.Sprintf("v%d.%d", g, rounds-1) || in.Metadata["g"] != host {
			t.Fatalf("%s: %+v", host, in)
		}
	}
}
