package legacy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	nodeUP   = 0
	nodeLost = 1
)

type action int

const (
	actRegister action = iota
	actRenew
	actCancel
)

func (a action) path() string {
	switch a {
	case actRegister:
		return "/discovery/register"
	case actRenew:
		return "/discovery/renew"
	default:
		return "/discovery/cancel"
	}
}

// peer is one node this node forwards to. Its status only feeds
// /discovery/nodes and starts LOST every time the list is rebuilt (D12).
type peer struct {
	addr      string
	zone      string
	otherZone bool
	status    atomic.Int32
}

// peerSet is replaced as a whole whenever the infra.discovery records change.
type peerSet struct {
	same  []*peer
	zones map[string][]*peer
}

func newPeerSet(self, zone string, same []string, zones map[string][]string) *peerSet {
	ps := &peerSet{zones: map[string][]*peer{}}
	for _, a := range same {
		p := &peer{addr: a, zone: zone}
		p.status.Store(nodeLost)
		if a == self {
			p.status.Store(nodeUP)
		}
		ps.same = append(ps.same, p)
	}
	for z, addrs := range zones {
		var l []*peer
		for _, a := range addrs {
			p := &peer{addr: a, zone: z, otherZone: true}
			p.status.Store(nodeLost)
			l = append(l, p)
		}
		ps.zones[z] = l
	}
	return ps
}

// markSelfUP is the original's Nodes.UP, called after the startup sync and on
// every rebuild.
func (ps *peerSet) markSelfUP(self string) {
	for _, p := range ps.same {
		if p.addr == self {
			p.status.Store(nodeUP)
		}
	}
}

// syncTargets is the original's AllNodes: every same-zone node and one random
// node per other zone.
func (ps *peerSet) syncTargets() []*peer {
	out := slices.Clone(ps.same)
	for _, z := range sortedKeys(ps.zones) {
		if l := ps.zones[z]; len(l) > 0 {
			out = append(out, l[rand.IntN(len(l))])
		}
	}
	return out
}

