package syncup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// authWith builds the PeerAuth of another secret (a node of another
// cluster, or an attacker with a guessed key).
func authWith(t *testing.T, secret string) *PeerAuth {
	t.Helper()
	kr, err := newKeyring(Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return newPeerAuth(kr, time.Minute)
}

const otherSecret = "M0zuqBquV9J/dgJt2q98o065h5aiWcOqhI2QAsyef/Y=" // 32 bytes, another cluster

// The auth matrix of the peer routes: each internal route with no, wrong,
// expired, replayed, tampered and right credentials. Only the right one
// gets through; every refusal is HTTP 401 naming the reason and changes
// nothing in the registry.
func TestPeerAuth_MatrixOfInternalRoutes(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork()})
	h := n.c.Handler()
	reg := `{"ops":[{"op":"register","replication":true,"instance":{"env":"test","appid":"forged","zone":"z1","hostname":"h","addrs":["http://10.6.6.6:1"],"status":1,"dirty_timestamp":5}}]}`
	routes := []struct {
		method, path, body string
	}{
		{http.MethodPost, PathReplicate, reg},
		{http.MethodPost, PathDigest, `{"digests":[]}`},
		{http.MethodGet, PathSnapshot, ""},
	}
	past := authWith(t, testSecret)
	past.now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	creds := []struct {
		name   string
		sign   func(req *http.Request, body []byte)
		code   int
		reason string
	}{
		{"none", func(*http.Request, []byte) {}, 401, "peer_auth"},
		{"wrong key", func(req *http.Request, body []byte) { authWith(t, otherSecret).Sign(req, body) }, 401, "peer_auth"},
		{"expired", func(req *http.Request, body []byte) { past.Sign(req, body) }, 401, "peer_auth"},
		{"tampered body", func(req *http.Request, body []byte) { n.c.auth.Sign(req, append(body, ' ')) }, 401, "peer_auth"},
		{"garbage header", func(req *http.Request, _ []byte) { req.Header.Set(HeaderPeerAuth, "v1;key=x;sig=y") }, 401, "peer_auth"},
		{"right", func(req *http.Request, body []byte) { n.c.auth.Sign(req, body) }, 200, ""},
	}
	for _, rt := range routes {
		for _, cr := range creds {
			t.Run(rt.path+"/"+cr.name, func(t *testing.T) {
				before := n.reg.Snapshot()
				req := httptest.NewRequest(rt.method, rt.path, strings.NewReader(rt.body))
				cr.sign(req, []byte(rt.body))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != cr.code || rec.Header().Get(RefusedHeader) != cr.reason {
					t.Fatalf("HTTP %d refused=%q, want %d %q: %s", rec.Code, rec.Header().Get(RefusedHeader), cr.code, cr.reason, rec.Body.String())
				}
				if cr.code == 200 {
					if rec.Header().Get(HeaderPeerSig) == "" && rec.Result().Trailer.Get(HeaderPeerSig) == "" {
						t.Fatal("answer to an authenticated request is not signed")
					}
					return
				}
				if rt.path == PathSnapshot && strings.Contains(rec.Body.String(), "instances") {
					t.Fatal("refused snapshot leaked the registry")
				}
				if after := n.reg.Snapshot(); len(after.Instances) != len(before.Instances) {
					t.Fatal("a refused request changed the registry")
				}
			})
		}
		// The same signed request twice: the second is a replay.
		t.Run(rt.path+"/replayed", func(t *testing.T) {
			req := httptest.NewRequest(rt.method, rt.path, strings.NewReader(rt.body))
			n.c.auth.Sign(req, []byte(rt.body))
			again := req.Clone(req.Context())
			again.Body = io.NopCloser(strings.NewReader(rt.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			rec2 := httptest.NewRecorder()
			h.ServeHTTP(rec2, again)
			if rec.Code != 200 || rec2.Code != 401 || rec2.Header().Get(RefusedHeader) != "peer_replay" {
				t.Fatalf("first %d, replay %d %q", rec.Code, rec2.Code, rec2.Header().Get(RefusedHeader))
			}
		})
	}
	if _, ok := n.reg.Get(registry.Key{Env: "test", AppID: "forged", Zone: "z1", Hostname: "h"}); !ok {
		t.Fatal("the one authenticated register was not applied")
	}
}

// A node without a secret and without cluster.insecure takes no peer
// request at all; with cluster.insecure it takes unauthenticated ones.
func TestPeerAuth_NoSecret(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		t.Run(fmt.Sprint("insecure=", insecure), func(t *testing.T) {
			n := startNode(t, nodeOpt{net: NewMemNetwork(), cfg: func(c *Config) { c.Secret, c.Insecure = "", insecure }})
			body := `{"digests":[]}`
			rec := httptest.NewRecorder()
			n.c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathDigest, strings.NewReader(body)))
			want := 401
			if insecure {
				want = 200
			}
			if rec.Code != want {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, want, rec.Body.String())
			}
		})
	}
}

