package legacy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/internal/testkit"
)

// cluster3 starts A alone, then B and C with Nodes lists that name the
// earlier nodes and themselves. A learns B and C only from their forwarded
// infra.discovery records (7.6). Waits until every node lists all three.
func cluster3(t *testing.T, cfg Config) (a, b, c *Node) {
	t.Helper()
	a = start(t, cfg)
	lb := listen(t)
	cb := cfg
	cb.Listener, cb.Nodes = lb, []string{a.Addr(), lb.Addr().String()}
	b = start(t, cb)
	lc := listen(t)
	cc := cfg
	cc.Listener, cc.Nodes = lc, []string{a.Addr(), b.Addr(), lc.Addr().String()}
	c = start(t, cc)
	all := []string{a.Addr(), b.Addr(), c.Addr()}
	slices.Sort(all)
	for _, n := range []*Node{a, b, c} {
		testkit.Eventually(t, 5*time.Second, "peer list of "+n.Addr(), func() error {
			same, _ := n.Peers()
			same = slices.Sorted(slices.Values(same))
			if !slices.Equal(same, all) {
				return fmt.Errorf("peers %v, want %v", same, all)
			}
			return nil
		})
	}
	return a, b, c
}

func TestClusterReplicationD4(t *testing.T) {
	a, b, c := cluster3(t, Config{RenewInterval: 100 * time.Millisecond})
	w := newWire(t)

	// A write on A reaches B and C before A answers (D9), with the two addrs
	// comma-joined into one (D4); A keeps both.
	w.postCode(a.Addr(), "/discovery/register", reg("demo.svc", "h1", "grpc://10.0.0.1:9000", "http://10.0.0.1:8000"), 0)
	onA, _ := a.Instance(testEnv, "demo.svc", testZone, "h1")
	if want := []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}; !slices.Equal(onA.Addrs, want) {
		t.Fatalf("A addrs %q, want %q", onA.Addrs, want)
	}
	for _, n := range []*Node{b, c} {
		got, ok := n.Instance(testEnv, "demo.svc", testZone, "h1")
		if want := []string{"grpc://10.0.0.1:9000,http://10.0.0.1:8000"}; !ok || !slices.Equal(got.Addrs, want) {
			t.Fatalf("%s addrs %q (found %v), want %q", n.Addr(), got.Addrs, ok, want)
		}
		if got.DirtyTimestamp != onA.DirtyTimestamp {
			t.Fatalf("dirty_timestamp %d on %s, %d on A", got.DirtyTimestamp, n.Addr(), onA.DirtyTimestamp)
		}
		// Also on the wire of fetch.
		info, _ := w.fetchInfo(n.Addr(), "demo.svc")
		if l := info.Instances[testZone]; len(l) != 1 || len(l[0].Addrs) != 1 {
			t.Fatalf("fetch on %s: %+v", n.Addr(), info)
		}
	}

	// Cancel is forwarded too.
	w.postCode(c.Addr(), "/discovery/cancel", key("demo.svc", "h1"), 0)
	for _, n := range []*Node{a, b, c} {
		if _, ok := n.Instance(testEnv, "demo.svc", testZone, "h1"); ok {
			t.Fatalf("still on %s after cancel", n.Addr())
		}
	}

	// A replicated write is not forwarded again.
	w.postCode(b.Addr(), "/discovery/register", with(reg("local.svc", "h1", "grpc://x:1"), "replication", "true"), 0)
	if _, ok := a.Instance(testEnv, "local.svc", testZone, "h1"); ok {
		t.Fatal("a replicated write was forwarded")
	}

	// Peers flip to UP in /discovery/nodes after a forwarded renew (D12).
	testkit.Eventually(t, 5*time.Second, "nodes all UP", func() error {
		for _, ni := range a.Nodes() {
			if ni.Status != 0 || ni.Zone != testZone {
				return fmt.Errorf("nodes %+v", a.Nodes())
			}
		}
		return nil
	})
}

