package syncup

import (
	"bufio"
	"context"
	"errors"
	"io"
	stdnet "net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// countingServer answers every replicate request with one result per op
// (code 0); conns counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (addr string, srv *httptest.Server, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			var req ReplicateRequest
			body, _ := io.ReadAll(r.Body)
			if wire.DecodeReplicateRequest(body, &req) != nil {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			_, _ = w.Write(wire.AppendReplicateResponse(nil, &ReplicateResponse{Results: make([]OpResult, len(req.Ops))}))
		}
	}
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ stdnet.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), srv, conns
}

func oneOp() *ReplicateRequest {
	k := registry.Key{Env: "e", AppID: "a", Zone: "z", Hostname: "h"}
	return &ReplicateRequest{From: "t", Ops: []Op{{Kind: OpRenew, Replication: true, Key: &k, DirtyTimestamp: 1}}}
}

// Sequential replicate requests share one kept-alive connection, and a
// connection the peer closed while idle costs an immediate resend on a new
// one, not an error.
func TestHTTPTransport_ReplicateReusesConnections(t *testing.T) {
	addr, srv, conns := countingServer(t, nil)
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second})
	defer tr.CloseIdleConnections()
	for range 20 {
		resp, err := tr.Replicate(t.Context(), addr, oneOp())
		if err != nil || len(resp.Results) != 1 {
			t.Fatalf("replicate: %v %+v", err, resp)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential requests used %d connections, want 1", n)
	}
	srv.CloseClientConnections() // the peer drops its idle connections
	if _, err := tr.Replicate(t.Context(), addr, oneOp()); err != nil {
		t.Fatalf("replicate after the peer closed the idle connection: %v", err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections = %d, want 2", n)
	}
}

// Replicate requests never share a connection with a snapshot or a
// digest: a node serves a connection in its lean loop only while it has
// carried nothing but replicate requests (api/leanwrite.go), so a shared
// pool would send every replicate after the startup sync through net/http.
func TestHTTPTransport_ReplicateHasConnectionsOfItsOwn(t *testing.T) {
	type connPaths struct {
		mu    sync.Mutex
		paths map[string]bool
	}
	var (
		mu    sync.Mutex
		conns []*connPaths
	)
	type ctxKey struct{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp := r.Context().Value(ctxKey{}).(*connPaths)
		cp.mu.Lock()
		cp.paths[r.URL.Path] = true
		cp.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case PathSnapshot:
			bw := bufio.NewWriter(w)
			_ = wire.EncodeSnapshot(bw, func(func(SnapshotItem) error) error { return nil })
		case PathDigest:
			_, _ = w.Write([]byte(`{}`))
		case PathReplicate:
			var req ReplicateRequest
			if wire.DecodeReplicateRequest(body, &req) != nil {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			_, _ = w.Write(wire.AppendReplicateResponse(nil, &ReplicateResponse{Results: make([]OpResult, len(req.Ops))}))
		}
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ stdnet.Conn) context.Context {
		cp := &connPaths{paths: map[string]bool{}}
		mu.Lock()
		conns = append(conns, cp)
		mu.Unlock()
		return context.WithValue(ctx, ctxKey{}, cp)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second})
	defer tr.CloseIdleConnections()
	// The order of a node's start: a sync, then replication and
	// anti-entropy rounds interleaved.
	if _, err := tr.Snapshot(t.Context(), addr, func(SnapshotItem) error { return nil }); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	for range 5 {
		if _, err := tr.Replicate(t.Context(), addr, oneOp()); err != nil {
			t.Fatalf("replicate: %v", err)
		}
		if _, err := tr.Digest(t.Context(), addr, &DigestRequest{}); err != nil {
			t.Fatalf("digest: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	replicateConns := 0
	for i, cp := range conns {
		cp.mu.Lock()
		if cp.paths[PathReplicate] {
			replicateConns++
			if len(cp.paths) != 1 {
				t.Errorf("connection %d carried %v: replicate requests shared it", i, cp.paths)
			}
		}
		cp.mu.Unlock()
	}
	if replicateConns != 1 {
		t.Errorf("5 sequential replicate requests used %d connections, want 1", replicateConns)
	}
}

// A chunked answer (no Content-Length) is read like any other; a peer
// answering "Connection: close" gets a new connection next time.
func TestHTTPTransport_ReplicateAnswerShapes(t *testing.T) {
	addr, _, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"results":[`)
		w.(http.Flusher).Flush() // forces chunked encoding
		_, _ = io.WriteString(w, `{"code":-404,"message":"`+strings.Repeat("x", 8<<10)+`"}]}`)
	})
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second})
	defer tr.CloseIdleConnections()
	for range 2 {
		resp, err := tr.Replicate(t.Context(), addr, oneOp())
		if err != nil || len(resp.Results) != 1 || resp.Results[0].Code != CodeNotFound || len(resp.Results[0].Message) != 8<<10 {
			t.Fatalf("replicate: %v %+v", err, resp)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections = %d, want 2 (the peer closes each)", n)
	}
}

// A peer that never answers: the request ends with the caller's context
// (deadline, or a cancel while the request waits), and the error says so.
func TestHTTPTransport_ReplicateBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	addr, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Minute})
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err := tr.Replicate(ctx, addr, oneOp())
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the deadline's error, got %v", err)
	}
	<-arrived

	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-arrived // the request is waiting for its answer
		cancel()
	}()
	_, err = tr.Replicate(ctx, addr, oneOp())
	<-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the cancel's error, got %v", err)
	}
}
