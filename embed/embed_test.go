package embed_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/embed"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/syncup"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// testSecret is the test clusters' secret (base64 of 32 bytes).
const testSecret = "ZW1iZWQtdGVzdC1jbHVzdGVyLXNlY3JldC0zMmJ5dGU="

// testConfig is a node on loopback ephemeral ports.
func testConfig(hostname string) configs.Config {
	cfg := configs.DefaultConfig()
	cfg.Node.Hostname = hostname
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Cluster.Bind = "127.0.0.1:0"
	cfg.Cluster.Secret = testSecret
	cfg.Cluster.JoinTimeout = 5 * time.Second
	cfg.HTTP.ShutdownTimeout = 5 * time.Second
	return cfg
}

// start starts a node with fast gossip and registers a bounded Shutdown.
func start(t *testing.T, cfg configs.Config, opts embed.Options) *embed.Node {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testkit.Logger(t, slog.LevelInfo).With("node", cfg.Node.Hostname)
	}
	if opts.Memberlist == nil {
		opts.Memberlist = syncup.LocalGossip
	}
	n, err := embed.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

func ready(t *testing.T, n *embed.Node) {
	t.Helper()
	select {
	case <-n.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("node not ready within 20 s")
	}
}

func client(t *testing.T, n *embed.Node) *harness.Client {
	c := harness.NewClient(n.Addrs().HTTP)
	t.Cleanup(c.Close)
	return c
}

// infraHosts lists the hostnames of the infra.discovery records n serves.
func infraHosts(t *testing.T, n *embed.Node) []string {
	t.Helper()
	ii, _, err := client(t, n).Fetch(t.Context(), "dev", wire.InfraAppID, 1, "")
	if err != nil {
		return nil
	}
	var hs []string
	for _, in := range ii.All() {
		hs = append(hs, in.Hostname)
	}
	slices.Sort(hs)
	return hs
}

// pair starts a, then b joined to it, both ready, with each other's record.
func pair(t *testing.T, edit func(*configs.Config)) (a, b *embed.Node) {
	t.Helper()
	ca := testConfig("node-a")
	if edit != nil {
		edit(&ca)
	}
	a = start(t, ca, embed.Options{})
	ready(t, a)
	cb := testConfig("node-b")
	cb.Cluster.Join = []string{a.Addrs().Gossip}
	if edit != nil {
		edit(&cb)
	}
	b = start(t, cb, embed.Options{})
	ready(t, b)
	for _, n := range []*embed.Node{a, b} {
		testkit.Eventually(t, 20*time.Second, "both records", func() error {
			return testkit.State(slices.Equal(infraHosts(t, n), []string{"node-a", "node-b"}), fmt.Sprint(infraHosts(t, n)))
		})
	}
	return a, b
}

// A node serves once started, registers itself (spec 7.5.1) with its
// advertised address, and stops in order: Done closes, the goroutines are
// gone (TestMain), and a second Shutdown or a Start after it is harmless.
func TestNode_StartReadyShutdown(t *testing.T) {
	n := start(t, testConfig("solo"), embed.Options{})
	ready(t, n)
	a := n.Addrs()
	if a.HTTP != a.HTTPListen || strings.HasSuffix(a.HTTP, ":0") || strings.HasSuffix(a.Gossip, ":0") {
		t.Fatalf("addrs %+v", a)
	}
	ok, err := client(t, n).Ready(t.Context())
	if err != nil || !ok {
		t.Fatalf("/readyz: %v %v", ok, err)
	}
	ii, _, err := client(t, n).Fetch(t.Context(), "dev", wire.InfraAppID, 1, "")
	if err != nil || len(ii.All()) != 1 || ii.All()[0].Addrs[0] != "http://"+a.HTTP {
		t.Fatalf("own record: %+v %v", ii, err)
	}
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
	default:
		t.Fatal("Done not closed after Shutdown")
	}
	if n.Err() != nil {
		t.Fatalf("Err after a requested Shutdown: %v", n.Err())
	}
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := n.Start(t.Context()); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

