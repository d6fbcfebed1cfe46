package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// fuzzLimits are small so the fuzzer reaches every limit quickly.
var fuzzLimits = Limits{
	MaxBodyBytes:     4 << 10,
	MaxAppIDs:        4,
	MaxAddrs:         3,
	MaxStringLen:     64,
	MaxAddrLen:       64,
	MaxMetadataBytes: 256,
	MaxMetadataKeys:  4,
	MaxSetHostnames:  3,
}

// knownFields are the only names a -400 may blame.
var knownFields = []string{
	"query", "body", "zone", "env", "appid", "hostname", "status", "addrs", "region", "version",
	"metadata", "dirty_timestamp", "latest_timestamp", "reg_timestamp", "set_timestamp", "scheme",
}

func checkParamErr(t *testing.T, what string, err error) {
	t.Helper()
	var pe *paramError
	if !errors.As(err, &pe) {
		t.Fatalf("%s: error %v (%T) is not a *paramError", what, err, err)
	}
	if !slices.Contains(knownFields, pe.field) || pe.reason == "" {
		t.Fatalf("%s: error %q blames unknown field %q", what, err, pe.field)
	}
}

func checkStr(t *testing.T, what, s string, max int, required bool) {
	t.Helper()
	if len(s) > max || (required && s == "") {
		t.Fatalf("%s = %q violates limit %d / required %v", what, s, max, required)
	}
}

// FuzzFormBinding: any query and urlencoded body either binds into values
// that respect every rule and limit, or fails with a -400 naming a field.
func FuzzFormBinding(f *testing.F) {
	f.Add("zone=z&env=e&appid=a&hostname=h&status=1&addrs=grpc://1.2.3.4:9000", []byte(""))
	f.Add("", []byte("zone=z&env=e&appid=a&hostname=h&status=1&addrs=a,b&addrs=&metadata=%7B%22w%22%3A10%7D"))
	f.Add("status=2&replication=yes", []byte("zone=z&env=e&appid=a&hostname=h&hostname=i&status=1&status=3"))
	f.Add("env=e&appid=a&appid=b&status=3&zone=", []byte(""))
	f.Add("a=%zz;b", []byte("x=%"))
	l := fuzzLimits
	f.Fuzz(func(t *testing.T, rawQuery string, body []byte) {
		// parseForm gives what url.ParseQuery gives, error or not.
		for _, raw := range []string{rawQuery, string(body)} {
			wantSameAsNetURL(t, raw)
		}
		q, qerr := parseQuery(rawQuery)
		b, berr := parseURLEncoded(string(body))
		if qerr != nil {
			checkParamErr(t, "query", qerr)
			return
		}
		if berr != nil {
			checkParamErr(t, "body", berr)
			return
		}
		v := mergeForm(b, q)
		for k, vs := range v {
			if d := cmp.Diff(append(append([]string{}, b[k]...), q[k]...), vs); d != "" {
				t.Fatalf("merge of %q (-want +got):\n%s", k, d)
			}
		}

		if p, err := parseRegister(v, l); err != nil {
			checkParamErr(t, "register", err)
		} else {
			in := p.Instance
			for _, s := range []string{in.Zone, in.Env, in.AppID, in.Hostname} {
				checkStr(t, "register key", s, l.MaxStringLen, true)
			}
			if in.Status != 1 && in.Status != 2 {
				t.Fatalf("register status %d", in.Status)
			}
			if len(in.Addrs) == 0 || len(in.Addrs) > l.MaxAddrs {
				t.Fatalf("register addrs %q", in.Addrs)
			}
			for _, a := range in.Addrs {
				checkStr(t, "addr", a, l.MaxAddrLen, true)
			}
			if len(in.Metadata) > l.MaxMetadataKeys || in.DirtyTimestamp < 0 || p.Latest < 0 {
				t.Fatalf("register %+v", p)
			}
		}
		if p, err := parseRenew(v, l); err != nil {
			checkParamErr(t, "renew", err)
		} else if p.Dirty < 0 || p.Key.Hostname == "" {
			t.Fatalf("renew %+v", p)
		}
		if p, err := parseCancel(v, l); err != nil {
			checkParamErr(t, "cancel", err)
		} else if p.Latest < 0 || p.Key.Zone == "" {
			t.Fatalf("cancel %+v", p)
		}
		if p, err := parseSet(v, l); err != nil {
			checkParamErr(t, "set", err)
		} else {
			r := p.Req
			n := len(r.Hostnames)
			if n == 0 || n > l.MaxSetHostnames ||
				(len(r.Statuses) != 0 && len(r.Statuses) != n) ||
				(len(r.Metadata) != 0 && len(r.Metadata) != n) || r.SetTimestamp < 0 {
				t.Fatalf("set %+v", r)
			}
			for _, st := range r.Statuses {
				if st != 1 && st != 2 {
					t.Fatalf("set status %d", st)
				}
			}
		}
		for _, multi := range []bool{false, true} {
			if p, err := parseFetch(v, l, multi); err != nil {
				checkParamErr(t, "fetch", err)
			} else if len(p.AppIDs) == 0 || len(p.AppIDs) > l.MaxAppIDs || p.Status == 0 || p.Env == "" {
				t.Fatalf("fetch %+v", p)
			}
		}
		if _, err := parseTargets(v, l); err != nil {
			checkParamErr(t, "targets", err)
		}
	})
}

