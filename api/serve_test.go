package api

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
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
