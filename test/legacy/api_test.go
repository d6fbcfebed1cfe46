package legacy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/internal/testkit"
)

// instanceKeys are the 14 instance keys in the original's order.
func instanceKeys() []string {
	return []string{"region", "zone", "env", "appid", "hostname", "addrs", "version", "metadata", "status",
		"reg_timestamp", "up_timestamp", "renew_timestamp", "dirty_timestamp", "latest_timestamp"}
}

// checkStd checks the standard envelope: HTTP 200, JSON, Kratos-Status-Code,
// keys code/message/ttl and data only when wantData.
func checkStd(t *testing.T, a answer, code int, wantData bool) {
	t.Helper()
	if a.Status != http.StatusOK {
		t.Fatalf("HTTP %d, want 200; body %s", a.Status, a.Body)
	}
	if ct := a.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if h := a.Header.Get("Kratos-Status-Code"); h != fmt.Sprint(code) {
		t.Fatalf("Kratos-Status-Code %q, want %d", h, code)
	}
	want := []string{"code", "message", "ttl"}
	if wantData {
		want = append(want, "data")
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, a.keys()); diff != "" {
		t.Fatalf("keys (-want +got):\n%s\nbody %s", diff, a.Body)
	}
	if a.Code != code || string(a.Keys["ttl"]) != "1" {
		t.Fatalf("code %d ttl %s, want %d 1; body %s", a.Code, a.Keys["ttl"], code, a.Body)
	}
}

