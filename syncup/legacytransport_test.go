package syncup

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
)

// legacyPeer records the public requests a LegacyTransport sends and
// answers each from answer.
type legacyPeer struct {
	mu     sync.Mutex
	got    []*http.Request
	forms  []url.Values
	answer func(path string, form url.Values) string
}

func (p *legacyPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	p.mu.Lock()
	p.got = append(p.got, r)
	p.forms = append(p.forms, r.PostForm)
	p.mu.Unlock()
	_, _ = io.WriteString(w, p.answer(r.URL.Path, r.PostForm))
}

// Every op kind goes to its public endpoint in the form the original
// forwards (spec 7.2), addrs repeated, in order; codes map to results,
// a -409's data to the conflicting copy (joined addrs split).
func TestLegacyTransport_Replicate(t *testing.T) {
	p := &legacyPeer{answer: func(path string, f url.Values) string {
		switch {
		case path == "/discovery/renew" && f.Get("hostname") == "stale":
			return `{"code":-409,"message":"-409","data":{"env":"e","appid":"a","zone":"z","hostname":"stale","addrs":["grpc://n:1,http://n:2"],"status":1,"dirty_timestamp":99}}`
		case path == "/discovery/renew":
			return `{"code":-404,"message":"-404"}`
		case path == "/discovery/set":
			return `` // D5-like empty body: an answer about this op
		}
		return `{"code":0,"message":"0"}`
	}}
	srv := httptest.NewServer(p)
	defer srv.Close()
	tr := NewLegacyTransport(HTTPTransportConfig{Timeout: time.Second})
	defer tr.CloseIdleConnections()
	k := wire.Key{Env: "e", AppID: "a", Zone: "z", Hostname: "h"}
	stale := k
	stale.Hostname = "stale"
	ins := wire.Instance{Region: "r", Zone: "z", Env: "e", AppID: "a", Hostname: "h", Addrs: []string{"grpc://x:1", "http://x:2"},
		Status: 1, Version: "v1", Metadata: map[string]string{"w": "5"}, RegTimestamp: 1, DirtyTimestamp: 2, LatestTimestamp: 3}
	req := &ReplicateRequest{Ops: []Op{
		{Kind: OpRegister, Replication: true, FromZone: true, Instance: &ins},
		{Kind: OpRenew, Replication: true, FromZone: true, Key: &k, DirtyTimestamp: 2},
		{Kind: OpRenew, Replication: true, FromZone: true, Key: &stale, DirtyTimestamp: 2},
		{Kind: OpCancel, Replication: false, FromZone: true, Key: &k, DirtyTimestamp: 7},
		{Kind: OpSet, Replication: true, FromZone: true, Set: &SetOp{Env: "e", AppID: "a", Zone: "z", Hostnames: []string{"h", "i"}, Statuses: []uint32{2, 1}, SetTimestamp: 8}},
		{Kind: OpImport, Replication: true, FromZone: true, Instance: &ins},
	}}
	resp, err := tr.Replicate(t.Context(), strings.TrimPrefix(srv.URL, "http://"), req)
	if err != nil {
		t.Fatal(err)
	}
	codes := []int{}
	for _, r := range resp.Results {
		codes = append(codes, r.Code)
	}
	if !slices.Equal(codes, []int{0, -404, -409, 0, -500, 0}) {
		t.Fatalf("codes %v", codes)
	}
	if c := resp.Results[2].Instance; c == nil || !slices.Equal(c.Addrs, []string{"grpc://n:1", "http://n:2"}) || c.DirtyTimestamp != 99 {
		t.Fatalf("-409 copy %+v", c)
	}
	paths := []string{}
	for _, r := range p.got {
		paths = append(paths, r.URL.Path)
	}
	if !slices.Equal(paths, []string{"/discovery/register", "/discovery/renew", "/discovery/renew", "/discovery/cancel", "/discovery/set", "/discovery/register"}) {
		t.Fatalf("paths %v", paths)
	}
	reg := p.forms[0]
	for key, want := range map[string][]string{
		"addrs": {"grpc://x:1", "http://x:2"}, "replication": {"true"}, "from_zone": {"true"}, "region": {"r"}, "zone": {"z"},
		"env": {"e"}, "appid": {"a"}, "hostname": {"h"}, "status": {"1"}, "version": {"v1"}, "metadata": {`{"w":"5"}`},
		"reg_timestamp": {"1"}, "dirty_timestamp": {"2"}, "latest_timestamp": {"3"},
	} {
		if !slices.Equal(reg[key], want) {
			t.Errorf("register %s = %q, want %q", key, reg[key], want)
		}
	}
	if f := p.forms[1]; f.Get("dirty_timestamp") != "2" || f.Get("replication") != "true" {
		t.Errorf("renew form %v", f)
	}
	if f := p.forms[3]; f.Get("latest_timestamp") != "7" || f.Get("replication") != "false" || f.Get("from_zone") != "true" {
		t.Errorf("cancel form %v", f)
	}
	if f := p.forms[4]; !slices.Equal(f["hostname"], []string{"h", "i"}) || !slices.Equal(f["status"], []string{"2", "1"}) || f.Get("set_timestamp") != "8" {
		t.Errorf("set form %v", f)
	}
	if _, err := tr.Digest(t.Context(), "x", &DigestRequest{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("digest: %v", err)
	}
}

// A transport failure fails the batch (the link sends it again); an
// HTTP error status too.
func TestLegacyTransport_Failures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadGateway)
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	tr := NewLegacyTransport(HTTPTransportConfig{Timeout: time.Second})
	k := wire.Key{Env: "e", AppID: "a", Zone: "z", Hostname: "h"}
	req := &ReplicateRequest{Ops: []Op{{Kind: OpRenew, Key: &k}}}
	if _, err := tr.Replicate(t.Context(), addr, req); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("HTTP 502: %v", err)
	}
	srv.Close()
	if _, err := tr.Replicate(t.Context(), addr, req); err == nil {
		t.Fatal("closed peer: no error")
	}
}

