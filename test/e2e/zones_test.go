package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

const zoneB = "sh002" // zone A is harness.DefaultZone

// C57 (spec 7.2, 4.10.1): two zones wired with DISCOVERY_CLUSTER_ZONES both
// ways, A = {a1, a2} and B = {b1, b2}, all four in one gossip cluster (so
// each node's gossip does see the other zone's members).
//
//   - a register, set, renew or cancel accepted by a zone-A node reaches one
//     zone-B node as an original write marked from_zone, is applied there
//     and forwarded inside B only (as replicated), and never comes back;
//     the renew refreshes the instance's lease on both B nodes;
//   - a register on a zone-B node reaches both A nodes the same way;
//   - /discovery/nodes lists only the node's own zone, and each zone learns
//     the other's infra.discovery records through the cross-zone link.
//
// Loops are counted, not guessed: every node's
// discovery_replication_ops_received_total{op,origin} must grow by exactly
// what each write causes. A final write on every node is a barrier: links
// are FIFO, so a looping op (forwarded while its write was applied) would
// arrive before it.
func TestZones_CrossZoneReplicationNoLoops(t *testing.T) { // C57
	env := harness.DefaultEnv
	common := map[string]string{
		// No background replication during the counts: no self-renew (its
		// longest allowed interval is beyond the test), no periodic
		// anti-entropy; failed sends retry quickly.
		"DISCOVERY_CLUSTER_RENEW_INTERVAL":        "45s",
		"DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL": "1h",
		"DISCOVERY_CLUSTER_RETRY_MAX_BACKOFF":     "200ms",
	}
	withEnv := func(extra map[string]string) map[string]string {
		m := maps.Clone(common)
		maps.Copy(m, extra)
		return m
	}
	// Zone A needs a zone-B address before zone B exists: a relay that
	// leads to b1 once b1 is up (until then it refuses, like a node that
	// is not up yet).
	relayB := harness.NewRelay(t)
	c := harness.StartCluster(t, 2, harness.Options{ExtraEnv: withEnv(map[string]string{
		"DISCOVERY_CLUSTER_ZONES": zoneB + "=" + relayB.Addr(),
	})})
	a1, a2 := c.Node(0), c.Node(1)
	zoneA := []*harness.Node{a1, a2}
	toA := harness.DefaultZone + "=" + a1.AdvertisedHTTP + "|" + a2.AdvertisedHTTP
	b1 := c.Add(t, harness.Options{Zone: zoneB, ExtraEnv: withEnv(map[string]string{"DISCOVERY_CLUSTER_ZONES": toA})})
	relayB.Point(b1.AdvertisedHTTP)
	b2 := c.Add(t, harness.Options{Zone: zoneB, ExtraEnv: withEnv(map[string]string{"DISCOVERY_CLUSTER_ZONES": toA})})
	zoneBNodes := []*harness.Node{b1, b2}
	all := []*harness.Node{a1, a2, b1, b2}

	// 4.10.1 and 7.5/7.6: each zone lists itself only; each zone holds the
	// other zone's node records (they crossed the zone links).
	testkit.Eventually(t, 30*time.Second, "both zones formed, node records exchanged", func() error {
		errs := []error{c.CheckFormed(zoneA), c.CheckFormed(zoneBNodes)}
		for _, n := range all {
			list, _, err := n.Client.Nodes(ctxT(t))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, e := range list {
				if e.Zone != n.Opts.Zone {
					errs = append(errs, fmt.Errorf("%s (zone %s) lists %+v", n.Name, n.Opts.Zone, e))
				}
			}
			other, wantOther := zoneBNodes, zoneB
			if n.Opts.Zone == zoneB {
				other, wantOther = zoneA, harness.DefaultZone
			}
			got, err := zoneRecords(n, wantOther)
			if err != nil {
				errs = append(errs, err)
			} else if want := advertised(other); !slices.Equal(got, want) {
				errs = append(errs, fmt.Errorf("%s: infra.discovery of zone %s %v, want %v", n.Name, wantOther, got, want))
			}
		}
		return errors.Join(errs...)
	})

	counts := newReceivedCounts(t, all, map[string]string{a1.Name: "A", a2.Name: "A", b1.Name: "B", b2.Name: "B"})
	// step expects what one client write on a node of zone `from` adds:
	// one replicated copy to the other node of that zone; one original
	// from-zone write to a node of the other zone, which hands one
	// replicated copy to its zone peer. Nothing else, anywhere.
	step := func(what, op, from string) {
		t.Helper()
		other := map[string]string{"A": "B", "B": "A"}[from]
		counts.expect(op, from, "peer", 1)
		counts.expect(op, other, "zone", 1)
		counts.expect(op, other, "peer", 1)
		counts.wait(t, what)
	}

	x := instance("e2e.zones", "x-1", "grpc://127.0.0.1:9100")
	x.Metadata = map[string]string{"weight": "10"}
	mustOK(t, "register on a1")(a1.Client.Register(ctxT(t), x))
	step("register on a1", "register", "A")
	testkit.Eventually(t, 10*time.Second, "x on every node", func() error {
		return wantHosts(all, env, x.AppID, []string{x.Hostname})
	})

	form := url.Values{"env": {env}, "appid": {x.AppID}, "zone": {x.Zone}, "hostname": {x.Hostname},
		"status": {"2"}, "metadata": {`{"weight":"20"}`}}
	mustOK(t, "set on a1")(a1.Client.Set(ctxT(t), form))
	step("set on a1", "set", "A")
	testkit.Eventually(t, 10*time.Second, "set applied in zone B", func() error {
		for _, n := range zoneBNodes {
			m, err := instances(n, env, x.AppID)
			if err != nil {
				return err
			}
			if in := m[x.Hostname]; in.Status != 2 || in.Metadata["weight"] != "20" {
				return fmt.Errorf("%s: %+v", n.Name, in)
			}
		}
		return nil
	})

	// A renew of a zone-A instance, accepted by the other A node, renews
	// the copies in zone B: each B node stamps a newer renew_timestamp.
	renewedB := map[string]int64{}
	for _, n := range zoneBNodes {
		m, err := instances(n, env, x.AppID)
		if err != nil {
			t.Fatal(err)
		}
		renewedB[n.Name] = m[x.Hostname].RenewTimestamp
	}
	mustOK(t, "renew on a2")(a2.Client.Renew(ctxT(t), x))
	step("renew on a2", "renew", "A")
	testkit.Eventually(t, 10*time.Second, "lease refreshed in zone B", func() error {
		for _, n := range zoneBNodes {
			m, err := instances(n, env, x.AppID)
			if err != nil {
				return err
			}
			if got := m[x.Hostname].RenewTimestamp; got <= renewedB[n.Name] {
				return fmt.Errorf("%s: renew_timestamp %d, was %d", n.Name, got, renewedB[n.Name])
			}
		}
		return nil
	})

	// The other direction: a write on zone B reaches both A nodes.
	y := instance("e2e.zones", "y-1", "grpc://127.0.0.1:9200")
	y.Zone = zoneB
	mustOK(t, "register on b2")(b2.Client.Register(ctxT(t), y))
	step("register on b2", "register", "B")
	testkit.Eventually(t, 10*time.Second, "y on every node", func() error {
		return wantHosts(all, env, y.AppID, []string{x.Hostname, y.Hostname})
	})

	mustOK(t, "cancel on a1")(a1.Client.Cancel(ctxT(t), x))
	step("cancel on a1", "cancel", "A")
	testkit.Eventually(t, 10*time.Second, "x cancelled everywhere", func() error {
		return wantHosts(all, env, x.AppID, []string{y.Hostname})
	})

	// Barrier: one more write on every node, through every node's links.
	var barrier []string
	for i, n := range all {
		in := instance("e2e.zones.barrier", fmt.Sprintf("w-%d", i), "grpc://127.0.0.1:9300")
		in.Zone = n.Opts.Zone
		mustOK(t, "barrier register on "+n.Name)(n.Client.Register(ctxT(t), in))
		barrier = append(barrier, in.Hostname)
		step("barrier register on "+n.Name, "register", counts.zone[n.Name])
	}
	testkit.Eventually(t, 10*time.Second, "barrier writes everywhere", func() error {
		return wantHosts(all, env, "e2e.zones.barrier", barrier)
	})
	counts.wait(t, "after the barrier (no looping op arrived late)")
}

