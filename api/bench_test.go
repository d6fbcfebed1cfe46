package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
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

func serveOnce(b *testing.B, h http.Handler, req *http.Request) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), `{"code":0`) {
		b.Fatalf("%d %s", rec.Code, rec.Body)
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
