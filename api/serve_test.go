package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// serve runs srv on a fresh 127.0.0.1:0 listener until the test ends.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	return serveOn(t, srv, listen(t))
}

// serveOn runs srv on ln until the test ends.
func serveOn(t *testing.T, srv *Server, ln net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// A non-poll request whose body stalls is cut at RequestTimeout and
// answered -400 in the envelope; the server keeps serving.
func TestServe_SlowBodyBoundedByRequestTimeout(t *testing.T) {
	e := newEnv(t)
	cfg := DefaultConfig()
	cfg.RequestTimeout = 200 * time.Millisecond
	srv, err := New(cfg, Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := regForm(appA, z1, "h1").Encode()
	// Announce the whole body, send half of it, then stall.
	_, err = io.WriteString(conn, "POST /discovery/register HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "+i64(int64(len(body)))+"\r\n\r\n"+body[:len(body)/2])
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := resp{t: t, Status: res.StatusCode, Header: res.Header, Body: b}
	r.wantBadParam("body", "timeout")
	if st := e.reg.Stats(); len(st.Instances) != 0 {
		t.Fatalf("stored: %+v", st)
	}
	if got := httpGet(t, "http://"+addr+"/healthz"); got.Status != 200 {
		t.Fatalf("healthz after slow body: %d", got.Status)
	}
}

// Serve returns nil after Shutdown, and Shutdown before any request is fine.
func TestServe_ShutdownIdle(t *testing.T) {
	e := newEnv(t)
	srv, err := New(DefaultConfig(), Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	if r := httpGet(t, "http://"+addr+"/discovery/nodes"); r.Status != 200 || !strings.Contains(string(r.Body), `"data":[`) {
		t.Fatalf("nodes: %d %s", r.Status, r.Body)
	}
}

// A connection that never sends a request (e.g. a peer's spare keep-alive
// dial) does not hold Shutdown: net/http alone waits 5 s for it and then
// fails with "context deadline exceeded". With an idle keep-alive connection
// and a parked poll as well, Shutdown bounded by 2 s returns nil, the poll
// gets its -304 and the unused connection is closed by the server.
func TestServe_ShutdownClosesUnusedConnections(t *testing.T) {
	// The unused connection is net/http's (StateNew, closeNewConns) with
	// lean writes off, the lean loop's with them on.
	for _, lean := range []bool{false, true} {
		t.Run(fmt.Sprint("lean_writes=", lean), func(t *testing.T) { shutdownClosesUnusedConnections(t, lean) })
	}
}

// serveWithLeanWrites serves a node with http.lean_writes set to lean on a
// listener of its own; done gets Serve's result. The test shuts it down.
func serveWithLeanWrites(t *testing.T, lean bool) (*tenv, *Server, net.Listener, <-chan error) {
	t.Helper()
	e := newEnv(t)
	cfg := DefaultConfig()
	cfg.LeanWrites = lean
	srv, err := New(cfg, Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return e, srv, ln, done
}

func shutdownClosesUnusedConnections(t *testing.T, lean bool) {
	e, srv, ln, done := serveWithLeanWrites(t, lean)
	base := "http://" + ln.Addr().String()
	if _, _, err := e.reg.Register(registry.Instance{Env: tEnv, AppID: appA, Zone: z1, Hostname: "h1",
		Addrs: []string{"grpc://10.0.0.1:9000"}, Status: 1}, 0); err != nil {
		t.Fatal(err)
	}

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	testkit.EventuallyTrue(t, 10*time.Second, "the unused connection to be accepted", func() bool {
		if lean {
			return srv.caps.open() == 1 // taken by the lean loop at accept
		}
		srv.connMu.Lock()
		defer srv.connMu.Unlock()
		return len(srv.newConns) == 1
	})

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	res, err := client.Get(base + "/healthz") // leaves an idle keep-alive connection
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()

	info, err := e.reg.Fetch(tEnv, appA, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan string, 1)
	go func() {
		res, err := client.Get(base + "/discovery/polls?" + pollsQuery(tEnv, "x", appA, info.LatestTimestamp).Encode())
		if err != nil {
			polled <- err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		polled <- string(b)
	}()
	testkit.EventuallyTrue(t, 10*time.Second, "the poll to park", func() bool { return srv.parked.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (a connection without a request held it)", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if got := <-polled; got != `{"code":-304,"message":"-304","ttl":1}` {
		t.Fatalf("parked poll answered %s", got)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unused connection still open after Shutdown: read %d, %v", n, err)
	}
}

// writeCounter counts the writes to the sockets it accepts.
type writeCounter struct {
	net.Listener
	writes *atomic.Int64
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (l writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{c, l.writes}, nil
}

func (c countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// C34, C36: fetch and fetchs answers made of several shared payloads go to
// the socket joined, in at most two writes (headers with the first 4 KB,
// then the rest) instead of one per payload, and are byte for byte what
// the parts say, also when many are answered at once from pooled buffers.
func TestServe_LargeAnswersJoined(t *testing.T) {
	reg, err := registry.New(registry.DefaultConfig(), registry.NewManualClock(t0), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(DefaultConfig(), Deps{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	q := form("env", tEnv, "status", "3")
	for a := range 10 {
		appid := fmt.Sprintf("bench.app-%d", a)
		q.Add("appid", appid)
		for i := range 10 {
			in := registry.Instance{Env: tEnv, AppID: appid, Zone: z1, Hostname: fmt.Sprintf("host-%d", i),
				Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Status: 1, Region: "sh",
				Version: "v1", Metadata: map[string]string{"weight": "10", "app": appid}}
			if _, _, err := reg.Register(in, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	var writes atomic.Int64
	base := "http://" + serveOn(t, srv, writeCounter{listen(t), &writes})
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(b)) {
			t.Errorf("Content-Length %s for %d bytes", cl, len(b))
		}
		return string(b)
	}
	many := "/discovery/fetchs?" + q.Encode()
	one := "/discovery/fetch?" + form("env", tEnv, "status", "3", "appid", "bench.app-3").Encode()
	res := reg.FetchEncoded(tEnv, "", 3, []string{"bench.app-3"})
	wantOne := `{"code":0,"message":"0","ttl":1,"data":` + string(res[0].JSON) + `}`
	var all []string
	for a := range 10 {
		all = append(all, fmt.Sprintf("bench.app-%d", a))
	}
	wantMany := string(slices.Concat(appMapBody(`{"code":0,"message":"0","ttl":1,"data":{`, reg.FetchEncoded(tEnv, "", 3, all), `}}`)...))
	if len(wantMany) < 30<<10 {
		t.Fatalf("fetchs answer of %d bytes: the test wants one of tens of KB", len(wantMany))
	}
	for _, c := range []struct{ path, want string }{{many, wantMany}, {one, wantOne}} {
		writes.Store(0)
		if got := get(c.path); got != c.want {
			t.Fatalf("%s: body differs from its parts (%d vs %d bytes)", c.path, len(got), len(c.want))
		}
		if n := writes.Load(); n > 2 {
			t.Errorf("%s: %d bytes in %d socket writes, want at most 2", c.path, len(c.want), n)
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				path, want := many, wantMany
				if (g+i)%2 == 0 {
					path, want = one, wantOne
				}
				if got := get(path); got != want {
					t.Errorf("concurrent %s: body differs (%d vs %d bytes)", path, len(got), len(want))
					return
				}
			}
		})
	}
	wg.Wait()
}
