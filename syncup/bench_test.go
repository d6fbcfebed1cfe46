package syncup

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// Replication throughput and lag: b.N client registers on A, timed until
// B has acknowledged all of them.
//
//	go test -run '^$' -bench 'Replication' -benchtime 20000x ./syncup/
func BenchmarkReplication_Mem(b *testing.B) {
	net := NewMemNetwork()
	nodes := startCluster(b, net, 2, "z1", func(c *Config) { c.QueueSize = 1 << 20; c.BatchSize = 512 })
	benchReplication(b, nodes)
}

func BenchmarkReplication_HTTP(b *testing.B) {
	cfg := func(c *Config) { c.QueueSize = 1 << 20; c.BatchSize = 512 }
	a := startHTTPNode(b, nil, cfg)
	bb := startHTTPNode(b, []*tnode{a}, cfg)
	testkit.EventuallyTrue(b, waitTimeout, "mesh", func() bool { return len(a.c.repl.same()) == 1 && bb.c.Ready() })
	benchReplication(b, []*tnode{a, bb})
}

// The durability window of one acknowledged write on an idle cluster:
// from handing it to the Replicator until the peer holds it (nothing
// batches or waits when the queue is idle). ns/op is that window.
//
//	go test -run '^$' -bench 'ReplicationWindow' -benchtime 2000x ./syncup/
func BenchmarkReplicationWindow_HTTP(b *testing.B) {
	a := startHTTPNode(b, nil, nil)
	bb := startHTTPNode(b, []*tnode{a}, nil)
	testkit.EventuallyTrue(b, waitTimeout, "mesh", func() bool { return len(a.c.repl.same()) == 1 && bb.c.Ready() })
	quiet(b, a, bb)
	ins := make([]registry.Instance, b.N)
	for i := range ins {
		ins[i], _, _ = a.reg.Register(testInstance("bench.window", "z1"), 0)
	}
	b.ResetTimer()
	for i := range ins {
		a.c.Register(ins[i], true)
		for !bb.has(ins[i].Key()) {
			time.Sleep(20 * time.Microsecond) // poll: the wait is what is measured
		}
	}
}

func benchReplication(b *testing.B, nodes []*tnode) {
	a := nodes[0]
	quiet(b, nodes...)
	ins := make([]registry.Instance, b.N)
	for i := range ins {
		ins[i], _, _ = a.reg.Register(testInstance(fmt.Sprintf("bench.%d", i%100), "z1"), 0)
	}
	b.ResetTimer()
	start := time.Now()
	for i := range ins {
		a.c.Register(ins[i], true)
	}
	quiet(b, nodes...)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	var m dto.Metric
	if err := a.c.met.lag.Write(&m); err == nil && m.Histogram.GetSampleCount() > 0 {
		b.ReportMetric(m.Histogram.GetSampleSum()/float64(m.Histogram.GetSampleCount())*1e3, "ms-mean-lag")
	}
	if d := testutil.ToFloat64(a.c.met.dropped.WithLabelValues(dropOverflow)); d > 0 {
		b.Fatalf("%v ops dropped", d)
	}
}

func bigRegistry(b *testing.B, n int) *registry.Registry {
	b.Helper()
	reg := newReg(b)
	for i := range n {
		ins := registry.Instance{
			Region: "sh", Zone: "sh001", Env: "prod", AppID: fmt.Sprintf("main.app.svc-%d", i%2000),
			Hostname: fmt.Sprintf("pod-%06d", i), Addrs: []string{fmt.Sprintf("grpc://10.%d.%d.%d:9000", i>>16&255, i>>8&255, i&255)},
			Version: "v1.4.2", Metadata: map[string]string{"weight": "10", "color": "red"}, Status: registry.StatusUp,
		}
		if _, _, err := reg.Register(ins, 0); err != nil {
			b.Fatal(err)
		}
	}
	return reg
}

// Startup sync of 100 000 instances over real HTTP: stream the snapshot
// from a peer and import it into an empty registry. Target: well under 2 s.
//
//	go test -run '^$' -bench 'Snapshot' -benchtime 3x ./syncup/
func BenchmarkSnapshotSync100k_HTTP(b *testing.B) {
	src := bigRegistry(b, 100_000)
	c, err := New(testConfig(), Self{Env: "prod", Zone: "sh001", Hostname: "src", HTTPAddr: "10.0.0.1:7171"}, src, Deps{Transport: NewMemNetwork().Transport("x")})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	auth, err := NewPeerAuth(testSecret, nil, time.Minute) // the source refuses unsigned peer requests
	if err != nil {
		b.Fatal(err)
	}
	tr := NewHTTPTransport(HTTPTransportConfig{Timeout: 5 * time.Second, Auth: auth})
	defer tr.CloseIdleConnections()
	addr := strings.TrimPrefix(srv.URL, "http://")
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		dst := newReg(b)
		c2, err := New(testConfig(), Self{Env: "prod", Zone: "sh001", Hostname: "dst", HTTPAddr: "10.0.0.2:7171"}, dst, Deps{Transport: tr})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		_, n, err := c2.syncer.syncFrom(b.Context(), addr) // the startup-sync path itself
		if err != nil {
			b.Fatal(err)
		}
		if n != 100_000 || dst.Stats().Instances["prod"] != 100_000 {
			b.Fatalf("synced %d items, registry holds %d", n, dst.Stats().Instances["prod"])
		}
	}
}

func BenchmarkSnapshotEncode100k(b *testing.B) {
	src := bigRegistry(b, 100_000)
	c, err := New(testConfig(), Self{Env: "prod", Zone: "sh001", Hostname: "src", HTTPAddr: "10.0.0.1:7171"}, src, Deps{Transport: NewMemNetwork().Transport("x")})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	b.ResetTimer()
	for b.Loop() {
		buf.Reset()
		if err := wire.EncodeSnapshot(bufio.NewWriter(&buf), func(sink func(SnapshotItem) error) error {
			return c.handler.snapshot(b.Context(), sink)
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len())/1e6, "MB")
}

func BenchmarkSnapshotDecode100k(b *testing.B) {
	src := bigRegistry(b, 100_000)
	c, err := New(testConfig(), Self{Env: "prod", Zone: "sh001", Hostname: "src", HTTPAddr: "10.0.0.1:7171"}, src, Deps{Transport: NewMemNetwork().Transport("x")})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := wire.EncodeSnapshot(bufio.NewWriter(&buf), func(sink func(SnapshotItem) error) error {
		return c.handler.snapshot(b.Context(), sink)
	}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := wire.DecodeSnapshot(bytes.NewReader(data), func(SnapshotItem) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 100_000 {
			b.Fatal(n)
		}
	}
}
