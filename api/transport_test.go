package api

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// The instance of regForm(appA, z1, "h1") registered at t0, as JSON.
const h1JSON = `{"region":"sh","zone":"sh001","env":"prod","appid":"demo.a","hostname":"h1",` +
	`"addrs":["grpc://10.0.0.5:9000"],"version":"v1","metadata":{},"status":1,` +
	`"reg_timestamp":1700000000000000000,"up_timestamp":1700000000000000000,` +
	`"renew_timestamp":1700000000000000000,"dirty_timestamp":1700000000000000000,` +
	`"latest_timestamp":1700000000000000000}`

// C1: each route answers on its method; wrong method → 405 text/plain,
// unknown path → 404 text/plain.
func TestRoutes_MethodsAndUnknownPaths(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	routes := []struct {
		method, path, query string
	}{
		{"POST", "/discovery/register", ""},
		{"POST", "/discovery/renew", ""},
		{"POST", "/discovery/cancel", ""},
		{"POST", "/discovery/set", ""},
		{"GET", "/discovery/fetch/all", ""},
		{"GET", "/discovery/fetch", "env=prod&appid=demo.a&status=3"},
		{"GET", "/discovery/fetchs", "env=prod&appid=demo.a&status=3"},
		{"GET", "/discovery/poll", "env=prod&appid=demo.a&hostname=x&latest_timestamp=0"},
		{"GET", "/discovery/polls", "env=prod&appid=demo.a&hostname=x&latest_timestamp=0"},
		{"GET", "/discovery/nodes", ""},
	}
	for _, r := range routes {
		req := e.newReq(context.Background(), r.method, r.path, nil, nil, "")
		req.URL.RawQuery = r.query
		got := e.do(req)
		if got.Status != http.StatusOK || got.Header.Get("Content-Type") != contentTypeJSON {
			t.Errorf("%s %s: HTTP %d %q", r.method, r.path, got.Status, got.Header.Get("Content-Type"))
		}
		got.code() // an envelope
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			if m == r.method {
				continue
			}
			got := e.do(e.newReq(context.Background(), m, r.path, nil, nil, ""))
			if got.Status != http.StatusMethodNotAllowed || !strings.HasPrefix(got.Header.Get("Content-Type"), "text/plain") ||
				string(got.Body) != "Method Not Allowed\n" {
				t.Errorf("%s %s: HTTP %d %q %q, want 405 text/plain", m, r.path, got.Status, got.Header.Get("Content-Type"), got.Body)
			}
		}
	}
	for _, p := range []string{"/discovery/nope", "/discovery/register/", "/discovery", "/discovery/fetch/all/x", "/nope"} {
		for _, m := range []string{"GET", "POST"} {
			got := e.do(e.newReq(context.Background(), m, p, nil, nil, ""))
			if got.Status != http.StatusNotFound || !strings.HasPrefix(got.Header.Get("Content-Type"), "text/plain") ||
				string(got.Body) != "404 page not found\n" {
				t.Errorf("%s %s: HTTP %d %q %q, want 404 text/plain", m, p, got.Status, got.Header.Get("Content-Type"), got.Body)
			}
		}
	}
}

// C2: POST parameters come from the urlencoded body and from the query;
// the body wins for single values, lists are body values then query values.
func TestPost_BodyAndQuery(t *testing.T) {
	e := newEnv(t)
	// Everything in the query string, no body (verified accepted by the original).
	e.postRaw("/discovery/register", regForm(appA, z1, "h1").Encode(), "", "").wantCode(0)
	if in := e.instance(appA, z1, "h1"); in.Version != "v1" {
		t.Fatalf("query-only register: %+v", in)
	}
	// Body wins for single values; lists concatenate body then query.
	body := regForm(appA, z1, "h2", "version", "from-body")
	body.Add("addrs", "http://10.0.0.5:8000")
	e.postRaw("/discovery/register", "version=from-query&zone=sh999&addrs=grpc://q:1", "application/x-www-form-urlencoded",
		body.Encode()).wantCode(0)
	in := e.instance(appA, z1, "h2")
	if in.Version != "from-body" || in.Zone != z1 {
		t.Fatalf("single values: %+v", in)
	}
	if want := []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000", "grpc://q:1"}; !slices.Equal(in.Addrs, want) {
		t.Fatalf("addrs = %q, want %q", in.Addrs, want)
	}
	// A renew carried only in the query string of a POST.
	e.postRaw("/discovery/renew", keyForm(appA, z1, "h2").Encode(), "application/x-www-form-urlencoded", "").wantCode(0)
	// multipart/form-data is accepted too (spec 2.2.3 MAY).
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, vs := range regForm(appA, z1, "h3") {
		for _, v := range vs {
			_ = mw.WriteField(k, v)
		}
	}
	_ = mw.Close()
	e.postRaw("/discovery/register", "", mw.FormDataContentType(), buf.String()).wantCode(0)
	e.instance(appA, z1, "h3")
}

