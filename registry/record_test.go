package registry

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"testing"
)

// The renew word keeps the timestamp and the counted flag apart: storing
// one never changes the other, and extreme timestamps (an import from a
// hostile peer) are clamped instead of overflowing into the flag or sign.
func TestRenewWord(t *testing.T) {
	var w renewWord
	w.init(1_700_000_000_123_456_789, false)
	if w.ts() != 1_700_000_000_123_456_789 || w.counted() {
		t.Fatalf("init: ts %d counted %v", w.ts(), w.counted())
	}
	if !w.renewed(1_700_000_000_999_999_999) {
		t.Fatal("first renew not reported as first")
	}
	if w.renewed(1_700_000_001_000_000_001) {
		t.Fatal("second renew reported as first")
	}
	if w.ts() != 1_700_000_001_000_000_001 || !w.counted() {
		t.Fatalf("after renews: ts %d counted %v", w.ts(), w.counted())
	}
	w.init(-5, true)
	if w.ts() != -5 || !w.counted() {
		t.Fatalf("negative ts: %d counted %v", w.ts(), w.counted())
	}
	for _, ts := range []int64{math.MaxInt64, math.MinInt64, 1 << 62, -(1 << 62)} {
		w.init(ts, false)
		want := int64(maxRenewTS)
		if ts < 0 {
			want = -maxRenewTS
		}
		if w.ts() != want || w.counted() {
			t.Fatalf("init(%d): ts %d counted %v, want %d false", ts, w.ts(), w.counted(), want)
		}
	}
}

func TestOwnerIP(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3":         "10.1.2.3",
		"::ffff:10.1.2.3":  "10.1.2.3", // the form an IPv4 client has on a dual-stack socket
		"2001:db8::7":      "2001:db8::7",
		"fe80::1%eth0":     "fe80::1",
		"":                 "",
		"not-an-address":   "",
		"::":               "", // all zeros is unknown; no client sends from it
		"10.1.2.3:8080":    "",
		"2001:db8::7%eth0": "2001:db8::7",
	} {
		o := parseOwner(in)
		if got := o.String(); got != want {
			t.Errorf("parseOwner(%q) = %q, want %q", in, got, want)
		}
		if o.known() != (want != "") {
			t.Errorf("parseOwner(%q).known() = %v", in, o.known())
		}
	}
}

// ha gives back the hostname, the addrs and the owner exactly, whatever
// shape the addrs have: the packed scheme and host bytes, and owner bytes
// that hold NULs and tag-like values, never leak into another field.
func TestRecHostAddrsOwner(t *testing.T) {
	owners := []string{"", "10.0.0.1", "10.0.30.31", "31.30.4.0", "2001:db8::1e", "::1"}
	for _, c := range []struct {
		host  string
		addrs []string
	}{
		{"h1", []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}},
		{"h2", nil},
		{"h3", []string{"grpc://10.0.0.3:9000"}},
		{"h4", []string{"https://a.example:443/x", "https://a.example:8443", "http://b.example:80", "grpc://a.example"}},
		{"h5", []string{"grpc://[2001:db8::1]:9000", "http://[2001:db8::1]:8000/metrics", "tcp://[2001:db8::1]:1"}},
		{"h6", []string{"tcp://10.0.0.6:1", "tcp://10.0.0.6:2", "grpcs://10.0.0.6:3"}},
		{"h7", []string{"grpc://:9000", "http://:8000"}},
		{"h8", []string{"grpc://10.0.0.8:9000", "http://10.0.0.80:8000", "http://10.0.0.8", "http://10.0.0.8/a:b"}},
		{"h9", []string{"no-scheme", "no-scheme"}},
		{"ή-10", []string{"http://ünï.example:1", "http://ünï.example:2"}},
	} {
		for _, owner := range owners {
			r := newRec(&Instance{Hostname: c.host, Addrs: c.addrs, Status: StatusUp}, parseOwner(owner))
			if r.host() != c.host || !r.hasHost(c.host) {
				t.Fatalf("%s/%s: host %q", c.host, owner, r.host())
			}
			if got := r.addrList(); !slices.Equal(got, c.addrs) {
				t.Fatalf("%s/%s: addrs %q, want %q", c.host, owner, got, c.addrs)
			}
			if got := r.owner().String(); got != owner {
				t.Fatalf("%s/%s: owner %q", c.host, owner, got)
			}
			want := 0
			for _, a := range c.addrs {
				want += len(a)
			}
			if n, count := r.addrsLen(); n != want || count != len(c.addrs) {
				t.Fatalf("%s/%s: addrsLen %d %d, want %d %d", c.host, owner, n, count, want, len(c.addrs))
			}
			if r.statusOf() != StatusUp || !r.isUp() {
				t.Fatalf("%s: status %d", c.host, r.statusOf())
			}
			for _, o := range owners {
				moved := &rec{ha: r.withOwner(parseOwner(o)), prof: r.prof}
				if moved.host() != c.host || !slices.Equal(moved.addrList(), c.addrs) || moved.owner().String() != o {
					t.Fatalf("%s/%s: withOwner(%q) gave %q %q %q", c.host, owner, o, moved.host(), moved.addrList(), moved.owner())
				}
			}
		}
	}
}