func TestWriteRoutes(t *testing.T) {
	n := start(t, Config{})
	w := newWire(t)
	addr := n.Addr()

	a := w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://10.0.0.1:9000", "http://10.0.0.1:8000"), "version", "v1"))
	checkStd(t, a, 0, false)
	if a.Message != "0" {
		t.Fatalf("message %q", a.Message)
	}

	t.Run("register errors", func(t *testing.T) {
		a := w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "zone", ""))
		checkStd(t, a, -400, false)
		if !strings.Contains(a.Message, "'Zone'") {
			t.Fatalf("message %q should name the field", a.Message)
		}
		a = w.post(addr, "/discovery/register", reg("demo.svc", "h1"))
		checkStd(t, a, -400, false)
		a = w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "status", "0"))
		checkStd(t, a, -400, false)
		a = w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "status", "abc"))
		checkStd(t, a, -400, false)
		if !strings.Contains(a.Message, "strconv.ParseUint") {
			t.Fatalf("message %q", a.Message)
		}
		a = w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "dirty_timestamp", "99999999999999999999"))
		checkStd(t, a, -400, false)
		a = w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "metadata", "{"))
		checkStd(t, a, -400, false)
		if a.Message != "-400" {
			t.Fatalf("invalid metadata message %q", a.Message)
		}
		// D5: status > 2 answers an empty HTTP 200 body.
		a = w.post(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://x:1"), "status", "3"))
		if a.Status != http.StatusOK || len(a.Body) != 0 {
			t.Fatalf("status 3: HTTP %d body %q, want empty 200", a.Status, a.Body)
		}
	})

	t.Run("register details", func(t *testing.T) {
		// D6: a mistyped metadata value is stored as "".
		w.postCode(addr, "/discovery/register", with(reg("meta.svc", "h1", "grpc://x:1"), "metadata", `{"weight":10,"color":"red"}`), 0)
		ins, _ := n.Instance(testEnv, "meta.svc", testZone, "h1")
		if diff := cmp.Diff(map[string]string{"weight": "", "color": "red"}, ins.Metadata); diff != "" {
			t.Fatalf("metadata (-want +got):\n%s", diff)
		}
		// Parameters in the query string of a POST are accepted.
		a, err := w.do(t.Context(), http.MethodPost, addr, "/discovery/register?"+reg("query.svc", "h1", "grpc://x:1").Encode(), nil, nil)
		if err != nil || a.Code != 0 {
			t.Fatalf("query-string register: %v %s", err, a.Body)
		}
		// Commas are never split; an unknown replication value is false.
		w.postCode(addr, "/discovery/register", with(reg("a,b", "h1", "grpc://x:1,grpc://y:2"), "replication", "yes"), 0)
		ins, ok := n.Instance(testEnv, "a,b", testZone, "h1")
		if !ok || !slices.Equal(ins.Addrs, []string{"grpc://x:1,grpc://y:2"}) {
			t.Fatalf("a,b: %v %+v", ok, ins)
		}
		// Empty list elements are dropped.
		w.postCode(addr, "/discovery/register", with(reg("empty.svc", "h1", "", "grpc://x:1", "")), 0)
		if ins, _ := n.Instance(testEnv, "empty.svc", testZone, "h1"); !slices.Equal(ins.Addrs, []string{"grpc://x:1"}) {
			t.Fatalf("addrs %v", ins.Addrs)
		}
	})

	t.Run("timestamps", func(t *testing.T) {
		first, _ := n.Instance(testEnv, "demo.svc", testZone, "h1")
		l0, _ := n.AppLatest(testEnv, "demo.svc")
		w.postCode(addr, "/discovery/register", reg("demo.svc", "h1", "grpc://10.0.0.1:9001"), 0)
		second, _ := n.Instance(testEnv, "demo.svc", testZone, "h1")
		l1, _ := n.AppLatest(testEnv, "demo.svc")
		if second.UpTimestamp != first.UpTimestamp || second.RegTimestamp <= first.RegTimestamp || l1 <= l0 {
			t.Fatalf("re-register: first %+v second %+v latest %d -> %d", first, second, l0, l1)
		}
		a := w.post(addr, "/discovery/renew", key("demo.svc", "h1"))
		checkStd(t, a, 0, true)
		third, _ := n.Instance(testEnv, "demo.svc", testZone, "h1")
		l2, _ := n.AppLatest(testEnv, "demo.svc")
		want := second
		want.RenewTimestamp = third.RenewTimestamp
		if diff := cmp.Diff(want, third); diff != "" || third.RenewTimestamp <= second.RenewTimestamp || l2 != l1 {
			t.Fatalf("renew changed more than renew_timestamp (-want +got):\n%s latest %d -> %d", diff, l1, l2)
		}
		// Renew data is the instance, metadata null when it never had any.
		if got := objectKeys(t, a.Data); !slices.Equal(got, instanceKeys()) {
			t.Fatalf("renew data keys %v", got)
		}
		var d map[string]json.RawMessage
		_ = json.Unmarshal(a.Data, &d)
		if string(d["metadata"]) != "null" {
			t.Fatalf("renew metadata %s", d["metadata"])
		}

		// A replicated register with an older dirty_timestamp keeps the record
		// but answers 0 and still advances the app latest_timestamp.
		w.postCode(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://stale:1"), "replication", "true", "dirty_timestamp", "1"), 0)
		kept, _ := n.Instance(testEnv, "demo.svc", testZone, "h1")
		l3, _ := n.AppLatest(testEnv, "demo.svc")
		if diff := cmp.Diff(third, kept); diff != "" || l3 <= l2 {
			t.Fatalf("stale register changed the record (-want +got):\n%s latest %d -> %d", diff, l2, l3)
		}
	})

	t.Run("renew and cancel errors", func(t *testing.T) {
		a := w.post(addr, "/discovery/renew", key("nope.svc", "h1"))
		checkStd(t, a, -404, true)
		if string(a.Data) != "null" {
			t.Fatalf("renew unknown app data %s", a.Data)
		}
		// Zone known, hostname absent: the original's zero-valued instance.
		a = w.post(addr, "/discovery/renew", key("demo.svc", "nobody"))
		checkStd(t, a, -404, true)
		var zero Instance
		if err := json.Unmarshal(a.Data, &zero); err != nil || zero.Hostname != "" || zero.RegTimestamp != 0 {
			t.Fatalf("renew unknown host data %s", a.Data)
		}
		// The renew must name the registration zone.
		checkStd(t, w.post(addr, "/discovery/renew", with(key("demo.svc", "h1"), "zone", "other")), -404, true)
		checkStd(t, w.post(addr, "/discovery/renew", with(key("demo.svc", "h1"), "hostname", "")), -400, false)
		checkStd(t, w.post(addr, "/discovery/cancel", key("demo.svc", "nobody")), -404, false)
		checkStd(t, w.post(addr, "/discovery/cancel", with(key("demo.svc", "h1"), "latest_timestamp", "x")), -400, false)
	})

	t.Run("cancel", func(t *testing.T) {
		w.postCode(addr, "/discovery/register", reg("gone.svc", "h1", "grpc://x:1"), 0)
		l0, _ := n.AppLatest(testEnv, "gone.svc")
		w.postCode(addr, "/discovery/register", reg("gone.svc", "h2", "grpc://x:2"), 0)
		checkStd(t, w.post(addr, "/discovery/cancel", key("gone.svc", "h2")), 0, false)
		if l1, _ := n.AppLatest(testEnv, "gone.svc"); l1 <= l0 {
			t.Fatalf("cancel did not advance latest: %d -> %d", l0, l1)
		}
		checkStd(t, w.post(addr, "/discovery/cancel", key("gone.svc", "h1")), 0, false)
		if _, code := w.fetchInfo(addr, "gone.svc"); code != -404 {
			t.Fatalf("fetch after last cancel: %d", code)
		}
	})

	t.Run("method and path", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			status       int
		}{
			{http.MethodGet, "/discovery/register", http.StatusMethodNotAllowed},
			{http.MethodPost, "/discovery/fetch", http.StatusMethodNotAllowed},
			{http.MethodGet, "/discovery/nothing", http.StatusNotFound},
		} {
			a := w.must(c.method, addr, c.path, nil, nil)
			if a.Status != c.status || !strings.HasPrefix(a.Header.Get("Content-Type"), "text/plain") {
				t.Fatalf("%s %s: HTTP %d %q", c.method, c.path, a.Status, a.Header.Get("Content-Type"))
			}
		}
	})
}