// A JSON body is rejected with -400 (spec 2.2.3) and changes nothing.
func TestPost_JSONBodyRejected(t *testing.T) {
	e := newEnv(t)
	e.unchanged(func() {
		e.postRaw("/discovery/register", "", "application/json",
			`{"zone":"sh001","env":"prod","appid":"demo.a","hostname":"h1","addrs":["x"],"status":1}`).wantBadParam("body", "JSON")
	})
	e.unchanged(func() {
		e.postRaw("/discovery/register", "zone=%zz", "application/x-www-form-urlencoded", "").wantBadParam("query", "malformed")
		e.postRaw("/discovery/register", "", "application/x-www-form-urlencoded", "zone=%zz").wantBadParam("body", "malformed")
	})
}

// C3: repeated names form lists; a value with commas is one element.
func TestLists_RepeatedNamesNoCommaSplit(t *testing.T) {
	e := newEnv(t)
	e.register("a,b", z1, "h1")
	e.register("a", z1, "h1")
	e.post("/discovery/register", with(regForm(appA, z1, "h1"), "addrs", "grpc://1.1.1.1:1?tags=a,b")).wantCode(0)
	if in := e.instance(appA, z1, "h1"); !slices.Equal(in.Addrs, []string{"grpc://1.1.1.1:1?tags=a,b"}) {
		t.Fatalf("addrs split: %q", in.Addrs)
	}
	var got map[string]typedInfo
	e.getRaw("/discovery/fetchs", "env=prod&status=3&appid=a,b").wantCode(0).data(&got)
	if len(got) != 1 || got["a,b"].LatestTimestamp == 0 {
		t.Fatalf("fetchs appid=a,b: %v", got)
	}
	e.getRaw("/discovery/fetchs", "env=prod&status=3&appid=a&appid=a,b").wantCode(0).data(&got)
	if len(got) != 2 {
		t.Fatalf("fetchs two appids: %v", got)
	}
}

// C4: empty list elements are dropped before use and before counting.
func TestLists_EmptyElementsDropped(t *testing.T) {
	e := newEnv(t)
	v := regForm(appA, z1, "h1")
	v["addrs"] = []string{"", "grpc://10.0.0.5:9000", ""}
	e.post("/discovery/register", v).wantCode(0)
	if in := e.instance(appA, z1, "h1"); !slices.Equal(in.Addrs, []string{"grpc://10.0.0.5:9000"}) {
		t.Fatalf("addrs = %q", in.Addrs)
	}
	e.unchanged(func() {
		v["addrs"] = []string{"", ""}
		e.post("/discovery/register", with(v, "hostname", "h2")).wantBadParam("addrs", "required")
	})
	// latest_timestamp= does not count: one appid, one non-empty value.
	e.getRaw("/discovery/polls", "env=prod&hostname=x&appid=demo.a&appid=&latest_timestamp=&latest_timestamp=0").wantCode(0)
	// ...and two empty ones leave zero values for one appid.
	e.getRaw("/discovery/polls", "env=prod&hostname=x&appid=demo.a&latest_timestamp=&latest_timestamp=").wantBadParam("latest_timestamp")
}