// targets lists the forward destinations of one write (7.2): all same-zone
// nodes but self, plus one random node per other zone unless noCross. As in
// the original, nothing at all is forwarded while the same-zone list is empty.
func (ps *peerSet) targets(self string, noCross bool) []*peer {
	if len(ps.same) == 0 {
		return nil
	}
	var out []*peer
	for _, p := range ps.same {
		if p.addr != self {
			out = append(out, p)
		}
	}
	if !noCross {
		for _, z := range sortedKeys(ps.zones) {
			if l := ps.zones[z]; len(l) > 0 {
				out = append(out, l[rand.IntN(len(l))])
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// instanceParams are the forwarded parameters of original registry/node.go.
// Register joins addrs with commas into one value (Defect D4) and sends the
// metadata map as JSON ("null" when there is none).
func instanceParams(i *Instance, act action, otherZone bool) url.Values {
	v := url.Values{}
	v.Set("region", i.Region)
	v.Set("zone", i.Zone)
	v.Set("env", i.Env)
	v.Set("appid", i.AppID)
	v.Set("hostname", i.Hostname)
	v.Set("from_zone", "true")
	v.Set("replication", strconv.FormatBool(!otherZone))
	switch act {
	case actRegister:
		v.Set("addrs", strings.Join(i.Addrs, ","))
		v.Set("status", strconv.FormatUint(uint64(i.Status), 10))
		v.Set("version", i.Version)
		meta, _ := json.Marshal(i.Metadata)
		v.Set("metadata", string(meta))
		v.Set("reg_timestamp", strconv.FormatInt(i.RegTimestamp, 10))
		v.Set("dirty_timestamp", strconv.FormatInt(i.DirtyTimestamp, 10))
		v.Set("latest_timestamp", strconv.FormatInt(i.LatestTimestamp, 10))
	case actRenew:
		v.Set("dirty_timestamp", strconv.FormatInt(i.DirtyTimestamp, 10))
	case actCancel:
		v.Set("latest_timestamp", strconv.FormatInt(i.LatestTimestamp, 10))
	}
	return v
}

func setParams(arg *setArgs, otherZone bool) url.Values {
	v := url.Values{}
	v.Set("region", arg.region)
	v.Set("zone", arg.zone)
	v.Set("env", arg.env)
	v.Set("appid", arg.appid)
	v.Set("set_timestamp", strconv.FormatInt(arg.setTimestamp, 10))
	v.Set("from_zone", "true")
	v.Set("replication", strconv.FormatBool(!otherZone))
	for _, h := range arg.hostnames {
		v.Add("hostname", h)
	}
	for _, s := range arg.statuses {
		v.Add("status", strconv.FormatInt(s, 10))
	}
	for _, m := range arg.metadata {
		v.Add("metadata", m)
	}
	return v
}

// peerAnswer is what the original decodes from a peer.
type peerAnswer struct {
	Code int             `json:"code"`
	Data json.RawMessage `json:"data"`
}

// errCode marks a peer answer with a non-zero code, like kratos ecode errors.
type errCode int

func (e errCode) Error() string { return strconv.Itoa(int(e)) }

// post sends one form POST to a peer, bounded by ForwardTimeout (and the
// caller's context), and returns the decoded answer.
func (n *Node) post(ctx context.Context, addr, path string, params url.Values) (peerAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, strings.NewReader(params.Encode()))
	if err != nil {
		return peerAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return n.do(req)
}

func (n *Node) get(ctx context.Context, addr, path string) (peerAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return peerAnswer{}, err
	}
	return n.do(req)
}

func (n *Node) do(req *http.Request) (peerAnswer, error) {
	// Headers a kratos blademaster client sends; no receiver requires them.
	req.Header.Set("User-Agent", "blademaster legacy "+n.cfg.Hostname+" "+AppIDDiscovery)
	req.Header.Set("x1-bmspy-user", AppIDDiscovery)
	if dl, ok := req.Context().Deadline(); ok {
		req.Header.Set("x1-bmspy-timeout", strconv.FormatInt(time.Until(dl).Milliseconds(), 10))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return peerAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return peerAnswer{}, err
	}
	if resp.StatusCode >= 400 {
		return peerAnswer{}, fmt.Errorf("incorrect http status %d from %s", resp.StatusCode, req.URL.Host)
	}
	var a peerAnswer
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&a); err != nil {
		return peerAnswer{}, fmt.Errorf("decode answer of %s: %w", req.URL, err)
	}
	if a.Code != 0 {
		return a, errCode(a.Code)
	}
	return a, nil
}

// replicate forwards one register/renew/cancel to every target concurrently
// and returns when all finished (D9). Failures are logged and ignored.
func (n *Node) replicate(ctx context.Context, act action, ins *Instance, noCross bool) {
	var wg sync.WaitGroup
	for _, p := range n.peers.Load().targets(n.self, noCross) {
		wg.Go(func() {
			switch act {
			case actRenew:
				n.renewPeer(ctx, p, ins)
			default:
				if _, err := n.post(ctx, p.addr, act.path(), instanceParams(ins, act, p.otherZone)); err != nil {
					n.log.Warn("forward failed", "path", act.path(), "peer", p.addr, "appid", ins.AppID, "hostname", ins.Hostname, "err", err)
				}
			}
		})
	}
	wg.Wait()
}

// renewPeer is the sender side of the renew handshake (7.3).
func (n *Node) renewPeer(ctx context.Context, p *peer, ins *Instance) {
	a, err := n.post(ctx, p.addr, actRenew.path(), instanceParams(ins, actRenew, p.otherZone))
	if errors.Is(err, errCode(codeServerErr)) {
		p.status.Store(nodeLost)
		return
	}
	p.status.Store(nodeUP) // even on a transport error (D12)
	switch {
	case err == nil:
	case errors.Is(err, errCode(codeNothing)):
		// The peer lacks the instance or holds an older copy: push ours.
		if _, err := n.post(ctx, p.addr, actRegister.path(), instanceParams(ins, actRegister, p.otherZone)); err != nil {
			n.log.Warn("re-register on peer failed", "peer", p.addr, "appid", ins.AppID, "hostname", ins.Hostname, "err", err)
		}
	case errors.Is(err, errCode(codeConflict)):
		// The peer holds a newer copy: register it into ourselves the way the
		// original does (its own register endpoint, addrs comma-joined).
		var res *Instance
		if json.Unmarshal(a.Data, &res) != nil || res == nil {
			return
		}
		n.doRegister(ctx, instanceParams(res, actRegister, p.otherZone))
	default:
		n.log.Warn("forward renew failed", "peer", p.addr, "appid", ins.AppID, "hostname", ins.Hostname, "err", err)
	}
}

// replicateSet forwards a set as received, with its set_timestamp.
func (n *Node) replicateSet(ctx context.Context, arg *setArgs, noCross bool) {
	var wg sync.WaitGroup
	for _, p := range n.peers.Load().targets(n.self, noCross) {
		wg.Go(func() {
			if _, err := n.post(ctx, p.addr, "/discovery/set", setParams(arg, p.otherZone)); err != nil {
				n.log.Warn("forward set failed", "peer", p.addr, "appid", arg.appid, "err", err)
			}
		})
	}
	wg.Wait()
}