// FuzzPollsPairs: appid and latest_timestamp lists pair up one to one after
// dropping empty values, or the request is a -400 naming a field.
func FuzzPollsPairs(f *testing.F) {
	f.Add("env=prod&hostname=h&appid=a&latest_timestamp=0")
	f.Add("env=prod&hostname=h&appid=a&appid=b&latest_timestamp=1&latest_timestamp=")
	f.Add("env=prod&hostname=h&appid=a,b&latest_timestamp=1,2")
	f.Add("env=prod&hostname=&appid=a&latest_timestamp=9223372036854775808")
	f.Add("env=prod&hostname=h&appid=&appid=x&latest_timestamp=&latest_timestamp=-3")
	l := fuzzLimits
	f.Fuzz(func(t *testing.T, rawQuery string) {
		v, err := parseQuery(rawQuery)
		if err != nil {
			checkParamErr(t, "query", err)
			return
		}
		for _, multi := range []bool{false, true} {
			p, err := parsePoll(v, l, multi)
			if err != nil {
				checkParamErr(t, "polls", err)
				continue
			}
			r := p.Req
			if len(r.AppIDs) != len(r.Latest) || len(r.AppIDs) == 0 || len(r.AppIDs) > l.MaxAppIDs {
				t.Fatalf("unpaired %+v", r)
			}
			if p.Hostname == "" || r.Env == "" {
				t.Fatalf("missing required %+v", p)
			}
			for _, a := range r.AppIDs {
				checkStr(t, "appid", a, l.MaxStringLen, true)
			}
			if multi {
				nonEmpty := func(vs []string) (n int) {
					for _, s := range vs {
						if s != "" {
							n++
						}
					}
					return n
				}
				if nonEmpty(v["appid"]) != len(r.AppIDs) || nonEmpty(v["latest_timestamp"]) != len(r.Latest) {
					t.Fatalf("counts do not match the non-empty values: %v -> %+v", v, r)
				}
			}
		}
	})
}