// C5: a non-numeric or overflowing integer yields -400 naming the field.
func TestIntegers_Invalid(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.unchanged(func() {
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "status", "one")).wantBadParam("status")
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "status", "4294967296")).wantBadParam("status", "out of range")
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "status", "-1")).wantBadParam("status")
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "dirty_timestamp", "9223372036854775808")).
			wantBadParam("dirty_timestamp", "out of range")
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "latest_timestamp", "1.5")).wantBadParam("latest_timestamp")
		e.post("/discovery/renew", with(keyForm(appA, z1, "h1"), "replication", "true", "dirty_timestamp", "x")).
			wantBadParam("dirty_timestamp")
		e.post("/discovery/cancel", with(keyForm(appA, z1, "h1"), "replication", "true", "latest_timestamp", "1e9")).
			wantBadParam("latest_timestamp")
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "x")).wantBadParam("status")
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "1",
			"set_timestamp", "99999999999999999999")).wantBadParam("set_timestamp", "out of range")
		e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "up")).wantBadParam("status")
		e.get("/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "x", "latest_timestamp", "abc")).
			wantBadParam("latest_timestamp")
		e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, "99999999999999999999")).wantBadParam("latest_timestamp", "out of range")
	})
}

// C6: replication=yes is treated as false, without error: the register is
// an original write and is forwarded.
func TestBool_UnknownIsFalse(t *testing.T) {
	e := newEnv(t)
	e.post("/discovery/register", with(regForm(appA, z1, "h1"), "replication", "yes", "from_zone", "yes")).wantCode(0)
	e.repl.mu.Lock()
	defer e.repl.mu.Unlock()
	if len(e.repl.register) != 1 || e.repl.register[0].FromZone {
		t.Fatalf("forwarded: %+v", e.repl.register)
	}
}

// C7, C8: every routed answer is HTTP 200 application/json; charset=utf-8
// with Kratos-Status-Code, code, message (decimal unless a parameter error)
// and ttl 1.
func TestEnvelope_EveryAnswer(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.PollHold = 100 * time.Millisecond }})
	e.register(appA, z1, "h1")
	answers := []resp{
		e.post("/discovery/register", regForm(appA, z1, "h2")),                                                  // 0
		e.post("/discovery/register", without(regForm(appA, z1, "h3"), "zone")),                                 // -400
		e.post("/discovery/renew", keyForm(appA, z1, "h1")),                                                     // 0 + data
		e.post("/discovery/renew", keyForm(appA, z1, "nope")),                                                   // -404
		e.post("/discovery/cancel", keyForm(appA, z1, "nope")),                                                  // -404
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")), // 0
		e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")),                              // 0
		e.get("/discovery/fetch", form("env", tEnv, "appid", "nope", "status", "3")),                            // -404
		e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "status", "3")),                             // 0
		e.get("/discovery/fetch/all", nil),                                                                      // 0
		e.get("/discovery/nodes", nil),                                                                          // 0
		e.get("/discovery/polls", pollsQuery(tEnv, "x", "nope", 0)),                                             // -304
		e.get("/discovery/poll", form("env", tEnv, "appid", "nope", "hostname", "x")),                           // -404 map shape
		e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0, appB, 0)),                                      // 0 map shape (h2 is UP)
	}
	e.ready.Store(false)
	answers = append(answers, e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3"))) // -503
	e.ready.Store(true)
	for _, r := range answers {
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("HTTP %d %q for %s", r.Status, r.Header.Get("Content-Type"), r.Body)
		}
		code := r.code()
		if hdr := r.Header.Get("Kratos-Status-Code"); hdr != fmtCode(code) {
			t.Errorf("Kratos-Status-Code %q for code %d", hdr, code)
		}
		msg := r.message()
		notFound := code == -404 && strings.HasSuffix(msg, " not found")
		if code != -400 && !notFound && msg != fmtCode(code) {
			t.Errorf("message %q for code %d", msg, code)
		}
		env := r.env()
		mapShape := env["error"] != nil || (code == -404 && strings.HasSuffix(msg, " not found"))
		if mapShape {
			if r.hasKey("ttl") {
				t.Errorf("map shape with ttl: %s", r.Body)
			}
			continue
		}
		if string(env["ttl"]) != "1" {
			t.Errorf("ttl missing or not 1: %s", r.Body)
		}
	}
}