// A listen error is Start's error, and nothing keeps running.
func TestNode_ListenError(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := testConfig("busy")
	cfg.HTTP.Addr = held.Addr().String()
	n, err := embed.New(cfg, embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "http listen") {
		t.Fatalf("Start: %v, want the listen error", err)
	}
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// cluster.advertise is what the node publishes even when cluster.bind asks
// for port 0 (memberlist used to replace the advertised gossip port with
// the bound one). A peer joining through the bound gossip address learns
// and dials the advertised one.
func TestNode_AdvertiseWithPortZeroBinds(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0") // a port gossip certainly did not bind
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	adv := held.Addr().String()
	ca := testConfig("node-a")
	ca.Cluster.Advertise = adv
	a := start(t, ca, embed.Options{})
	if got := a.Addrs(); got.Gossip != adv || got.GossipBind == adv || !strings.HasPrefix(got.GossipBind, "127.0.0.1:") {
		t.Fatalf("addrs %+v, want gossip %s advertised and another port bound", got, adv)
	}
	ready(t, a)
	cb := testConfig("node-b")
	cb.Cluster.Join = []string{a.Addrs().GossipBind}
	b := start(t, cb, embed.Options{})
	testkit.Eventually(t, 20*time.Second, "a in b's /discovery/nodes", func() error {
		nodes, _, err := client(t, b).Nodes(t.Context())
		if err != nil {
			return err
		}
		return testkit.State(slices.ContainsFunc(nodes, func(n wire.Node) bool { return n.Addr == a.Addrs().HTTP }), fmt.Sprint(nodes))
	})
	// b's failure detector dials a's advertised address (UDP finds nobody
	// there, then the TCP fallback ping reaches the port we hold).
	gl := held.(*net.TCPListener)
	if err := gl.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := gl.Accept()
	if err != nil {
		t.Fatalf("nobody dialled a's advertised gossip address %s: %v", adv, err)
	}
	conn.Close()
}

// A node that leaves gracefully cancels its record (replicated) before it
// goes, so the survivor drops it at once instead of evicting it later
// (spec 7.5.3), and the survivor does not treat the leave as a crash.
func TestNode_GracefulLeaveCancelsOwnRecord(t *testing.T) {
	logger, logs := testkit.CaptureLogs(t, slog.LevelInfo)
	ca := testConfig("node-a")
	a := start(t, ca, embed.Options{Logger: logger})
	ready(t, a)
	cb := testConfig("node-b")
	cb.Cluster.Join = []string{a.Addrs().Gossip}
	b := start(t, cb, embed.Options{})
	ready(t, b)
	testkit.Eventually(t, 20*time.Second, "b's record on a", func() error {
		return testkit.State(slices.Equal(infraHosts(t, a), []string{"node-a", "node-b"}), fmt.Sprint(infraHosts(t, a)))
	})
	if err := b.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "b's record gone from a", func() error {
		return testkit.State(slices.Equal(infraHosts(t, a), []string{"node-a"}), fmt.Sprint(infraHosts(t, a)))
	})
	if logs.Count("failed without leaving") != 0 {
		t.Fatal("a treated b's graceful leave as a failure")
	}
}

// The peer that should take our cancel has crashed: the drain is cut at the
// shutdown budget and the node stops all the same.
func TestNode_ShutdownBoundedWhenPeerGone(t *testing.T) {
	a, b := pair(t, nil)
	a.Kill()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.Shutdown(ctx) // an incomplete drain is reported, not a failure
	// Generous margin over the 2 s budget: this checks the bound exists.
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("shutdown took %v with a 2s budget", took)
	}
	select {
	case <-b.Done():
	default:
		t.Fatal("b not stopped")
	}
}

// A long-poll held by the node is answered at once at shutdown (-304), not
// after its 30 s hold.
func TestNode_ShutdownAnswersParkedPolls(t *testing.T) {
	n := start(t, testConfig("poller-node"), embed.Options{})
	ready(t, n)
	c := client(t, n)
	ins := wire.Instance{Zone: "zone01", Env: "dev", AppID: "demo.svc", Hostname: "h1", Addrs: []string{"grpc://127.0.0.1:9000"}, Status: 1}
	if env, err := c.Register(t.Context(), ins); err != nil || env.Code != 0 {
		t.Fatalf("register: %v %+v", err, env)
	}
	first, _, err := c.Polls(t.Context(), "dev", "poller", []string{"demo.svc"}, []int64{0})
	if err != nil {
		t.Fatal(err)
	}
	latest := first.Data["demo.svc"].LatestTimestamp
	type answer struct {
		env  *harness.Envelope
		took time.Duration
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		start := time.Now()
		q := url.Values{"env": {"dev"}, "appid": {"demo.svc"}, "latest_timestamp": {fmt.Sprint(latest)}, "hostname": {"poller"}}
		env, err := c.Do(context.Background(), "GET", "/discovery/polls", q, nil)
		answered <- answer{env, time.Since(start), err}
	}()
	testkit.Eventually(t, 10*time.Second, "the poll to be parked", func() error {
		m, err := c.Metrics(t.Context())
		if err != nil {
			return err
		}
		return testkit.State(strings.Contains(m, "discovery_http_parked_polls 1"), "not parked")
	})
	if err := n.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.err != nil || a.env.Code != wire.CodeNotModified {
		t.Fatalf("parked poll answered %+v %v, want -304", a.env, a.err)
	}
	if a.took >= 25*time.Second {
		t.Fatalf("parked poll held %v: not woken by the shutdown", a.took)
	}
}