// A kratos pod's hostname and its grpc and http endpoints on one address
// pack, with an IPv4 owner, into the 64-byte size class (the plain text
// alone is 79 bytes, the 80-byte class).
func TestRecPackedSize(t *testing.T) {
	r := newRec(&Instance{
		Hostname: "order-svc-7d9f8b6c4-x2kqz",
		Addrs:    []string{"grpc://10.244.130.217:9000", "http://10.244.130.217:8000"},
		Status:   StatusUp,
	}, parseOwner("10.244.130.217"))
	if len(r.ha) > 64 || len(r.ha) > len(r.host())+len("grpc://10.244.130.217:9000")+12 {
		t.Fatalf("packed %d bytes: %q", len(r.ha), r.ha)
	}
}

// hasHost matches the whole hostname only, never a prefix of it or a
// hostname that extends it, whatever owner bytes follow. (A key holding a
// NUL is refused before it, by zoneBucket.get:
// TestLookup_HostnameWithNULMatchesNothing.)
func TestRecHasHost(t *testing.T) {
	var recs []*rec
	for _, owner := range []string{"", "10.0.0.1", "0.0.0.30", "2001:db8::"} {
		recs = append(recs,
			newRec(&Instance{Hostname: "pod-1", Addrs: []string{"grpc://10.0.0.1:9000"}, Status: StatusUp}, parseOwner(owner)),
			newRec(&Instance{Hostname: "pod-1", Status: StatusUp}, parseOwner(owner)))
	}
	for _, r := range recs {
		if !r.hasHost("pod-1") {
			t.Fatalf("%q: own hostname not matched", r.ha)
		}
		for _, h := range []string{"pod-", "pod-10", "pod-1\x00grpc", "", "POD-1", "pod-1\x0a"} {
			if r.hasHost(h) {
				t.Fatalf("%q matched %q", r.ha, h)
			}
		}
	}
}

// A key whose hostname holds a NUL (renew and cancel keys, and peers' ops,
// are not validated like a registration) matches no record, though a
// stored record's packed host-and-addrs starts with exactly those bytes;
// in a small zone (a slice) and a large one (the hash table).
func TestLookup_HostnameWithNULMatchesNothing(t *testing.T) {
	for _, n := range []int{1, 3 * smallMax} {
		r := newTestReg(t)
		var first Instance
		for i := range n {
			in := r.reg(inst("demo.nul", "z1", fmt.Sprintf("h%d", i)))
			if i == 0 {
				first = in
			}
		}
		packed := first.Hostname + "\x00" + first.Addrs[0]
		for _, h := range []string{packed, first.Hostname + "\x00", packed + "\x00"} {
			k := keyOf("demo.nul", "z1", h)
			if _, err := r.Renew(k, false, 0); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%d instances: renew of %q: %v, want ErrNotFound", n, h, err)
			}
			if _, ok := r.Get(k); ok {
				t.Fatalf("%d instances: Get(%q) found a record", n, h)
			}
		}
	}
}

// Any hostname and addrs without control characters (what validation
// lets through), with any owner, come back exactly from ha.
func FuzzPackHostAddrs(f *testing.F) {
	f.Add("pod-1", "grpc://10.0.0.1:9000", "http://10.0.0.1:8000", "", []byte{10, 0, 0, 1})
	f.Add("h", "https://[::1]:1/x", "https://[::1]", "tcp://[::1]:2", []byte{0x20, 1, 0xdb, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1e})
	f.Add("h", "no-scheme", "://", "grpc://", []byte{})
	f.Fuzz(func(t *testing.T, host, a1, a2, a3 string, owner []byte) {
		var addrs []string
		for _, a := range []string{a1, a2, a3} {
			if a != "" {
				addrs = append(addrs, a)
			}
		}
		for _, s := range append([]string{host}, addrs...) {
			if checkText("x", s, 1<<20, false) != nil {
				t.Skip()
			}
		}
		if host == "" {
			t.Skip()
		}
		var o ownerIP
		copy(o[:], owner)
		if a, ok := netip.AddrFromSlice(o[:]); ok {
			o = a.Unmap().As16() // the forms parseOwner returns
		}
		r := newRec(&Instance{Hostname: host, Addrs: addrs, Status: StatusUp}, o)
		if r.host() != host || !r.hasHost(host) || !slices.Equal(r.addrList(), addrs) || r.owner() != o {
			t.Fatalf("got %q %q %v from %q", r.host(), r.addrList(), r.owner(), r.ha)
		}
	})
}
