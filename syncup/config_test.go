package syncup

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/registry"
)

func TestConfig_DefaultIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfig_ValidateNamesTheKey(t *testing.T) {
	key16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	cases := []struct {
		name string
		mut  func(*Config)
		key  string
	}{
		{"bind not ip:port", func(c *Config) { c.Bind = "nope" }, "cluster.bind"},
		{"bind hostname", func(c *Config) { c.Bind = "localhost:7946" }, "cluster.bind"},
		{"advertise unspecified (C64)", func(c *Config) { c.Advertise = "0.0.0.0:7946" }, "cluster.advertise"},
		{"advertise hostname", func(c *Config) { c.Advertise = "node1:7946" }, "cluster.advertise"},
		{"advertise port 0", func(c *Config) { c.Advertise = "10.0.0.1:0" }, "cluster.advertise"},
		{"secret not base64", func(c *Config) { c.Secret = "***" }, "cluster.secret"},
		{"secret wrong size", func(c *Config) { c.Secret = base64.StdEncoding.EncodeToString(make([]byte, 10)) }, "cluster.secret"},
		{"label too long", func(c *Config) { c.Label = strings.Repeat("x", 256) }, "cluster.label"},
		{"empty seed", func(c *Config) { c.Join = []string{""} }, "cluster.join[0]"},
		{"zone without seeds", func(c *Config) { c.Zones = map[string][]string{"zb": nil} }, "cluster.zones.zb"},
		{"zone seed not host:port", func(c *Config) { c.Zones = map[string][]string{"zb": {"x"}} }, "cluster.zones.zb[0]"},
		{"peer timeout >= 30s", func(c *Config) { c.PeerTimeout = 30 * time.Second }, "cluster.peer_timeout"},
		{"batch above max", func(c *Config) { c.MaxBatchOps = 10; c.BatchSize = 11 }, "cluster.max_batch_ops"},
		{"tiny body limit", func(c *Config) { c.MaxBodyBytes = 10 }, "cluster.max_body_bytes"},
		{"queue", func(c *Config) { c.QueueSize = 0 }, "cluster.queue_size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mut(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("want error naming %s, got %v", tc.key, err)
			}
		})
	}
	ok := DefaultConfig()
	ok.Secret = key16
	ok.Advertise = "10.0.0.1:7946"
	ok.Zones = map[string][]string{"zb": {"10.1.0.1:7171"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

func newReg(t testing.TB) *registry.Registry {
	r, err := registry.New(registry.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNew_RejectsBadSelfAndOversizedMeta(t *testing.T) {
	good := Self{Env: "prod", Zone: "z1", Hostname: "h1", HTTPAddr: "10.0.0.1:7171"}
	for name, s := range map[string]Self{
		"unspecified http addr (C64)": {Env: "prod", Zone: "z1", Hostname: "h1", HTTPAddr: "0.0.0.0:7171"},
		"no host":                     {Env: "prod", Zone: "z1", Hostname: "h1", HTTPAddr: ":7171"},
		"no zone":                     {Env: "prod", Hostname: "h1", HTTPAddr: "10.0.0.1:7171"},
		"meta over 512 bytes":         {Env: "prod", Zone: "z1", Hostname: strings.Repeat("h", 500), HTTPAddr: "10.0.0.1:7171"},
	} {
		if _, err := New(DefaultConfig(), s, newReg(t), Deps{}); err == nil {
			t.Errorf("%s: New accepted %+v", name, s)
		}
	}
	c, err := New(DefaultConfig(), good, newReg(t), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Name(), "h1-") || len(c.Name()) <= 3 {
		t.Fatalf("generated node name %q: want hostname plus random suffix", c.Name())
	}
	if err := c.Shutdown(context.Background()); err != nil { // never started
		t.Fatal(err)
	}
}

func TestMeta_RoundTripAndLimits(t *testing.T) {
	m := nodeMeta{HTTPAddr: "10.0.0.1:7171", Zone: "z1", Env: "prod", Hostname: "h", Version: "v1", Status: metaLeaving}
	b, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != metaVersion || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("meta %q", b)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {}, {2, '{', '}'}, append([]byte{1}, "{"...), append([]byte{1}, `{"a":"x","z":"z"}`...), append([]byte{1}, `{"a":"1.2.3.4:1","z":""}`...), append([]byte{1}, `{"a":"1.2.3.4:1","z":"z","s":7}`...)} {
		if _, err := decodeMeta(bad); err == nil {
			t.Errorf("decodeMeta(%q) accepted", bad)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := encodeMeta(nodeMeta{HTTPAddr: "10.0.0.1:7171", Zone: "z1", Env: "prod", Hostname: "h"})
	f.Add(b)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeMeta(in)
		if err == nil {
			if _, err := encodeMeta(m); err != nil && len(in) <= memberlist.MetaMaxSize {
				t.Fatalf("decoded meta does not re-encode: %v", err)
			}
		}
	})
}

func TestLogWriter_MapsLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &mlLogWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, l := range []string{
		"2026/01/02 15:04:05 [DEBUG] memberlist: d\n",
		"2026/01/02 15:04:05 [INFO] memberlist: i\n",
		"2026/01/02 15:04:05 [WARN] memberlist: w\n",
		"2026/01/02 15:04:05 [ERR] memberlist: e\n",
		"plain\n",
	} {
		_, _ = w.Write([]byte(l))
	}
	out := buf.String()
	for _, want := range []string{`level=DEBUG msg="memberlist: d"`, `level=INFO msg="memberlist: i"`, `level=WARN msg="memberlist: w"`, `level=ERROR msg="memberlist: e"`, `level=INFO msg=plain`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	w.close()
	buf.Reset()
	_, _ = w.Write([]byte("[ERR] after close\n"))
	if buf.Len() != 0 {
		t.Fatal("closed writer still logs")
	}
}

func TestMetrics_LintAndValues(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a := nodes[0]
	a.clientRegister(t, testInstance("demo.metrics", "z1"))
	quiet(t, nodes...)
	problems, err := testutil.GatherAndLint(a.prom)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("lint: %+v", problems)
	}
	if err := testutil.GatherAndCompare(a.prom, strings.NewReader(`
# HELP discovery_cluster_ready 1 once the startup sync / init-protect phase has ended.
# TYPE discovery_cluster_ready gauge
discovery_cluster_ready 1
# HELP discovery_cluster_members Same-zone gossip members (self included) by state: alive, leaving (announced), suspect (our replication link to it fails; memberlist v0.7.0 does not expose its own suspicion).
# TYPE discovery_cluster_members gauge
discovery_cluster_members{state="alive"} 2
discovery_cluster_members{state="leaving"} 0
discovery_cluster_members{state="suspect"} 0
`), "discovery_cluster_ready", "discovery_cluster_members"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(a.prom, "discovery_replication_queue_depth"); n != 1 {
		t.Fatalf("queue depth series = %d, want one per peer", n)
	}
	if n := testutil.CollectAndCount(a.prom, "discovery_replication_lag_seconds"); n != 1 {
		t.Fatalf("lag histogram missing")
	}
	if v := testutil.ToFloat64(a.c.met.sent); v < 1 {
		t.Fatalf("sent = %v", v)
	}
	// Two nodes in one process need separate registerers; the same one twice is an error.
	if _, err := New(testConfig(), Self{Env: "e", Zone: "z", Hostname: "h", HTTPAddr: "10.0.0.9:1"}, newReg(t), Deps{Metrics: a.prom}); err == nil {
		t.Fatal("duplicate metric registration not reported")
	}
}