// Secure by default: without a secret a node with seeds, remote zones or a
// non-loopback gossip address refuses to start (the message says how to
// make one); a standalone one binds gossip to loopback.
func TestPeerAuth_SecureByDefault(t *testing.T) {
	reg, _ := registry.New(registry.DefaultConfig(), nil, nil)
	self := Self{Env: "e", Zone: "z", Hostname: "h", HTTPAddr: "10.0.0.1:7171"}
	for name, edit := range map[string]func(*Config){
		"join":      func(c *Config) { c.Join = []string{"10.0.0.2:7946"} },
		"zones":     func(c *Config) { c.Zones = map[string][]string{"z2": {"10.0.9.1:7171"}} },
		"bind":      func(c *Config) { c.Bind = "10.0.0.1:7946" },
		"advertise": func(c *Config) { c.Advertise = "10.0.0.1:7946" },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if _, err := New(cfg, self, reg, Deps{}); err == nil || !strings.Contains(err.Error(), "discovery keygen") {
			t.Errorf("%s without a secret: %v, want a refusal that says how to make one", name, err)
		}
	}
	cfg := DefaultConfig()
	cfg.Bind = "0.0.0.0:0"
	c, err := New(cfg, self, reg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.cfg.Bind, "127.0.0.1:") {
		t.Fatalf("standalone node without a secret binds gossip to %s, want loopback", c.cfg.Bind)
	}
}

// An answer whose signature does not check out is refused: a host in the
// middle cannot slip in a forged -409 copy.
func TestPeerAuth_ForgedAnswerRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"results":[{"code":-409,"instance":{"env":"e","appid":"a","zone":"z","hostname":"h","addrs":["http://6.6.6.6:1"],"status":1,"dirty_timestamp":9}}]}`))
	}))
	defer srv.Close()
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: time.Second, Auth: authWith(t, testSecret)})
	defer tr.CloseIdleConnections()
	if _, err := tr.Replicate(t.Context(), strings.TrimPrefix(srv.URL, "http://"), oneOp()); err == nil || !strings.Contains(err.Error(), "not authenticated") {
		t.Fatalf("unsigned answer accepted: %v", err)
	}
}

// Key rotation: a node that signs with the new key and still accepts the
// old one, and a node that signs with the old key and accepts the new
// one, replicate both ways and share gossip; a node with neither key
// cannot join and its requests are refused.
func TestPeerAuth_RotationWithTwoKeys(t *testing.T) {
	oldKey, newKey := testSecret, otherSecret
	a := startHTTPNode(t, nil, func(c *Config) { c.Secret, c.AcceptSecrets = oldKey, []string{newKey} })
	b := startHTTPNode(t, []*tnode{a}, func(c *Config) { c.Secret, c.AcceptSecrets = newKey, []string{oldKey} })
	testkit.EventuallyTrue(t, waitTimeout, "a and b peers", func() bool {
		return len(a.c.repl.same()) == 1 && len(b.c.repl.same()) == 1 && b.c.Ready()
	})
	sa, sb := a.clientRegister(t, testInstance("rot.a", "z1")), b.clientRegister(t, testInstance("rot.b", "z1"))
	ka, kb := sa.Key(), sb.Key()
	testkit.EventuallyTrue(t, waitTimeout, "writes both ways", func() bool { return b.has(ka) && a.has(kb) })

	const third = "NewEY5+4fucw2IW5kl1M8XgVk15M8AI+kyTtSBwF4DA="
	rogue := startNode(t, nodeOpt{http: true, join: []*tnode{a}, cfg: func(c *Config) {
		c.Secret = third
		c.JoinTimeout = 500 * time.Millisecond
	}})
	select { // its join phase: every attempt at a failed (a cannot read its gossip)
	case <-rogue.c.members.joinedC():
	case <-time.After(waitTimeout):
		t.Fatal("rogue's join phase never ended")
	}
	if got := len(a.c.members.table()); got != 1 {
		t.Fatalf("a lists %d other members, want only b (the rogue holds neither key)", got)
	}
	body := `{"digests":[]}`
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+PathDigest, bytes.NewReader([]byte(body)))
	rogue.c.auth.Sign(req, []byte(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rogue's signed request: HTTP %d %v", resp.StatusCode, m)
	}
}
