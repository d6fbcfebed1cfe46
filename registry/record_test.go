package registry

import (
	"errors"
	"fmt"
	"math"
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

// The hostname ends at the first NUL of ha; addrs follow it in order.
func TestRecHostAddrs(t *testing.T) {
	for _, c := range []struct {
		host  string
		addrs []string
	}{
		{"h1", []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}},
		{"h2", nil},
		{"h3", []string{"grpc://10.0.0.3:9000"}},
	} {
		r := newRec(&Instance{Hostname: c.host, Addrs: c.addrs, Status: StatusUp})
		if r.host() != c.host {
			t.Fatalf("host %q, want %q", r.host(), c.host)
		}
		got := r.addrList()
		if len(got) != len(c.addrs) {
			t.Fatalf("%s: addrs %q, want %q", c.host, got, c.addrs)
		}
		for i := range got {
			if got[i] != c.addrs[i] {
				t.Fatalf("%s: addrs %q, want %q", c.host, got, c.addrs)
			}
		}
		if r.statusOf() != StatusUp || !r.isUp() {
			t.Fatalf("%s: status %d", c.host, r.statusOf())
		}
	}
}

// hasHost matches the whole hostname only, never a prefix of it or a
// hostname that extends it. (A key holding a NUL is refused before it, by
// zoneBucket.get: TestLookup_HostnameWithNULMatchesNothing.)
func TestRecHasHost(t *testing.T) {
	withAddrs := newRec(&Instance{Hostname: "pod-1", Addrs: []string{"grpc://10.0.0.1:9000"}, Status: StatusUp})
	bare := newRec(&Instance{Hostname: "pod-1", Status: StatusUp})
	for _, r := range []*rec{withAddrs, bare} {
		if !r.hasHost("pod-1") {
			t.Fatalf("%q: own hostname not matched", r.ha)
		}
		for _, h := range []string{"pod-", "pod-10", "pod-1\x00grpc", "", "POD-1"} {
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