func TestReadRoutes(t *testing.T) {
	n := start(t, Config{})
	w := newWire(t)
	addr := n.Addr()
	w.postCode(addr, "/discovery/register", with(reg("demo.svc", "h1", "grpc://10.0.0.1:9000"), "metadata", `{"weight":"10"}`), 0)
	w.postCode(addr, "/discovery/register", with(reg("demo.svc", "h2", "grpc://10.0.0.2:9000"), "status", "2"), 0)
	w.postCode(addr, "/discovery/register", with(reg("demo.svc", "h3", "grpc://10.0.0.3:9000"), "zone", "zoneB"), 0)

	t.Run("fetch", func(t *testing.T) {
		a := w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", "demo.svc", "status", "3"))
		checkStd(t, a, 0, true)
		var info struct {
			Instances       map[string][]json.RawMessage `json:"instances"`
			LatestTimestamp int64                        `json:"latest_timestamp"`
		}
		if err := json.Unmarshal(a.Data, &info); err != nil {
			t.Fatal(err)
		}
		if got := objectKeys(t, a.Data); !slices.Equal(got, []string{"instances", "latest_timestamp"}) {
			t.Fatalf("info keys %v", got)
		}
		if len(info.Instances[testZone]) != 2 || len(info.Instances["zoneB"]) != 1 || info.LatestTimestamp == 0 {
			t.Fatalf("fetch data %s", a.Data)
		}
		for _, raw := range info.Instances[testZone] {
			if got := objectKeys(t, raw); !slices.Equal(got, instanceKeys()) {
				t.Fatalf("instance keys %v", got)
			}
			var m map[string]json.RawMessage
			_ = json.Unmarshal(raw, &m)
			if string(m["metadata"]) == "null" {
				t.Fatalf("fetch metadata must be an object: %s", raw)
			}
		}
		// Status mask 2: zones without a match appear as [].
		a = w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", "demo.svc", "status", "2"))
		if !strings.Contains(string(a.Data), `"zoneB":[]`) || a.Code != 0 {
			t.Fatalf("status 2: %s", a.Body)
		}
		a = w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", "nope", "status", "1"))
		checkStd(t, a, -404, true)
		if string(a.Data) != "null" {
			t.Fatalf("unknown appid data %s", a.Data)
		}
		a = w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", "demo.svc", "status", "1", "zone", "zoneX"))
		checkStd(t, a, -404, true)
		if !strings.HasPrefix(string(a.Data), `{"instances":{},"latest_timestamp":`) {
			t.Fatalf("unknown zone data %s", a.Data)
		}
		checkStd(t, w.get(addr, "/discovery/fetch", form("env", testEnv, "appid", "demo.svc")), -400, false)
		if _, code := w.fetchInfo(addr, "demo.svc"); code != 0 {
			t.Fatal(code)
		}
	})

	t.Run("fetchs", func(t *testing.T) {
		a := w.get(addr, "/discovery/fetchs", form("env", testEnv, "appid", "nope", "appid", "demo.svc,nope", "status", "1"))
		checkStd(t, a, 0, true)
		if string(a.Data) != "{}" {
			t.Fatalf("fetchs none: %s", a.Data)
		}
		a = w.get(addr, "/discovery/fetchs", form("env", testEnv, "appid", "nope", "appid", "demo.svc", "status", "1"))
		var m map[string]InstanceInfo
		if err := json.Unmarshal(a.Data, &m); err != nil || len(m) != 1 || len(m["demo.svc"].Instances[testZone]) != 1 {
			t.Fatalf("fetchs: %s", a.Body)
		}
	})

	t.Run("fetch all", func(t *testing.T) {
		a := w.get(addr, "/discovery/fetch/all", form("anything", "ignored"))
		checkStd(t, a, 0, true)
		var m map[string][]map[string]json.RawMessage
		if err := json.Unmarshal(a.Data, &m); err != nil {
			t.Fatal(err)
		}
		if len(m["demo.svc"]) != 3 || len(m[AppIDDiscovery]) != 1 {
			t.Fatalf("fetch/all: %s", a.Data)
		}
		for _, i := range m["demo.svc"] {
			var h string
			_ = json.Unmarshal(i["hostname"], &h)
			if got := string(i["metadata"]); (h == "h1") != (got != "null") {
				t.Fatalf("%s metadata %s", h, got)
			}
		}
	})

	t.Run("poll", func(t *testing.T) {
		a := w.get(addr, "/discovery/poll", form("env", testEnv, "appid", "nope", "hostname", "c1"))
		if a.Status != 200 || a.Code != -404 || a.Message != "nope not found" || a.has("ttl") || a.has("data") {
			t.Fatalf("poll unknown: %s", a.Body)
		}
		a = w.get(addr, "/discovery/poll", form("env", testEnv, "appid", "demo.svc", "hostname", "c1", "latest_timestamp", "0"))
		checkStd(t, a, 0, true)
		var info InstanceInfo
		if err := json.Unmarshal(a.Data, &info); err != nil || len(info.Instances[testZone]) != 1 || info.LatestTimestamp == 0 {
			t.Fatalf("poll: %s", a.Body) // UP only: h1
		}
		checkStd(t, w.get(addr, "/discovery/poll", form("env", testEnv, "appid", "demo.svc")), -400, false)
	})

	t.Run("polls", func(t *testing.T) {
		a := w.get(addr, "/discovery/polls", form("env", testEnv, "appid", "demo.svc", "latest_timestamp", "0", "hostname", "c1"))
		if diff := cmp.Diff([]string{"code", "data", "error", "message"}, a.keys()); diff != "" || a.Code != 0 {
			t.Fatalf("polls keys (-want +got):\n%s\n%s", diff, a.Body)
		}
		if !strings.Contains(string(a.Body), `"error":{"-404":null}`) {
			t.Fatalf("polls error: %s", a.Body)
		}
		a = w.get(addr, "/discovery/polls", form("env", testEnv, "appid", "demo.svc", "appid", "nope", "latest_timestamp", "0", "latest_timestamp", "0", "hostname", "c1"))
		var body struct {
			Data  map[string]*InstanceInfo `json:"data"`
			Error map[string][]string      `json:"error"`
		}
		if err := json.Unmarshal(a.Body, &body); err != nil || body.Data["demo.svc"] == nil || len(body.Data) != 1 ||
			!slices.Equal(body.Error["-404"], []string{"nope"}) {
			t.Fatalf("polls with missing: %s", a.Body)
		}
		// latest_timestamp= is dropped before counting: mismatch -> -400.
		a = w.get(addr, "/discovery/polls", form("env", testEnv, "appid", "demo.svc", "latest_timestamp", "", "hostname", "c1"))
		checkStd(t, a, -400, false)
		if a.Message != "-400" {
			t.Fatalf("mismatch message %q", a.Message)
		}
		checkStd(t, w.get(addr, "/discovery/polls", form("env", testEnv, "appid", "demo.svc", "latest_timestamp", "0")), -400, false)
	})

	t.Run("nodes", func(t *testing.T) {
		// Self is learned from its own infra.discovery record (7.6).
		testkit.Eventually(t, 5*time.Second, "self in node list", func() error {
			a := w.get(addr, "/discovery/nodes", nil)
			var got []NodeInfo
			if err := json.Unmarshal(a.Data, &got); err != nil {
				return err
			}
			if want := []NodeInfo{{Addr: addr, Status: 0, Zone: testZone}}; !cmp.Equal(want, got) {
				return fmt.Errorf("nodes %s", a.Body)
			}
			checkStd(t, a, 0, true)
			return nil
		})
	})
}

