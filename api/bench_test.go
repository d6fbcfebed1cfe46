package api

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/discovery-go/discovery/registry"
)

func benchServer(b *testing.B) (*Server, *registry.Registry) {
	b.Helper()
	reg, err := registry.New(registry.DefaultConfig(), registry.NewManualClock(t0), nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(DefaultConfig(), Deps{Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	return srv, reg
}

// headWriter is a ResponseWriter that keeps the status and the first bytes
// of the body, so benchmarks measure the server, not a recorder's copy.
type headWriter struct {
	h    http.Header
	code int
	head []byte
}

func (w *headWriter) Header() http.Header  { return w.h }
func (w *headWriter) WriteHeader(code int) { w.code = code }
func (w *headWriter) Write(p []byte) (int, error) {
	if n := 16 - len(w.head); n > 0 {
		w.head = append(w.head, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

func serveOnce(b *testing.B, h http.Handler, req *http.Request) {
	w := &headWriter{h: http.Header{}, head: make([]byte, 0, 16)}
	h.ServeHTTP(w, req)
	if w.code != 200 || !strings.HasPrefix(string(w.head), `{"code":0`) {
		b.Fatalf("%d %s", w.code, w.head)
	}
}

// BenchmarkRenew: the hottest write (every instance every 30 s).
func BenchmarkRenew(b *testing.B) {
	srv, _ := benchServer(b)
	h := srv.Handler()
	body := regForm(appA, z1, "h1").Encode()
	req := httptest.NewRequest(http.MethodPost, "/discovery/register", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	serveOnce(b, h, req)
	renew := keyForm(appA, z1, "h1").Encode()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/discovery/renew", strings.NewReader(renew))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		serveOnce(b, h, req)
	}
}

// BenchmarkPollsImmediate: a kratos polls answered at once for an app of
// 100 instances (the payload is encoded once and shared).
func BenchmarkPollsImmediate(b *testing.B) {
	srv, reg := benchServer(b)
	for i := range 100 {
		in := registry.Instance{Env: tEnv, AppID: appA, Zone: z1, Hostname: "h" + i64(int64(i)),
			Addrs: []string{"grpc://10.0.0.1:9000"}, Status: 1}
		if _, _, err := reg.Register(in, 0); err != nil {
			b.Fatal(err)
		}
	}
	h := srv.Handler()
	q := pollsQuery(tEnv, "x", appA, 0).Encode()
	b.ReportAllocs()
	for b.Loop() {
		serveOnce(b, h, httptest.NewRequest(http.MethodGet, "/discovery/polls?"+q, nil))
	}
}

// BenchmarkRegister: a kratos register (urlencoded body, metadata JSON)
// cycling over 1 000 instances of 100 apps.
func BenchmarkRegister(b *testing.B) {
	srv, _ := benchServer(b)
	h := srv.Handler()
	bodies := make([]string, 1000)
	for i := range bodies {
		bodies[i] = regForm("bench.app-"+i64(int64(i%100)), z1, "host-"+i64(int64(i)),
			"metadata", `{"weight":"10","color":"red"}`).Encode()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/discovery/register", strings.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		serveOnce(b, h, req)
		i++
	}
}

// BenchmarkFetchs: fetchs of 10 appids with 1 and 10 instances each, the
// load tool's fetchs scenarios; nothing changes between requests.
func BenchmarkFetchs(b *testing.B) {
	for _, per := range []int{1, 10} {
		b.Run("instances="+i64(int64(per)), func(b *testing.B) {
			srv, reg := benchServer(b)
			q := form("env", tEnv, "status", "3")
			for a := range 10 {
				appid := "bench.app-" + i64(int64(a))
				q.Add("appid", appid)
				for i := range per {
					in := registry.Instance{Env: tEnv, AppID: appid, Zone: z1, Hostname: "host-" + i64(int64(i)),
						Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Status: 1, Region: "sh",
						Version: "v1", Metadata: map[string]string{"weight": "10", "color": "red"}}
					if _, _, err := reg.Register(in, 0); err != nil {
						b.Fatal(err)
					}
				}
			}
			h := srv.Handler()
			u := "/discovery/fetchs?" + q.Encode()
			b.ReportAllocs()
			for b.Loop() {
				serveOnce(b, h, httptest.NewRequest(http.MethodGet, u, nil))
			}
		})
	}
}

// BenchmarkPollsWake: 10 000 kratos polls parked through the handler on one
// app of 10 instances; one op is a register that wakes them all and every
// handler writing its answer (network excluded).
func BenchmarkPollsWake(b *testing.B) {
	const pollers = 10_000
	srv, reg := benchServer(b)
	h := srv.Handler()
	add := func(i int) {
		in := registry.Instance{Env: tEnv, AppID: appA, Zone: z1, Hostname: "h" + i64(int64(i)),
			Addrs: []string{"grpc://10.0.0.1:9000"}, Status: 1}
		if _, _, err := reg.Register(in, 0); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 10 {
		add(i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		info, err := reg.Fetch(tEnv, appA, "", 1)
		if err != nil {
			b.Fatal(err)
		}
		u := "/discovery/polls?" + pollsQuery(tEnv, "x", appA, info.LatestTimestamp).Encode()
		var wg sync.WaitGroup
		for range pollers {
			wg.Go(func() {
				w := &headWriter{h: http.Header{}}
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, u, nil))
				if w.code != 200 || !strings.HasPrefix(string(w.head), `{"code":0`) {
					b.Errorf("%d %s", w.code, w.head)
				}
			})
		}
		for srv.parked.Load() != pollers {
			runtime.Gosched()
		}
		b.StartTimer()
		add(10 + i)
		wg.Wait()
	}
}

// BenchmarkServeWrite: kratos writes over one keep-alive loopback
// connection, the whole server path per request (socket read, head,
// handler chain, answer write): Serve with http.lean_writes on and off,
// and two floors that do no registry work at all (a hand-written HTTP/1.1
// loop, and net/http with a handler that parses the form and writes the
// envelope). The client writes each request by hand and reads the answer
// with one buffer, so its own cost stays small; allocations are the
// process's.
func BenchmarkServeWrite(b *testing.B) {
	node := func(lean bool) func(b *testing.B, ln net.Listener) {
		return func(b *testing.B, ln net.Listener) {
			reg, err := registry.New(registry.DefaultConfig(), registry.NewManualClock(t0), nil)
			if err != nil {
				b.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.LeanWrites = lean
			srv, err := New(cfg, Deps{Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			b.Cleanup(func() {
				_ = srv.Shutdown(context.Background())
				<-done
			})
		}
	}
	answer := stdAnswerOf(0).body
	floorHTTP := func(b *testing.B, ln net.Listener) {
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseForm(); err != nil || r.PostForm.Get("appid") == "" {
				http.Error(w, "appid", http.StatusBadRequest)
				return
			}
			w.Header()["Content-Type"] = hdrContentTypeJSON
			w.Header()[headerKratosCode] = stdAnswerOf(0).header
			_, _ = w.Write(answer)
		})}
		go func() { _ = hs.Serve(ln) }()
		b.Cleanup(func() { _ = hs.Close() })
	}
	floorRaw := func(b *testing.B, ln net.Listener) {
		resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: " + contentTypeJSON + "\r\nKratos-Status-Code: 0\r\nContent-Length: " +
			fmt.Sprint(len(answer)) + "\r\n\r\n" + string(answer))
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				n := -1
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) <= 2 {
						break
					}
					if v, ok := strings.CutPrefix(string(line), "Content-Length: "); ok {
						n, _ = strconv.Atoi(strings.TrimSpace(v))
					}
				}
				if _, err := br.Discard(n); err != nil {
					return
				}
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}()
		b.Cleanup(func() { _ = ln.Close() })
	}
	for _, v := range []struct {
		name  string
		serve func(*testing.B, net.Listener)
	}{{"lean", node(true)}, {"net-http", node(false)}, {"floor-net-http", floorHTTP}, {"floor-raw", floorRaw}} {
		b.Run(v.name, func(b *testing.B) {
			ln, err := (&net.ListenConfig{}).Listen(b.Context(), "tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			v.serve(b, ln)
			c, err := (&net.Dialer{}).DialContext(b.Context(), "tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			frame := func(path, body string) []byte {
				return []byte("POST " + path + " HTTP/1.1\r\nHost: " + ln.Addr().String() + "\r\nUser-Agent: Go-http-client/1.1\r\n" +
					"Content-Length: " + fmt.Sprint(len(body)) + "\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
					"Accept-Encoding: gzip\r\n\r\n" + body)
			}
			register := frame(pathRegister, regForm(appA, z1, "h1").Encode())
			buf := make([]byte, 4096)
			roundTrip := func(req []byte) {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				// Every answer here is small: one read holds it whole.
				n, err := c.Read(buf)
				if err != nil || !strings.Contains(string(buf[:n]), `{"code":0`) {
					b.Fatalf("%v %q", err, buf[:n])
				}
			}
			for _, w := range []struct {
				name string
				req  []byte
			}{{"register", register}, {"renew", frame(pathRenew, keyForm(appA, z1, "h1").Encode())}} {
				b.Run(w.name, func(b *testing.B) {
					roundTrip(register)
					b.ReportAllocs()
					for b.Loop() {
						roundTrip(w.req)
					}
				})
			}
		})
	}
}
