package migration

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

// TestMigration_RenewConflictAdoptsNewerCopy proves the -409 half of the
// renew handshake (spec 7.3) in both directions of a mixed cluster: a renew
// forwarded to the side that holds a newer copy of the instance is answered
// -409 with that copy, and the sender adopts it. The newer copy is put on
// one side only, as a forward that never reached the other would leave it:
// a replicated register (the legacy node does not forward those), or on
// ours one signed with the cluster secret. The periodic pull is off, so
// only the handshake can repair.
func TestMigration_RenewConflictAdoptsNewerCopy(t *testing.T) {
	l := harness.StartLegacyCluster(t, 1, legacyOpts())[0]
	o := startOurs(t, []string{"ours-c1"}, []*harness.LegacyNode{l}, map[string]string{
		"DISCOVERY_CLUSTER_LEGACY_PULL_INTERVAL": "1h",
	})[0]
	newerCopy := func(s srv, app string, in harness.Instance) (harness.Instance, url.Values) {
		t.Helper()
		m, err := fetchApp(s, app)
		if err != nil {
			t.Fatal(err)
		}
		cur, ok := m[in.Hostname]
		if !ok {
			t.Fatalf("%s holds no %s", s, in.Hostname)
		}
		n := in
		n.Version, n.Addrs = "v2", addrsFor(9990)
		return n, url.Values{"replication": {"true"}, "dirty_timestamp": {strconv.FormatInt(cur.DirtyTimestamp+1000, 10)}}
	}
	adopted := func(s srv, app string, n harness.Instance) func() error {
		return func() error {
			m, err := fetchApp(s, app)
			if err != nil {
				return err
			}
			got := m[n.Hostname]
			same := slices.Equal(got.Addrs, n.Addrs)
			if s.Legacy { // it keeps a replica's addrs comma-joined (D4)
				same = strings.Join(got.Addrs, ",") == strings.Join(n.Addrs, ",")
			}
			return testkit.State(got.Version == n.Version && same, fmt.Sprintf("%s holds %s %q", s, got.Version, got.Addrs))
		}
	}

	// 1. The legacy node holds the newer copy: ours adopts it.
	{
		const app = "mig.conflict.legacy"
		x := instance(app, "x", 9900)
		mustOK(t, "register x on ours")(o.Client.Register(ctxT(t), x))
		testkit.Eventually(t, 5*time.Second, "x on the legacy node", func() error {
			return checkHolds([]srv{legacySrv(l)}, app, map[string][]string{"x": x.Addrs}, true)
		})
		n, extra := newerCopy(legacySrv(l), app, x)
		mustOK(t, "newer x on the legacy node only")(l.Client.Register(ctxT(t), n, extra))
		if err := adopted(ourSrv(o), app, x)(); err != nil {
			t.Fatalf("before the renew: %v", err)
		}
		before := handshakes409(t, o)
		mustOK(t, "renew x on ours")(o.Client.Renew(ctxT(t), x))
		testkit.Eventually(t, 5*time.Second, "ours adopted the legacy node's newer copy", adopted(ourSrv(o), app, n))
		if got := handshakes409(t, o) - before; got < 1 {
			t.Fatalf("ours counted %v -409 handshakes, want the one that repaired x", got)
		}
	}

	// 2. Ours holds the newer copy: the legacy node adopts it.
	{
		const app = "mig.conflict.ours"
		y := instance(app, "y", 9950)
		mustOK(t, "register y on the legacy node")(l.Client.Register(ctxT(t), y))
		testkit.Eventually(t, 5*time.Second, "y on ours", func() error {
			return checkHolds([]srv{ourSrv(o)}, app, map[string][]string{"y": y.Addrs}, true)
		})
		peer, err := o.Client.AsPeer(harness.DefaultSecret)
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		n, extra := newerCopy(ourSrv(o), app, y)
		mustOK(t, "newer y on ours only")(peer.Register(ctxT(t), n, extra))
		if err := adopted(legacySrv(l), app, y)(); err != nil {
			t.Fatalf("before the renew: %v", err)
		}
		mustOK(t, "renew y on the legacy node")(l.Client.Renew(ctxT(t), y))
		testkit.Eventually(t, 5*time.Second, "the legacy node adopted ours' newer copy", adopted(legacySrv(l), app, n))
	}
}

// handshakes409 is n's count of renews answered -409 whose copy it adopted.
func handshakes409(t *testing.T, n *harness.Node) float64 {
	t.Helper()
	v, err := n.Client.MetricSum(ctxT(t), `discovery_replication_handshakes_total{code="409"}`)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