func TestInitProtect(t *testing.T) {
	w := newWire(t)
	t.Run("timeout", func(t *testing.T) {
		n := start(t, Config{EnableProtect: true, ProtectTimeout: 700 * time.Millisecond})
		gated := map[string]string{
			"/discovery/fetch/all": "",
			"/discovery/fetch":     form("env", testEnv, "appid", "a", "status", "1").Encode(),
			"/discovery/fetchs":    form("env", testEnv, "appid", "a", "status", "1").Encode(),
			"/discovery/poll":      form("env", testEnv, "appid", "a", "hostname", "c").Encode(),
			"/discovery/polls":     form("env", testEnv, "appid", "a", "latest_timestamp", "0", "hostname", "c").Encode(),
			"/discovery/nodes":     "",
		}
		for p, q := range gated {
			a := w.get(n.Addr(), p+"?"+q, nil)
			checkStd(t, a, -500, false)
			if a.Message != "-500" {
				t.Fatalf("%s message %q", p, a.Message)
			}
		}
		w.postCode(n.Addr(), "/discovery/register", reg("a", "h1", "grpc://x:1"), 0)
		w.postCode(n.Addr(), "/discovery/renew", key("a", "h1"), 0)
		testkit.Eventually(t, 5*time.Second, "protect lifted by timeout", func() error {
			if _, code := w.fetchInfo(n.Addr(), "a"); code != 0 {
				return fmt.Errorf("code %d", code)
			}
			return nil
		})
	})
	t.Run("sync", func(t *testing.T) {
		// A protected peer answers -500 and is skipped; a serving one lifts it.
		p := start(t, Config{EnableProtect: true, ProtectTimeout: time.Hour})
		w.postCode(p.Addr(), "/discovery/register", reg("only.on.p", "h1", "grpc://x:1"), 0)
		a := start(t, Config{})
		w.postCode(a.Addr(), "/discovery/register", reg("on.a", "h1", "grpc://x:1"), 0)

		b := start(t, Config{EnableProtect: true, ProtectTimeout: time.Hour, Nodes: []string{p.Addr()}})
		if !b.Protected() {
			t.Fatal("sync from a protected peer must not lift init-protect")
		}
		if _, ok := b.Instance(testEnv, "only.on.p", testZone, "h1"); ok {
			t.Fatal("synced from a protected peer")
		}
		c := start(t, Config{EnableProtect: true, ProtectTimeout: time.Hour, Nodes: []string{p.Addr(), a.Addr()}})
		if c.Protected() {
			t.Fatal("a successful sync must lift init-protect")
		}
		if _, ok := c.Instance(testEnv, "on.a", testZone, "h1"); !ok {
			t.Fatal("not synced from a")
		}
	})
}