// A node that stops replicates every write it acknowledged: clients keep
// registering on it while it stops; once it has stopped, its peer holds
// every instance it answered code 0 for (spec 7.2.2: the answer precedes
// the forward, so the forward must still happen).
func TestNode_GracefulStopDeliversAckedWrites(t *testing.T) {
	a, b := pair(t, nil)
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	bc := client(t, b)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h := fmt.Sprintf("w%d-%d", w, i)
				env, err := bc.Register(context.Background(), wire.Instance{Zone: "zone01", Env: "dev", AppID: "demo.stop", Hostname: h, Addrs: []string{"grpc://127.0.0.1:9000"}, Status: 1})
				if err != nil {
					return // b no longer takes connections
				}
				if env.Code == 0 {
					mu.Lock()
					acked = append(acked, h)
					mu.Unlock()
				}
			}
		}()
	}
	testkit.Eventually(t, 20*time.Second, "writes flowing", func() error {
		mu.Lock()
		defer mu.Unlock()
		return testkit.State(len(acked) >= 50, fmt.Sprint(len(acked)))
	})
	if err := b.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	ii, _, err := client(t, a).Fetch(t.Context(), "dev", "demo.stop", 3, "")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, in := range ii.All() {
		have[in.Hostname] = true
	}
	var lost []string
	for _, h := range acked {
		if !have[h] {
			lost = append(lost, h)
		}
	}
	t.Logf("%d writes acknowledged by the stopping node", len(acked))
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged writes never reached the peer: %v", len(lost), len(acked), lost[:min(len(lost), 10)])
	}
}

// Three nodes in one test binary: the peer protocol over syncup's in-memory
// MemNetwork, gossip over loopback (memberlist's MockNetwork cannot lose a
// member: a send to a stopped transport blocks its sender for good). A
// write on one node is on every node; a killed node's record leaves the
// survivors within seconds.
func TestNode_InMemoryCluster(t *testing.T) {
	peers := syncup.NewMemNetwork()
	var nodes []*embed.Node
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // clients still talk HTTP
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("mem-%d", i)
		cfg := testConfig(name)
		if i > 0 {
			cfg.Cluster.Join = []string{nodes[0].Addrs().Gossip}
		}
		n := start(t, cfg, embed.Options{Listener: ln, Transport: peers.Transport(ln.Addr().String())})
		peers.Attach(ln.Addr().String(), n.Cluster())
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		ready(t, n)
	}
	ins := wire.Instance{Zone: "zone01", Env: "dev", AppID: "mem.svc", Hostname: "h1", Addrs: []string{"grpc://10.0.0.1:1"}, Status: 1}
	if env, err := client(t, nodes[0]).Register(t.Context(), ins); err != nil || env.Code != 0 {
		t.Fatalf("register: %v %+v", err, env)
	}
	for _, n := range nodes {
		testkit.Eventually(t, 10*time.Second, "the write everywhere", func() error {
			_, ok := n.Registry().Get(ins.Key())
			return testkit.State(ok, "missing")
		})
		testkit.Eventually(t, 10*time.Second, "every node record", func() error {
			return testkit.State(len(infraHosts(t, n)) == 3, fmt.Sprint(infraHosts(t, n)))
		})
	}
	if got := peers.Delivered(nodes[1].Addrs().HTTP, syncup.OpRegister, true); got == 0 {
		t.Fatal("no replicated register went through the MemNetwork")
	}
	nodes[2].Kill()
	for _, n := range nodes[:2] {
		testkit.Eventually(t, 20*time.Second, "the dead node's record gone", func() error {
			return testkit.State(slices.Equal(infraHosts(t, n), []string{"mem-0", "mem-1"}), fmt.Sprint(infraHosts(t, n)))
		})
	}
}