// C9: register, cancel and set success bodies have no data key (exact bytes).
func TestEnvelope_WritesWithoutData(t *testing.T) {
	e := newEnv(t)
	const ok = `{"code":0,"message":"0","ttl":1}`
	e.post("/discovery/register", regForm(appA, z1, "h1")).wantBody(ok)
	e.post("/discovery/register", regForm(appA, z1, "h2")).wantBody(ok)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantBody(ok)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantBody(ok)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantBody(`{"code":-404,"message":"-404","ttl":1}`)
	e.post("/discovery/register", without(regForm(appA, z1, "h1"), "env")).wantBody(`{"code":-400,"message":"env: required","ttl":1}`)
}

// C10: a polls success has code, message, data, error and no ttl (exact
// bytes of the representative answer).
func TestEnvelope_PollsMapShape(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	got := e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0, "demo.unknown", 0))
	got.wantBody(`{"code":0,"message":"0","data":{"demo.a":{"instances":{"sh001":[` + h1JSON + `]},` +
		`"latest_timestamp":1700000000000000000}},"error":{"-404":["demo.unknown"]}}`)
	// Without missing appids the error list is empty, still present.
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantBody(`{"code":0,"message":"0","data":{"demo.a":` +
		`{"instances":{"sh001":[` + h1JSON + `]},"latest_timestamp":1700000000000000000}},"error":{"-404":[]}}`)
	// The fetch answer of the same instance, standard shape.
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "1")).wantBody(
		`{"code":0,"message":"0","ttl":1,"data":{"instances":{"sh001":[` + h1JSON + `]},"latest_timestamp":1700000000000000000}}`)
	// poll (single) success: standard shape with data.
	e.get("/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "x", "latest_timestamp", "0")).wantBody(
		`{"code":0,"message":"0","ttl":1,"data":{"instances":{"sh001":[` + h1JSON + `]},"latest_timestamp":1700000000000000000}}`)
}

// C11: only codes 0, -304, -400, -404, -409, -503 are emitted. Every test's
// answers are checked in newEnv's cleanup; this one drives every error path.
func TestCodes_OnlyAllowed(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.PollHold = 50 * time.Millisecond }})
	e.register(appA, z1, "h1")
	e.post("/discovery/renew", with(keyForm(appA, z1, "h1"), "replication", "true", "dirty_timestamp", "1")).wantCode(-409)
	e.post("/discovery/renew", with(keyForm(appA, z1, "h1"), "replication", "true", "dirty_timestamp", "9"+strings.Repeat("0", 18))).wantCode(-404)
	e.post("/discovery/cancel", with(keyForm(appA, z1, "h1"), "replication", "true", "latest_timestamp", "5")).wantCode(-409)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "zz", "status", "1")).wantCode(-400)
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, ns(t0))).wantCode(-304)
	e.ready.Store(false)
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(-503)
	e.ready.Store(true)
	e.codesMu.Lock()
	seen := slices.Clone(e.codes)
	e.codesMu.Unlock()
	for _, c := range allowedCodes {
		if !slices.Contains(seen, c) {
			t.Errorf("path for code %d not exercised", c)
		}
	}
}

// C12: a poll ends no later than x1-bmspy-timeout minus 20 ms, answering
// -304, even when PollHold is the full 30 s.
func TestPoll_BmspyTimeoutHeader(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	latest := e.fetch(appA).LatestTimestamp
	for _, path := range []string{"/discovery/polls", "/discovery/poll"} {
		q := pollsQuery(tEnv, "x", appA, latest)
		start := time.Now()
		r := recv(t, e.pollAsync(context.Background(), path, q, "x1-bmspy-timeout", "300"))
		el := time.Since(start)
		r.wantBody(`{"code":-304,"message":"-304","ttl":1}`)
		if el < 280*time.Millisecond || el > 10*time.Second {
			t.Fatalf("%s held %v with x1-bmspy-timeout 300 (want ~280ms, far below 30 s)", path, el)
		}
	}
	// A budget at or below the 20 ms margin answers -304 at once.
	recv(t, e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, latest),
		"x1-bmspy-timeout", "20")).wantCode(-304)
}
