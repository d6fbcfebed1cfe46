package embed_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/discovery-go/discovery/embed"
	"github.com/discovery-go/discovery/internal/testkit"
)

// dnsServer answers A queries for names from a fixed table over UDP on
// loopback: the headless Service of deploy/kubernetes, which resolves to
// every ready pod's address.
type dnsServer struct {
	pc   net.PacketConn
	recs map[string][]netip.Addr // fully qualified name -> A records
	wg   sync.WaitGroup
}

func startDNS(t *testing.T, recs map[string][]netip.Addr) *dnsServer {
	t.Helper()
	pc, err := (&net.ListenConfig{}).ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{pc: pc, recs: recs}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { _ = pc.Close(); s.wg.Wait() })
	return s
}

func (s *dnsServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		addrs, ok := s.recs[strings.ToLower(q.Name.String())]
		if q.Type == dnsmessage.TypeA {
			for _, a := range addrs {
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a.As4()})
			}
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		if !ok {
			// NXDOMAIN for unknown names.
			msg[3] |= 3
		}
		_, _ = s.pc.WriteTo(msg, from)
	}
}

// resolver sends every query to s (what a pod's resolv.conf does with the
// cluster DNS).
func (s *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", s.pc.LocalAddr().String())
	}}
}

// freePortOn returns a gossip port free on every ip (TCP and UDP), the way
// every pod of a StatefulSet listens on :7946 at its own address.
func freePortOn(t *testing.T, ips ...string) int {
	t.Helper()
	for range 50 {
		l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", ips[0]+":0")
		if err != nil {
			t.Skipf("loopback %s: %v", ips[0], err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		ok := true
		for _, ip := range ips {
			for _, nw := range []string{"tcp", "udp"} {
				a := net.JoinHostPort(ip, strconv.Itoa(port))
				if nw == "tcp" {
					if l, err := (&net.ListenConfig{}).Listen(t.Context(), nw, a); err == nil {
						_ = l.Close()
					} else {
						ok = false
					}
				} else if pc, err := (&net.ListenConfig{}).ListenPacket(t.Context(), nw, a); err == nil {
					_ = pc.Close()
				} else {
					ok = false
				}
			}
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every address")
	return 0
}

// Joining through a name that resolves to several addresses joins them
// all (issue #15, deploy/kubernetes: cluster.join is the headless
// Service's name). Two nodes that started alone, each at its own address
// on the same port, are merged into one cluster by a third whose only
// seed is that name, resolved by a real DNS server.
func TestJoin_SeedNameWithSeveralAddresses(t *testing.T) {
	port := freePortOn(t, "127.0.0.2", "127.0.0.3")
	var alone []*embed.Node
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		cfg := testConfig("pod-" + strconv.Itoa(i))
		cfg.Cluster.Bind = net.JoinHostPort(ip, strconv.Itoa(port))
		cfg.HTTP.Addr = ip + ":0"
		n := start(t, cfg, embed.Options{})
		ready(t, n)
		alone = append(alone, n)
	}
	dns := startDNS(t, map[string][]netip.Addr{
		"discovery-peer.registry.svc.cluster.local.": {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")},
	})
	cfg := testConfig("pod-2")
	cfg.Cluster.Join = []string{"discovery-peer.registry.svc.cluster.local:" + strconv.Itoa(port)}
	joiner := start(t, cfg, embed.Options{Resolver: dns.resolver()})
	ready(t, joiner)
	for _, n := range append(alone, joiner) {
		testkit.EventuallyTrue(t, 20*time.Second, n.Addrs().HTTP+" lists all three nodes", func() bool {
			return len(n.Cluster().Nodes()) == 3
		})
	}
}