// zoneRecords returns the sorted host:port of n's UP infra.discovery
// records of zone.
func zoneRecords(n *harness.Node, zone string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ii, _, err := n.Client.Fetch(ctx, n.Opts.Env, harness.InfraAppID, 1, zone)
	if err != nil {
		return nil, fmt.Errorf("%s: infra.discovery of zone %s: %w", n.Name, zone, err)
	}
	var out []string
	for _, in := range ii.All() {
		for _, a := range in.Addrs {
			out = append(out, strings.TrimPrefix(a, "http://"))
		}
	}
	slices.Sort(out)
	return out, nil
}

func advertised(nodes []*harness.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.AdvertisedHTTP)
	}
	slices.Sort(out)
	return out
}

// receivedCounts tracks discovery_replication_ops_received_total of every
// node, summed per zone, op and origin (register/renew/cancel/set only:
// anti-entropy imports are not writes).
type receivedCounts struct {
	nodes []*harness.Node
	zone  map[string]string // node name -> "A" or "B"
	want  map[string]float64
}

func newReceivedCounts(t *testing.T, nodes []*harness.Node, zone map[string]string) *receivedCounts {
	t.Helper()
	rc := &receivedCounts{nodes: nodes, zone: zone}
	// Start-up replication (node records and their forwards) has settled
	// when no node has an unacknowledged op (discovery_replication_queue_depth
	// counts waiting and in-flight ops) in two reads in a row that agree.
	var last map[string]float64
	testkit.Eventually(t, 10*time.Second, "start-up replication settled", func() error {
		got, err := rc.read()
		if err != nil {
			return err
		}
		same := last != nil && maps.Equal(got, last)
		last = got
		switch {
		case got[pendingKey] != 0:
			return fmt.Errorf("%v ops not acknowledged yet", got[pendingKey])
		case !same:
			return errors.New("counters still moving")
		}
		return nil
	})
	delete(last, pendingKey)
	rc.want = last
	return rc
}