// TestBadInput sends malformed requests to every route: each must get an
// HTTP 200 envelope (or D5's empty body) and the node must keep serving.
func TestBadInput(t *testing.T) {
	n := start(t, Config{PollHold: 50 * time.Millisecond})
	w := newWire(t)
	w.postCode(n.Addr(), "/discovery/register", reg("x", "h1", "grpc://x:1"), 0)
	queries := []string{
		"", "%zz", "appid=x&env=" + testEnv, "env=" + testEnv + "&appid=x&status=-1", "status=99999999999999999999",
		"env=" + testEnv + "&appid=x&hostname=h1&zone=" + testZone + "&status=1&status=2&metadata=%5B1%5D&metadata=null",
		"env=" + testEnv + "&appid=x&hostname=h1&latest_timestamp=abc", "env=" + testEnv + "&appid=&appid=&hostname=c",
		"zone=" + testZone + "&env=" + testEnv + "&appid=x&hostname=h1&addrs=a&status=1&metadata=%5B1%5D",
		"zone=" + testZone + "&env=" + testEnv + "&appid=x&hostname=h1&addrs=a&status=4294967296",
		"zone=" + testZone + "&env=" + testEnv + "&appid=x&hostname=h1&status=-3&set_timestamp=x",
		"env=" + testEnv + "&appid=x&hostname=c&latest_timestamp=1&latest_timestamp=2",
	}
	for _, p := range []string{"register", "renew", "cancel", "set"} {
		for _, q := range queries {
			a, err := w.do(t.Context(), http.MethodPost, n.Addr(), "/discovery/"+p+"?"+q, nil, nil)
			if err != nil || a.Status != 200 || (len(a.Body) > 0 && a.Keys == nil) {
				t.Fatalf("POST %s?%s: %v HTTP %d %s", p, q, err, a.Status, a.Body)
			}
		}
	}
	for _, p := range []string{"fetch/all", "fetch", "fetchs", "poll", "polls", "nodes"} {
		for _, q := range queries {
			a, err := w.do(t.Context(), http.MethodGet, n.Addr(), "/discovery/"+p+"?"+q, nil, nil)
			if err != nil || a.Status != 200 || a.Keys == nil {
				t.Fatalf("GET %s?%s: %v HTTP %d %s", p, q, err, a.Status, a.Body)
			}
		}
	}
	if _, code := w.fetchInfo(n.Addr(), AppIDDiscovery); code != 0 {
		t.Fatalf("node broken: %d", code)
	}
}
