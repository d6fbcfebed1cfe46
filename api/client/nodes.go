package client

import (
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
)

// nodeSet is the client's view of the discovery nodes: the list learned from
// infra.discovery (same zone first, then other zones) followed by the seeds
// that are not in it, as a last resort. All calls of a client share one
// current node, like kratos, so a failure seen by one call moves all of them.
type nodeSet struct {
	mu      sync.Mutex
	seeds   []string
	learned []string // same zone (shuffled), then other zones (shuffled)
	nSame   int
	list    []string // candidates: learned + seeds not in learned
	cur     int
}

func newNodeSet(seeds []string) *nodeSet {
	s := slices.Clone(seeds)
	s = slices.Compact(sortedCopy(s))
	rand.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return &nodeSet{seeds: s, list: slices.Clone(s)}
}

func (n *nodeSet) current() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.list[n.cur]
}

// failed moves away from node if it is still the current one (two calls that
// fail on the same node move once). It reports whether the node changed.
func (n *nodeSet) failed(node string) (next string, switched bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.list[n.cur] == node && len(n.list) > 1 {
		n.cur = (n.cur + 1) % len(n.list)
		return n.list[n.cur], true
	}
	return n.list[n.cur], false
}

func (n *nodeSet) snapshot() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.list)
}

// setLearned replaces the learned list. An empty list (no record with an http
// addr) keeps the old one: having no node at all helps nobody. The current
// node is kept when it is still a preferred (same-zone) choice, otherwise the
// client moves to the first preferred node. Reports whether anything changed.
func (n *nodeSet) setLearned(same, other []string) bool {
	if len(same)+len(other) == 0 {
		return false
	}
	same = slices.Compact(sortedCopy(same))
	other = slices.Compact(sortedCopy(other))
	other = slices.DeleteFunc(other, func(s string) bool { return slices.Contains(same, s) })

	n.mu.Lock()
	defer n.mu.Unlock()
	oldSame := sortedCopy(n.learned[:n.nSame])
	oldOther := sortedCopy(n.learned[n.nSame:])
	if slices.Equal(oldSame, same) && slices.Equal(oldOther, other) {
		return false
	}
	rand.Shuffle(len(same), func(i, j int) { same[i], same[j] = same[j], same[i] })
	rand.Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
	learned := append(slices.Clone(same), other...)
	list := slices.Clone(learned)
	for _, s := range n.seeds {
		if !slices.Contains(learned, s) {
			list = append(list, s)
		}
	}
	cur := n.list[n.cur]
	preferred := learned
	if len(same) > 0 {
		preferred = same
	}
	n.cur = 0
	if i := slices.Index(preferred, cur); i >= 0 {
		n.cur = slices.Index(list, cur)
	}
	n.learned, n.nSame, n.list = learned, len(same), list
	return true
}

// nodesFromInfra extracts node host:ports from infra.discovery instances:
// addrs of scheme only (http: one per node, spec 7.5.1; https: the nodes
// with an HTTPS listener), UP only, split by whether the node is in zone.
func nodesFromInfra(info *Instances, zone, scheme string) (same, other []string) {
	for z, l := range info.Zones {
		for i := range l {
			if l[i].Status != StatusUp {
				continue
			}
			for _, a := range l[i].Addrs {
				u, err := url.Parse(a)
				if err != nil || u.Scheme != scheme || checkHostPort(u.Host) != nil {
					continue
				}
				if h, _, _ := net.SplitHostPort(u.Host); net.ParseIP(h) != nil && net.ParseIP(h).IsUnspecified() {
					continue // 0.0.0.0 is unusable (spec 7.5.4)
				}
				if z == zone {
					same = append(same, u.Host)
				} else {
					other = append(other, u.Host)
				}
			}
		}
	}
	return same, other
}

// sortedCopy returns a sorted copy of s.
func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