func TestRenewHandshake(t *testing.T) {
	a := start(t, Config{})
	lb := listen(t)
	b := start(t, Config{Listener: lb, Nodes: []string{a.Addr(), lb.Addr().String()}})
	testkit.Eventually(t, 5*time.Second, "A learns B", func() error {
		if same, _ := a.Peers(); !slices.Contains(same, b.Addr()) {
			return fmt.Errorf("A peers %v", same)
		}
		return nil
	})
	w := newWire(t)

	t.Run("receiver", func(t *testing.T) {
		w.postCode(b.Addr(), "/discovery/register", with(reg("recv.svc", "h1", "grpc://x:1"), "replication", "true", "dirty_timestamp", "1000"), 0)
		rep := func(dirty string) url.Values {
			return with(key("recv.svc", "h1"), "replication", "true", "from_zone", "true", "dirty_timestamp", dirty)
		}
		for _, c := range []struct {
			dirty string
			code  int
		}{{"2000", -404}, {"500", -409}, {"", -409}, {"1000", 0}} {
			before, _ := b.Instance(testEnv, "recv.svc", testZone, "h1")
			ans := w.post(b.Addr(), "/discovery/renew", rep(c.dirty))
			after, _ := b.Instance(testEnv, "recv.svc", testZone, "h1")
			if ans.Code != c.code || after.RenewTimestamp <= before.RenewTimestamp {
				t.Fatalf("dirty %q: code %d (want %d), renew %d -> %d", c.dirty, ans.Code, c.code, before.RenewTimestamp, after.RenewTimestamp)
			}
			var d Instance
			if err := json.Unmarshal(ans.Data, &d); err != nil || d.DirtyTimestamp != 1000 || d.Hostname != "h1" {
				t.Fatalf("dirty %q: data %s", c.dirty, ans.Data)
			}
		}
		ans := w.post(b.Addr(), "/discovery/renew", with(key("recv.svc", "nobody"), "replication", "true"))
		if ans.Code != -404 {
			t.Fatalf("absent: %s", ans.Body)
		}
	})

	t.Run("-404 pushes the sender's copy", func(t *testing.T) {
		// Only on A (replicated register is not forwarded).
		w.postCode(a.Addr(), "/discovery/register", with(reg("push.svc", "h1", "grpc://p:1", "http://p:2"), "replication", "true", "version", "v1"), 0)
		if _, ok := b.Instance(testEnv, "push.svc", testZone, "h1"); ok {
			t.Fatal("B has it before the renew")
		}
		w.postCode(a.Addr(), "/discovery/renew", key("push.svc", "h1"), 0)
		onA, _ := a.Instance(testEnv, "push.svc", testZone, "h1")
		onB, ok := b.Instance(testEnv, "push.svc", testZone, "h1")
		if !ok || onB.DirtyTimestamp != onA.DirtyTimestamp || onB.Version != "v1" || !slices.Equal(onB.Addrs, []string{"grpc://p:1,http://p:2"}) {
			t.Fatalf("B after -404: %v %+v (A %+v)", ok, onB, onA)
		}
	})

	t.Run("-409 adopts the peer's copy", func(t *testing.T) {
		w.postCode(a.Addr(), "/discovery/register", with(reg("adopt.svc", "h1", "grpc://old:1"), "replication", "true", "dirty_timestamp", "1000", "version", "old"), 0)
		w.postCode(b.Addr(), "/discovery/register", with(reg("adopt.svc", "h1", "grpc://new:1", "http://new:2"), "replication", "true",
			"dirty_timestamp", "2000", "version", "new", "metadata", `{"weight":"7"}`), 0)
		w.postCode(a.Addr(), "/discovery/renew", key("adopt.svc", "h1"), 0)
		onA, _ := a.Instance(testEnv, "adopt.svc", testZone, "h1")
		want := []string{"grpc://new:1,http://new:2"} // re-imported comma-joined (D4)
		if onA.DirtyTimestamp != 2000 || onA.Version != "new" || !slices.Equal(onA.Addrs, want) || !cmp.Equal(onA.Metadata, map[string]string{"weight": "7"}) {
			t.Fatalf("A after -409: %+v", onA)
		}
		// B kept its copy with both addrs.
		if onB, _ := b.Instance(testEnv, "adopt.svc", testZone, "h1"); len(onB.Addrs) != 2 || onB.DirtyTimestamp != 2000 {
			t.Fatalf("B changed: %+v", onB)
		}
	})
}