// FuzzMetadata: accepted metadata is a string map within the limits that
// survives a JSON round trip unchanged; everything else is a -400 naming
// "metadata".
func FuzzMetadata(f *testing.F) {
	for _, s := range []string{"", "null", "{}", `{"weight":"10"}`, `{"weight":10}`, `{"a":true,"b":null}`,
		`{"a":{"b":1}}`, `{"a":[1]}`, `"x"`, `{"a":"\u00e9\ud800"}`, `{"a":1e999}`, `{"a":"b","a":"c"}`,
		`{"a":"b","a":null}`, `{"a":null,"a":"b"}`, `{"a":"x","a":1}`, `{"\u003c":"\ud83d\ude00","k":"\u0000"}`, ` { "a" : "b" } `,
		"{\t\"a\":\"b\",\r\n\"c\":\"\"}", `{"a":"b",}`, `{"a":"b"}x`, `{"a" "b"}`, `{,}`, `{"a":"b"`, `{"":""}`, "{\"\x7f\":\"a\"}"} {
		f.Add(s)
	}
	l := fuzzLimits
	f.Fuzz(func(t *testing.T, s string) {
		// The plain-object path gives exactly what encoding/json gives.
		if plain, ok := parsePlainObject(s, 1<<20); ok {
			var want map[string]string
			if err := json.Unmarshal([]byte(s), &want); err != nil {
				t.Fatalf("%q: plain path accepts what encoding/json refuses: %v", s, err)
			}
			if d := cmp.Diff(want, plain); d != "" {
				t.Fatalf("%q: plain path differs from encoding/json (-json +plain):\n%s", s, d)
			}
		}
		md, err := parseMetadata("metadata", s, l)
		if err != nil {
			checkParamErr(t, "metadata", err)
			if fieldOf(t, err) != "metadata" {
				t.Fatalf("blames %v", err)
			}
			return
		}
		if len(s) > l.MaxMetadataBytes || len(md) > l.MaxMetadataKeys {
			t.Fatalf("limits not enforced: %q -> %v", s, md)
		}
		// The fast path (an object of strings) agrees with the general one.
		if s != "" {
			slow, err := parseMetadataValues("metadata", s, l)
			if err != nil {
				t.Fatalf("general path refuses %q accepted by the fast path: %v", s, err)
			}
			if d := cmp.Diff(md, slow, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("%q: fast and general paths differ (-fast +general):\n%s", s, d)
			}
		}
		b, err := json.Marshal(md)
		if err != nil {
			t.Fatal(err)
		}
		l2 := l
		l2.MaxMetadataBytes = len(b) + 1
		again, err := parseMetadata("metadata", string(b), l2)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if md == nil {
			md = map[string]string{}
		}
		if again == nil {
			again = map[string]string{}
		}
		if d := cmp.Diff(md, again); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}

// FuzzHandlers drives every protocol route through the real handler stack
// and a real registry with arbitrary query, body and Content-Type: the
// answer is always HTTP 200 with a JSON envelope and an allowed code (never
// a panic, a 5xx or a broken body), and a -400 never changes the registry.
func FuzzHandlers(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/discovery/register"}, {"POST", "/discovery/renew"}, {"POST", "/discovery/cancel"},
		{"POST", "/discovery/set"}, {"GET", "/discovery/fetch"}, {"GET", "/discovery/fetchs"},
		{"GET", "/discovery/poll"}, {"GET", "/discovery/polls"}, {"GET", "/discovery/fetch/all"},
		{"GET", "/discovery/nodes"},
	}
	const form = "application/x-www-form-urlencoded"
	f.Add(uint8(0), "", []byte("zone=z&env=e&appid=a&hostname=h&status=1&addrs=grpc://1.2.3.4:9000&metadata=%7B%22w%22%3A10%7D"), form)
	f.Add(uint8(1), "zone=z&env=e&appid=a&hostname=h&replication=true&dirty_timestamp=1", []byte(""), form)
	f.Add(uint8(2), "", []byte("zone=z&env=e&appid=a&hostname=h&replication=1&latest_timestamp=9223372036854775807"), form)
	f.Add(uint8(3), "", []byte("zone=z&env=e&appid=a&hostname=h&hostname=h&status=2&metadata=%7B%7D&set_timestamp=5"), form)
	f.Add(uint8(4), "env=e&appid=a&status=3&zone=z", []byte(""), "")
	f.Add(uint8(5), "env=e&appid=a&appid=a,b&status=1", []byte(""), "")
	f.Add(uint8(6), "env=e&appid=a&hostname=h&latest_timestamp=0&zone=z", []byte(""), "")
	f.Add(uint8(7), "env=e&appid=a&appid=x&hostname=h&latest_timestamp=0&latest_timestamp=-1", []byte(""), "")
	f.Add(uint8(0), "", []byte(`{"zone":"z"}`), "application/json")
	f.Add(uint8(0), "", []byte("--b\r\nContent-Disposition: form-data; name=\"zone\"\r\n\r\nz\r\n--b--\r\n"), "multipart/form-data; boundary=b")

	reg, err := registry.New(registry.DefaultConfig(), registry.NewManualClock(t0), nil)
	if err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PollHold = time.Millisecond
	cfg.Limits = fuzzLimits
	srv, err := New(cfg, Deps{Registry: reg, Replicator: &fakeRepl{}})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	// Something to renew, cancel, set and fetch.
	seed := registry.Instance{Env: "e", AppID: "a", Zone: "z", Hostname: "h", Addrs: []string{"grpc://1.2.3.4:9000"}, Status: 1}
	f.Fuzz(func(t *testing.T, route uint8, rawQuery string, body []byte, ct string) {
		if _, _, err := reg.Register(seed, 0); err != nil {
			t.Fatal(err)
		}
		rt := routes[int(route)%len(routes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		req.URL.RawQuery = rawQuery
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		before := reg.Snapshot()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != contentTypeJSON {
			t.Fatalf("%s %s?%q: HTTP %d %q: %s", rt.method, rt.path, rawQuery, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
		var env struct {
			Code    *int    `json:"code"`
			Message *string `json:"message"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Code == nil || env.Message == nil {
			t.Fatalf("%s %s: not an envelope: %s (%v)", rt.method, rt.path, rec.Body, err)
		}
		if !slices.Contains(allowedCodes, *env.Code) || rec.Header().Get(headerKratosCode) != fmtCode(*env.Code) {
			t.Fatalf("%s %s: code %d (header %q)", rt.method, rt.path, *env.Code, rec.Header().Get(headerKratosCode))
		}
		if *env.Code == wire.CodeBadRequest {
			if !slices.ContainsFunc(knownFields, func(f string) bool { return blames(*env.Message, f) }) {
				t.Fatalf("%s %s: -400 message %q names no field", rt.method, rt.path, *env.Message)
			}
			if d := cmp.Diff(before, reg.Snapshot()); d != "" {
				t.Fatalf("%s %s: -400 changed the registry:\n%s", rt.method, rt.path, d)
			}
		}
	})
}

// blames reports whether a -400 message starts by naming field, as
// "field: ..." or, for one value of a list, "field[i]: ..." (the
// registry's "addrs[1]: ...").
func blames(msg, field string) bool {
	rest, ok := strings.CutPrefix(msg, field)
	if !ok {
		return false
	}
	if strings.HasPrefix(rest, "[") {
		i := strings.IndexByte(rest, ']')
		if i < 2 || strings.Trim(rest[1:i], "0123456789") != "" {
			return false
		}
		rest = rest[i+1:]
	}
	return strings.HasPrefix(rest, ":")
}
