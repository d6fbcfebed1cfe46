package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// serve runs srv on a fresh 127.0.0.1:0 listener until the test ends.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	ln := listen(t)
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
	e := newEnv(t)
	srv, err := New(DefaultConfig(), Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
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