func TestStartupSync(t *testing.T) {
	a := start(t, Config{})
	w := newWire(t)
	w.postCode(a.Addr(), "/discovery/register", with(reg("s1", "h1", "grpc://x:1"), "metadata", `{"k":"v"}`), 0)
	w.postCode(a.Addr(), "/discovery/register", with(reg("s1", "h2", "grpc://x:2"), "status", "2"), 0)
	w.postCode(a.Addr(), "/discovery/register", with(reg("s2", "h1", "grpc://x:3"), "env", "other", "zone", "zoneB"), 0)
	w.postCode(a.Addr(), "/discovery/register", with(reg("s3", "h1", "grpc://x:4"), "metadata", `{}`), 0)
	want := a.Instances()
	latest, _ := a.AppLatest(testEnv, "s1")

	x := newRecorder(t)
	b := start(t, Config{Nodes: []string{a.Addr(), x.addr()}})
	var got []Instance
	for _, i := range b.Instances() {
		if i.AppID == AppIDDiscovery && i.Hostname == b.Hostname() {
			continue // B's own record
		}
		got = append(got, i)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("synced registry (-A +B):\n%s", diff)
	}
	if l, _ := b.AppLatest(testEnv, "s1"); l < latest {
		t.Fatalf("app latest %d on B < %d on A", l, latest)
	}
	// The synced copies are not forwarded; B's own record is.
	if len(x.find("/discovery/register", "s1")) != 0 || len(x.find("/discovery/register", AppIDDiscovery)) != 1 {
		t.Fatal("B forwarded synced copies, or not its own record")
	}
	if len(x.find("/discovery/fetch/all", "")) != 1 {
		t.Fatal("B did not sync from every same-zone peer")
	}
}

