package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// leanEnv is a server on a real listener (Serve), where polls park lean.
type leanEnv struct {
	srv  *Server
	reg  *registry.Registry
	addr string
	done chan error
}

func newLeanEnv(t *testing.T, lean bool) *leanEnv {
	t.Helper()
	reg, err := registry.New(registry.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.PollHold = 2 * time.Second
	cfg.LeanPolls = lean
	srv, err := New(cfg, Deps{Registry: reg, Self: wire.Node{Addr: "127.0.0.1:7171", Zone: z1}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &leanEnv{srv: srv, reg: reg, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-e.done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return e
}

// rawConn is one keep-alive client connection speaking HTTP/1.1 by hand,
// so the test sees exactly what the server writes and reuses the socket.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(method, target, body string) {
	rc.t.Helper()
	req := method + " " + target + " HTTP/1.1\r\nHost: x\r\n"
	if body != "" {
		req += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n"
	}
	if _, err := io.WriteString(rc.c, req+"\r\n"+body); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) read(timeout time.Duration) (*http.Response, string) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		rc.t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp, string(b)
}

func pollTarget(appid string, latest int64) string {
	return "/discovery/polls?" + url.Values{"env": {tEnv}, "hostname": {"w"}, "appid": {appid}, "latest_timestamp": {fmt.Sprint(latest)}}.Encode()
}

func registerBody(appid, host string) string {
	return regForm(appid, z1, host).Encode()
}

// Shutdown while polls keep arriving, on fresh lean connections and on
// connections net/http hands over at the poll: Shutdown returns nil and
// leaves no lean goroutine behind. (That no connection becomes lean once
// Shutdown waits for them, leanAdd, is not forced here: the window of the
// race it closes, a hijack between net/http's Shutdown and the wait, is a
// few instructions wide; -race would report the WaitGroup counted up from
// zero during its Wait.)
func TestLeanPolls_ShutdownWhilePollsArrive(t *testing.T) {
	for _, lean := range []bool{false, true} {
		t.Run(fmt.Sprint("lean_writes=", lean), func(t *testing.T) {
			for range 5 {
				shutdownWhilePollsArrive(t, lean)
			}
		})
	}
}

func shutdownWhilePollsArrive(t *testing.T, lean bool) {
	_, srv, ln, done := serveWithLeanWrites(t, lean)
	req := "GET " + pollTarget("none.yet", 0) + " HTTP/1.1\r\nHost: x\r\n\r\n"
	stop := make(chan struct{})
	var dialers sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for range 8 {
		dialers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
				if err != nil {
					return // the listener is closed: no busy loop of refused dials
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				_, _ = io.WriteString(c, req)
			}
		})
	}
	testkit.EventuallyTrue(t, 5*time.Second, "polls parked", func() bool { return srv.parked.Load() >= 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Shutdown has waited for every counted lean goroutine; one that
	// became lean after that would keep running (or race with the wait:
	// the race detector reports a WaitGroup counted up from zero during
	// its Wait). Those that were waited for are gone at once.
	testkit.EventuallyTrue(t, 2*time.Second, "no lean goroutine left", func() bool {
		buf := make([]byte, 1<<20)
		st := string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(st, "api.(*leanPoll)") && !strings.Contains(st, "api.(*Server).leanWorker")
	})
	close(stop)
	dialers.Wait()
	for _, c := range conns {
		_ = c.Close()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A lean-parked poll is woken by a change and answered exactly as net/http
// answers (status, headers, body), the connection stays alive for the next
// request, the hold ends with -304, the parked count follows, and a
// client that goes away releases its waiter at once.
func TestLeanPolls(t *testing.T) {
	for _, lean := range []bool{true, false} {
		t.Run(fmt.Sprint("lean=", lean), func(t *testing.T) {
			e := newLeanEnv(t, lean)
			w := dialRaw(t, e.addr)
			w.send(http.MethodPost, "/discovery/register", registerBody(appA, "h1"))
			if resp, body := w.read(5 * time.Second); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"code":0`) {
				t.Fatalf("register: %d %s", resp.StatusCode, body)
			}
			info, _ := e.reg.Fetch(tEnv, appA, "", 1)
			p := dialRaw(t, e.addr)
			p.send(http.MethodGet, pollTarget(appA, info.LatestTimestamp), "")
			testkit.EventuallyTrue(t, 5*time.Second, "poll parked", func() bool { return e.srv.parked.Load() == 1 })
			w.send(http.MethodPost, "/discovery/register", registerBody(appA, "h2")) // keep-alive: same connection
			w.read(5 * time.Second)
			resp, body := p.read(5 * time.Second)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Kratos-Status-Code") != "0" || resp.Header.Get("Content-Type") != contentTypeJSON ||
				resp.Header.Get("Date") == "" || resp.ContentLength != int64(len(body)) || !strings.Contains(body, `"h2"`) {
				t.Fatalf("woken answer: %d %v %s", resp.StatusCode, resp.Header, body)
			}
			testkit.EventuallyTrue(t, 5*time.Second, "parked count back to 0", func() bool { return e.srv.parked.Load() == 0 })
			// The same connection serves the next poll, which holds until -304.
			info, _ = e.reg.Fetch(tEnv, appA, "", 1)
			p.send(http.MethodGet, pollTarget(appA, info.LatestTimestamp), "")
			if resp, body := p.read(10 * time.Second); resp.StatusCode != http.StatusOK || resp.Header.Get("Kratos-Status-Code") != "-304" || !strings.Contains(body, `"code":-304`) {
				t.Fatalf("hold over: %d %v %s", resp.StatusCode, resp.Header, body)
			}
			// Served on the lean connection, a poll answered at once, then
			// a register (given back to the HTTP server) on the same socket.
			p.send(http.MethodGet, pollTarget(appA, 0), "")
			if resp, body := p.read(5 * time.Second); resp.Header.Get("Kratos-Status-Code") != "0" || !strings.Contains(body, `"h1"`) {
				t.Fatalf("immediate poll: %v %s", resp.Header, body)
			}
			p.send(http.MethodPost, "/discovery/register", registerBody(appA, "h3"))
			if resp, body := p.read(5 * time.Second); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"code":0`) {
				t.Fatalf("register after polls: %d %s", resp.StatusCode, body)
			}
			// Two requests at once (pipelined): both answered, in order.
			info, _ = e.reg.Fetch(tEnv, appA, "", 1)
			p.send(http.MethodGet, pollTarget(appA, 0), "")
			p.send(http.MethodGet, "/discovery/fetch?"+url.Values{"env": {tEnv}, "appid": {appA}, "status": {"1"}}.Encode(), "")
			r1, b1 := p.read(5 * time.Second)
			r2, b2 := p.read(5 * time.Second)
			if r1.Header.Get("Kratos-Status-Code") != "0" || !strings.Contains(b1, `"h3"`) || r2.StatusCode != http.StatusOK || !strings.Contains(b2, `"instances"`) {
				t.Fatalf("pipelined: %v %s / %v %s", r1.Header, b1, r2.Header, b2)
			}
			// A client that goes away releases its waiter at once.
			gone := dialRaw(t, e.addr)
			gone.send(http.MethodGet, pollTarget(appA, info.LatestTimestamp), "")
			testkit.EventuallyTrue(t, 5*time.Second, "second poll parked", func() bool { return e.srv.parked.Load() == 1 })
			_ = gone.c.Close()
			testkit.EventuallyTrue(t, 5*time.Second, "waiter released on disconnect", func() bool {
				return e.srv.parked.Load() == 0 && e.reg.Stats().Waiters == 0
			})
			if got := e.srv.leanTotal.Load(); (got >= 2) != lean || (!lean && got != 0) {
				t.Fatalf("%d polls parked lean, lean_polls=%v", got, lean)
			}
		})
	}
}

// Shutdown answers every lean-parked poll -304 at once and waits for them.
func TestLeanPolls_Shutdown(t *testing.T) {
	reg, err := registry.New(registry.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	srv, err := New(cfg, Deps{Registry: reg, Self: wire.Node{Addr: "127.0.0.1:7171", Zone: z1}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var conns []*rawConn
	for range 20 {
		rc := dialRaw(t, ln.Addr().String())
		rc.send(http.MethodGet, pollTarget("none.yet", 0), "")
		conns = append(conns, rc)
	}
	testkit.EventuallyTrue(t, 5*time.Second, "20 polls parked", func() bool { return srv.parked.Load() == 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rc := range conns {
		if resp, body := rc.read(5 * time.Second); resp.Header.Get("Kratos-Status-Code") != "-304" {
			t.Fatalf("at shutdown: %v %s", resp.Header, body)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s with parked polls", d)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A client that does not read its answer blocks only the worker writing
// to it: another connection's parked poll is woken and answered meanwhile
// (handOff starts a worker when none is idle; the blocked write ends at
// request_timeout, 10 s, or when the client goes away).
func TestLeanPolls_SlowReaderDelaysNoOne(t *testing.T) {
	e := newLeanEnv(t, true)
	// An answer of about 8 MB, more than the sockets' buffers hold.
	meta := map[string]string{"blob": strings.Repeat("x", 4000)}
	for i := range 2000 {
		in := registry.Instance{Env: tEnv, AppID: appA, Zone: z1, Hostname: fmt.Sprintf("h%04d", i),
			Addrs: []string{"http://10.0.0.1:8000"}, Status: 1, Metadata: meta}
		if _, _, err := e.reg.Register(in, 0); err != nil {
			t.Fatal(err)
		}
	}
	slow := dialRaw(t, e.addr)
	if tc, ok := slow.c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	slow.send(http.MethodGet, pollTarget(appA, 0), "") // answered at once, never read past its first byte
	var b [1]byte
	_ = slow.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(slow.c, b[:]); err != nil {
		t.Fatalf("the large answer did not start: %v", err)
	}

	if _, _, err := e.reg.Register(registry.Instance{Env: tEnv, AppID: appB, Zone: z1, Hostname: "b1", Addrs: []string{"http://10.0.0.2:8000"}, Status: 1}, 0); err != nil {
		t.Fatal(err)
	}
	info, _ := e.reg.Fetch(tEnv, appB, "", 1)
	p := dialRaw(t, e.addr)
	p.send(http.MethodGet, pollTarget(appB, info.LatestTimestamp), "")
	testkit.EventuallyTrue(t, 5*time.Second, "poll parked", func() bool { return e.srv.parked.Load() == 1 })
	if _, _, err := e.reg.Register(registry.Instance{Env: tEnv, AppID: appB, Zone: z1, Hostname: "b2", Addrs: []string{"http://10.0.0.3:8000"}, Status: 1}, 0); err != nil {
		t.Fatal(err)
	}
	// Read with a bound below the slow write's 10 s: answered while it blocks.
	if resp, body := p.read(5 * time.Second); resp.Header.Get("Kratos-Status-Code") != "0" || !strings.Contains(body, `"b2"`) {
		t.Fatalf("woken answer: %v %s", resp.Header, body)
	}
}

// A parked poll keeps its request's strings in one small allocation of
// their own, not the copy of the whole request head they were cut from.
func TestCompactPollRequest(t *testing.T) {
	head := strings.Clone("GET /discovery/polls?env=prod&zone=sh001&appid=a.one&appid=b.two")
	at := func(s string) string { i := strings.Index(head, s); return head[i : i+len(s)] }
	in := registry.PollRequest{Env: at("prod"), Zone: at("sh001"), AppIDs: []string{at("a.one"), at("b.two")}, Latest: []int64{1, 2}}
	got := compactPollRequest(in)
	want := registry.PollRequest{Env: "prod", Zone: "sh001", AppIDs: []string{"a.one", "b.two"}, Latest: []int64{1, 2}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("compacted request (-want +got):\n%s", d)
	}
	lo := uintptr(unsafe.Pointer(unsafe.StringData(head)))
	for _, s := range append([]string{got.Env, got.Zone}, got.AppIDs...) {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); p >= lo && p < lo+uintptr(len(head)) {
			t.Fatalf("%q still points into the head", s)
		}
	}
	if got := compactPollRequest(registry.PollRequest{Env: "e", AppIDs: []string{"a"}}); got.Zone != "" || got.Env != "e" || got.AppIDs[0] != "a" {
		t.Fatalf("no zone: %+v", got)
	}
}