// fetch/all is read as a stream: every instance of every app, joined
// addrs split and flagged; a non-zero code or a broken body is an error.
func TestLegacyTransport_FetchAll(t *testing.T) {
	body := `{"code":0,"message":"0","ttl":1,"data":{"a":[{"env":"e","appid":"a","zone":"z","hostname":"h1","addrs":["grpc://x:1,http://x:2"],"status":1,"dirty_timestamp":5},` +
		`{"env":"e","appid":"a","zone":"z","hostname":"h2","addrs":["grpc://y:1"],"metadata":null,"status":2}],"b":[],"c":null}}`
	var got []wire.Instance
	var joined []bool
	if err := decodeFetchAll(strings.NewReader(body), func(in wire.Instance, j bool) error {
		got = append(got, in)
		joined = append(joined, j)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got[0].Addrs, []string{"grpc://x:1", "http://x:2"}) || !slices.Equal(joined, []bool{true, false}) || got[1].Status != 2 {
		t.Fatalf("got %+v joined %v", got, joined)
	}
	for _, bad := range []string{
		`{"code":-500,"message":"-500"}`, `{"code":0}`, `{"code":0,"data":[1]}`, `{"code":0,"data":{"a":{}}}`,
		`{"code":0,"data":{"a":[{"env":1}]}}`, `{"code":0,"data":{"a":[`, `nope`,
	} {
		if err := decodeFetchAll(strings.NewReader(bad), func(wire.Instance, bool) error { return nil }); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if err := decodeFetchAll(strings.NewReader(`{"code":0,"data":null}`), func(wire.Instance, bool) error { return nil }); err != nil {
		t.Errorf("empty registry: %v", err)
	}
}

// One value beyond wire.MaxSnapshotItem (an instance, or a field the
// decoder skips) is refused before it is buffered whole; a registry of many
// ordinary instances adding up to more than that streams through.
func TestLegacyTransport_FetchAllBoundsOneValue(t *testing.T) {
	huge := strings.Repeat("x", 2*wire.MaxSnapshotItem)
	for _, body := range []string{
		`{"code":0,"message":"` + huge + `","data":{}}`,
		`{"code":0,"data":{"a":[{"env":"e","appid":"a","zone":"z","hostname":"h","addrs":["grpc://x:1"],"version":"` + huge + `","status":1}]}}`,
	} {
		counted := &countingReader{r: strings.NewReader(body)}
		err := decodeFetchAll(counted, func(wire.Instance, bool) error { return nil })
		if !errors.Is(err, errValueTooLarge) {
			t.Fatalf("huge value: %v, want errValueTooLarge", err)
		}
		if counted.n > wire.MaxSnapshotItem+64<<10 {
			t.Fatalf("read %d bytes of a %d-byte value before refusing it", counted.n, len(huge))
		}
	}
	var b strings.Builder
	b.WriteString(`{"code":0,"data":{"a":[`)
	const n = 20_000 // about 2.4 MB in all
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"env":"e","appid":"a","zone":"z","hostname":"h%d","addrs":["grpc://10.0.0.1:9000"],"version":"v1","status":1}`, i)
	}
	b.WriteString(`]}}`)
	got := 0
	if err := decodeFetchAll(strings.NewReader(b.String()), func(wire.Instance, bool) error { got++; return nil }); err != nil || got != n {
		t.Fatalf("large registry: %d of %d instances, err %v", got, n, err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