func TestLearnPeerFromRecord(t *testing.T) {
	a := start(t, Config{})
	x := newRecorder(t) // same zone
	y := newRecorder(t) // zoneB
	w := newWire(t)

	// A third party registers infra.discovery records on A.
	w.postCode(a.Addr(), "/discovery/register", with(reg(AppIDDiscovery, "x", "http://"+x.addr()), "replication", "true"), 0)
	w.postCode(a.Addr(), "/discovery/register", with(reg(AppIDDiscovery, "y", "http://"+y.addr(), "grpc://ignored:1"), "replication", "true", "zone", "zoneB"), 0)
	testkit.Eventually(t, 5*time.Second, "A learns x and y", func() error {
		same, zones := a.Peers()
		if !slices.Contains(same, x.addr()) || !cmp.Equal(zones, map[string][]string{"zoneB": {y.addr()}}) {
			return fmt.Errorf("peers %v zones %v", same, zones)
		}
		return nil
	})

	// Client register: same zone gets replication=true, other zone
	// replication=false; both from_zone=true; addrs joined.
	w.postCode(a.Addr(), "/discovery/register", reg("fwd.svc", "h1", "grpc://f:1", "http://f:2"), 0)
	for _, c := range []struct {
		r    *recorder
		repl string
	}{{x, "true"}, {y, "false"}} {
		got := c.r.find("/discovery/register", "fwd.svc")
		if len(got) != 1 {
			t.Fatalf("%s got %d registers", c.r.addr(), len(got))
		}
		f := got[0].Form
		if f.Get("replication") != c.repl || f.Get("from_zone") != "true" || !slices.Equal(f["addrs"], []string{"grpc://f:1,http://f:2"}) ||
			f.Get("metadata") != "null" || f.Get("dirty_timestamp") == "" || f.Get("reg_timestamp") == "" || f.Get("latest_timestamp") == "" {
			t.Fatalf("forwarded register to %s: %v", c.r.addr(), f)
		}
	}

	// from_zone=true: not forwarded to other zones.
	w.postCode(a.Addr(), "/discovery/register", with(reg("fz.svc", "h1", "grpc://f:1"), "from_zone", "true"), 0)
	if len(x.find("/discovery/register", "fz.svc")) != 1 || len(y.find("/discovery/register", "fz.svc")) != 0 {
		t.Fatal("from_zone register went cross-zone (or not to the same zone)")
	}

	// Renew and cancel go cross-zone only for instances of A's own zone.
	w.postCode(a.Addr(), "/discovery/register", with(reg("bz.svc", "h1", "grpc://f:1"), "zone", "zoneB", "from_zone", "true"), 0)
	w.postCode(a.Addr(), "/discovery/renew", key("fwd.svc", "h1"), 0)
	w.postCode(a.Addr(), "/discovery/renew", with(key("bz.svc", "h1"), "zone", "zoneB"), 0)
	if len(y.find("/discovery/renew", "fwd.svc")) != 1 || len(y.find("/discovery/renew", "bz.svc")) != 0 || len(x.find("/discovery/renew", "bz.svc")) != 1 {
		t.Fatal("renew cross-zone rule")
	}
	rn := x.find("/discovery/renew", "fwd.svc")[0].Form
	if rn.Get("dirty_timestamp") == "" || rn.Get("replication") != "true" {
		t.Fatalf("forwarded renew %v", rn)
	}
	w.postCode(a.Addr(), "/discovery/cancel", with(key("bz.svc", "h1"), "zone", "zoneB"), 0)
	w.postCode(a.Addr(), "/discovery/cancel", key("fwd.svc", "h1"), 0)
	if len(y.find("/discovery/cancel", "fwd.svc")) != 1 || len(y.find("/discovery/cancel", "bz.svc")) != 0 {
		t.Fatal("cancel cross-zone rule")
	}
	if cf := x.find("/discovery/cancel", "fwd.svc")[0].Form; cf.Get("latest_timestamp") != "0" {
		t.Fatalf("forwarded cancel %v", cf)
	}

	// Once the record is cancelled, x stops receiving forwards.
	w.postCode(a.Addr(), "/discovery/cancel", with(key(AppIDDiscovery, "x"), "replication", "true"), 0)
	testkit.Eventually(t, 5*time.Second, "A forgets x", func() error {
		if same, _ := a.Peers(); slices.Contains(same, x.addr()) {
			return fmt.Errorf("peers %v", same)
		}
		return nil
	})
	w.postCode(a.Addr(), "/discovery/register", reg("after.svc", "h1", "grpc://f:1"), 0)
	if len(x.find("/discovery/register", "after.svc")) != 0 {
		t.Fatal("forwarded to a forgotten peer")
	}
}

func TestCloseAndKill(t *testing.T) {
	a, b, c := cluster3(t, Config{})
	w := newWire(t)
	bHost, cHost := b.Hostname(), c.Hostname()

	// State only C holds (a replicated write is not forwarded) dies with it;
	// Kill cancels nothing on peers.
	w.postCode(c.Addr(), "/discovery/register", with(reg("only.c", "h1", "grpc://x:1"), "replication", "true"), 0)
	cAddr := c.Addr()
	c.Kill()
	if conn, err := net.DialTimeout("tcp", cAddr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("killed node still accepts connections")
	}
	if _, ok := a.Instance(testEnv, AppIDDiscovery, testZone, cHost); !ok {
		t.Fatal("Kill cancelled C's record on A")
	}
	if _, ok := a.Instance(testEnv, "only.c", testZone, "h1"); ok {
		t.Fatal("unforwarded write of C reached A")
	}

	// Close cancels B's record on its peers before it returns (D9).
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Instance(testEnv, AppIDDiscovery, testZone, bHost); ok {
		t.Fatal("Close did not cancel B's record on A")
	}
	// Writes on A still succeed with dead peers in its list.
	w.postCode(a.Addr(), "/discovery/register", reg("still.svc", "h1", "grpc://x:1"), 0)
}