// pendingKey sums discovery_replication_queue_depth in read's answer.
const pendingKey = "pending"

func (rc *receivedCounts) expect(op, zone, origin string, n float64) {
	rc.want[zone+" "+op+" "+origin] += n
}

func (rc *receivedCounts) read() (map[string]float64, error) {
	out := map[string]float64{}
	for _, z := range []string{"A", "B"} {
		for _, op := range []string{"register", "renew", "cancel", "set"} {
			for _, origin := range []string{"peer", "zone"} {
				out[z+" "+op+" "+origin] = 0
			}
		}
	}
	for _, n := range rc.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		text, err := n.Client.Metrics(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		for line := range strings.Lines(text) {
			if rest, ok := strings.CutPrefix(line, "discovery_replication_queue_depth{"); ok {
				_, val, _ := strings.Cut(rest, "} ")
				v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %q: %w", n.Name, line, err)
				}
				out[pendingKey] += v
				continue
			}
			rest, ok := strings.CutPrefix(line, "discovery_replication_ops_received_total{")
			if !ok {
				continue
			}
			labels, val, _ := strings.Cut(rest, "} ")
			op := labelValue(labels, "op")
			k := rc.zone[n.Name] + " " + op + " " + labelValue(labels, "origin")
			if _, counted := out[k]; !counted {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", n.Name, line, err)
			}
			out[k] += v
		}
	}
	return out, nil
}

// wait polls until every count equals what the writes so far explain; a
// count above it fails at once (something was delivered twice or looped).
func (rc *receivedCounts) wait(t *testing.T, what string) {
	t.Helper()
	var over error
	testkit.Eventually(t, 10*time.Second, "replication counts after "+what, func() error {
		got, err := rc.read()
		if err != nil {
			return err
		}
		errs := []error{}
		if got[pendingKey] != 0 {
			errs = append(errs, fmt.Errorf("%v ops not acknowledged yet", got[pendingKey]))
		}
		for _, k := range slices.Sorted(maps.Keys(rc.want)) {
			switch g, w := got[k], rc.want[k]; {
			case g > w:
				over = fmt.Errorf("%s: received %v ops (zone op origin: %s), want %v", what, g, k, w)
				return nil // stop polling; reported below
			case g < w:
				errs = append(errs, fmt.Errorf("%s: %v, want %v", k, g, w))
			}
		}
		return errors.Join(errs...)
	})
	if over != nil {
		t.Fatal(over)
	}
}

func labelValue(labels, name string) string {
	for part := range strings.SplitSeq(labels, ",") {
		if v, ok := strings.CutPrefix(part, name+`="`); ok {
			return strings.TrimSuffix(v, `"`)
		}
	}
	return ""
}
